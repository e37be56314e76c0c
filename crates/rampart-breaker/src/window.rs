//! Lock-free sliding windows (count-based and time-based), after Resilience4j's
//! `FixedSizeSlidingWindowMetrics` and `SlidingTimeWindowMetrics`, without its lock.
//!
//! Both keep running totals (calls, failures, slow calls) next to the per-slot data, updated
//! with atomic read-modify-writes: a slot or bucket is always replaced with an atomic swap and
//! the totals adjusted by the difference, so the totals always converge to the sum of the
//! slots, whatever the interleaving. A reader may see a total a few calls ahead or behind of
//! its slots; rates are therefore approximate by at most the number of calls in flight, which
//! is also true of Resilience4j between its lock acquisitions.
//!
//! A record tells the caller whether the rates may have risen (a failure or a slow call was
//! added, the window was still filling, or old buckets expired): only then does the breaker
//! evaluate its thresholds. A success replacing a success changes nothing and costs one
//! `fetch_add` and one load; while the count window holds nothing but fast successes, a fast
//! success costs three plain loads and no write at all.

use crate::sync::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering, Padded};

const FILLED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// The totals of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// Running totals, adjusted atomically.
#[derive(Debug)]
struct Totals {
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl Totals {
    fn new() -> Self {
        Self {
            calls: AtomicI64::new(0),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    fn read(&self) -> Counts {
        let get = |a: &AtomicI64| a.load(Ordering::Acquire).max(0) as u64;
        let calls = get(&self.calls);
        Counts {
            calls,
            failures: get(&self.failures).min(calls),
            slow: get(&self.slow).min(calls),
        }
    }
}

/// A window over the last N calls: a ring of N one-byte slots.
#[derive(Debug)]
pub(crate) struct CountWindow {
    /// Padded: the totals beside it are read on every success and written only on changes.
    seq: Padded<AtomicU32>,
    len: u32,
    /// Lemire's fastmod constant for `len`: `x % len` without a division.
    magic: u64,
    slots: Box<[AtomicU8]>,
    totals: Totals,
}

impl CountWindow {
    pub(crate) fn new(len: u32) -> Self {
        let len = len.max(1);
        Self {
            seq: Padded(AtomicU32::new(0)),
            len,
            magic: (u64::MAX / u64::from(len)).wrapping_add(1),
            slots: (0..len).map(|_| AtomicU8::new(0)).collect(),
            totals: Totals::new(),
        }
    }

    /// `x % len` by multiplication (Lemire, Kaser, Kurz: "Faster Remainder by Direct
    /// Computation", 2019).
    #[inline]
    fn index(&self, x: u32) -> usize {
        let low = self.magic.wrapping_mul(u64::from(x));
        ((u128::from(low) * u128::from(self.len)) >> 64) as usize
    }

    /// Records one call; `true` when the rates may have risen.
    ///
    /// The sequence wraps after 2^32 calls, where one slot may be overwritten slightly out of
    /// order: harmless for rates.
    #[inline]
    pub(crate) fn record(&self, failed: bool, slow: bool) -> bool {
        // A full window of fast successes stays the same whatever slot a new fast success
        // would replace, and all its slots are alike, so it need not even move: the next
        // failure takes any slot and leaves the window exactly N records later, as it would
        // have. This keeps the shared sequence out of the all-success hot path (three loads
        // of a line that is only written when the window changes).
        if !failed && !slow && self.all_fast_successes() {
            return false;
        }
        let value = FILLED | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let i = self.index(self.seq.fetch_add(1, Ordering::Relaxed));
        let Some(slot) = self.slots.get(i) else {
            return false;
        };
        // Steady state: the slot already says the same thing (a success replacing a success).
        if slot.load(Ordering::Relaxed) == value {
            return false;
        }
        let old = slot.swap(value, Ordering::AcqRel);
        if old == value {
            return false;
        }
        self.adjust(old, value);
        old & FILLED == 0 || failed || slow
    }

    #[inline]
    pub(crate) fn all_fast_successes(&self) -> bool {
        self.totals.failures.load(Ordering::Relaxed) == 0
            && self.totals.slow.load(Ordering::Relaxed) == 0
            && self.totals.calls.load(Ordering::Relaxed) == i64::from(self.len)
    }

    fn adjust(&self, old: u8, new: u8) {
        let d = |bit: u8| i64::from(new & bit != 0) - i64::from(old & bit != 0);
        let (dc, df, ds) = (d(FILLED), d(FAILED), d(SLOW));
        if dc != 0 {
            self.totals.calls.fetch_add(dc, Ordering::AcqRel);
        }
        if df != 0 {
            self.totals.failures.fetch_add(df, Ordering::AcqRel);
        }
        if ds != 0 {
            self.totals.slow.fetch_add(ds, Ordering::AcqRel);
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        self.totals.read()
    }

    pub(crate) fn clear(&self) {
        for slot in self.slots.iter() {
            if slot.load(Ordering::Relaxed) != 0 {
                let old = slot.swap(0, Ordering::AcqRel);
                self.adjust(old, 0);
            }
        }
    }
}

#[derive(Debug)]
struct Bucket {
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

/// A window over the last `size` of time, in buckets of `size / buckets`.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    width_ms: u64,
    /// The newest epoch (`now_ms / width_ms`) whose bucket has been rotated in.
    head: AtomicU64,
    buckets: Box<[Bucket]>,
    totals: Totals,
}

impl TimeWindow {
    pub(crate) fn new(size_ms: u64, buckets: u16) -> Self {
        let n = u64::from(buckets.max(1));
        Self {
            width_ms: (size_ms / n).max(1),
            head: AtomicU64::new(0),
            buckets: (0..n)
                .map(|_| Bucket {
                    calls: AtomicI64::new(0),
                    failures: AtomicI64::new(0),
                    slow: AtomicI64::new(0),
                })
                .collect(),
            totals: Totals::new(),
        }
    }

    fn n(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn bucket(&self, epoch: u64) -> Option<&Bucket> {
        self.buckets.get((epoch % self.n()) as usize)
    }

    /// Moves the window forward to `epoch`, emptying the buckets that fall out. Exactly one
    /// thread wins each move; `true` for the winner.
    fn rotate(&self, epoch: u64) -> bool {
        let head = self.head.load(Ordering::Acquire);
        if epoch <= head {
            return false;
        }
        if self
            .head
            .compare_exchange(head, epoch, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let from = (head + 1).max((epoch + 1).saturating_sub(self.n()));
        for e in from..=epoch {
            if let Some(b) = self.bucket(e) {
                self.empty(b);
            }
        }
        true
    }

    fn empty(&self, b: &Bucket) {
        let c = b.calls.swap(0, Ordering::AcqRel);
        let f = b.failures.swap(0, Ordering::AcqRel);
        let s = b.slow.swap(0, Ordering::AcqRel);
        if c != 0 {
            self.totals.calls.fetch_sub(c, Ordering::AcqRel);
        }
        if f != 0 {
            self.totals.failures.fetch_sub(f, Ordering::AcqRel);
        }
        if s != 0 {
            self.totals.slow.fetch_sub(s, Ordering::AcqRel);
        }
    }

    /// Records one call at `now_ms`; always `true` (see the end).
    ///
    /// A record racing the rotation of its own bucket may be emptied with it; the totals stay
    /// consistent with the buckets.
    pub(crate) fn record(&self, now_ms: u64, failed: bool, slow: bool) -> bool {
        let epoch = now_ms / self.width_ms;
        self.rotate(epoch);
        if epoch + self.n() <= self.head.load(Ordering::Acquire) {
            return true; // older than the window (a stale clock read): nothing to add.
        }
        let Some(b) = self.bucket(epoch) else {
            return true;
        };
        b.calls.fetch_add(1, Ordering::AcqRel);
        self.totals.calls.fetch_add(1, Ordering::AcqRel);
        if failed {
            b.failures.fetch_add(1, Ordering::AcqRel);
            self.totals.failures.fetch_add(1, Ordering::AcqRel);
        }
        if slow {
            b.slow.fetch_add(1, Ordering::AcqRel);
            self.totals.slow.fetch_add(1, Ordering::AcqRel);
        }
        // Expiring buckets can raise the rates without any record here (a snapshot may have
        // rotated them), and reading the totals costs a few loads next to the clock read this
        // window already paid for: always evaluate.
        true
    }

    pub(crate) fn counts(&self, now_ms: u64) -> Counts {
        self.rotate(now_ms / self.width_ms);
        self.totals.read()
    }

    pub(crate) fn clear(&self) {
        for b in self.buckets.iter() {
            self.empty(b);
        }
    }
}

/// Either window.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    #[inline]
    pub(crate) fn record(&self, now_ms: impl FnOnce() -> u64, failed: bool, slow: bool) -> bool {
        match self {
            Window::Count(w) => w.record(failed, slow),
            Window::Time(w) => w.record(now_ms(), failed, slow),
        }
    }

    pub(crate) fn counts(&self, now_ms: impl FnOnce() -> u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now_ms()),
        }
    }

    /// `true` when this is a count window holding nothing but fast successes (a fast success
    /// recorded into it changes nothing).
    #[inline]
    pub(crate) fn all_fast_successes(&self) -> bool {
        match self {
            Window::Count(w) => w.all_fast_successes(),
            Window::Time(_) => false,
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}

#[cfg(all(test, not(rampart_loom)))]
mod tests {
    use super::*;

    #[test]
    fn fastmod_matches_remainder() {
        for len in [1u32, 2, 3, 7, 10, 100, 1000, 65_537, 1 << 20] {
            let w = CountWindow::new(len);
            for x in [0u32, 1, 5, 99, 100, 101, 12_345, u32::MAX - 1, u32::MAX] {
                assert_eq!(w.index(x), (x % len) as usize, "{x} % {len}");
            }
        }
    }

    #[test]
    fn count_window_keeps_the_last_n() {
        let w = CountWindow::new(4);
        for _ in 0..4 {
            w.record(true, false);
        }
        assert_eq!(
            w.counts(),
            Counts {
                calls: 4,
                failures: 4,
                slow: 0
            }
        );
        w.record(false, true);
        w.record(false, false);
        assert_eq!(
            w.counts(),
            Counts {
                calls: 4,
                failures: 2,
                slow: 1
            }
        );
        for _ in 0..4 {
            w.record(false, false);
        }
        assert_eq!(
            w.counts(),
            Counts {
                calls: 4,
                failures: 0,
                slow: 0
            }
        );
        w.clear();
        assert_eq!(w.counts(), Counts::default());
    }

    #[test]
    fn count_window_reports_possible_rises_only() {
        let w = CountWindow::new(2);
        assert!(w.record(false, false), "filling");
        assert!(w.record(false, false), "filling");
        assert!(!w.record(false, false), "success over success");
        assert!(w.record(true, false), "failure added");
        assert!(!w.record(false, false), "success over success");
        assert!(
            !w.record(false, false),
            "success over failure lowers the rate"
        );
    }

    #[test]
    fn a_failure_after_a_run_of_successes_leaves_after_exactly_n_calls() {
        let w = CountWindow::new(3);
        for _ in 0..10 {
            w.record(false, false); // fills, then skips the sequence
        }
        assert!(w.record(true, false));
        for _ in 0..2 {
            w.record(false, false);
            assert_eq!(w.counts().failures, 1);
        }
        w.record(false, false);
        assert_eq!(
            w.counts(),
            Counts {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn time_window_expires_whole_buckets() {
        // 10 s in 10 buckets of 1 s.
        let w = TimeWindow::new(10_000, 10);
        w.record(0, true, false);
        w.record(500, true, false);
        w.record(1_200, false, false);
        assert_eq!(
            w.counts(1_500),
            Counts {
                calls: 3,
                failures: 2,
                slow: 0
            }
        );
        // At 10.0 s the bucket [0, 1 s) leaves; [1 s, 2 s) stays until 11 s.
        assert_eq!(
            w.counts(10_000),
            Counts {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        assert_eq!(w.counts(11_000), Counts::default());
    }

    #[test]
    fn time_window_survives_long_idle_periods() {
        let w = TimeWindow::new(1_000, 4);
        for t in 0..1_000 {
            w.record(t, t % 2 == 0, false);
        }
        assert_eq!(w.counts(999).calls, 1_000);
        // Idle for ages: everything has expired, even buckets nobody touched.
        assert_eq!(w.counts(1_000_000), Counts::default());
        w.record(1_000_001, true, true);
        assert_eq!(
            w.counts(1_000_002),
            Counts {
                calls: 1,
                failures: 1,
                slow: 1
            }
        );
    }
}
