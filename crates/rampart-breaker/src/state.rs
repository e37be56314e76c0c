//! The breaker's states and the packed atomic word that holds the state machine.
//!
//! One `AtomicU64` holds everything a transition must change at once, so every transition is
//! a single compare-and-swap (exactly one thread wins it, and none is lost):
//!
//! ```text
//!  63          43 42    33 32    23 22    13 12     3 2  0
//! +--------------+--------+--------+--------+--------+----+
//! | generation   | slow   | failed | passed | admitted| st |
//! +--------------+--------+--------+--------+--------+----+
//! ```
//!
//! The generation counts transitions (mod 2^21), so a permit taken in one period can never
//! record into, or release a permit of, a later one. The four 10-bit counters are used in
//! half-open only: permits handed out, and the verdicts of the half-open calls.

use std::fmt;

/// The state of a circuit breaker (Resilience4j's, with its three overrides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass and are recorded; the rates may open the breaker.
    Closed,
    /// Calls fail fast with [`BreakerOpen`](crate::BreakerOpen) until the open duration ends.
    Open,
    /// A limited number of trial calls pass; their verdict closes or re-opens the breaker.
    HalfOpen,
    /// Override: every call fails fast until the breaker is reset.
    ForcedOpen,
    /// Override: every call passes and nothing is recorded.
    Disabled,
    /// Override: every call passes and is recorded, but the breaker never opens.
    MetricsOnly,
}

impl BreakerState {
    /// A stable lowercase name (`"closed"`, `"half_open"`, …), as used in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::Disabled => "disabled",
            BreakerState::MetricsOnly => "metrics_only",
        }
    }

    /// `true` when calls are being rejected wholesale (open or forced open).
    pub const fn is_open(self) -> bool {
        matches!(self, BreakerState::Open | BreakerState::ForcedOpen)
    }

    pub(crate) const fn code(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::ForcedOpen => 3,
            BreakerState::Disabled => 4,
            BreakerState::MetricsOnly => 5,
        }
    }

    pub(crate) const fn from_code(code: u64) -> Self {
        match code {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            3 => BreakerState::ForcedOpen,
            4 => BreakerState::Disabled,
            _ => BreakerState::MetricsOnly,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const ST_MASK: u64 = 0b111;
const CNT_MASK: u64 = (1 << 10) - 1;
const ADM_SHIFT: u32 = 3;
const PASS_SHIFT: u32 = 13;
const FAIL_SHIFT: u32 = 23;
const SLOW_SHIFT: u32 = 33;
const GEN_SHIFT: u32 = 43;
pub(crate) const GEN_MASK: u64 = (1 << 21) - 1;
const MS_MASK: u64 = (1 << 43) - 1;

/// A decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(pub(crate) u64);

impl Word {
    pub(crate) fn fresh(state: BreakerState, generation: u64) -> Self {
        Word(state.code() | ((generation & GEN_MASK) << GEN_SHIFT))
    }

    /// The first word of the next period, in `state`.
    pub(crate) fn next(self, state: BreakerState) -> Self {
        Word::fresh(state, self.generation().wrapping_add(1))
    }

    /// The state's code (see [`BreakerState::code`]).
    #[inline]
    pub(crate) fn code(self) -> u64 {
        self.0 & ST_MASK
    }

    pub(crate) fn state(self) -> BreakerState {
        BreakerState::from_code(self.0 & ST_MASK)
    }

    pub(crate) fn generation(self) -> u64 {
        (self.0 >> GEN_SHIFT) & GEN_MASK
    }

    pub(crate) fn admitted(self) -> u64 {
        (self.0 >> ADM_SHIFT) & CNT_MASK
    }

    pub(crate) fn passed(self) -> u64 {
        (self.0 >> PASS_SHIFT) & CNT_MASK
    }

    pub(crate) fn failed(self) -> u64 {
        (self.0 >> FAIL_SHIFT) & CNT_MASK
    }

    pub(crate) fn slow(self) -> u64 {
        (self.0 >> SLOW_SHIFT) & CNT_MASK
    }

    fn with(self, shift: u32, value: u64) -> Self {
        Word((self.0 & !(CNT_MASK << shift)) | ((value & CNT_MASK) << shift))
    }

    pub(crate) fn with_admitted(self, n: u64) -> Self {
        self.with(ADM_SHIFT, n)
    }

    pub(crate) fn with_verdicts(self, passed: u64, failed: u64, slow: u64) -> Self {
        self.with(PASS_SHIFT, passed)
            .with(FAIL_SHIFT, failed)
            .with(SLOW_SHIFT, slow)
    }
}

/// A time (ms since the clock's base) tagged with the generation it belongs to.
pub(crate) fn tag(generation: u64, ms: u64) -> u64 {
    ((generation & GEN_MASK) << GEN_SHIFT) | ms.min(MS_MASK)
}

/// `(generation, ms)`.
pub(crate) fn untag(tagged: u64) -> (u64, u64) {
    ((tagged >> GEN_SHIFT) & GEN_MASK, tagged & MS_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_round_trips() {
        let w = Word::fresh(BreakerState::HalfOpen, GEN_MASK)
            .with_admitted(1023)
            .with_verdicts(1, 1022, 7);
        assert_eq!(w.state(), BreakerState::HalfOpen);
        assert_eq!(w.generation(), GEN_MASK);
        assert_eq!(
            (w.admitted(), w.passed(), w.failed(), w.slow()),
            (1023, 1, 1022, 7)
        );
        let n = w.next(BreakerState::Closed);
        assert_eq!(n.generation(), 0, "generations wrap");
        assert_eq!((n.admitted(), n.passed(), n.failed()), (0, 0, 0));
        for s in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::ForcedOpen,
            BreakerState::Disabled,
            BreakerState::MetricsOnly,
        ] {
            assert_eq!(Word::fresh(s, 5).state(), s);
        }
        assert_eq!(untag(tag(9, 123_456)), (9, 123_456));
    }
}
