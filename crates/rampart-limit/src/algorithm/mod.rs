//! Limit algorithms: how the concurrency limit follows measured latency and drops.
//!
//! A [`Limiter`](crate::Limiter) aggregates the calls it admits into windows (at least
//! [`window_samples`](crate::LimiterBuilder::window_samples) calls and
//! [`min_window`](crate::LimiterBuilder::min_window), at most
//! [`max_window`](crate::LimiterBuilder::max_window)) and hands each closed window to its
//! algorithm as one [`Sample`]: the average round-trip time of the window's successful calls,
//! the largest number of calls in flight, and whether any call was dropped (classified as a
//! failure). The algorithm answers with the new limit.
//!
//! - [`Gradient2`]: the default. Compares a short-term RTT with a long-term exponential
//!   average and grows or shrinks the limit by their ratio, with room for a small queue
//!   (Netflix concurrency-limits' `Gradient2Limit`).
//! - [`Aimd`]: additive increase, multiplicative decrease on drops or on an RTT above a
//!   threshold (TCP Reno's congestion window).
//! - [`Vegas`]: estimates the queue from the ratio of the minimum (no-load) RTT to the current
//!   one (TCP Vegas), re-probing the minimum periodically.
//! - [`Fixed`]: a constant limit.
//!
//! Every algorithm is deterministic given its samples, so its behaviour is tested by feeding
//! samples directly:
//!
//! ```
//! use std::time::Duration;
//! use rampart_limit::algorithm::{Gradient2, LimitAlgorithm, Sample};
//!
//! let mut g = Gradient2::builder().initial_limit(50).min_limit(5).max_limit(500).build()?;
//! // Steady 10 ms at full use: the baseline settles.
//! for _ in 0..20 {
//!     g.update(&Sample::new(Duration::from_millis(10), 50, false));
//! }
//! let before = g.limit();
//! // Latency climbs to 40 ms: a queue is forming, the limit falls.
//! for _ in 0..10 {
//!     g.update(&Sample::new(Duration::from_millis(40), 50, false));
//! }
//! assert!(g.limit() < before);
//! # Ok::<(), rampart_health::ConfigError>(())
//! ```

/// The `initial_limit`, `min_limit` and `max_limit` setters of an adaptive algorithm's
/// builder (whose `bounds` field is a [`Bounds`]), documented with the defaults given.
macro_rules! bounds_setters {
    ($initial:literal, $min:literal, $max:literal) => {
        #[doc = concat!("The limit before any sample (default ", $initial, ").")]
        pub fn initial_limit(mut self, v: usize) -> Self {
            self.bounds.initial = v;
            self
        }
        #[doc = concat!("The limit never falls below this (default ", $min, ").")]
        pub fn min_limit(mut self, v: usize) -> Self {
            self.bounds.min = v;
            self
        }
        #[doc = concat!("The limit never rises above this (default ", $max, ").")]
        pub fn max_limit(mut self, v: usize) -> Self {
            self.bounds.max = v;
            self
        }
    };
}

mod aimd;
mod gradient2;
mod vegas;

use std::fmt;
use std::time::Duration;

pub use aimd::{Aimd, AimdBuilder};
pub use gradient2::{Gradient2, Gradient2Builder};
use rampart_health::ConfigError;
pub use vegas::{Vegas, VegasBuilder};

/// One closed window of measurements, as a [`LimitAlgorithm`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// Average round-trip time of the window's successful calls (zero when every call of the
    /// window was dropped).
    pub rtt: Duration,
    /// Shortest round-trip time in the window (zero when every call was dropped).
    pub min_rtt: Duration,
    /// The most calls in flight at once during the window.
    pub in_flight: usize,
    /// Whether any call of the window was dropped (its result classified as a failure).
    pub dropped: bool,
}

