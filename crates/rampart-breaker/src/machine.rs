//! The breaker's state machine, driven by [`BreakerHandle`](crate::BreakerHandle) and its
//! [`Permit`](crate::Permit)s: admission, verdicts, transitions and overrides.
//!
//! The machine is Resilience4j's (`CircuitBreakerStateMachine`), on one packed atomic word
//! (see the `state` module): every transition is one compare-and-swap, so exactly one thread
//! performs it and emits its event. The closed state with a count-based window and no slow-call tracking takes
//! no lock, allocates nothing and reads no clock: one load to admit; to record a success while
//! the window holds only fast successes and no failure streak runs, four loads (the window's
//! totals and the streak) and no write, else one load of the state, one `fetch_add` and one
//! load (a swap only when the slot changes).
//!
//! - Closed → Open: with at least `minimum_calls` in the window, the failure rate or the
//!   slow-call rate is at or above its threshold, or `consecutive_failures` in a row.
//! - Open → HalfOpen: lazily, by the first call after the open duration (which backs off
//!   exponentially with jitter on consecutive re-opens, capped; a close resets it).
//! - HalfOpen admits exactly `permitted_calls_in_half_open`; when that many have a verdict the
//!   same thresholds over them close or re-open the breaker. Ignored outcomes and dropped
//!   calls return their permit without a verdict; after `max_wait_in_half_open` without a
//!   verdict the next call re-opens it.

use std::time::Duration;

use rampart_health::Outcome;

use crate::BreakerOpen;
use crate::clock::{Clock, duration_ms_ceil};
use crate::event::{Events, TransitionReason};
use crate::policy::{Policy, SlidingWindow};
use crate::snapshot::BreakerSnapshot;
use crate::state::{BreakerState, Word, tag, untag};
use crate::sync::{AtomicU32, AtomicU64, Ordering, Padded};
use crate::window::{CountWindow, Counts, TimeWindow, Window};

/// The breaker's state machine: the packed state word, the deadlines, the window and the
/// policy. [`BreakerHandle`](crate::BreakerHandle) is an `Arc` of it.
pub(crate) struct Machine {
    state: Padded<AtomicU64>,
    /// Open: when the open duration ends; half-open: when it times out. Tagged with the
    /// generation it belongs to, published right after the transition.
    deadline: AtomicU64,
    /// When the current state was entered (tagged).
    entered: AtomicU64,
    reopens: AtomicU32,
    consecutive: Padded<AtomicU32>,
    pub(crate) window: Window,
    pub(crate) policy: Policy,
    pub(crate) clock: Clock,
    pub(crate) events: Events,
    minimum: u64,
    permits: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermitKind {
    /// Disabled: nothing to record.
    Untracked,
    /// Closed or metrics-only: record into the window.
    Window,
    /// A half-open trial.
    HalfOpen,
}

impl Machine {
    /// A new, closed breaker.
    pub(crate) fn new(policy: Policy, clock: Clock) -> Self {
        let window = match policy.window {
            SlidingWindow::Count(n) => Window::Count(CountWindow::new(n)),
            SlidingWindow::Time { size, buckets } => {
                Window::Time(TimeWindow::new(duration_ms_ceil(size), buckets))
            }
        };
        Self {
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
        }
    }

    /// The state the next call will see (see [`BreakerHandle::state`](crate::BreakerHandle::state)).
    pub(crate) fn state(&self) -> BreakerState {
        let w = Word(self.state.load(Ordering::Acquire));
        match w.state() {
            BreakerState::Open | BreakerState::HalfOpen => self.effective(w, self.clock.now_ms()).0,
            s => s,
        }
    }

