//! Hedged requests: after a delay, a second attempt on another endpoint; the first answer
//! wins and the other attempt is dropped.
//!
//! Hedging (Dean and Barroso, *The Tail at Scale*, 2013) cuts the latency tail that one slow
//! endpoint adds: a request still unanswered after the delay is sent once more, to an endpoint
//! chosen by the balancer's picker among the others (P2C excluding the first). The first
//! response wins; the slower attempt's future is dropped, which makes hyper close that
//! connection or, when the response had already arrived, return it to the pool: nothing
//! half-read stays pooled. The loser's time so far is fed to its endpoint's peak EWMA, so a
//! slow endpoint also loses the next comparisons. A hedge that answers with a response the
//! policy would retry (a 503, say) does not win: the first attempt is awaited.
//!
//! Only requests the policy calls hedgeable are hedged ([`HttpPolicy`](crate::HttpPolicy):
//! idempotent methods and requests with an `Idempotency-Key`, and only when the body can be
//! replayed). Hedges and retries spend from one budget, the balancer's
//! [`RetryBudget`](crate::RetryBudget) (Finagle's `maxExtraLoad`): a slow or failing fleet
//! never receives more than `ratio` extra requests plus `min_per_second`, so hedging cannot
//! double the load during an outage. Hedges never start past the request's deadline.
//!
//! The delay is fixed, or a percentile of the latencies this balancer observed recently
//! (an HDR histogram of the last `window`, in two halves: the older half is forgotten every
//! `window / 2`), recomputed once a second by the maintenance task and clamped to
//! `[floor, cap]`; the cap applies until there are samples.
//!
//! ```
//! use std::time::Duration;
//! use rampart_balance::Hedge;
//! let fixed = Hedge::fixed(Duration::from_millis(50));
//! let p95 = Hedge::percentile(0.95)
//!     .floor(Duration::from_millis(5))
//!     .cap(Duration::from_millis(500))
//!     .window(Duration::from_secs(60));
//! assert_ne!(fixed, p95);
//! ```
//!
//! Off by default ([`BalanceBuilder::hedge`](crate::BalanceBuilder::hedge)).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rampart_health::ConfigError;
use tokio::time::Instant;

/// When a hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hedge {
    delay: Delay,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Delay {
    Fixed(Duration),
    Percentile {
        quantile: f64,
        floor: Duration,
        cap: Duration,
        window: Duration,
    },
}

impl Hedge {
    /// A hedge after a fixed `delay` (at least 1 ms).
    pub fn fixed(delay: Duration) -> Self {
        Self {
            delay: Delay::Fixed(delay.max(Duration::from_millis(1))),
        }
    }

    /// A hedge after the `quantile` (e.g. `0.95`) of the latencies observed over the last
    /// minute, between 1 ms and 1 s unless [`floor`](Self::floor) and [`cap`](Self::cap) say
    /// otherwise.
    pub fn percentile(quantile: f64) -> Self {
        Self {
            delay: Delay::Percentile {
                quantile,
                floor: Duration::from_millis(1),
                cap: Duration::from_secs(1),
                window: Duration::from_secs(60),
            },
        }
    }

    /// The shortest percentile delay (no effect on a fixed delay).
    pub fn floor(mut self, floor: Duration) -> Self {
        if let Delay::Percentile { floor: f, .. } = &mut self.delay {
            *f = floor;
        }
        self
    }

    /// The longest percentile delay, also used until latencies have been observed (no effect
    /// on a fixed delay).
    pub fn cap(mut self, cap: Duration) -> Self {
        if let Delay::Percentile { cap: c, .. } = &mut self.delay {
            *c = cap;
        }
        self
    }

    /// How far back the observed latencies reach (default 60 s; 2 s to 1 h; no effect on a
    /// fixed delay).
    pub fn window(mut self, window: Duration) -> Self {
        if let Delay::Percentile { window: w, .. } = &mut self.delay {
            *w = window;
        }
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Delay::Percentile {
            quantile,
            floor,
            cap,
            window,
        } = self.delay
        {
            if !(quantile > 0.0 && quantile < 1.0) {
                return Err(ConfigError::new(
                    "hedge_quantile",
                    quantile,
                    "must be between 0 and 1 (exclusive)",
                ));
            }
            if floor.is_zero() || floor > cap || cap > Duration::from_secs(3600) {
                return Err(ConfigError::new(
                    "hedge_floor",
                    (floor, cap),
                    "floor must be positive and at most the cap (at most 1 h)",
                ));
            }
            if window < Duration::from_secs(2) || window > Duration::from_secs(3600) {
                return Err(ConfigError::new(
                    "hedge_window",
                    window,
                    "must be between 2 s and 1 h",
                ));
            }
        }
        Ok(())
    }
}

type Histogram = hdrhistogram::Histogram<u64>;

/// The latencies of the last window, in two halves.
struct Halves {
    current: Histogram,
    previous: Histogram,
    rotated: Instant,
    computed: Instant,
}

/// The live hedge delay of one balancer.
pub(crate) struct HedgeState {
    config: Hedge,
    /// The delay in nanoseconds (the fixed one, or the last computed percentile).
    delay_ns: AtomicU64,
    halves: Option<Mutex<Halves>>,
}

