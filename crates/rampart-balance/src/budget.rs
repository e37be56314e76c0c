//! The retry budget shared by all requests of one balancer.
//!
//! Retries are allowed while the retries of the last `window` stay below
//! `min_per_second × window + ratio × requests of the window` (Finagle's `RetryBudget`,
//! also tower's `TpsBudget` and Envoy's retry budgets). A fleet that fails as a whole therefore
//! sees at most `ratio` extra load, not `attempts ×` the load.
//!
//! Depositing (one per request) is a single relaxed atomic add with no clock read; the window
//! bookkeeping happens only when a retry asks to withdraw.
//!
//! ```
//! use std::time::Duration;
//! use rampart_balance::RetryBudget;
//! let budget = RetryBudget::builder()
//!     .ratio(0.2)
//!     .min_per_second(5)
//!     .window(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//! assert_eq!(budget.ratio(), 0.2);
//! ```

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rampart_health::ConfigError;
use tokio::time::Instant;

/// Retry budget settings: `ratio` of recent requests plus `min_per_second`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    window: Duration,
}

impl Default for RetryBudget {
    /// 20 % of the requests of the last 10 s, plus 10 retries per second.
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

impl RetryBudget {
    /// A builder starting from the defaults.
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            budget: Self::default(),
        }
    }

    /// Share of recent requests that may be retried.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Retries allowed per second regardless of traffic.
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// How far back "recent" reaches.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// Builds a [`RetryBudget`].
#[derive(Debug, Clone)]
pub struct RetryBudgetBuilder {
    budget: RetryBudget,
}

impl RetryBudgetBuilder {
    /// Share of recent requests that may be retried, `0.0..=1000.0` (default 0.2).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.budget.ratio = ratio;
        self
    }

    /// Retries allowed per second regardless of traffic (default 10).
    pub fn min_per_second(mut self, n: u32) -> Self {
        self.budget.min_per_second = n;
        self
    }

    /// The window (default 10 s; 1 s to 60 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.budget.window = window;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        let b = self.budget;
        if !(0.0..=1000.0).contains(&b.ratio) || b.ratio.is_nan() {
            return Err(ConfigError::new(
                "ratio",
                b.ratio,
                "must be between 0.0 and 1000.0",
            ));
        }
        if b.window < Duration::from_secs(1) || b.window > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "window",
                b.window,
                "must be between 1 s and 60 s",
            ));
        }
        Ok(b)
    }
}

#[derive(Debug)]
struct Mark {
    at: Instant,
    requests: u64,
    retries: u64,
}

/// The live budget.
#[derive(Debug)]
pub(crate) struct Budget {
    config: RetryBudget,
    requests: AtomicU64,
    marks: Mutex<VecDeque<Mark>>,
}

impl Budget {
    pub(crate) fn new(config: RetryBudget) -> Self {
        Self {
            config,
            requests: AtomicU64::new(0),
            marks: Mutex::new(VecDeque::new()),
        }
    }

    /// One request went out.
    #[inline]
    pub(crate) fn deposit(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Asks for one retry; `true` when the budget allows it (and spends it).
    pub(crate) fn withdraw(&self) -> bool {
        let now = Instant::now();
        let total = self.requests.load(Ordering::Relaxed);
        let Ok(mut marks) = self.marks.lock() else {
            return false;
        };
        let window = self.config.window;
        // One mark per second at most.
        if marks
            .back()
            .is_none_or(|m| now.duration_since(m.at) >= Duration::from_secs(1))
        {
            marks.push_back(Mark {
                at: now,
                requests: total,
                retries: 0,
            });
        }
        // Keep marks[0] as the last mark at or before `now - window`.
        while marks.len() > 1 && marks[1].at + window <= now {
            marks.pop_front();
        }
        let Some(oldest) = marks.front() else {
            return false;
        };
        let span = now.duration_since(oldest.at).max(Duration::from_secs(1));
        let mut recent = (total - oldest.requests.min(total)) as f64;
        if span > window {
            // The oldest mark reaches further back than the window: scale to the window.
            recent *= window.as_secs_f64() / span.as_secs_f64();
        }
        let retries: u64 = marks
            .iter()
            .filter(|m| m.at + window > now)
            .map(|m| m.retries)
            .sum();
        let allowed = f64::from(self.config.min_per_second) * window.as_secs_f64()
            + self.config.ratio * recent;
        if (retries as f64) < allowed {
            if let Some(last) = marks.back_mut() {
                last.retries += 1;
            }
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn floor_then_ratio() {
        let b = Budget::new(
            RetryBudget::builder()
                .ratio(0.2)
                .min_per_second(1)
                .window(Duration::from_secs(2))
                .build()
                .unwrap(),
        );
        // No traffic: the floor of 1/s over a 2 s window allows 2.
        assert!(b.withdraw());
        assert!(b.withdraw());
        assert!(!b.withdraw());
        for _ in 0..100 {
            b.deposit();
        }
        // 100 requests → 20 more retries (22 total within the window).
        let mut granted = 0;
        while b.withdraw() {
            granted += 1;
        }
        assert_eq!(granted, 20);
        // After the window passes, the spent retries are forgotten.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.withdraw());
    }

    #[test]
    fn validation_names_the_field() {
        let e = RetryBudget::builder().ratio(-1.0).build().unwrap_err();
        assert_eq!(e.field(), "ratio");
        let e = RetryBudget::builder()
            .window(Duration::from_millis(10))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "window");
    }
}
