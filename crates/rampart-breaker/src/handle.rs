//! The shared breaker state, [`BreakerHandle`] to read and steer it, and [`Permit`]s.
//!
//! A [`BreakerHandle`] is the breaker itself (an `Arc` of its state): the tower
//! [`CircuitBreaker`](crate::CircuitBreaker) holds one, and so can an operator endpoint, a
//! health report, or code that is not a tower service at all:
//!
//! ```
//! use rampart_breaker::{BreakerHandle, BreakerState, Policy};
//! use rampart_health::Outcome;
//!
//! let breaker = BreakerHandle::new(
//!     Policy::builder().sliding_window(rampart_breaker::SlidingWindow::count(10))
//!         .minimum_calls(5).build().unwrap(),
//! );
//! for _ in 0..5 {
//!     let permit = breaker.try_acquire().unwrap();
//!     // ... make the call ...
//!     permit.record(Outcome::Failure);
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! assert!(breaker.try_acquire().is_err());
//! breaker.reset();
//! assert_eq!(breaker.state(), BreakerState::Closed);
//! ```
//!
//! The state machine itself (admission, verdicts, transitions) lives in the `machine` module;
//! the handle drives it.

use std::fmt;
use std::time::Duration;

use rampart_health::Outcome;
use tokio::sync::broadcast;

use crate::BreakerOpen;
use crate::clock::Clock;
use crate::event::BreakerEvent;
use crate::machine::{Machine, PermitKind};
use crate::policy::Policy;
pub use crate::snapshot::BreakerSnapshot;
use crate::state::BreakerState;
use crate::sync::Arc;

/// A circuit breaker: its state, window and configuration. A cheap clone sharing the same
/// breaker.
///
/// Reads the state ([`state`](Self::state), [`snapshot`](Self::snapshot)), performs the
/// overrides ([`force_open`](Self::force_open), [`disable`](Self::disable),
/// [`metrics_only`](Self::metrics_only), [`reset`](Self::reset)), hands out events
/// ([`subscribe`](Self::subscribe)) and [`Permit`]s ([`try_acquire`](Self::try_acquire)).
#[derive(Clone)]
pub struct BreakerHandle {
    machine: Arc<Machine>,
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("name", &self.machine.policy.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl BreakerHandle {
    /// A new, closed breaker.
    pub fn new(policy: Policy) -> Self {
        Self::with_clock(policy, Clock::new())
    }

    /// A breaker whose clock is the given millisecond counter (loom models only).
    #[cfg(rampart_loom)]
    #[doc(hidden)]
    pub fn with_manual_clock(
        policy: Policy,
        now_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        Self::with_clock(policy, Clock::manual(now_ms))
    }

    fn with_clock(policy: Policy, clock: Clock) -> Self {
        Self {
            machine: Arc::new(Machine::new(policy, clock)),
        }
    }

    /// The configuration.
    pub fn policy(&self) -> &Policy {
        &self.machine.policy
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.machine.policy.name
    }

    /// The state the next call will see.
    ///
    /// Transitions driven by time happen lazily, on the next call, but this reports them
    /// already: an open breaker whose open duration has ended reads `HalfOpen` (the next call
    /// is a trial), and a half-open breaker that waited `max_wait_in_half_open` without a
    /// verdict reads `Open` (the next call re-opens it).
    /// [`snapshot`](Self::snapshot)`().recorded_state` is the state of the last transition.
    pub fn state(&self) -> BreakerState {
        self.machine.state()
    }

    /// Subscribes to this breaker's [`BreakerEvent`]s.
    pub fn subscribe(&self) -> broadcast::Receiver<BreakerEvent> {
        self.machine.events.subscribe()
    }

    /// Asks to make one call.
    ///
    /// `Ok` carries a [`Permit`]: make the call and [`record`](Permit::record) its outcome
    /// (dropping the permit instead returns it without a verdict). `Err` means the call must
    /// not be made.
    ///
    /// # Errors
    ///
    /// [`BreakerOpen`] when the breaker is open, forced open, or half-open with every trial
    /// permit taken.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        let (generation, kind) = self.machine.admit()?;
        Ok(self.permit(generation, kind))
    }

    #[inline]
    fn permit(&self, generation: u64, kind: PermitKind) -> Permit {
        let start = match (kind, self.machine.policy.slow_call_duration) {
            (PermitKind::Untracked, _) | (_, None) => None,
            (_, Some(_)) => Some(self.machine.clock.instant()),
        };
        Permit {
            handle: self.clone(),
            generation,
            kind,
            start,
            armed: true,
        }
    }

    /// Forces the breaker open: every call fails fast until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.machine.override_to(BreakerState::ForcedOpen);
    }

    /// Disables the breaker: every call passes and nothing is recorded, until
    /// [`reset`](Self::reset).
    pub fn disable(&self) {
        self.machine.override_to(BreakerState::Disabled);
    }

    /// Metrics-only mode: every call passes and is recorded (rates and events stay
    /// observable), but the breaker never opens. Entering it empties the window.
    pub fn metrics_only(&self) {
        self.machine.override_to(BreakerState::MetricsOnly);
    }

    /// Back to closed, with an empty window and the open-duration backoff reset.
    pub fn reset(&self) {
        self.machine.override_to(BreakerState::Closed);
    }

    /// The state the next call will see (as [`state`](Self::state)), the window's totals and
    /// rates with the minimum they need, the half-open progress, and the times left.
    ///
    /// Read lazily and reported truthfully: an open breaker past its open duration reads
    /// half-open awaiting a trial (`retry_after` `None`,
    /// [`awaiting_trial`](BreakerSnapshot::awaiting_trial)), never "open, next probe in 0 s".
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.machine.snapshot()
    }

    /// Whether the breaker turns calls away now, and for how long.
    pub(crate) fn rejecting(&self) -> crate::machine::Rejecting {
        self.machine.rejecting()
    }

    /// `true` when both handles are the same breaker.
    pub fn same_breaker(&self, other: &BreakerHandle) -> bool {
        std::ptr::eq(&*self.machine, &*other.machine)
    }
}

/// Permission to make one call, from [`BreakerHandle::try_acquire`].
///
/// [`record`](Self::record) the call's outcome; dropping the permit instead (a cancelled
/// call) returns it without a verdict, which matters in half-open where permits are few.
pub struct Permit {
    handle: BreakerHandle,
    generation: u64,
    kind: PermitKind,
    start: Option<tokio::time::Instant>,
    armed: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.handle.machine.policy.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// Records the call's outcome (and, with slow-call tracking, its duration since the
    /// permit was taken). [`Outcome::Ignored`] returns the permit without a verdict.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.armed = false;
        let elapsed = self.start.map(|start| start.elapsed());
        self.handle
            .machine
            .on_result(self.generation, self.kind, outcome, elapsed);
    }

    /// Records the outcome with a duration measured by the caller.
    pub fn record_with_duration(mut self, outcome: Outcome, elapsed: Duration) {
        self.armed = false;
        self.handle
            .machine
            .on_result(self.generation, self.kind, outcome, Some(elapsed));
    }

    /// `true` for a half-open trial permit.
    pub fn is_trial(&self) -> bool {
        self.kind == PermitKind::HalfOpen
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if self.armed && self.kind == PermitKind::HalfOpen {
            self.handle.machine.release(self.generation);
        }
    }
}