impl std::fmt::Debug for HedgeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HedgeState")
            .field("config", &self.config)
            .field("delay_ns", &self.delay_ns)
            .finish_non_exhaustive()
    }
}

/// Latencies are recorded in microseconds, 1 µs to 1 h, 2 significant digits.
fn histogram() -> Option<Histogram> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).ok()
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl HedgeState {
    pub(crate) fn new(config: Hedge) -> Self {
        let (initial, halves) = match config.delay {
            Delay::Fixed(d) => (d, None),
            Delay::Percentile { cap, .. } => {
                let now = Instant::now();
                let halves = match (histogram(), histogram()) {
                    (Some(current), Some(previous)) => Some(Mutex::new(Halves {
                        current,
                        previous,
                        rotated: now,
                        computed: now,
                    })),
                    _ => None,
                };
                (cap, halves)
            }
        };
        Self {
            config,
            delay_ns: AtomicU64::new(nanos(initial)),
            halves,
        }
    }

    /// The delay before a hedge.
    #[inline]
    pub(crate) fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_ns.load(Ordering::Relaxed))
    }

    /// Whether latencies are wanted (percentile mode).
    #[inline]
    pub(crate) fn observes(&self) -> bool {
        self.halves.is_some()
    }

    /// One observed attempt latency. Skipped when another thread is recording (a sample
    /// lost under contention does not move a percentile).
    pub(crate) fn observe(&self, rtt_ns: f64) {
        let Some(halves) = &self.halves else {
            return;
        };
        if let Ok(mut h) = halves.try_lock() {
            let micros = (rtt_ns / 1000.0).clamp(1.0, 3_600_000_000.0) as u64;
            h.current.saturating_record(micros);
        }
    }

    /// Maintenance: forgets the older half every `window / 2` and recomputes the percentile
    /// once a second.
    pub(crate) fn maintain(&self, now: Instant) {
        let (
            Some(halves),
            Delay::Percentile {
                quantile,
                floor,
                cap,
                window,
            },
        ) = (&self.halves, self.config.delay)
        else {
            return;
        };
        let Ok(mut h) = halves.lock() else {
            return;
        };
        if now.duration_since(h.rotated) >= window / 2 {
            let h = &mut *h;
            std::mem::swap(&mut h.current, &mut h.previous);
            h.current.reset();
            h.rotated = now;
        }
        if now.duration_since(h.computed) < Duration::from_secs(1) {
            return;
        }
        h.computed = now;
        let count = h.current.len() + h.previous.len();
        let delay = if count == 0 {
            cap
        } else {
            // The quantile of both halves together: merge counts into the older half's copy.
            let mut both = h.previous.clone();
            if both.add(&h.current).is_err() {
                return;
            }
            Duration::from_micros(both.value_at_quantile(quantile)).clamp(floor, cap)
        };
        let before = self.delay_ns.swap(nanos(delay), Ordering::Relaxed);
        if before != nanos(delay) {
            tracing::trace!(delay_us = delay.as_micros() as u64, "hedge delay updated");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_percentile_delay_follows_recent_latencies_within_floor_and_cap() {
        let s = HedgeState::new(
            Hedge::percentile(0.95)
                .floor(Duration::from_millis(2))
                .cap(Duration::from_millis(300))
                .window(Duration::from_secs(10)),
        );
        // No samples yet: the cap.
        assert_eq!(s.delay(), Duration::from_millis(300));
        // 100 samples: 95 at 10 ms, 5 at 200 ms → p95 ≈ 10 ms.
        for i in 0..100 {
            let ms = if i < 95 { 10.0 } else { 200.0 };
            s.observe(ms * 1e6);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        s.maintain(Instant::now());
        let d = s.delay();
        assert!(
            d >= Duration::from_millis(9) && d <= Duration::from_millis(11),
            "{d:?}"
        );
        // Faster than the floor: the floor.
        let fast = HedgeState::new(Hedge::percentile(0.5).floor(Duration::from_millis(5)));
        for _ in 0..10 {
            fast.observe(100_000.0);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        fast.maintain(Instant::now());
        assert_eq!(fast.delay(), Duration::from_millis(5));
        // The old samples decay: after a full window of 1 s latencies, p95 is capped at 300 ms.
        for _ in 0..12 {
            for _ in 0..100 {
                s.observe(1e9);
            }
            tokio::time::advance(Duration::from_secs(1)).await;
            s.maintain(Instant::now());
        }
        assert_eq!(s.delay(), Duration::from_millis(300));
        // And once the slow period is forgotten, the delay comes back down.
        for _ in 0..12 {
            for _ in 0..100 {
                s.observe(20e6);
            }
            tokio::time::advance(Duration::from_secs(1)).await;
            s.maintain(Instant::now());
        }
        let d = s.delay();
        assert!(
            d >= Duration::from_millis(19) && d <= Duration::from_millis(21),
            "{d:?}"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let e = Hedge::percentile(1.5).validate().unwrap_err();
        assert_eq!(e.field(), "hedge_quantile");
        let e = Hedge::percentile(0.9)
            .floor(Duration::from_secs(2))
            .cap(Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "hedge_floor");
        let e = Hedge::percentile(0.9)
            .window(Duration::from_millis(10))
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "hedge_window");
        assert!(Hedge::fixed(Duration::from_millis(3)).validate().is_ok());
    }
}
