//! The measurement window: round-trip times and drops accumulated on the request path in
//! sharded atomics, and closed (fed to the limit algorithm) once it holds enough samples or
//! lasted long enough.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::{Shared, guarantee};
use crate::algorithm::Sample;

/// Window shards: threads add their measurements to different cache lines.
pub(super) const SHARDS: usize = 4;

/// The current measurement window, accumulated on the request path.
#[repr(align(128))]
pub(super) struct Window {
    /// When the window opened (clock ticks since the limiter's epoch); read-mostly.
    pub(super) started: AtomicU64,
    /// Calls measured in closed windows, cumulative.
    pub(super) measured: AtomicU64,
    pub(super) shards: [Shard; SHARDS],
}

/// A timed call in [`Shard::sum`].
pub(super) const CALL: u64 = 1 << 44;
/// Past the first `window_samples` timed calls of a window, a shard times one call in this
/// many (see [`Shard::wants_timing`]).
pub(super) const SAMPLE_EVERY: u32 = 4;
/// The round-trip-time part of [`Shard::sum`].
const RTT_MASK: u64 = CALL - 1;
/// One call's round-trip time is capped at this many ticks in the sum (minutes), so that it
/// never carries into the call count.
const RTT_CAP: u64 = 1 << 40;

/// One thread group's share of the window.
#[repr(align(128))]
pub(super) struct Shard {
    /// Timed calls in the high 20 bits, the sum of their round-trip times in clock ticks in
    /// the low 44 bits (scaled to ns once, when the window closes): one `fetch_add` per call.
    /// The window closes before either part can overflow (see [`Shard::full`]).
    pub(super) sum: AtomicU64,
    /// Calls measured without a round-trip time: dropped calls, and those past the sampling
    /// stride.
    pub(super) untimed: AtomicU64,
    /// Dropped calls (also counted in `untimed`).
    pub(super) drops: AtomicU64,
    /// The sampling stride's position (plain loads and stores: a lost update only shifts
    /// which call is timed).
    pub(super) stride: AtomicU32,
    pub(super) min_rtt: AtomicU64,
    pub(super) max_in_flight: AtomicUsize,
    /// Calls that finished without a measurement (cancelled or ignored), cumulative.
    pub(super) unmeasured: AtomicU64,
}

impl Window {
    pub(super) fn new() -> Self {
        Self {
            started: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            shards: std::array::from_fn(|_| Shard {
                sum: AtomicU64::new(0),
                untimed: AtomicU64::new(0),
                drops: AtomicU64::new(0),
                stride: AtomicU32::new(0),
                min_rtt: AtomicU64::new(u64::MAX),
                max_in_flight: AtomicUsize::new(0),
                unmeasured: AtomicU64::new(0),
            }),
        }
    }

    /// This thread's shard (threads are spread over the shards round robin).
    #[inline]
    pub(super) fn shard(&self) -> &Shard {
        use std::cell::Cell;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        let i = SLOT.with(|s| {
            let v = s.get();
            if v < SHARDS {
                v
            } else {
                let v = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
                s.set(v);
                v
            }
        });
        &self.shards[i]
    }
}

impl Shard {
    /// Calls measured in the open window.
    pub(super) fn calls(&self) -> u64 {
        (self.sum.load(Ordering::Relaxed) >> 44) + self.untimed.load(Ordering::Relaxed)
    }

    /// Whether the call being admitted should be timed: every call until the shard holds
    /// `window_samples` timed calls in the open window, then one in [`SAMPLE_EVERY`]. A busy
    /// window's average and minimum round-trip times come from a sample of its calls (still
    /// thousands per second), and a quiet one's from every call; the window still counts
    /// every call, its drops and its peak concurrency. An untimed call reads no clock.
    #[inline]
    pub(super) fn wants_timing(&self, window_samples: u32) -> bool {
        if self.sum.load(Ordering::Relaxed) >> 44 < u64::from(window_samples) {
            return true;
        }
        let n = self.stride.load(Ordering::Relaxed);
        self.stride.store(n.wrapping_add(1), Ordering::Relaxed);
        n.is_multiple_of(SAMPLE_EVERY)
    }

    /// `true` when the packed sum `v` is half full: the window must close now (a window this
    /// busy holds far more than enough samples).
    #[inline]
    fn full(v: u64) -> bool {
        v >= 1 << 63 || v & RTT_MASK >= 1 << 43
    }
}

impl Shared {
    /// Adds one call to the window; closes the window when it is complete. Returns whether
    /// the limit rose. `rtt` and `now` are in clock ticks (`now` since the epoch): the request
    /// path never scales a clock reading.
    #[inline]
    pub(super) fn record(&self, rtt: u64, in_flight: usize, dropped: bool, now: u64) -> bool {
        let w = &self.window;
        let shard = w.shard();
        // Minimum and maximum by load-compare-store: the shard is (nearly) this thread's
        // alone, and a lost update only blurs a statistic.
        if in_flight > shard.max_in_flight.load(Ordering::Relaxed) {
            shard.max_in_flight.store(in_flight, Ordering::Relaxed);
        }
        let v = if dropped {
            shard.drops.fetch_add(1, Ordering::Relaxed);
            shard.untimed.fetch_add(1, Ordering::AcqRel);
            shard.sum.load(Ordering::Acquire)
        } else {
            if rtt < shard.min_rtt.load(Ordering::Relaxed) {
                shard.min_rtt.store(rtt, Ordering::Relaxed);
            }
            let inc = CALL | rtt.min(RTT_CAP);
            shard.sum.fetch_add(inc, Ordering::AcqRel).wrapping_add(inc)
        };
        let n = (v >> 44) + shard.untimed.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(w.started.load(Ordering::Relaxed));
        // Per shard: with several threads a window holds more than `window_samples` calls.
        if (n >= u64::from(self.window_samples) && elapsed >= self.min_window_ticks)
            || elapsed >= self.max_window_ticks
            || Shard::full(v)
        {
            return self.close_window(now, Shard::full(v));
        }
        false
    }

