//! [`BreakerSnapshot`]: a point-in-time view of a breaker for operators and health reports.

use std::time::Duration;

use crate::state::BreakerState;

/// A point-in-time view of a breaker, from [`BreakerHandle::snapshot`](crate::BreakerHandle::snapshot).
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
