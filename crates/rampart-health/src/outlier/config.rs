//! [`OutlierConfig`]: the detector's settings, validated by [`OutlierConfigBuilder::build`].

use std::time::Duration;

use crate::ConfigError;

/// Settings of an [`OutlierDetector`](super::OutlierDetector); build one with [`OutlierConfig::builder`].
///
/// Defaults (Envoy's): `consecutive_failures` 5, `interval` 10 s, `base_ejection_time` 30 s,
/// `max_ejection_time` 300 s, `max_ejection_percent` 10 %, failure percentage and success rate
/// disabled (when enabled, both need a pool of at least 5 endpoints unless told otherwise).
///
/// ```
/// use std::time::Duration;
/// use rampart_health::OutlierConfig;
/// let c = OutlierConfig::default();
/// assert_eq!(c.consecutive_failures(), 5);
/// assert_eq!(c.base_ejection_time(), Duration::from_secs(30));
/// assert_eq!(c.failure_percentage(), None);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    pub(super) name: std::sync::Arc<str>,
    pub(super) consecutive_failures: u32,
    pub(super) failure_percentage: Option<(f64, u32)>,
    pub(super) failure_percentage_minimum_hosts: u32,
    pub(super) success_rate: Option<SuccessRate>,
    pub(super) interval: Duration,
    pub(super) base_ejection_time: Duration,
    pub(super) max_ejection_time: Duration,
    pub(super) max_ejection_percent: f64,
}

/// Success-rate ejection settings (Envoy's `success_rate_*`): see
/// [`OutlierConfigBuilder::success_rate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SuccessRate {
    /// An endpoint is ejected when its success rate is below `mean − stdev × stdev_factor`
    /// (Envoy's `success_rate_stdev_factor` / 1000; default 1.9).
    pub stdev_factor: f64,
    /// How many endpoints must have at least `request_volume` calls in the interval for the
    /// statistics to mean anything (default 5).
    pub minimum_hosts: u32,
    /// Calls an endpoint must have served in the interval to be counted (default 100).
    pub request_volume: u32,
}

impl Default for SuccessRate {
    fn default() -> Self {
        Self {
            stdev_factor: 1.9,
            minimum_hosts: 5,
            request_volume: 100,
        }
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            name: std::sync::Arc::from("outlier"),
            consecutive_failures: 5,
            failure_percentage: None,
            failure_percentage_minimum_hosts: 5,
            success_rate: None,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10.0,
        }
    }
}

impl OutlierConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> OutlierConfigBuilder {
        OutlierConfigBuilder {
            config: Self::default(),
        }
    }

    /// The detector's name: the `detector` label of its metrics and a field of its events.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same settings under another name: a balancer names the detector it builds from
    /// these settings after itself, unless they were given a name of their own.
    ///
    /// ```
    /// use rampart_health::OutlierConfig;
    /// assert_eq!(OutlierConfig::default().with_name("catalog").name(), "catalog");
    /// ```
    pub fn with_name(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Success-rate ejection settings, if enabled.
    pub fn success_rate(&self) -> Option<SuccessRate> {
        self.success_rate
    }

    /// How many endpoints the pool needs for failure-percentage ejection to run (default 5).
    pub fn failure_percentage_minimum_hosts(&self) -> u32 {
        self.failure_percentage_minimum_hosts
    }

    /// Whether per-interval success and failure counts are kept (failure percentage or
    /// success rate enabled).
    pub(super) fn counts_calls(&self) -> bool {
        self.failure_percentage.is_some() || self.success_rate.is_some()
    }

    /// Consecutive failures that eject (0 = disabled).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// `(threshold_percent, minimum_requests)` of failure-percentage ejection, if enabled.
    pub fn failure_percentage(&self) -> Option<(f64, u32)> {
        self.failure_percentage
    }

    /// Time between evaluations (failure-percentage windows, decay steps).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Ejection time of a first ejection.
    pub fn base_ejection_time(&self) -> Duration {
        self.base_ejection_time
    }

    /// Cap on the ejection time.
    pub fn max_ejection_time(&self) -> Duration {
        self.max_ejection_time
    }

    /// Cap on the share of endpoints ejected at once, in percent.
    pub fn max_ejection_percent(&self) -> f64 {
        self.max_ejection_percent
    }

    /// `base_ejection_time × count`, capped at `max_ejection_time`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rampart_health::OutlierConfig;
    /// let c = OutlierConfig::default(); // 30 s base, 300 s cap
    /// assert_eq!(c.ejection_time(1), Duration::from_secs(30));
    /// assert_eq!(c.ejection_time(4), Duration::from_secs(120));
    /// assert_eq!(c.ejection_time(50), Duration::from_secs(300));
    /// ```
    pub fn ejection_time(&self, count: u32) -> Duration {
        self.base_ejection_time
            .checked_mul(count.max(1))
            .map_or(self.max_ejection_time, |d| d.min(self.max_ejection_time))
    }
}

/// Builds an [`OutlierConfig`]; see [`OutlierConfig::builder`].
#[derive(Clone, Debug)]
pub struct OutlierConfigBuilder {
    config: OutlierConfig,
}

