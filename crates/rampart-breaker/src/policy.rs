//! The breaker's configuration: [`Policy`], built and validated by [`PolicyBuilder`].
//!
//! The defaults: the last 100 calls, at least 20 of them, 50 % failures open the breaker for
//! 5 s (doubling per re-open up to 60 s, with jitter), 5 half-open trial calls, at most 30 s in
//! half-open, slow-call tracking off. The crate README's "Defaults, and why" compares them
//! with Resilience4j, Polly and Hystrix and gives the reason for each.
//!
//! ```
//! use std::time::Duration;
//! use rampart_breaker::{Policy, SlidingWindow};
//!
//! let policy = Policy::builder()
//!     .name("catalog")
//!     .sliding_window(SlidingWindow::time(Duration::from_secs(30)))
//!     .minimum_calls(50)
//!     .failure_rate_threshold(25.0)
//!     .slow_call_duration(Duration::from_secs(2))
//!     .slow_call_rate_threshold(80.0)
//!     .build()
//!     .unwrap();
//! assert_eq!(policy.minimum_calls(), 50);
//!
//! // Bad values fail at build time, naming the field.
//! let err = Policy::builder().failure_rate_threshold(0.0).build().unwrap_err();
//! assert_eq!(err.field(), "failure_rate_threshold");
//! ```

use std::sync::Arc;
use std::time::Duration;

use rampart_health::ConfigError;

/// The largest count-based window.
pub const MAX_COUNT_WINDOW: u32 = 1 << 20;
/// The largest number of buckets of a time-based window.
pub const MAX_BUCKETS: u16 = 1000;
/// The largest `permitted_calls_in_half_open` (it is packed into 10 bits of the state word).
pub const MAX_HALF_OPEN_CALLS: u32 = 1023;

/// Which calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `n` recorded calls (Resilience4j's `COUNT_BASED`).
    Count(u32),
    /// The calls recorded in the last `size`, kept in `buckets` equal buckets
    /// (Resilience4j's `TIME_BASED` uses one bucket per second; Hystrix's rolling window
    /// uses 10 buckets). A bucket leaves the window as a whole. Each bucket spans
    /// `size / buckets` rounded down to whole milliseconds.
    Time {
        /// The span of the window.
        size: Duration,
        /// How many buckets the span is divided into.
        buckets: u16,
    },
}

impl SlidingWindow {
    /// The last `n` calls.
    pub const fn count(n: u32) -> Self {
        SlidingWindow::Count(n)
    }

    /// The last `size`, in 10 buckets.
    pub const fn time(size: Duration) -> Self {
        SlidingWindow::Time { size, buckets: 10 }
    }

    /// The last `size`, in `buckets` buckets.
    pub const fn time_with_buckets(size: Duration, buckets: u16) -> Self {
        SlidingWindow::Time { size, buckets }
    }
}

impl Default for SlidingWindow {
    fn default() -> Self {
        SlidingWindow::Count(100)
    }
}

/// A validated breaker configuration. Cheap to clone.
///
/// Build one with [`Policy::builder`]; [`Policy::default`] is the documented default (see the
/// [module docs](self) for each value and its justification).
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) name: Arc<str>,
    pub(crate) window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) open_duration: Duration,
    pub(crate) max_open_duration: Duration,
    pub(crate) open_backoff: f64,
    pub(crate) open_jitter: f64,
    pub(crate) permitted_calls_in_half_open: u32,
    pub(crate) max_wait_in_half_open: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            name: Arc::from("breaker"),
            window: SlidingWindow::Count(100),
            minimum_calls: 20,
            failure_rate_threshold: 50.0,
            slow_call_duration: None,
            slow_call_rate_threshold: 100.0,
            consecutive_failures: None,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
            open_backoff: 2.0,
            open_jitter: 0.2,
            permitted_calls_in_half_open: 5,
            max_wait_in_half_open: Duration::from_secs(30),
        }
    }
}

