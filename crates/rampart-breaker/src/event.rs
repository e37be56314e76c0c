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
//!   4 disabled, 5 metrics-only). Every series carries the breaker's name. The handles are
//!   taken from the recorder on the breaker's first call, so a recorder installed after the
//!   breaker is built but before its first call still sees everything; building the breaker
//!   with a recorder already installed also shows every series at zero at once. **Install the
//!   recorder before the first call**: a breaker whose first call went to no recorder keeps
//!   counting into nothing.
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
        self.metrics.transition(from, to);
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
        self.metrics.get(|| state).rejected.increment(1);
        self.send(|| BreakerEvent::Rejected {
            breaker: self.name.clone(),
            state,
            retry_after,
        });
    }

    pub(crate) fn slow_call(
        &self,
        duration: Duration,
        outcome: Outcome,
        current: impl FnOnce() -> BreakerState,
    ) {
        tracing::info!(target: "rampart_breaker", breaker = %self.name, ?duration, ?outcome, "slow call");
        #[cfg(feature = "metrics")]
        self.metrics.get(current).slow.increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = current;
        self.send(|| BreakerEvent::SlowCall {
            breaker: self.name.clone(),
            duration,
            outcome,
        });
    }

    /// Counts a call's outcome; `current` reads the breaker's state (only on the first call,
    /// for the state gauge).
    #[inline]
    pub(crate) fn call(&self, outcome: Outcome, current: impl FnOnce() -> BreakerState) {
        #[cfg(feature = "metrics")]
        {
            let m = self.metrics.get(current);
            match outcome {
                Outcome::Success => m.success.increment(1),
                Outcome::Failure => m.failure.increment(1),
                Outcome::Ignored => m.ignored.increment(1),
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (outcome, current);
    }
}

/// The metric series of one breaker.
///
/// Handles are resolved from the recorder on the breaker's first call (or first rejection,
/// slow call or transition), not when the breaker is built: a recorder installed after the
/// breaker was built but before traffic starts still receives every series. Building the
/// breaker also registers every series once, so that with a recorder already installed they
/// show up (at zero) before the first call.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Metrics {
    name: Arc<str>,
    handles: std::sync::OnceLock<Handles>,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Handles {
    success: metrics::Counter,
    failure: metrics::Counter,
    ignored: metrics::Counter,
    rejected: metrics::Counter,
    slow: metrics::Counter,
    state: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl Handles {
    fn register(name: &Arc<str>) -> Self {
        let calls = |outcome: &'static str| metrics::counter!("rampart_breaker_calls_total", "breaker" => name.clone(), "outcome" => outcome);
        Self {
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            rejected: metrics::counter!("rampart_breaker_rejected_total", "breaker" => name.clone()),
            slow: metrics::counter!("rampart_breaker_slow_calls_total", "breaker" => name.clone()),
            state: metrics::gauge!("rampart_breaker_state", "breaker" => name.clone()),
        }
    }
}

#[cfg(feature = "metrics")]
impl Metrics {
    fn new(name: &Arc<str>) -> Self {
        // Visible at once if a recorder is installed; the kept handles are resolved later.
        Handles::register(name).state.set(0.0);
        Self {
            name: name.clone(),
            handles: std::sync::OnceLock::new(),
        }
    }

    /// The handles, resolved from the recorder on first use (one load afterwards).
    #[inline]
    fn get(&self, state: impl FnOnce() -> BreakerState) -> &Handles {
        self.handles.get_or_init(|| {
            let h = Handles::register(&self.name);
            h.state.set(state().code() as f64);
            h
        })
    }

    fn transition(&self, from: BreakerState, to: BreakerState) {
        metrics::counter!(
            "rampart_breaker_transitions_total",
            "breaker" => self.name.clone(),
            "from" => from.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
        self.get(|| to).state.set(to.code() as f64);
    }
}
