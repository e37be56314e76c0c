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
//! # The state machine
//!
//! Resilience4j's (`CircuitBreakerStateMachine`), on one packed atomic word (see the `state`
//! module): every transition is one compare-and-swap, so exactly one thread performs it and
//! emits its event. The closed state with a count-based window and no slow-call tracking takes
//! no lock, allocates nothing and reads no clock: one load to admit; to record, one load of the
//! state and then, while the window holds only fast successes, three loads and no write, else
//! one `fetch_add` and one load (a swap only when the slot changes).
//!
//! - Closed → Open: with at least `minimum_calls` in the window, the failure rate or the
//!   slow-call rate is at or above its threshold, or `consecutive_failures` in a row.
//! - Open → HalfOpen: lazily, by the first call after the open duration (which backs off
//!   exponentially with jitter on consecutive re-opens, capped; a close resets it).
//! - HalfOpen admits exactly `permitted_calls_in_half_open`; when that many have a verdict the
//!   same thresholds over them close or re-open the breaker. Ignored outcomes and dropped
//!   calls return their permit without a verdict; after `max_wait_in_half_open` without a
//!   verdict the next call re-opens it.

use std::fmt;
use std::time::Duration;

use rampart_health::Outcome;
use tokio::sync::broadcast;

use crate::BreakerOpen;
use crate::clock::{Clock, duration_ms_ceil};
use crate::event::{BreakerEvent, Events, TransitionReason};
use crate::policy::{Policy, SlidingWindow};
use crate::state::{BreakerState, Word, tag, untag};
use crate::sync::{Arc, AtomicU32, AtomicU64, Ordering, Padded};
use crate::window::{CountWindow, Counts, TimeWindow, Window};

pub(crate) struct Shared {
    state: Padded<AtomicU64>,
    /// Open: when the open duration ends; half-open: when it times out. Tagged with the
    /// generation it belongs to, published right after the transition.
    deadline: AtomicU64,
    /// When the current state was entered (tagged).
    entered: AtomicU64,
    reopens: AtomicU32,
    consecutive: Padded<AtomicU32>,
    window: Window,
    policy: Policy,
    clock: Clock,
    events: Events,
    minimum: u64,
    permits: u64,
}

