//! [`Aimd`]: additive increase, multiplicative decrease.

use std::time::Duration;

use rampart_health::ConfigError;

use super::{Bounds, LimitAlgorithm, Sample, to_limit, well_used};

/// Additive increase, multiplicative decrease, as TCP Reno grows its congestion window.
///
/// A window with a dropped call, or whose average RTT exceeds the
/// [`latency_threshold`](AimdBuilder::latency_threshold), multiplies the limit by the
/// [`backoff`](AimdBuilder::backoff) ratio; any other window in which at least half the limit
/// was in use adds [`increase`](AimdBuilder::increase). Simple and robust where drops are the
/// clear signal (a client in front of a dependency that answers 503 when overloaded).
///
/// Defaults: initial 20, min 20, max 200, backoff 0.9, increase 1, latency threshold 5 s.
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: f64,
    bounds: Bounds,
    backoff: f64,
    increase: f64,
    threshold: Duration,
}

/// Builds an [`Aimd`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct AimdBuilder {
    bounds: Bounds,
    backoff: f64,
    increase: usize,
    threshold: Duration,
}

impl Default for AimdBuilder {
    fn default() -> Self {
        Self {
            bounds: Bounds::new(20, 20, 200),
            backoff: 0.9,
            increase: 1,
            threshold: Duration::from_secs(5),
        }
    }
}

impl AimdBuilder {
    bounds_setters!(20, 20, 200);

    /// The factor applied on a drop, in `(0, 1)` (default 0.9).
    pub fn backoff(mut self, v: f64) -> Self {
        self.backoff = v;
        self
    }
    /// Added per healthy, well-used window (default 1).
    pub fn increase(mut self, v: usize) -> Self {
        self.increase = v;
        self
    }
    /// A window whose average RTT exceeds this counts as a drop (default 5 s).
    pub fn latency_threshold(mut self, v: Duration) -> Self {
        self.threshold = v;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<Aimd, ConfigError> {
        self.bounds.check()?;
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return Err(ConfigError::new(
                "backoff",
                self.backoff,
                "must lie in (0, 1)",
            ));
        }
        if self.increase == 0 {
            return Err(ConfigError::new(
                "increase",
                self.increase,
                "must be at least 1",
            ));
        }
        if self.threshold.is_zero() {
            return Err(ConfigError::new(
                "latency_threshold",
                self.threshold,
                "must be positive",
            ));
        }
        Ok(Aimd {
            limit: self.bounds.initial as f64,
            bounds: self.bounds,
            backoff: self.backoff,
            increase: self.increase as f64,
            threshold: self.threshold,
        })
    }
}

impl Aimd {
    /// The settings, with the defaults.
    pub fn builder() -> AimdBuilder {
        AimdBuilder::default()
    }
}

impl LimitAlgorithm for Aimd {
    fn name(&self) -> &'static str {
        "aimd"
    }

    fn limit(&self) -> usize {
        to_limit(self.limit)
    }

    fn update(&mut self, sample: &Sample) -> usize {
        if sample.dropped || sample.rtt > self.threshold {
            self.limit = self.bounds.clamp((self.limit * self.backoff).floor());
        } else if well_used(sample, self.limit) {
            self.limit = self.bounds.clamp(self.limit + self.increase);
        }
        self.limit()
    }
}