impl Sample {
    /// A sample with `rtt` as both average and minimum.
    pub fn new(rtt: Duration, in_flight: usize, dropped: bool) -> Self {
        Self {
            rtt,
            min_rtt: rtt,
            in_flight,
            dropped,
        }
    }
}

/// A concurrency-limit algorithm: turns windows of measurements into a limit.
///
/// Called once per closed window under the limiter's update lock, never on the per-request
/// path, so an implementation may be as elaborate as it likes.
pub trait LimitAlgorithm: fmt::Debug + Send + 'static {
    /// A short name for snapshots and logs (`"gradient2"`, `"aimd"`, …).
    fn name(&self) -> &'static str;

    /// The current limit (before any sample: the initial limit).
    fn limit(&self) -> usize;

    /// Takes one window's sample and returns the new limit.
    fn update(&mut self, sample: &Sample) -> usize;
}

impl LimitAlgorithm for Box<dyn LimitAlgorithm> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn limit(&self) -> usize {
        (**self).limit()
    }
    fn update(&mut self, sample: &Sample) -> usize {
        (**self).update(sample)
    }
}

/// A constant limit: admission control without adaptation.
///
/// ```
/// use std::time::Duration;
/// use rampart_limit::algorithm::{Fixed, LimitAlgorithm, Sample};
/// let mut f = Fixed::new(8)?;
/// assert_eq!(f.update(&Sample::new(Duration::from_secs(9), 8, true)), 8);
/// # Ok::<(), rampart_health::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    limit: usize,
}

impl Fixed {
    /// A limit of `limit` calls in flight (at least 1).
    pub fn new(limit: usize) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::new("limit", limit, "must be at least 1"));
        }
        Ok(Self { limit })
    }
}

impl LimitAlgorithm for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn limit(&self) -> usize {
        self.limit
    }
    fn update(&mut self, _sample: &Sample) -> usize {
        self.limit
    }
}

/// Checks the min/initial/max triple every adaptive algorithm shares.
/// An adaptive limit's starting point and range, as its builder sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) initial: usize,
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl Bounds {
    pub(crate) const fn new(initial: usize, min: usize, max: usize) -> Self {
        Self { initial, min, max }
    }

    /// Validates the three (the field named in the error is the one at fault).
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        check_bounds(self.min, self.initial, self.max)
    }

    /// `v` within `min..=max`.
    #[inline]
    pub(crate) fn clamp(&self, v: f64) -> f64 {
        v.clamp(self.min as f64, self.max as f64)
    }
}

/// Whether a window says anything about the limit: a call was dropped, or at least half the
/// limit was in use. A window that used less was application-limited (too little traffic to
/// press on the limit), so its latency cannot justify a higher limit (Netflix
/// concurrency-limits ignores such windows as well).
#[inline]
pub(crate) fn well_used(sample: &Sample, limit: f64) -> bool {
    sample.dropped || sample.in_flight as f64 * 2.0 >= limit
}

pub(crate) fn check_bounds(min: usize, initial: usize, max: usize) -> Result<(), ConfigError> {
    if min == 0 {
        return Err(ConfigError::new("min_limit", min, "must be at least 1"));
    }
    if max < min {
        return Err(ConfigError::new(
            "max_limit",
            max,
            "must be at least `min_limit`",
        ));
    }
    if initial < min || initial > max {
        return Err(ConfigError::new(
            "initial_limit",
            initial,
            "must lie within `min_limit..=max_limit`",
        ));
    }
    Ok(())
}

/// Checks a ratio that must lie in `(0, 1]`.
pub(crate) fn check_unit(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if !(v > 0.0 && v <= 1.0) {
        return Err(ConfigError::new(field, v, "must lie in (0, 1]"));
    }
    Ok(())
}

/// Rounds an `f64` limit to the `usize` the limiter enforces (never below 1).
pub(crate) fn to_limit(v: f64) -> usize {
    if v.is_finite() && v >= 1.0 {
        v as usize
    } else {
        1
    }
}