/// A circuit breaker: its state, window and configuration. A cheap clone sharing the same
/// breaker.
///
/// Reads the state ([`state`](Self::state), [`snapshot`](Self::snapshot)), performs the
/// overrides ([`force_open`](Self::force_open), [`disable`](Self::disable),
/// [`metrics_only`](Self::metrics_only), [`reset`](Self::reset)), hands out events
/// ([`subscribe`](Self::subscribe)) and [`Permit`]s ([`try_acquire`](Self::try_acquire)).
#[derive(Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("name", &self.shared.policy.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// A point-in-time view of a breaker, from [`BreakerHandle::snapshot`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The state the next call will see: `HalfOpen` once an open breaker's open duration has
    /// ended (the next call is a trial), `Open` once a half-open breaker waited
    /// `max_wait_in_half_open` without a verdict (the next call re-opens it).
    pub state: BreakerState,
    /// The state entered by the last transition. Time-driven transitions happen on the next
    /// call, so this can lag behind [`state`](Self::state) while no calls come.
    pub recorded_state: BreakerState,
    /// Calls in the sliding window (the window is emptied when the breaker opens).
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// The calls the window must hold before its rates can open the breaker (the policy's
    /// `minimum_calls`, capped by a count window's size). See
    /// [`below_minimum`](Self::below_minimum).
    pub minimum_calls: u64,
    /// `failures / calls` in percent; `None` while the window holds fewer than
    /// `minimum_calls` (the rate cannot open the breaker yet).
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls` in percent; `None` while below `minimum_calls`.
    pub slow_call_rate: Option<f64>,
    /// Consecutive failures counted in the closed state (only with `consecutive_failures`).
    pub consecutive_failures: u32,
    /// Half-open: trial calls admitted and not yet judged.
    pub half_open_in_flight: u32,
    /// Half-open: trial calls that succeeded so far.
    pub half_open_successes: u32,
    /// Half-open: trial calls that failed so far.
    pub half_open_failures: u32,
    /// The trial calls a half-open period admits (`permitted_calls_in_half_open`).
    pub half_open_permits: u32,
    /// Half-open: the time left for the trials' verdict before the next call re-opens the
    /// breaker (`max_wait_in_half_open`).
    pub half_open_time_left: Option<Duration>,
    /// Open (by its rates, not forced): the time left until the next call is let through as a
    /// trial. `None` in every other state, including a half-open breaker that timed out (its
    /// next call re-opens it and starts the open duration).
    pub retry_after: Option<Duration>,
    /// Consecutive re-opens (the exponent of the open-duration backoff).
    pub reopens: u32,
}

impl BreakerSnapshot {
    /// `true` while the window holds fewer than [`minimum_calls`](Self::minimum_calls): however
    /// many of them failed, the rates cannot open the breaker yet (consecutive failures still
    /// can, when configured).
    pub fn below_minimum(&self) -> bool {
        self.calls < self.minimum_calls
    }

    /// `true` when the open duration has ended and no call has come since: the next call is
    /// let through as a trial.
    pub fn awaiting_trial(&self) -> bool {
        self.state == BreakerState::HalfOpen && self.recorded_state == BreakerState::Open
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
        let window = match policy.window {
            SlidingWindow::Count(n) => Window::Count(CountWindow::new(n)),
            SlidingWindow::Time { size, buckets } => {
                Window::Time(TimeWindow::new(duration_ms_ceil(size), buckets))
            }
        };
        let shared = Shared {
            state: Padded(AtomicU64::new(Word::fresh(BreakerState::Closed, 0).0)),
            deadline: AtomicU64::new(tag(u64::MAX, 0)),
            entered: AtomicU64::new(tag(0, 0)),
            reopens: AtomicU32::new(0),
            consecutive: Padded(AtomicU32::new(0)),
            window,
            minimum: policy.effective_minimum(),
            permits: u64::from(policy.permitted_calls_in_half_open),
            events: Events::new(policy.name.clone()),
            policy,
            clock,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The configuration.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.policy.name
    }

    /// The state the next call will see.
    ///
    /// Transitions driven by time happen lazily, on the next call, but this reports them
    /// already: an open breaker whose open duration has ended reads `HalfOpen` (the next call
    /// is a trial), and a half-open breaker that waited `max_wait_in_half_open` without a
    /// verdict reads `Open` (the next call re-opens it).
    /// [`snapshot`](Self::snapshot)`().recorded_state` is the state of the last transition.
    pub fn state(&self) -> BreakerState {
        let w = Word(self.shared.state.load(Ordering::Acquire));
        match w.state() {
            BreakerState::Open | BreakerState::HalfOpen => {
                self.effective(w, self.shared.clock.now_ms()).0
            }
            s => s,
        }
    }

    /// The state the next call at `now` will see, from the state word `w`, and the time left
    /// until the current period's deadline (open: the end of the open duration; half-open:
    /// the end of `max_wait_in_half_open`) while it has not passed.
    fn effective(&self, w: Word, now: u64) -> (BreakerState, Option<Duration>) {
        let s = &*self.shared;
        let state = w.state();
        if !matches!(state, BreakerState::Open | BreakerState::HalfOpen) {
            return (state, None);
        }
        let (generation, until) = untag(s.deadline.load(Ordering::Acquire));
        if generation != w.generation() {
            // The transition is this instant; its deadline is being published.
            let full = match state {
                BreakerState::Open => s.policy.open_duration,
                _ => s.policy.max_wait_in_half_open,
            };
            return (state, Some(full));
        }
        if now < until {
            return (state, Some(Duration::from_millis(until - now)));
        }
        let next = match state {
            BreakerState::Open => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        };
        (next, None)
    }

    /// Subscribes to this breaker's [`BreakerEvent`]s.
    pub fn subscribe(&self) -> broadcast::Receiver<BreakerEvent> {
        self.shared.events.subscribe()
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
        let w = Word(self.shared.state.load(Ordering::Acquire));
        match w.state() {
            BreakerState::Closed | BreakerState::MetricsOnly => {
                Ok(self.permit(w.generation(), PermitKind::Window))
            }
            BreakerState::Disabled => Ok(self.permit(w.generation(), PermitKind::Untracked)),
            _ => self.acquire_slow(w),
        }
    }

    #[inline]
    fn permit(&self, generation: u64, kind: PermitKind) -> Permit {
        let start = match (kind, self.shared.policy.slow_call_duration) {
            (PermitKind::Untracked, _) | (_, None) => None,
            (_, Some(_)) => Some(self.shared.clock.instant()),
        };
        Permit {
            handle: self.clone(),
            generation,
            kind,
            start,
            armed: true,
        }
    }

    #[cold]
    fn acquire_slow(&self, mut w: Word) -> Result<Permit, BreakerOpen> {
        let s = &*self.shared;
        let now = s.clock.now_ms();
        loop {
            match w.state() {
                BreakerState::Closed | BreakerState::MetricsOnly => {
                    return Ok(self.permit(w.generation(), PermitKind::Window));
                }
                BreakerState::Disabled => {
                    return Ok(self.permit(w.generation(), PermitKind::Untracked));
                }
                BreakerState::ForcedOpen => return Err(self.reject(BreakerState::ForcedOpen, None)),
                BreakerState::Open => {
                    let (generation, until) = untag(s.deadline.load(Ordering::Acquire));
                    if generation != w.generation() {
                        // Opened this instant; its deadline is being published.
                        let d = s.policy.open_duration;
                        return Err(self.reject(BreakerState::Open, Some(d)));
                    }
                    if now < until {
                        let left = Duration::from_millis(until - now);
                        return Err(self.reject(BreakerState::Open, Some(left)));
                    }
                    // The open duration is over: this call is the first trial.
                    let next = w.next(BreakerState::HalfOpen).with_admitted(1);
                    match self.cas(w, next) {
                        Ok(()) => {
                            self.entered(w, next, TransitionReason::OpenElapsed, now);
                            return Ok(self.permit(next.generation(), PermitKind::HalfOpen));
                        }
                        Err(current) => w = current,
                    }
                }
                BreakerState::HalfOpen => {
                    let (generation, until) = untag(s.deadline.load(Ordering::Acquire));
                    if generation == w.generation() && now >= until {
                        // No verdict within max_wait_in_half_open: re-open.
                        let next = w.next(BreakerState::Open);
                        match self.cas(w, next) {
                            Ok(()) => {
                                let d =
                                    self.entered(w, next, TransitionReason::HalfOpenTimedOut, now);
                                return Err(self.reject(BreakerState::Open, d));
                            }
                            Err(current) => {
                                w = current;
                                continue;
                            }
                        }
                    }
                    if w.admitted() >= s.permits {
                        return Err(self.reject(BreakerState::HalfOpen, None));
                    }
                    let next = w.with_admitted(w.admitted() + 1);
                    match self.cas(w, next) {
                        Ok(()) => return Ok(self.permit(w.generation(), PermitKind::HalfOpen)),
                        Err(current) => w = current,
                    }
                }
            }
        }
    }

    fn reject(&self, state: BreakerState, retry_after: Option<Duration>) -> BreakerOpen {
        self.shared.events.rejected(state, retry_after);
        BreakerOpen::new(self.shared.policy.name.clone(), state, retry_after)
    }

    fn cas(&self, from: Word, to: Word) -> Result<(), Word> {
        self.shared
            .state
            .compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Word)
    }

    /// The winner of a transition finishes it: publishes the new state's deadline, resets what
    /// the new state starts without, and tells the world. Returns the open duration when the
    /// new state is `Open`.
    fn entered(
        &self,
        from: Word,
        to: Word,
        reason: TransitionReason,
        now: u64,
    ) -> Option<Duration> {
        let s = &*self.shared;
        let generation = to.generation();
        s.entered.store(tag(generation, now), Ordering::Release);
        let mut open_for = None;
        match to.state() {
            BreakerState::Open => {
                let reopens = if from.state() == BreakerState::HalfOpen {
                    s.reopens.fetch_add(1, Ordering::AcqRel).saturating_add(1)
                } else {
                    s.reopens.load(Ordering::Acquire)
                };
                let d = s.policy.jittered_open_duration(reopens);
                let until = now.saturating_add(duration_ms_ceil(d));
                s.deadline.store(tag(generation, until), Ordering::Release);
                open_for = Some(Duration::from_millis(until - now));
                if matches!(
                    from.state(),
                    BreakerState::Closed | BreakerState::MetricsOnly
                ) {
                    s.window.clear();
                }
                s.consecutive.store(0, Ordering::Release);
            }
            BreakerState::HalfOpen => {
                let until = now.saturating_add(duration_ms_ceil(s.policy.max_wait_in_half_open));
                s.deadline.store(tag(generation, until), Ordering::Release);
            }
            BreakerState::Closed => {
                if from.state() == BreakerState::HalfOpen {
                    s.reopens.store(0, Ordering::Release);
                    // Normally empty already (emptied when it opened); this drops records
                    // that raced the trip from the previous closed period.
                    s.window.clear();
                }
                s.consecutive.store(0, Ordering::Release);
            }
            BreakerState::MetricsOnly => {
                s.window.clear();
                s.consecutive.store(0, Ordering::Release);
            }
            BreakerState::ForcedOpen | BreakerState::Disabled => {}
        }
        s.events.transition(from.state(), to.state(), reason);
        open_for
    }

    /// Records a permit's verdict.
    fn on_result(
        &self,
        generation: u64,
        kind: PermitKind,
        outcome: Outcome,
        elapsed: Option<Duration>,
    ) {
        let s = &*self.shared;
        s.events.call(outcome, || self.state());
        let slow = match (elapsed, s.policy.slow_call_duration) {
            (Some(e), Some(limit)) if outcome != Outcome::Ignored && e >= limit => {
                s.events.slow_call(e, outcome, || self.state());
                true
            }
            _ => false,
        };
        match kind {
            PermitKind::Untracked => {}
            PermitKind::Window => {
                if outcome == Outcome::Ignored {
                    return;
                }
                let w = Word(s.state.load(Ordering::Acquire));
                if w.generation() != generation {
                    return; // taken before a transition: stale.
                }
                let failed = outcome.is_failure();
                // A time window reads the clock at most once per record (a count window never).
                let cached = std::cell::Cell::new(None);
                let now = || {
                    cached.get().unwrap_or_else(|| {
                        let t = s.clock.now_ms();
                        cached.set(Some(t));
                        t
                    })
                };
                let check = s.window.record(now, failed, slow);
                if w.state() != BreakerState::Closed {
                    return; // metrics-only: record, never trip.
                }
                if let Some(limit) = s.policy.consecutive_failures {
                    if failed {
                        let n = s
                            .consecutive
                            .fetch_add(1, Ordering::AcqRel)
                            .saturating_add(1);
                        if n >= limit {
                            self.trip(w, TransitionReason::ConsecutiveFailures(n));
                            return;
                        }
                    } else if s.consecutive.load(Ordering::Relaxed) != 0 {
                        s.consecutive.store(0, Ordering::Release);
                    }
                }
                if check {
                    let counts = s.window.counts(now);
                    if let Some(reason) = self.over_threshold(counts) {
                        self.trip(w, reason);
                    }
                }
            }
            PermitKind::HalfOpen => {
                if outcome == Outcome::Ignored {
                    self.release(generation);
                    return;
                }
                let mut w = Word(s.state.load(Ordering::Acquire));
                loop {
                    if w.state() != BreakerState::HalfOpen || w.generation() != generation {
                        return;
                    }
                    let passed = w.passed() + u64::from(outcome.is_success());
                    let failed = w.failed() + u64::from(outcome.is_failure());
                    let slow_n = w.slow() + u64::from(slow);
                    let next = if passed + failed >= s.permits {
                        let counts = Counts {
                            calls: passed + failed,
                            failures: failed,
                            slow: slow_n,
                        };
                        if self.rates_over(counts).is_some() {
                            w.next(BreakerState::Open)
                        } else {
                            w.next(BreakerState::Closed)
                        }
                    } else {
                        w.with_verdicts(passed, failed, slow_n)
                    };
                    match self.cas(w, next) {
                        Ok(()) => {
                            if next.generation() != w.generation() {
                                let reason = if next.state() == BreakerState::Open {
                                    TransitionReason::HalfOpenFailed
                                } else {
                                    TransitionReason::HalfOpenPassed
                                };
                                self.entered(w, next, reason, s.clock.now_ms());
                            }
                            return;
                        }
                        Err(current) => w = current,
                    }
                }
            }
        }
    }

    /// Returns a half-open permit without a verdict.
    fn release(&self, generation: u64) {
        let s = &*self.shared;
        let mut w = Word(s.state.load(Ordering::Acquire));
        loop {
            let judged = w.passed() + w.failed();
            if w.state() != BreakerState::HalfOpen
                || w.generation() != generation
                || w.admitted() <= judged
            {
                return;
            }
            match self.cas(w, w.with_admitted(w.admitted() - 1)) {
                Ok(()) => return,
                Err(current) => w = current,
            }
        }
    }

    fn trip(&self, from: Word, reason: TransitionReason) {
        let next = from.next(BreakerState::Open);
        if self.cas(from, next).is_ok() {
            self.entered(from, next, reason, self.shared.clock.now_ms());
        }
        // Otherwise another thread changed the state first: its transition stands.
    }

    /// The rates over the thresholds, if any, given at least `minimum` calls.
    fn over_threshold(&self, counts: Counts) -> Option<TransitionReason> {
        if counts.calls < self.shared.minimum {
            return None;
        }
        self.rates_over(counts)
    }

    fn rates_over(&self, counts: Counts) -> Option<TransitionReason> {
        let p = &self.shared.policy;
        if counts.calls == 0 {
            return None;
        }
        let rate = |n: u64| n as f64 * 100.0 / counts.calls as f64;
        // Compare without dividing, so a rate exactly at the threshold opens.
        if counts.failures as f64 * 100.0 >= p.failure_rate_threshold * counts.calls as f64 {
            return Some(TransitionReason::FailureRate(rate(counts.failures)));
        }
        if p.slow_call_duration.is_some()
            && counts.slow as f64 * 100.0 >= p.slow_call_rate_threshold * counts.calls as f64
        {
            return Some(TransitionReason::SlowCallRate(rate(counts.slow)));
        }
        None
    }

    /// Moves to `to` from whatever state, as an operator override.
    fn override_to(&self, to: BreakerState) {
        let s = &*self.shared;
        let mut w = Word(s.state.load(Ordering::Acquire));
        loop {
            let next = w.next(to);
            match self.cas(w, next) {
                Ok(()) => {
                    if to == BreakerState::Closed {
                        s.window.clear();
                        s.reopens.store(0, Ordering::Release);
                    }
                    self.entered(w, next, TransitionReason::Override, s.clock.now_ms());
                    return;
                }
                Err(current) => w = current,
            }
        }
    }

    /// Forces the breaker open: every call fails fast until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.override_to(BreakerState::ForcedOpen);
    }

    /// Disables the breaker: every call passes and nothing is recorded, until
    /// [`reset`](Self::reset).
    pub fn disable(&self) {
        self.override_to(BreakerState::Disabled);
    }

    /// Metrics-only mode: every call passes and is recorded (rates and events stay
    /// observable), but the breaker never opens. Entering it empties the window.
    pub fn metrics_only(&self) {
        self.override_to(BreakerState::MetricsOnly);
    }

    /// Back to closed, with an empty window and the open-duration backoff reset.
    pub fn reset(&self) {
        self.override_to(BreakerState::Closed);
    }

    /// The state the next call will see (as [`state`](Self::state)), the window's totals and
    /// rates with the minimum they need, the half-open progress, and the times left.
    ///
    /// Read lazily and reported truthfully: an open breaker past its open duration reads
    /// half-open awaiting a trial (`retry_after` `None`,
    /// [`awaiting_trial`](BreakerSnapshot::awaiting_trial)), never "open, next probe in 0 s".
    pub fn snapshot(&self) -> BreakerSnapshot {
        let s = &*self.shared;
        let w = Word(s.state.load(Ordering::Acquire));
        let now = s.clock.now_ms();
        let counts = s.window.counts(|| now);
        let rate = |n: u64| {
            (counts.calls >= s.minimum && counts.calls > 0)
                .then(|| n as f64 * 100.0 / counts.calls as f64)
        };
        let (state, left) = self.effective(w, now);
        // Half-open progress only while the half-open period is still running.
        let half_open = state == BreakerState::HalfOpen && w.state() == BreakerState::HalfOpen;
        let judged = w.passed() + w.failed();
        let retry_after = (state == BreakerState::Open && w.state() == BreakerState::Open)
            .then_some(left)
            .flatten();
        BreakerSnapshot {
            state,
            recorded_state: w.state(),
            calls: counts.calls,
            failures: counts.failures,
            slow_calls: counts.slow,
            minimum_calls: s.minimum,
            failure_rate: rate(counts.failures),
            slow_call_rate: s.policy.slow_call_duration.and(rate(counts.slow)),
            consecutive_failures: s.consecutive.load(Ordering::Acquire),
            half_open_in_flight: if half_open {
                w.admitted().saturating_sub(judged) as u32
            } else {
                0
            },
            half_open_successes: if half_open { w.passed() as u32 } else { 0 },
            half_open_failures: if half_open { w.failed() as u32 } else { 0 },
            half_open_permits: s.permits as u32,
            half_open_time_left: if half_open { left } else { None },
            retry_after,
            reopens: s.reopens.load(Ordering::Acquire),
        }
    }

    /// While the breaker rejects calls on a timer or by override: `Some(time left)` (`None`
    /// inside for forced open). `None` when a call would be admitted or at least tried.
    pub(crate) fn rejecting_for(&self) -> Option<Option<Duration>> {
        let s = &*self.shared;
        let w = Word(s.state.load(Ordering::Acquire));
        match w.state() {
            BreakerState::ForcedOpen => Some(None),
            BreakerState::Open => {
                let (generation, until) = untag(s.deadline.load(Ordering::Acquire));
                if generation != w.generation() {
                    return Some(Some(Duration::from_millis(1)));
                }
                let now = s.clock.now_ms();
                (now < until).then(|| Some(Duration::from_millis(until - now)))
            }
            _ => None,
        }
    }

    /// `true` when both handles are the same breaker.
    pub fn same_breaker(&self, other: &BreakerHandle) -> bool {
        std::ptr::eq(&*self.shared, &*other.shared)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// Disabled: nothing to record.
    Untracked,
    /// Closed or metrics-only: record into the window.
    Window,
    /// A half-open trial.
    HalfOpen,
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
            .field("breaker", &self.handle.shared.policy.name)
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
            .on_result(self.generation, self.kind, outcome, elapsed);
    }

    /// Records the outcome with a duration measured by the caller.
    pub fn record_with_duration(mut self, outcome: Outcome, elapsed: Duration) {
        self.armed = false;
        self.handle
            .on_result(self.generation, self.kind, outcome, Some(elapsed));
    }

    /// `true` for a half-open trial permit.
    pub fn is_trial(&self) -> bool {
        self.kind == PermitKind::HalfOpen
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed && self.kind == PermitKind::HalfOpen {
            self.handle.release(self.generation);
        }
    }
}