impl Policy {
    /// A builder starting from the defaults.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy::default(),
        }
    }

    /// The breaker's name (in events, traces and metric labels).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sliding window.
    pub fn sliding_window(&self) -> SlidingWindow {
        self.window
    }

    /// Calls the window must hold before a rate can open the breaker.
    pub fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }

    /// Failure rate (percent) at or above which the breaker opens.
    pub fn failure_rate_threshold(&self) -> f64 {
        self.failure_rate_threshold
    }

    /// Calls at least this long are slow; `None` when slow-call tracking is off.
    pub fn slow_call_duration(&self) -> Option<Duration> {
        self.slow_call_duration
    }

    /// Slow-call rate (percent) at or above which the breaker opens.
    pub fn slow_call_rate_threshold(&self) -> f64 {
        self.slow_call_rate_threshold
    }

    /// Consecutive failures that open the breaker regardless of the window, if set.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }

    /// The first open duration.
    pub fn open_duration(&self) -> Duration {
        self.open_duration
    }

    /// The cap on the backed-off open duration.
    pub fn max_open_duration(&self) -> Duration {
        self.max_open_duration
    }

    /// Calls admitted in half-open.
    pub fn permitted_calls_in_half_open(&self) -> u32 {
        self.permitted_calls_in_half_open
    }

    /// How long half-open may wait for its verdict before re-opening.
    pub fn max_wait_in_half_open(&self) -> Duration {
        self.max_wait_in_half_open
    }

    /// The open duration after `reopens` consecutive re-opens, before jitter:
    /// `min(open_duration × backoff^reopens, max_open_duration)`.
    pub fn backed_off_open_duration(&self, reopens: u32) -> Duration {
        let factor = self.open_backoff.powi(reopens.min(1024) as i32);
        // In whole nanoseconds, rounded, so that 300 ms × 2^2 is exactly 1.2 s.
        let nanos = (self.open_duration.as_nanos() as f64 * factor).round();
        if !nanos.is_finite() || nanos >= self.max_open_duration.as_nanos() as f64 {
            self.max_open_duration
        } else {
            Duration::from_nanos(nanos as u64)
        }
    }

    /// The open duration actually used: the backed-off duration shortened by a random share
    /// of up to `open_jitter` (so the cap holds and breakers spread out).
    pub(crate) fn jittered_open_duration(&self, reopens: u32) -> Duration {
        let d = self.backed_off_open_duration(reopens);
        if self.open_jitter <= 0.0 {
            return d;
        }
        let cut = self.open_jitter * fastrand::f64();
        d.mul_f64(1.0 - cut)
    }

    /// The effective minimum: never more than a count window holds.
    pub(crate) fn effective_minimum(&self) -> u64 {
        match self.window {
            SlidingWindow::Count(n) => u64::from(self.minimum_calls.min(n)),
            SlidingWindow::Time { .. } => u64::from(self.minimum_calls),
        }
    }
}

