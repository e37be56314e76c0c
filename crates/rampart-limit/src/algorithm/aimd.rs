//! [`Aimd`]: additive increase, multiplicative decrease.

use std::time::Duration;

use rampart_health::ConfigError;

use super::{LimitAlgorithm, Sample, check_bounds, to_limit};

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
    min: usize,
    max: usize,
    backoff: f64,
    increase: f64,
    threshold: Duration,
}

/// Builds an [`Aimd`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct AimdBuilder {
    initial: usize,
    min: usize,
    max: usize,
    backoff: f64,
    increase: usize,
    threshold: Duration,
}

impl Default for AimdBuilder {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 20,
            max: 200,
            backoff: 0.9,
            increase: 1,
            threshold: Duration::from_secs(5),
        }
    }
}

impl AimdBuilder {
    /// The limit before any sample (default 20).
    pub fn initial_limit(mut self, v: usize) -> Self {
        self.initial = v;
        self
    }
    /// The limit never falls below this (default 20).
    pub fn min_limit(mut self, v: usize) -> Self {
        self.min = v;
        self
    }
    /// The limit never rises above this (default 200).
    pub fn max_limit(mut self, v: usize) -> Self {
        self.max = v;
        self
    }
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
        check_bounds(self.min, self.initial, self.max)?;
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
            limit: self.initial as f64,
            min: self.min,
            max: self.max,
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
            self.limit = (self.limit * self.backoff).floor().max(self.min as f64);
        } else if sample.in_flight as f64 * 2.0 >= self.limit {
            self.limit = (self.limit + self.increase).min(self.max as f64);
        }
        self.limit()
    }
}