    /// Adds one call measured without a clock reading (see [`Shard::wants_timing`]): counted,
    /// with its drop and concurrency; the next timed call closes the window when it is due.
    #[inline]
    pub(super) fn record_untimed(&self, in_flight: usize, dropped: bool) {
        let shard = self.window.shard();
        if in_flight > shard.max_in_flight.load(Ordering::Relaxed) {
            shard.max_in_flight.store(in_flight, Ordering::Relaxed);
        }
        if dropped {
            shard.drops.fetch_add(1, Ordering::Relaxed);
        }
        shard.untimed.fetch_add(1, Ordering::AcqRel);
    }

    /// `now` in clock ticks since the epoch; `full`: a shard's sum is half full, close even
    /// before `min_window`.
    #[cold]
    pub(super) fn close_window(&self, now: u64, full: bool) -> bool {
        // Someone else is closing it: our sample lands in the next window.
        let Ok(mut control) = self.control.try_lock() else {
            return false;
        };
        let w = &self.window;
        let elapsed = now.saturating_sub(w.started.load(Ordering::Relaxed));
        let count: u64 = w.shards.iter().map(Shard::calls).sum();
        if count == 0
            || (!full && count < u64::from(self.window_samples) && elapsed < self.max_window_ticks)
        {
            return false;
        }
        w.started.store(now, Ordering::Relaxed);
        let (mut count, mut timed, mut drops, mut sum, mut min, mut max_in_flight) =
            (0, 0, 0, 0, u64::MAX, 0);
        for s in &w.shards {
            let c = s.sum.swap(0, Ordering::AcqRel);
            timed += c >> 44;
            count += (c >> 44) + s.untimed.swap(0, Ordering::AcqRel);
            sum += c & RTT_MASK;
            drops += s.drops.swap(0, Ordering::AcqRel);
            min = min.min(s.min_rtt.swap(u64::MAX, Ordering::Relaxed));
            max_in_flight = max_in_flight.max(s.max_in_flight.swap(0, Ordering::Relaxed));
        }
        w.measured.fetch_add(count, Ordering::Relaxed);
        // The average over the timed calls (dropped ones carry no round-trip time).
        let rtt = Duration::from_nanos(self.ticks_as_ns(sum.checked_div(timed).unwrap_or(0)));
        let min_rtt = if min == u64::MAX {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.ticks_as_ns(min))
        };
        let now = self.ticks_as_ns(now);
        let sample = Sample {
            rtt,
            min_rtt,
            in_flight: max_in_flight,
            dropped: drops > 0,
        };
        let old = self.hot.limit.load(Ordering::Relaxed);
        let new = control.algorithm.update(&sample).max(1);
        #[cfg(feature = "metrics")]
        {
            self.metrics.rtt.set(rtt.as_secs_f64());
            self.metrics
                .in_flight
                .set(self.hot.in_flight.load(Ordering::Relaxed) as f64);
            let total = self.hot.in_flight.load(Ordering::Relaxed);
            for p in self.partitions.iter() {
                let n = if self.single {
                    total
                } else {
                    p.in_flight.load(Ordering::Relaxed)
                };
                p.metrics.in_flight.set(n as f64);
            }
        }
        if new == old {
            return false;
        }
        self.hot.limit.store(new, Ordering::Relaxed);
        for p in self.partitions.iter() {
            p.guaranteed
                .store(guarantee(p.share, new), Ordering::Relaxed);
        }
        control.changes += 1;
        #[cfg(feature = "metrics")]
        {
            self.metrics.limit.set(new as f64);
            self.metrics.limit_changes.increment(1);
        }
        match self.change_gate.pass(now) {
            Some(suppressed) => tracing::info!(
                target: "rampart_limit",
                limiter = %self.name,
                algorithm = self.algorithm_name,
                from = old,
                to = new,
                rtt = ?sample.rtt,
                in_flight = sample.in_flight,
                dropped = sample.dropped,
                changes_since_last_event = suppressed,
                "concurrency limit changed"
            ),
            None => tracing::trace!(
                target: "rampart_limit",
                limiter = %self.name,
                from = old,
                to = new,
                "concurrency limit changed"
            ),
        }
        new > old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_full_sum_closes_the_window() {
        assert!(!Shard::full(10 * CALL + 1_000_000));
        assert!(Shard::full((1 << 19) * CALL), "half the call count");
        assert!(Shard::full(CALL | (1 << 43)), "half the round-trip sum");
        assert!(!Shard::full(CALL | RTT_CAP), "one capped call");
    }
}