/// Builds a [`Policy`]; [`build`](PolicyBuilder::build) validates every field.
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// The breaker's name, used in events, traces and metric labels (default `"breaker"`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.policy.name = name.into();
        self
    }

    /// The sliding window (default: the last 100 calls).
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.policy.window = window;
        self
    }

    /// Calls the window must hold before a rate can open the breaker (default 20). Must not
    /// exceed a count window's size.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.policy.minimum_calls = n;
        self
    }

    /// Failure rate in percent, in (0, 100], at or above which the breaker opens (default 50).
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.policy.failure_rate_threshold = percent;
        self
    }

    /// Switches slow-call tracking on: calls taking at least `d` are slow, whatever their
    /// outcome (default: off).
    pub fn slow_call_duration(mut self, d: Duration) -> Self {
        self.policy.slow_call_duration = Some(d);
        self
    }

    /// Slow-call rate in percent, in (0, 100], at or above which the breaker opens
    /// (default 100, Resilience4j's). Only used with [`slow_call_duration`](Self::slow_call_duration).
    pub fn slow_call_rate_threshold(mut self, percent: f64) -> Self {
        self.policy.slow_call_rate_threshold = percent;
        self
    }

    /// Also open after `n` consecutive failures, whatever the window says (default: off).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.policy.consecutive_failures = Some(n);
        self
    }

    /// The first open duration (default 5 s).
    pub fn open_duration(mut self, d: Duration) -> Self {
        self.policy.open_duration = d;
        self
    }

    /// The cap on the backed-off open duration (default 60 s).
    pub fn max_open_duration(mut self, d: Duration) -> Self {
        self.policy.max_open_duration = d;
        self
    }

    /// The factor applied to the open duration on each consecutive re-open, at least 1
    /// (default 2; 1 disables the backoff).
    pub fn open_backoff(mut self, factor: f64) -> Self {
        self.policy.open_backoff = factor;
        self
    }

    /// The largest share, in [0, 1), by which an open duration is randomly shortened
    /// (default 0.2; 0 makes it exact).
    pub fn open_jitter(mut self, share: f64) -> Self {
        self.policy.open_jitter = share;
        self
    }

    /// Calls admitted in half-open; their verdict closes or re-opens the breaker (default 5,
    /// at most [`MAX_HALF_OPEN_CALLS`]).
    pub fn permitted_calls_in_half_open(mut self, n: u32) -> Self {
        self.policy.permitted_calls_in_half_open = n;
        self
    }

    /// After this long in half-open without a verdict the breaker re-opens (default 30 s).
    pub fn max_wait_in_half_open(mut self, d: Duration) -> Self {
        self.policy.max_wait_in_half_open = d;
        self
    }

    /// Validates and returns the policy.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad field: a threshold not in (0, 100], a window of
    /// 0 calls or 0 time or 0 buckets, a minimum of 0 or above a count window's size, 0
    /// half-open permits (or more than [`MAX_HALF_OPEN_CALLS`]), a zero duration, a backoff
    /// below 1 or a jitter outside [0, 1).
    pub fn build(self) -> Result<Policy, ConfigError> {
        let p = self.policy;
        let pct_ok = |x: f64| x.is_finite() && x > 0.0 && x <= 100.0;
        if !pct_ok(p.failure_rate_threshold) {
            return Err(ConfigError::new(
                "failure_rate_threshold",
                p.failure_rate_threshold,
                "must be a percentage in (0, 100]",
            ));
        }
        if !pct_ok(p.slow_call_rate_threshold) {
            return Err(ConfigError::new(
                "slow_call_rate_threshold",
                p.slow_call_rate_threshold,
                "must be a percentage in (0, 100]",
            ));
        }
        match p.window {
            SlidingWindow::Count(n) => {
                if n == 0 || n > MAX_COUNT_WINDOW {
                    return Err(ConfigError::new(
                        "sliding_window",
                        p.window,
                        "a count window must hold between 1 and 1048576 calls",
                    ));
                }
                if p.minimum_calls > n {
                    return Err(ConfigError::new(
                        "minimum_calls",
                        p.minimum_calls,
                        "must not exceed the count window's size",
                    ));
                }
            }
            SlidingWindow::Time { size, buckets } => {
                if buckets == 0 || buckets > MAX_BUCKETS {
                    return Err(ConfigError::new(
                        "sliding_window",
                        p.window,
                        "a time window needs between 1 and 1000 buckets",
                    ));
                }
                if size < Duration::from_millis(u64::from(buckets)) {
                    return Err(ConfigError::new(
                        "sliding_window",
                        p.window,
                        "each bucket of a time window must span at least 1 ms",
                    ));
                }
            }
        }
        if p.minimum_calls == 0 {
            return Err(ConfigError::new(
                "minimum_calls",
                p.minimum_calls,
                "must be at least 1",
            ));
        }
        if p.permitted_calls_in_half_open == 0
            || p.permitted_calls_in_half_open > MAX_HALF_OPEN_CALLS
        {
            return Err(ConfigError::new(
                "permitted_calls_in_half_open",
                p.permitted_calls_in_half_open,
                "must be between 1 and 1023",
            ));
        }
        if let Some(0) = p.consecutive_failures {
            return Err(ConfigError::new(
                "consecutive_failures",
                0,
                "must be at least 1",
            ));
        }
        if let Some(d) = p.slow_call_duration
            && d.is_zero()
        {
            return Err(ConfigError::new(
                "slow_call_duration",
                d,
                "must be longer than zero",
            ));
        }
        if p.open_duration < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "open_duration",
                p.open_duration,
                "must be at least 1 ms",
            ));
        }
        if p.max_open_duration < p.open_duration {
            return Err(ConfigError::new(
                "max_open_duration",
                p.max_open_duration,
                "must be at least open_duration",
            ));
        }
        if !(p.open_backoff.is_finite() && p.open_backoff >= 1.0) {
            return Err(ConfigError::new(
                "open_backoff",
                p.open_backoff,
                "must be a finite factor of at least 1",
            ));
        }
        if !(p.open_jitter.is_finite() && (0.0..1.0).contains(&p.open_jitter)) {
            return Err(ConfigError::new(
                "open_jitter",
                p.open_jitter,
                "must be a share in [0, 1)",
            ));
        }
        if p.max_wait_in_half_open < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "max_wait_in_half_open",
                p.max_wait_in_half_open,
                "must be at least 1 ms",
            ));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests;
