//! [`Vegas`]: queue estimation from the no-load RTT.

use std::time::Duration;

use rampart_health::ConfigError;

use super::{Bounds, LimitAlgorithm, Sample, check_unit, to_limit, well_used};

/// Delay-based limit after TCP Vegas (Brakmo & Peterson, 1994), as Netflix concurrency-limits
/// adapts it (`VegasLimit`).
///
/// The smallest RTT seen is the no-load RTT; the queue is estimated as
/// `queue = ceil(limit × (1 − rtt_noload / rtt))`. With `l = max(1, log10(limit))`:
/// a queue of at most `l` grows the limit by `6·l`; below `3·l` by `l`; above `6·l` it
/// shrinks by `l`; a drop shrinks it by `l`. Windows with fewer than half the limit in
/// flight change nothing.
///
/// **Re-probing**: a minimum only ever falls, so after every
/// `probe_multiplier × limit × jitter` windows (jitter uniform in `[0.5, 1)`) the no-load RTT
/// is reset to the current window's RTT. A baseline measured during a lucky idle moment, or
/// before the backend moved somewhere slower, does not pin the limit down forever.
///
/// Defaults: initial 20, min 1, max 1000, smoothing 1.0, probe multiplier 30.
#[derive(Debug, Clone)]
pub struct Vegas {
    estimated: f64,
    bounds: Bounds,
    smoothing: f64,
    probe_multiplier: f64,
    probe_count: u64,
    probe_jitter: f64,
    rtt_noload: Duration,
    rng: fastrand::Rng,
}

/// Builds a [`Vegas`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct VegasBuilder {
    bounds: Bounds,
    smoothing: f64,
    probe_multiplier: usize,
    seed: Option<u64>,
}

impl Default for VegasBuilder {
    fn default() -> Self {
        Self {
            bounds: Bounds::new(20, 1, 1000),
            smoothing: 1.0,
            probe_multiplier: 30,
            seed: None,
        }
    }
}

impl VegasBuilder {
    bounds_setters!(20, 1, 1000);

    /// How much of each new estimate enters the limit, in `(0, 1]` (default 1.0).
    pub fn smoothing(mut self, v: f64) -> Self {
        self.smoothing = v;
        self
    }
    /// Windows between re-probes of the no-load RTT, per unit of limit (default 30).
    pub fn probe_multiplier(mut self, v: usize) -> Self {
        self.probe_multiplier = v;
        self
    }
    /// Seeds the probe jitter (tests; default: random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<Vegas, ConfigError> {
        self.bounds.check()?;
        check_unit("smoothing", self.smoothing)?;
        if self.probe_multiplier == 0 {
            return Err(ConfigError::new(
                "probe_multiplier",
                self.probe_multiplier,
                "must be at least 1",
            ));
        }
        let mut rng = match self.seed {
            Some(s) => fastrand::Rng::with_seed(s),
            None => fastrand::Rng::new(),
        };
        let probe_jitter = 0.5 + rng.f64() * 0.5;
        Ok(Vegas {
            estimated: self.bounds.initial as f64,
            bounds: self.bounds,
            smoothing: self.smoothing,
            probe_multiplier: self.probe_multiplier as f64,
            probe_count: 0,
            probe_jitter,
            rtt_noload: Duration::ZERO,
            rng,
        })
    }
}

impl Vegas {
    /// The settings, with the defaults.
    pub fn builder() -> VegasBuilder {
        VegasBuilder::default()
    }

    /// The current no-load RTT estimate (zero before the first sample).
    pub fn rtt_noload(&self) -> Duration {
        self.rtt_noload
    }
}

impl LimitAlgorithm for Vegas {
    fn name(&self) -> &'static str {
        "vegas"
    }

    fn limit(&self) -> usize {
        to_limit(self.estimated)
    }

    fn update(&mut self, sample: &Sample) -> usize {
        let rtt = sample.rtt;
        self.probe_count += 1;
        if self.probe_jitter * self.probe_multiplier * self.estimated <= self.probe_count as f64
            && !rtt.is_zero()
        {
            // Re-probe: forget the old minimum.
            self.probe_count = 0;
            self.probe_jitter = 0.5 + self.rng.f64() * 0.5;
            self.rtt_noload = rtt;
            return self.limit();
        }
        if !rtt.is_zero() && (self.rtt_noload.is_zero() || rtt < self.rtt_noload) {
            self.rtt_noload = rtt;
            return self.limit();
        }
        let l = self.estimated.log10().max(1.0);
        let target = if sample.dropped {
            self.estimated - l
        } else if rtt.is_zero() || !well_used(sample, self.estimated) {
            return self.limit();
        } else {
            let ratio = self.rtt_noload.as_secs_f64() / rtt.as_secs_f64();
            let queue = (self.estimated * (1.0 - ratio)).ceil();
            if queue <= l {
                self.estimated + 6.0 * l
            } else if queue < 3.0 * l {
                self.estimated + l
            } else if queue > 6.0 * l {
                self.estimated - l
            } else {
                return self.limit();
            }
        };
        let target = self.bounds.clamp(target);
        self.estimated = self
            .bounds
            .clamp(self.estimated * (1.0 - self.smoothing) + target * self.smoothing);
        self.limit()
    }
}
