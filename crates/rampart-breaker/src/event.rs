//! What a breaker tells the world: [`BreakerEvent`]s.
//!
//! Every transition, rejection and slow call is
//!
//! - a `tracing` event (target `rampart_breaker`): transitions to open at `WARN`, other
//!   transitions at `INFO`, slow calls at `INFO`, rejections at `DEBUG`;
//! - a [`BreakerEvent`] on a `tokio::sync::broadcast` channel, for whoever called
//!   [`BreakerHandle::subscribe`](crate::BreakerHandle::subscribe) (a receiver that falls more
//!   than 256 events behind gets `RecvError::Lagged` and skips ahead);
//! - with the `metrics` feature, counters and a gauge through the `metrics` facade:
//!   `rampart_breaker_calls_total{breaker, outcome}` (outcome `success`, `failure`,
//!   `ignored`), `rampart_breaker_rejected_total{breaker}`,
//!   `rampart_breaker_slow_calls_total{breaker}`,
//!   `rampart_breaker_transitions_total{breaker, from, to}` and the gauge
//!   `rampart_breaker_state{breaker}` (0 closed, 1 open, 2 half-open, 3 forced open,
//!   4 disabled, 5 metrics-only). The call counters are registered when the breaker is built,
//!   so install the recorder first.
//!
//! ```
//! use rampart_breaker::{BreakerEvent, BreakerHandle, BreakerState, Policy};
//!
//! let breaker = BreakerHandle::new(Policy::default());
//! let mut events = breaker.subscribe();
//! breaker.force_open();
//! match events.try_recv().unwrap() {
//!     BreakerEvent::Transition { to, .. } => assert_eq!(to, BreakerState::ForcedOpen),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rampart_health::Outcome;
use tokio::sync::broadcast;

use crate::BreakerState;
use crate::sync::Ordering;

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TransitionReason {
    /// The window's failure rate (percent) reached the threshold.
    FailureRate(f64),
    /// The window's slow-call rate (percent) reached the threshold.
    SlowCallRate(f64),
    /// This many consecutive failures.
    ConsecutiveFailures(u32),
    /// The open duration ended; the next call was admitted as a trial.
    OpenElapsed,
    /// The half-open calls' verdict was good.
    HalfOpenPassed,
    /// The half-open calls' failure or slow-call rate reached the threshold.
    HalfOpenFailed,
    /// Half-open waited `max_wait_in_half_open` without a verdict.
    HalfOpenTimedOut,
    /// An operator override through the [`BreakerHandle`](crate::BreakerHandle).
    Override,
}

/// One thing that happened to a breaker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BreakerEvent {
    /// The breaker changed state.
    Transition {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The state it left.
        from: BreakerState,
        /// The state it entered.
        to: BreakerState,
        /// Why.
        reason: TransitionReason,
    },
    /// A call was rejected without reaching the inner service.
    Rejected {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The state that rejected it.
        state: BreakerState,
        /// When trying again makes sense, if known.
        retry_after: Option<Duration>,
    },
    /// A call took at least the slow-call duration.
    SlowCall {
        /// The breaker's name.
        breaker: Arc<str>,
        /// How long it took.
        duration: Duration,
        /// Its classified outcome.
        outcome: Outcome,
    },
}

const CAPACITY: usize = 256;

/// Fans events out to tracing, subscribers and metrics.
#[derive(Debug)]
pub(crate) struct Events {
    pub(crate) name: Arc<str>,
    tx: broadcast::Sender<BreakerEvent>,
    /// Sticky: set on the first subscription, so a breaker nobody listens to never takes the
    /// channel's lock.
    subscribed: AtomicBool,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

impl Events {
    pub(crate) fn new(name: Arc<str>) -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self {
            #[cfg(feature = "metrics")]
            metrics: Metrics::new(&name),
            name,
            tx,
            subscribed: AtomicBool::new(false),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<BreakerEvent> {
        self.subscribed.store(true, Ordering::Release);
        self.tx.subscribe()
    }

    fn send(&self, event: impl FnOnce() -> BreakerEvent) {
        if self.subscribed.load(Ordering::Acquire) {
            // An error only means nobody is listening right now.
            let _ = self.tx.send(event());
        }
    }

    pub(crate) fn transition(
        &self,
        from: BreakerState,
        to: BreakerState,
        reason: TransitionReason,
    ) {
        if to.is_open() {
            tracing::warn!(target: "rampart_breaker", breaker = %self.name, %from, %to, ?reason, "circuit breaker opened");
        } else {
            tracing::info!(target: "rampart_breaker", breaker = %self.name, %from, %to, ?reason, "circuit breaker changed state");
        }
        #[cfg(feature = "metrics")]
        self.metrics.transition(&self.name, from, to);
        self.send(|| BreakerEvent::Transition {
            breaker: self.name.clone(),
            from,
            to,
            reason,
        });
    }

    pub(crate) fn rejected(&self, state: BreakerState, retry_after: Option<Duration>) {
        tracing::debug!(target: "rampart_breaker", breaker = %self.name, %state, ?retry_after, "call rejected by circuit breaker");
        #[cfg(feature = "metrics")]
        self.metrics.rejected.increment(1);
        self.send(|| BreakerEvent::Rejected {
            breaker: self.name.clone(),
            state,
            retry_after,
        });
    }

    pub(crate) fn slow_call(&self, duration: Duration, outcome: Outcome) {
        tracing::info!(target: "rampart_breaker", breaker = %self.name, ?duration, ?outcome, "slow call");
        #[cfg(feature = "metrics")]
        self.metrics.slow.increment(1);
        self.send(|| BreakerEvent::SlowCall {
            breaker: self.name.clone(),
            duration,
            outcome,
        });
    }

    #[inline]
    pub(crate) fn call(&self, outcome: Outcome) {
        #[cfg(feature = "metrics")]
        match outcome {
            Outcome::Success => self.metrics.success.increment(1),
            Outcome::Failure => self.metrics.failure.increment(1),
            Outcome::Ignored => self.metrics.ignored.increment(1),
        }
        #[cfg(not(feature = "metrics"))]
        let _ = outcome;
    }
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Metrics {
    success: metrics::Counter,
    failure: metrics::Counter,
    ignored: metrics::Counter,
    rejected: metrics::Counter,
    slow: metrics::Counter,
    state: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl Metrics {
    fn new(name: &Arc<str>) -> Self {
        let b = name.to_string();
        let calls = |outcome: &'static str| metrics::counter!("rampart_breaker_calls_total", "breaker" => b.clone(), "outcome" => outcome);
        let state = metrics::gauge!("rampart_breaker_state", "breaker" => b.clone());
        state.set(0.0);
        Self {
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            rejected: metrics::counter!("rampart_breaker_rejected_total", "breaker" => b.clone()),
            slow: metrics::counter!("rampart_breaker_slow_calls_total", "breaker" => b),
            state,
        }
    }

    fn transition(&self, name: &Arc<str>, from: BreakerState, to: BreakerState) {
        metrics::counter!(
            "rampart_breaker_transitions_total",
            "breaker" => name.to_string(),
            "from" => from.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
        self.state.set(to.code() as f64);
    }
}
