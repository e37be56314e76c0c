//! The measurement window: round-trip times and drops accumulated on the request path in
//! sharded atomics, and closed (fed to the limit algorithm) once it holds enough samples or
//! lasted long enough.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::{Shared, guarantee};
use crate::algorithm::Sample;

/// Window shards: threads add their measurements to different cache lines.
pub(super) const SHARDS: usize = 4;

/// The current measurement window, accumulated on the request path.
#[repr(align(128))]
pub(super) struct Window {
    /// When the window opened (ns since the limiter's epoch); read-mostly.
    pub(super) started: AtomicU64,
    /// Calls measured in closed windows, cumulative.
    pub(super) measured: AtomicU64,
    pub(super) shards: [Shard; SHARDS],
}

/// One thread group's share of the window.
#[repr(align(128))]
pub(super) struct Shard {
    /// Calls in the low 32 bits, dropped calls in the high 32 bits.
    pub(super) counts: AtomicU64,
    pub(super) rtt_sum: AtomicU64,
    pub(super) min_rtt: AtomicU64,
    pub(super) max_in_flight: AtomicUsize,
    /// Calls that finished without a measurement (cancelled or ignored), cumulative.
    pub(super) unmeasured: AtomicU64,
}

impl Window {
    pub(super) fn new() -> Self {
        Self {
            started: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            shards: std::array::from_fn(|_| Shard {
                counts: AtomicU64::new(0),
                rtt_sum: AtomicU64::new(0),
                min_rtt: AtomicU64::new(u64::MAX),
                max_in_flight: AtomicUsize::new(0),
                unmeasured: AtomicU64::new(0),
            }),
        }
    }

    /// This thread's shard (threads are spread over the shards round robin).
    #[inline]
    pub(super) fn shard(&self) -> &Shard {
        use std::cell::Cell;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        let i = SLOT.with(|s| {
            let v = s.get();
            if v < SHARDS {
                v
            } else {
                let v = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
                s.set(v);
                v
            }
        });
        &self.shards[i]
    }
}

impl Shared {
    /// Adds one call to the window; closes the window when it is complete. Returns whether
    /// the limit rose.
    #[inline]
    pub(super) fn record(&self, rtt: u64, in_flight: usize, dropped: bool, now: u64) -> bool {
        let w = &self.window;
        let shard = w.shard();
        // Minimum and maximum by load-compare-store: the shard is (nearly) this thread's
        // alone, and a lost update only blurs a statistic.
        let inc = if dropped {
            1 | (1 << 32)
        } else {
            shard.rtt_sum.fetch_add(rtt, Ordering::Relaxed);
            if rtt < shard.min_rtt.load(Ordering::Relaxed) {
                shard.min_rtt.store(rtt, Ordering::Relaxed);
            }
            1
        };
        if in_flight > shard.max_in_flight.load(Ordering::Relaxed) {
            shard.max_in_flight.store(in_flight, Ordering::Relaxed);
        }
        let n = (shard.counts.fetch_add(inc, Ordering::AcqRel) + inc) as u32;
        let elapsed = now.saturating_sub(w.started.load(Ordering::Relaxed));
        // Per shard: with several threads a window holds more than `window_samples` calls.
        if (n >= self.window_samples && elapsed >= self.min_window_ns)
            || elapsed >= self.max_window_ns
        {
            return self.close_window(now);
        }
        false
    }

    #[cold]
    pub(super) fn close_window(&self, now: u64) -> bool {
        // Someone else is closing it: our sample lands in the next window.
        let Ok(mut control) = self.control.try_lock() else {
            return false;
        };
        let w = &self.window;
        let elapsed = now.saturating_sub(w.started.load(Ordering::Relaxed));
        let count: u64 = w
            .shards
            .iter()
            .map(|s| s.counts.load(Ordering::Acquire) & 0xffff_ffff)
            .sum();
        if count == 0 || (count < u64::from(self.window_samples) && elapsed < self.max_window_ns) {
            return false;
        }
        w.started.store(now, Ordering::Relaxed);
        let (mut count, mut drops, mut sum, mut min, mut max_in_flight) = (0, 0, 0, u64::MAX, 0);
        for s in &w.shards {
            let c = s.counts.swap(0, Ordering::AcqRel);
            count += c & 0xffff_ffff;
            drops += c >> 32;
            sum += s.rtt_sum.swap(0, Ordering::Relaxed);
            min = min.min(s.min_rtt.swap(u64::MAX, Ordering::Relaxed));
            max_in_flight = max_in_flight.max(s.max_in_flight.swap(0, Ordering::Relaxed));
        }
        w.measured.fetch_add(count, Ordering::Relaxed);
        let ok = count.saturating_sub(drops);
        let rtt = Duration::from_nanos(sum.checked_div(ok).unwrap_or(0));
        let min_rtt = if min == u64::MAX {
            Duration::ZERO
        } else {
            Duration::from_nanos(min)
        };
        let sample = Sample {
            rtt,
            min_rtt,
            in_flight: max_in_flight,
            dropped: drops > 0,
        };
        let old = self.hot.limit.load(Ordering::Relaxed);
        let new = control.algorithm.update(&sample).max(1);
        #[cfg(feature = "metrics")]
        {
            self.metrics.rtt.set(rtt.as_secs_f64());
            self.metrics
                .in_flight
                .set(self.hot.in_flight.load(Ordering::Relaxed) as f64);
            let total = self.hot.in_flight.load(Ordering::Relaxed);
            for p in self.partitions.iter() {
                let n = if self.single {
                    total
                } else {
                    p.in_flight.load(Ordering::Relaxed)
                };
                p.metrics.in_flight.set(n as f64);
            }
        }
        if new == old {
            return false;
        }
        self.hot.limit.store(new, Ordering::Relaxed);
        for p in self.partitions.iter() {
            p.guaranteed
                .store(guarantee(p.share, new), Ordering::Relaxed);
        }
        control.changes += 1;
        #[cfg(feature = "metrics")]
        {
            self.metrics.limit.set(new as f64);
            self.metrics.limit_changes.increment(1);
        }
        match self.change_gate.pass(now) {
            Some(suppressed) => tracing::info!(
                target: "rampart_limit",
                limiter = %self.name,
                algorithm = self.algorithm_name,
                from = old,
                to = new,
                rtt = ?sample.rtt,
                in_flight = sample.in_flight,
                dropped = sample.dropped,
                changes_since_last_event = suppressed,
                "concurrency limit changed"
            ),
            None => tracing::trace!(
                target: "rampart_limit",
                limiter = %self.name,
                from = old,
                to = new,
                "concurrency limit changed"
            ),
        }
        new > old
    }
}
