//! Lowest-latency steering: one EWMA of answer time per site and one leader per priority
//! level, moved only when another site is faster by more than the hysteresis margin.
//!
//! Samples are recorded on the response path with relaxed atomics (no lock); the decision
//! state keeps each level's leader routable when it recomputes.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::Control;
use crate::gslb::config::LatencyConfig;

/// Lowest-latency steering state: one EWMA per site and one leader per level.
#[derive(Debug)]
pub(crate) struct Latency {
    pub(crate) config: LatencyConfig,
    /// EWMA in nanoseconds as `f64` bits; 0 = no sample yet.
    pub(super) ewma: Box<[AtomicU64]>,
    pub(super) leaders: Box<[AtomicUsize]>,
    /// Routability as of the last recompute, so that stale measurements of a site that went
    /// down do not make it leader again.
    pub(super) routable: Box<[AtomicBool]>,
}

impl Latency {
    pub(super) fn new(config: LatencyConfig, sites: usize, level_sites: &[Vec<usize>]) -> Self {
        Self {
            config,
            ewma: (0..sites).map(|_| AtomicU64::new(0)).collect(),
            routable: (0..sites).map(|_| AtomicBool::new(true)).collect(),
            leaders: level_sites
                .iter()
                .map(|s| AtomicUsize::new(s.first().copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The EWMA of `site` in nanoseconds, if measured.
    pub(crate) fn ewma(&self, site: usize) -> Option<f64> {
        let bits = self.ewma.get(site)?.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    #[inline]
    pub(crate) fn leader(&self, level: usize) -> Option<usize> {
        Some(self.leaders.get(level)?.load(Ordering::Relaxed))
    }

    pub(crate) fn is_leader(&self, site: usize, level: usize) -> bool {
        self.leader(level) == Some(site)
    }
}

impl Control {
    /// Records a latency sample for lowest-latency steering, and moves the level's leader if
    /// another site is faster by more than the hysteresis margin.
    pub(crate) fn record_latency(&self, site: usize, elapsed: Duration) {
        let (Some(lat), Some(meta)) = (&self.latency, self.meta.get(site)) else {
            return;
        };
        let sample = (elapsed.as_nanos() as f64).max(1.0);
        let alpha = lat.config.alpha;
        let cell = &lat.ewma[site];
        let mut new = sample;
        let mut old = f64::MAX;
        let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            old = if bits == 0 {
                f64::MAX
            } else {
                f64::from_bits(bits)
            };
            new = if bits == 0 {
                sample
            } else {
                alpha * sample + (1.0 - alpha) * f64::from_bits(bits)
            };
            Some(new.to_bits())
        });
        let level = meta.level;
        let margin = 1.0 + lat.config.hysteresis;
        let leader = lat.leaders[level].load(Ordering::Relaxed);
        if !lat.routable[site].load(Ordering::Relaxed) {
            // A late answer from a site that is out: measured, but it cannot lead.
            return;
        }
        if leader != site {
            let better = match lat.ewma(leader) {
                None => true,
                Some(l) => new * margin < l,
            };
            if better {
                self.switch_leader(lat, level, leader, site, new);
            }
        } else if new > old {
            // The leader got slower: is anyone else faster by the margin? (If it did not get
            // slower, no one can have overtaken it: others are checked on their own samples.)
            let best = self.level_sites[level]
                .iter()
                .copied()
                .filter(|&i| i != site && lat.routable[i].load(Ordering::Relaxed))
                .filter_map(|i| lat.ewma(i).map(|e| (e, i)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((e, i)) = best
                && e * margin < new
            {
                self.switch_leader(lat, level, site, i, e);
            }
        }
    }

    fn switch_leader(&self, lat: &Latency, level: usize, from: usize, to: usize, ewma: f64) {
        if lat.leaders[level]
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::info!(
                target: "rampart_gslb",
                gslb = %self.name,
                priority = self.level_priorities[level],
                from = %self.meta[from].name,
                to = %self.meta[to].name,
                ewma = ?Duration::from_nanos(ewma as u64),
                "lowest-latency site changed"
            );
            #[cfg(feature = "metrics")]
            self.metrics.decision_changed();
        }
    }
}
