//! The breaker's notion of time.
//!
//! # Decision
//!
//! The breaker reads [`tokio::time::Instant`], so every time-based rule (open duration,
//! half-open deadline, time-based windows, slow calls) follows tokio's paused clock in tests
//! (`tokio::time::pause()` + `advance`). Outside a runtime it falls back to the system's
//! monotonic clock.
//!
//! Reading a precise clock costs about 25 ns on the target machine, so the hot path avoids it
//! instead of caching it:
//!
//! - closed state, count-based window, slow-call tracking off (the default): **no clock read
//!   at all**; a call costs a few atomic operations;
//! - time-based window: one read per recorded call, at millisecond resolution;
//! - slow-call tracking: two reads per call (start and end), which is inherent to timing calls;
//! - open and half-open states: one read per call (a rejected call is cheap anyway).
//!
//! We considered `quanta`'s `Instant::recent()` (a cached clock a few ns cheap): it needs an
//! upkeep thread per process and does not follow tokio's paused clock, which would make every
//! time-based test depend on real sleeps. A cached clock of our own would have to be
//! refreshed from tokio's clock to stay `pause()`-compatible (by a task or on calls), which
//! costs the very read it saves. The saving only matters for the time-window and slow-call
//! configurations, whose costs the README reports separately.
//!
//! Time is kept as whole milliseconds since the breaker was created, so it fits in the packed
//! atomic words of the state machine. Deadlines are rounded up, so a breaker never leaves the
//! open state early; it may leave it up to 1 ms late.

use std::time::Duration;

/// Milliseconds since a base instant.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    base: tokio::time::Instant,
    #[cfg(rampart_loom)]
    manual: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            base: tokio::time::Instant::now(),
            #[cfg(rampart_loom)]
            manual: None,
        }
    }

    #[cfg(rampart_loom)]
    pub(crate) fn manual(ms: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self {
            base: tokio::time::Instant::now(),
            manual: Some(ms),
        }
    }

    /// Whole milliseconds since the base (rounded down).
    #[inline]
    pub(crate) fn now_ms(&self) -> u64 {
        #[cfg(rampart_loom)]
        if let Some(ms) = &self.manual {
            return ms.load(std::sync::atomic::Ordering::SeqCst);
        }
        duration_ms_floor(self.base.elapsed())
    }

    /// A precise instant, for timing calls (slow-call tracking).
    #[inline]
    pub(crate) fn instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}

/// `d` in whole milliseconds, rounded down, saturating.
#[inline]
pub(crate) fn duration_ms_floor(d: Duration) -> u64 {
    // Not `as_millis()`: its u128 division is a library call on the time-window hot path.
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

/// `d` in whole milliseconds, rounded up, saturating.
pub(crate) fn duration_ms_ceil(d: Duration) -> u64 {
    let ms = duration_ms_floor(d);
    if d > Duration::from_millis(ms) {
        ms.saturating_add(1)
    } else {
        ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_as_documented() {
        assert_eq!(duration_ms_floor(Duration::from_micros(1_999)), 1);
        assert_eq!(duration_ms_ceil(Duration::from_micros(1_001)), 2);
        assert_eq!(duration_ms_ceil(Duration::from_millis(7)), 7);
        assert_eq!(duration_ms_floor(Duration::MAX), u64::MAX);
    }
}