impl OutlierConfigBuilder {
    /// Consecutive failures that eject at once (default 5; 0 disables).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = n;
        self
    }

    /// Enables failure-percentage ejection: an endpoint with at least `minimum_requests` calls
    /// in an interval, of which at least `threshold_percent` % (in `(0, 100]`) failed, is
    /// ejected at the evaluation.
    pub fn failure_percentage(mut self, threshold_percent: f64, minimum_requests: u32) -> Self {
        self.config.failure_percentage = Some((threshold_percent, minimum_requests));
        self
    }

    /// The pool needs at least this many endpoints for failure-percentage ejection to run
    /// (Envoy's `failure_percentage_minimum_hosts`, default 5; lower it for small pools).
    pub fn failure_percentage_minimum_hosts(mut self, n: u32) -> Self {
        self.config.failure_percentage_minimum_hosts = n;
        self
    }

    /// Enables success-rate ejection (Envoy's statistical outlier detection): once per
    /// `interval`, over the endpoints that served at least `request_volume` calls in the window
    /// (at least `minimum_hosts` of them, or nothing happens), an endpoint whose success rate is
    /// below `mean − stdev × stdev_factor` is ejected. Envoy's defaults: 1.9, 5, 100.
    ///
    /// ```
    /// use rampart_health::OutlierConfig;
    /// let c = OutlierConfig::builder().success_rate(1.9, 5, 100).build().unwrap();
    /// assert_eq!(c.success_rate().unwrap().minimum_hosts, 5);
    /// ```
    pub fn success_rate(
        mut self,
        stdev_factor: f64,
        minimum_hosts: u32,
        request_volume: u32,
    ) -> Self {
        self.config.success_rate = Some(SuccessRate {
            stdev_factor,
            minimum_hosts,
            request_volume,
        });
        self
    }

    /// The detector's name (default `outlier`): the `detector` label of its metrics. A
    /// balancer names its detector after itself.
    pub fn name(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Time between evaluations (default 10 s).
    pub fn interval(mut self, d: Duration) -> Self {
        self.config.interval = d;
        self
    }

    /// Ejection time of a first ejection (default 30 s).
    pub fn base_ejection_time(mut self, d: Duration) -> Self {
        self.config.base_ejection_time = d;
        self
    }

    /// Cap on the ejection time (default 300 s).
    pub fn max_ejection_time(mut self, d: Duration) -> Self {
        self.config.max_ejection_time = d;
        self
    }

    /// Cap on the share of endpoints ejected at once, `0.0..=100.0` percent (default 10).
    pub fn max_ejection_percent(mut self, p: f64) -> Self {
        self.config.max_ejection_percent = p;
        self
    }

    /// Validates and builds.
    ///
    /// Rejects a zero `interval` or `base_ejection_time`, a `max_ejection_time` shorter than
    /// `base_ejection_time`, a `max_ejection_percent` outside `0..=100` (or NaN), a failure
    /// percentage threshold outside `(0, 100]` and a minimum request volume of 0, with a
    /// [`ConfigError`] naming the field and the value.
    ///
    /// ```
    /// use rampart_health::OutlierConfig;
    /// let err = OutlierConfig::builder().max_ejection_percent(120.0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `max_ejection_percent` = 120.0: must be within 0..=100");
    /// ```
    pub fn build(self) -> Result<OutlierConfig, ConfigError> {
        let c = self.config;
        if c.interval.is_zero() {
            return Err(ConfigError::new(
                "interval",
                c.interval,
                "must be greater than zero",
            ));
        }
        if c.base_ejection_time.is_zero() {
            return Err(ConfigError::new(
                "base_ejection_time",
                c.base_ejection_time,
                "must be greater than zero",
            ));
        }
        if c.max_ejection_time < c.base_ejection_time {
            return Err(ConfigError::new(
                "max_ejection_time",
                c.max_ejection_time,
                "must be at least `base_ejection_time`",
            ));
        }
        if !(0.0..=100.0).contains(&c.max_ejection_percent) {
            return Err(ConfigError::new(
                "max_ejection_percent",
                c.max_ejection_percent,
                "must be within 0..=100",
            ));
        }
        if let Some((threshold, minimum)) = c.failure_percentage {
            if !(threshold > 0.0 && threshold <= 100.0) {
                return Err(ConfigError::new(
                    "failure_percentage_threshold",
                    threshold,
                    "must be within (0, 100]",
                ));
            }
            if minimum == 0 {
                return Err(ConfigError::new(
                    "failure_percentage_minimum_requests",
                    minimum,
                    "must be at least 1",
                ));
            }
        }
        if let Some(sr) = c.success_rate {
            if !(sr.stdev_factor.is_finite() && sr.stdev_factor > 0.0) {
                return Err(ConfigError::new(
                    "success_rate_stdev_factor",
                    sr.stdev_factor,
                    "must be a finite number greater than zero",
                ));
            }
            if sr.minimum_hosts == 0 {
                return Err(ConfigError::new(
                    "success_rate_minimum_hosts",
                    sr.minimum_hosts,
                    "must be at least 1",
                ));
            }
            if sr.request_volume == 0 {
                return Err(ConfigError::new(
                    "success_rate_request_volume",
                    sr.request_volume,
                    "must be at least 1",
                ));
            }
        }
        Ok(c)
    }
}