    /// The state the next call at `now` will see, from the state word `w`, and the time left
    /// until the current period's deadline (open: the end of the open duration; half-open:
    /// the end of `max_wait_in_half_open`) while it has not passed.
    fn effective(&self, w: Word, now: u64) -> (BreakerState, Option<Duration>) {
        let state = w.state();
        if !matches!(state, BreakerState::Open | BreakerState::HalfOpen) {
            return (state, None);
        }
        let (generation, until) = untag(self.deadline.load(Ordering::Acquire));
        if generation != w.generation() {
            // The transition is this instant; its deadline is being published.
            let full = match state {
                BreakerState::Open => self.policy.open_duration,
                _ => self.policy.max_wait_in_half_open,
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

    /// Admits one call or rejects it: the permit's generation and kind.
    #[inline]
    pub(crate) fn admit(&self) -> Result<(u64, PermitKind), BreakerOpen> {
        let w = Word(self.state.load(Ordering::Acquire));
        // The state's code, not `w.state()`: one compare instead of decoding the enum.
        const CLOSED: u64 = BreakerState::Closed.code();
        const METRICS_ONLY: u64 = BreakerState::MetricsOnly.code();
        const DISABLED: u64 = BreakerState::Disabled.code();
        match w.code() {
            CLOSED | METRICS_ONLY => Ok((w.generation(), PermitKind::Window)),
            DISABLED => Ok((w.generation(), PermitKind::Untracked)),
            _ => self.admit_slow(w),
        }
    }

    #[cold]
    fn admit_slow(&self, mut w: Word) -> Result<(u64, PermitKind), BreakerOpen> {
        let now = self.clock.now_ms();
        loop {
            match w.state() {
                BreakerState::Closed | BreakerState::MetricsOnly => {
                    return Ok((w.generation(), PermitKind::Window));
                }
                BreakerState::Disabled => {
                    return Ok((w.generation(), PermitKind::Untracked));
                }
                BreakerState::ForcedOpen => return Err(self.reject(BreakerState::ForcedOpen, None)),
                BreakerState::Open => {
                    let (generation, until) = untag(self.deadline.load(Ordering::Acquire));
                    if generation != w.generation() {
                        // Opened this instant; its deadline is being published.
                        let d = self.policy.open_duration;
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
                            return Ok((next.generation(), PermitKind::HalfOpen));
                        }
                        Err(current) => w = current,
                    }
                }
                BreakerState::HalfOpen => {
                    let (generation, until) = untag(self.deadline.load(Ordering::Acquire));
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
                    if w.admitted() >= self.permits {
                        return Err(self.reject(BreakerState::HalfOpen, None));
                    }
                    let next = w.with_admitted(w.admitted() + 1);
                    match self.cas(w, next) {
                        Ok(()) => return Ok((w.generation(), PermitKind::HalfOpen)),
                        Err(current) => w = current,
                    }
                }
            }
        }
    }

    fn reject(&self, state: BreakerState, retry_after: Option<Duration>) -> BreakerOpen {
        self.events.rejected(state, retry_after);
        BreakerOpen::new(self.policy.name.clone(), state, retry_after)
    }

    fn cas(&self, from: Word, to: Word) -> Result<(), Word> {
        self.state
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
        let generation = to.generation();
        self.entered.store(tag(generation, now), Ordering::Release);
        let mut open_for = None;
        match to.state() {
            BreakerState::Open => {
                let reopens = if from.state() == BreakerState::HalfOpen {
                    self.reopens
                        .fetch_add(1, Ordering::AcqRel)
                        .saturating_add(1)
                } else {
                    self.reopens.load(Ordering::Acquire)
                };
                let d = self.policy.jittered_open_duration(reopens);
                let until = now.saturating_add(duration_ms_ceil(d));
                self.deadline
                    .store(tag(generation, until), Ordering::Release);
                open_for = Some(Duration::from_millis(until - now));
                if matches!(
                    from.state(),
                    BreakerState::Closed | BreakerState::MetricsOnly
                ) {
                    self.window.clear();
                }
                self.consecutive.store(0, Ordering::Release);
            }
            BreakerState::HalfOpen => {
                let until = now.saturating_add(duration_ms_ceil(self.policy.max_wait_in_half_open));
                self.deadline
                    .store(tag(generation, until), Ordering::Release);
            }
            BreakerState::Closed => {
                if from.state() == BreakerState::HalfOpen {
                    self.reopens.store(0, Ordering::Release);
                    // Normally empty already (emptied when it opened); this drops records
                    // that raced the trip from the previous closed period.
                    self.window.clear();
                }
                self.consecutive.store(0, Ordering::Release);
            }
            BreakerState::MetricsOnly => {
                self.window.clear();
                self.consecutive.store(0, Ordering::Release);
            }
            BreakerState::ForcedOpen | BreakerState::Disabled => {}
        }
        self.events.transition(from.state(), to.state(), reason);
        open_for
    }

    /// Records a permit's verdict.
    #[inline]
    pub(crate) fn on_result(
        &self,
        generation: u64,
        kind: PermitKind,
        outcome: Outcome,
        elapsed: Option<Duration>,
    ) {
        self.events.call(outcome, || self.state());
        // The closed state's steady case: an untimed success while the count window holds
        // nothing but fast successes and no failure streak is running changes nothing,
        // whatever the state word says (a stale permit would record nothing either), so it
        // reads neither the state nor the clock and writes nothing.
        if kind == PermitKind::Window
            && outcome == Outcome::Success
            && elapsed.is_none()
            && self.window.all_fast_successes()
            && self.consecutive.load(Ordering::Relaxed) == 0
        {
            return;
        }
        self.record(generation, kind, outcome, elapsed);
    }

    /// Records a verdict that may change the window, the streak or the state.
    #[inline(never)]
    fn record(
        &self,
        generation: u64,
        kind: PermitKind,
        outcome: Outcome,
        elapsed: Option<Duration>,
    ) {
        let slow = match (elapsed, self.policy.slow_call_duration) {
            (Some(e), Some(limit)) if outcome != Outcome::Ignored && e >= limit => {
                self.events.slow_call(e, outcome, || self.state());
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
                let w = Word(self.state.load(Ordering::Acquire));
                if w.generation() != generation {
                    return; // taken before a transition: stale.
                }
                let failed = outcome.is_failure();
                // A time window reads the clock at most once per record (a count window never).
                let cached = std::cell::Cell::new(None);
                let now = || {
                    cached.get().unwrap_or_else(|| {
                        let t = self.clock.now_ms();
                        cached.set(Some(t));
                        t
                    })
                };
                let check = self.window.record(now, failed, slow);
                if w.state() != BreakerState::Closed {
                    return; // metrics-only: record, never trip.
                }
                if let Some(limit) = self.policy.consecutive_failures {
                    if failed {
                        let n = self
                            .consecutive
                            .fetch_add(1, Ordering::AcqRel)
                            .saturating_add(1);
                        if n >= limit {
                            self.trip(w, TransitionReason::ConsecutiveFailures(n));
                            return;
                        }
                    } else if self.consecutive.load(Ordering::Relaxed) != 0 {
                        self.consecutive.store(0, Ordering::Release);
                    }
                }
                if check {
                    let counts = self.window.counts(now);
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
                let mut w = Word(self.state.load(Ordering::Acquire));
                loop {
                    if w.state() != BreakerState::HalfOpen || w.generation() != generation {
                        return;
                    }
                    let passed = w.passed() + u64::from(outcome.is_success());
                    let failed = w.failed() + u64::from(outcome.is_failure());
                    let slow_n = w.slow() + u64::from(slow);
                    let next = if passed + failed >= self.permits {
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
                                self.entered(w, next, reason, self.clock.now_ms());
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
    pub(crate) fn release(&self, generation: u64) {
        let mut w = Word(self.state.load(Ordering::Acquire));
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
            self.entered(from, next, reason, self.clock.now_ms());
        }
        // Otherwise another thread changed the state first: its transition stands.
    }

    /// The rates over the thresholds, if any, given at least `minimum` calls.
    fn over_threshold(&self, counts: Counts) -> Option<TransitionReason> {
        if counts.calls < self.minimum {
            return None;
        }
        self.rates_over(counts)
    }

    fn rates_over(&self, counts: Counts) -> Option<TransitionReason> {
        let p = &self.policy;
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
    pub(crate) fn override_to(&self, to: BreakerState) {
        let mut w = Word(self.state.load(Ordering::Acquire));
        loop {
            let next = w.next(to);
            match self.cas(w, next) {
                Ok(()) => {
                    if to == BreakerState::Closed {
                        self.window.clear();
                        self.reopens.store(0, Ordering::Release);
                    }
                    self.entered(w, next, TransitionReason::Override, self.clock.now_ms());
                    return;
                }
                Err(current) => w = current,
            }
        }
    }

    /// A point-in-time view (see [`BreakerHandle::snapshot`](crate::BreakerHandle::snapshot)).
    pub(crate) fn snapshot(&self) -> BreakerSnapshot {
        let w = Word(self.state.load(Ordering::Acquire));
        let now = self.clock.now_ms();
        let counts = self.window.counts(|| now);
        let rate = |n: u64| {
            (counts.calls >= self.minimum && counts.calls > 0)
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
            minimum_calls: self.minimum,
            failure_rate: rate(counts.failures),
            slow_call_rate: self.policy.slow_call_duration.and(rate(counts.slow)),
            consecutive_failures: self.consecutive.load(Ordering::Acquire),
            half_open_in_flight: if half_open {
                w.admitted().saturating_sub(judged) as u32
            } else {
                0
            },
            half_open_successes: if half_open { w.passed() as u32 } else { 0 },
            half_open_failures: if half_open { w.failed() as u32 } else { 0 },
            half_open_permits: self.permits as u32,
            half_open_time_left: if half_open { left } else { None },
            retry_after,
            reopens: self.reopens.load(Ordering::Acquire),
        }
    }

    /// Whether the breaker turns calls away now, and for how long.
    pub(crate) fn rejecting(&self) -> Rejecting {
        let w = Word(self.state.load(Ordering::Acquire));
        match w.state() {
            BreakerState::ForcedOpen => Rejecting::UntilReleased,
            BreakerState::Open => {
                let (generation, until) = untag(self.deadline.load(Ordering::Acquire));
                if generation != w.generation() {
                    return Rejecting::For(Duration::from_millis(1));
                }
                let now = self.clock.now_ms();
                if now < until {
                    Rejecting::For(Duration::from_millis(until - now))
                } else {
                    Rejecting::No
                }
            }
            _ => Rejecting::No,
        }
    }
}

/// Whether a breaker turns calls away now (see [`Machine::rejecting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejecting {
    /// A call would be admitted, or at least tried (closed, half-open, an open period over).
    No,
    /// Open on a timer: calls are rejected for this long yet.
    For(Duration),
    /// Forced open: calls are rejected until an operator releases the override.
    UntilReleased,
}
