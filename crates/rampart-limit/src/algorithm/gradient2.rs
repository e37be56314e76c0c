//! [`Gradient2`]: Netflix concurrency-limits' default algorithm.

use rampart_health::ConfigError;

use super::{Bounds, LimitAlgorithm, Sample, check_unit, to_limit, well_used};

/// The gradient algorithm of Netflix concurrency-limits (`Gradient2Limit`, described in the
/// project's README and its source).
///
/// It keeps two views of the round-trip time: the current window's average (*short*) and an
/// exponential moving average over [`long_window`](Gradient2Builder::long_window) windows
/// (*long*, the baseline). Their ratio is the gradient:
///
/// - `gradient = clamp(tolerance × long / short, 0.5, 1.0)`: 1.0 while latency is at or below
///   `tolerance` × the baseline (no queue), lower as a queue builds, never below 0.5 so one
///   outlier cannot halve the limit;
/// - `new = limit × gradient + queue_size`, then smoothed:
///   `limit = limit × (1 − smoothing) + new × smoothing`, clamped to `min..=max`.
///
/// The baseline cannot ratchet down forever, as a minimum would: it is an average that
/// follows a lasting change, and when it is more than twice the current RTT (latency came back
/// down after a long stretch of overload) it is cut by 5 % per window until it catches up.
/// While fewer than half the limit are in flight, the limit does not change (the caller, not
/// the backend, limits the load). A window with a dropped call counts with the smallest
/// gradient, 0.5 (an extension of ours: the original ignores drops).
///
/// Defaults (Netflix's): initial 20, min 20, max 200, smoothing 0.2, tolerance 1.5, long
/// window 600, queue size 4.
#[derive(Debug, Clone)]
pub struct Gradient2 {
    estimated: f64,
    bounds: Bounds,
    smoothing: f64,
    tolerance: f64,
    queue_size: f64,
    long: Ema,
}

/// Builds a [`Gradient2`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct Gradient2Builder {
    bounds: Bounds,
    smoothing: f64,
    tolerance: f64,
    long_window: usize,
    queue_size: usize,
}

impl Default for Gradient2Builder {
    fn default() -> Self {
        Self {
            bounds: Bounds::new(20, 20, 200),
            smoothing: 0.2,
            tolerance: 1.5,
            long_window: 600,
            queue_size: 4,
        }
    }
}

impl Gradient2Builder {
    bounds_setters!(20, 20, 200);

    /// How much of each new estimate enters the limit, in `(0, 1]` (default 0.2).
    pub fn smoothing(mut self, v: f64) -> Self {
        self.smoothing = v;
        self
    }
    /// How much slower than the baseline a window may be before it counts as queueing, at
    /// least 1.0 (default 1.5).
    pub fn rtt_tolerance(mut self, v: f64) -> Self {
        self.tolerance = v;
        self
    }
    /// Windows in the baseline's moving average, at least 1 (default 600).
    pub fn long_window(mut self, v: usize) -> Self {
        self.long_window = v;
        self
    }
    /// Calls allowed to queue beyond the estimate (default 4).
    pub fn queue_size(mut self, v: usize) -> Self {
        self.queue_size = v;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<Gradient2, ConfigError> {
        self.bounds.check()?;
        check_unit("smoothing", self.smoothing)?;
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return Err(ConfigError::new(
                "rtt_tolerance",
                self.tolerance,
                "must be a finite number of at least 1.0",
            ));
        }
        if self.long_window == 0 {
            return Err(ConfigError::new(
                "long_window",
                self.long_window,
                "must be at least 1",
            ));
        }
        Ok(Gradient2 {
            estimated: self.bounds.initial as f64,
            bounds: self.bounds,
            smoothing: self.smoothing,
            tolerance: self.tolerance,
            queue_size: self.queue_size as f64,
            long: Ema::new(self.long_window, 10),
        })
    }
}

impl Gradient2 {
    /// The settings, with Netflix's defaults.
    pub fn builder() -> Gradient2Builder {
        Gradient2Builder::default()
    }

    /// The baseline RTT (the long-term average) in seconds, `None` before the first sample.
    pub fn baseline_secs(&self) -> Option<f64> {
        (self.long.count > 0).then_some(self.long.value)
    }
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self {
            estimated: 20.0,
            bounds: Bounds::new(20, 20, 200),
            smoothing: 0.2,
            tolerance: 1.5,
            queue_size: 4.0,
            long: Ema::new(600, 10),
        }
    }
}

impl LimitAlgorithm for Gradient2 {
    fn name(&self) -> &'static str {
        "gradient2"
    }

    fn limit(&self) -> usize {
        to_limit(self.estimated)
    }

    fn update(&mut self, sample: &Sample) -> usize {
        let short = sample.rtt.as_secs_f64();
        let gradient = if short > 0.0 {
            let long = self.long.add(short);
            if long / short > 2.0 {
                // Latency came back down after a long overload: let the baseline catch up
                // faster than the average alone would.
                self.long.value *= 0.95;
            }
            if !well_used(sample, self.estimated) {
                // Application-limited: the samples say nothing about the limit.
                return self.limit();
            }
            if sample.dropped {
                0.5
            } else {
                (self.tolerance * long / short).clamp(0.5, 1.0)
            }
        } else if sample.dropped {
            0.5
        } else {
            return self.limit();
        };
        let new = self.estimated * gradient + self.queue_size;
        let new = self.estimated * (1.0 - self.smoothing) + new * self.smoothing;
        self.estimated = self.bounds.clamp(new);
        self.limit()
    }
}

/// Exponential moving average with a plain-average warm-up.
#[derive(Debug, Clone)]
struct Ema {
    value: f64,
    count: usize,
    warmup: usize,
    factor: f64,
}

impl Ema {
    fn new(window: usize, warmup: usize) -> Self {
        Self {
            value: 0.0,
            count: 0,
            warmup: warmup.min(window),
            factor: 2.0 / (window as f64 + 1.0),
        }
    }

    fn add(&mut self, x: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.value += (x - self.value) / self.count as f64;
        } else {
            self.count = self.count.saturating_add(1);
            self.value = self.value * (1.0 - self.factor) + x * self.factor;
        }
        self.value
    }
}
