//! Slow start (Envoy's): an endpoint that becomes routable again (recovered, un-ejected,
//! undrained, discovered into a live pool) ramps its weight from `min_weight` to full over a
//! window, `max(min_weight, (t / window)^(1 / aggression))`, so a cold replica is not handed
//! its full share at once. Endpoints of the initial set start at full weight.
//!
//! ```
//! use std::time::Duration;
//! use rampart_balance::{Balance, ServicePolicy, SlowStart};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) });
//! let balance = Balance::builder()
//!     .policy(ServicePolicy::new())
//!     .slow_start(SlowStart::new(Duration::from_secs(30)).aggression(2.0).min_weight(0.05))
//!     .endpoints([("a", svc)])
//!     .build()
//!     .unwrap();
//! # let _ = balance;
//! # }
//! ```

use std::time::Duration;

use rampart_health::ConfigError;

/// Slow-start settings (default: a 10 s window, aggression 1.0, from 10 % of the weight).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    pub(crate) window: Duration,
    pub(crate) aggression: f64,
    pub(crate) min_weight: f64,
}

impl Default for SlowStart {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl SlowStart {
    /// A ramp over `window` (aggression 1.0, from 10 % of the weight); a zero window turns
    /// slow start off.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            aggression: 1.0,
            min_weight: 0.1,
        }
    }

    /// No slow start: a returning endpoint gets its full weight at once.
    pub fn off() -> Self {
        Self::new(Duration::ZERO)
    }

    /// The aggression (default 1.0 = linear; larger ramps faster early). Must be positive.
    pub fn aggression(mut self, aggression: f64) -> Self {
        self.aggression = aggression;
        self
    }

    /// The starting share of the weight, in `(0, 1]` (default 0.1).
    pub fn min_weight(mut self, share: f64) -> Self {
        self.min_weight = share;
        self
    }

    /// `max(min_weight, (elapsed / window)^(1 / aggression))`.
    pub(crate) fn factor(&self, elapsed: Duration) -> f64 {
        let t = (elapsed.as_secs_f64() / self.window.as_secs_f64()).clamp(0.0, 1.0);
        t.powf(1.0 / self.aggression).max(self.min_weight)
    }

    /// `None` when off; an error naming the field and value when invalid.
    pub(crate) fn validated(self) -> Result<Option<Self>, ConfigError> {
        if self.window.is_zero() {
            return Ok(None);
        }
        if !(self.aggression > 0.0 && self.aggression.is_finite()) {
            return Err(ConfigError::new(
                "slow_start.aggression",
                self.aggression,
                "must be positive",
            ));
        }
        if !(self.min_weight > 0.0 && self.min_weight <= 1.0) {
            return Err(ConfigError::new(
                "slow_start.min_weight",
                self.min_weight,
                "must be in (0, 1]",
            ));
        }
        Ok(Some(self))
    }
}
