//! [`Limiter`]: the shared limit, its partitions and its queue.
//!
//! A `Limiter` is a cheap handle (an `Arc`): the [`LimitLayer`](crate::LimitLayer) and every
//! service it builds share one, and so can an operator endpoint that shows its
//! [`snapshot`](Limiter::snapshot).
//!
//! # Admission
//!
//! Every request belongs to a partition (by default the single partition `default`). With
//! limit `L`, each partition `p` is guaranteed `g(p) = ceil(share(p) × L)` slots. A request of
//! `p` is admitted when fewer than `L` calls are in flight in total, and either
//!
//! - `p` uses fewer than `g(p)` slots (it is within its guarantee), or
//! - it may **borrow**: the slots in use plus the unused guarantees of the other *active*
//!   partitions stay below `L`. A partition is active while it has calls in flight or saw a
//!   request within [`partition_idle_after`](LimiterBuilder::partition_idle_after); an idle
//!   partition lends its whole share.
//!
//! So the total never exceeds the limit, a partition with demand always reaches its
//! guarantee, and under pressure the partitions asking for more than their share are shed
//! first, the one with the smallest share first of all: give the extras (recommendations) the
//! smallest share. With a [queue](crate::CoDelQueue), freed slots go to the waiting request of
//! the highest-priority partition (declaration order) that may take it.
//!
//! ```
//! use rampart_limit::{Class, Limiter, algorithm::Fixed};
//!
//! let limiter = Limiter::builder()
//!     .name("shop")
//!     .algorithm(Fixed::new(10)?)
//!     .partition("checkout", 0.5)
//!     .partition("pages", 0.4)
//!     .partition("recommendations", 0.1)
//!     .build()?;
//! let recs = limiter.partition_class("recommendations").unwrap();
//! // Alone, recommendations may borrow the idle partitions' shares: all ten slots.
//! let permits: Vec<_> = (0..10).map(|_| limiter.try_acquire(recs).unwrap()).collect();
//! assert_eq!(limiter.in_flight(), 10);
//! assert!(limiter.try_acquire(recs).is_err());
//! drop(permits);
//! assert_eq!(limiter.in_flight(), 0);
//! # Ok::<(), rampart_health::ConfigError>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::algorithm::LimitAlgorithm;
use crate::event::LogGate;
use crate::{Overloaded, ShedReason};

mod admission;
mod builder;
mod partition;
mod permit;
mod snapshot;
mod window;

pub use self::builder::{CoDelQueue, LimiterBuilder};
pub use self::partition::{Class, PartitionBy, SinglePartition};
pub use self::permit::Permit;
pub use self::snapshot::{LimiterSnapshot, PartitionSnapshot};
use self::window::Window;

const NEVER: u64 = u64::MAX;
/// A permit's start when its call is not timed (see `Shard::wants_timing`).
const UNTIMED: u64 = u64::MAX;

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `ns` in ticks of `clock` (identity for nanosecond clocks such as the mock): the request
/// path compares raw tick spans and scales only when a window closes.
fn ns_as_ticks(clock: &quanta::Clock, ns: u64) -> u64 {
    const SPAN: u64 = 1 << 32;
    match clock.delta_as_nanos(0, SPAN) {
        0 => ns,
        per_span => u64::try_from(u128::from(ns) * u128::from(SPAN) / u128::from(per_span))
            .unwrap_or(u64::MAX),
    }
}

fn guarantee(share: f64, limit: usize) -> usize {
    ((share * limit as f64).ceil() as usize).max(1)
}

/// An adaptive concurrency limiter; see the [module docs](self).
#[derive(Clone)]
pub struct Limiter {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("name", &self.shared.name)
            .field("algorithm", &self.shared.algorithm_name)
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    name: Arc<str>,
    algorithm_name: &'static str,
    /// The contended counters, on their own cache line.
    hot: Hot,
    single: bool,
    partitions: Box<[PartitionState]>,
    window: Window,
    control: Mutex<Control>,
    window_samples: u32,
    /// The window bounds in clock ticks (see [`ns_as_ticks`]).
    min_window_ticks: u64,
    max_window_ticks: u64,
    idle_after_ns: u64,
    retry_after: Duration,
    queue: Option<Queue>,
    bypassed: AtomicU64,
    change_gate: LogGate,
    shed_gate: LogGate,
    clock: quanta::Clock,
    epoch: u64,
    #[cfg(feature = "metrics")]
    metrics: crate::event::LimiterMetrics,
}

struct PartitionState {
    name: Arc<str>,
    share: f64,
    guaranteed: AtomicUsize,
    in_flight: AtomicUsize,
    last_arrival: AtomicU64,
    admitted: AtomicU64,
    shed: AtomicU64,
    #[cfg(feature = "metrics")]
    metrics: crate::event::PartitionMetrics,
}

/// The limit and the calls in flight: read and written by every request, so kept apart
/// from everything else (no false sharing with the `Arc`'s counts or the window).
#[repr(align(128))]
struct Hot {
    limit: AtomicUsize,
    in_flight: AtomicUsize,
}

struct Control {
    algorithm: Box<dyn LimitAlgorithm>,
    changes: u64,
}

struct Queue {
    config: CoDelQueue,
    /// Mirror of `state.len` for a lock-free "anyone waiting?" check.
    len: AtomicUsize,
    state: Mutex<QueueState>,
}

struct QueueState {
    /// One line per partition, oldest at the front.
    lines: Vec<VecDeque<Waiter>>,
    len: usize,
    last_empty: tokio::time::Instant,
}

struct Waiter {
    since: tokio::time::Instant,
    tx: oneshot::Sender<Permit>,
}

/// What [`Shared::admit_or_queue`] decided.
pub(crate) enum Admission {
    Admitted(Permit),
    Queued(oneshot::Receiver<Permit>),
    Shed(Overloaded),
}

impl Limiter {
    /// The settings, with their defaults.
    pub fn builder() -> LimiterBuilder {
        LimiterBuilder::default()
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.hot.limit.load(Ordering::Relaxed)
    }

    /// Calls in flight now (admitted and not yet finished).
    pub fn in_flight(&self) -> usize {
        self.shared.hot.in_flight.load(Ordering::Relaxed)
    }

    /// The [`Class`] of the partition named `name`.
    pub fn partition_class(&self, name: &str) -> Option<Class> {
        self.shared
            .partitions
            .iter()
            .position(|p| &*p.name == name)
            .map(Class::Partition)
    }

    /// Whether this limiter queues requests over the limit.
    pub fn has_queue(&self) -> bool {
        self.shared.queue.is_some()
    }

    /// Takes a slot for a call of `class` now, or fails with [`Overloaded`] (never waits,
    /// even with a queue). The slot returns when the [`Permit`] is recorded or dropped.
    pub fn try_acquire(&self, class: Class) -> Result<Permit, Overloaded> {
        match class {
            Class::Bypass => Ok(Permit::bypass(&self.shared)),
            Class::Partition(i) => {
                let i = i.min(self.shared.partitions.len() - 1);
                let raw = self.shared.clock.raw();
                self.shared
                    .try_admit(i, raw)
                    .ok_or_else(|| self.shared.shed(i, ShedReason::Limit, self.shared.ns(raw)))
            }
        }
    }

    /// What the limiter looks like now.
    pub fn snapshot(&self) -> LimiterSnapshot {
        let s = &self.shared;
        let queued: Vec<usize> = match &s.queue {
            // Waiters that left are purged lazily; do not count them.
            Some(q) => lock(&q.state)
                .lines
                .iter()
                .map(|l| l.iter().filter(|w| !w.tx.is_closed()).count())
                .collect(),
            None => vec![0; s.partitions.len()],
        };
        LimiterSnapshot {
            name: s.name.to_string(),
            algorithm: s.algorithm_name,
            limit: self.limit(),
            in_flight: self.in_flight(),
            queued: queued.iter().sum(),
            bypassed: s.bypassed.load(Ordering::Relaxed),
            partitions: s
                .partitions
                .iter()
                .zip(queued)
                .map(|(p, queued)| PartitionSnapshot {
                    name: p.name.to_string(),
                    share: p.share,
                    guaranteed: p.guaranteed.load(Ordering::Relaxed),
                    in_flight: if s.single {
                        self.in_flight()
                    } else {
                        p.in_flight.load(Ordering::Relaxed)
                    },
                    queued,
                    admitted: if s.single {
                        self.admitted_single()
                    } else {
                        p.admitted.load(Ordering::Relaxed)
                    },
                    shed: p.shed.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// The partition index `class` stands for (past the last means the last).
    #[inline]
    pub(crate) fn partition_index(&self, class: usize) -> usize {
        class.min(self.shared.partitions.len() - 1)
    }

    /// `class` must come from [`partition_index`](Self::partition_index).
    /// Admissions of a single-partition limiter: every admitted call is in flight, in the
    /// open window, in a closed one, or finished unmeasured. (Exact when quiet; a call
    /// finishing during the snapshot may be missed.)
    fn admitted_single(&self) -> u64 {
        let w = &self.shared.window;
        let open: u64 = w
            .shards
            .iter()
            .map(|sh| sh.calls() + sh.unmeasured.load(Ordering::Relaxed))
            .sum();
        w.measured.load(Ordering::Relaxed) + open + self.in_flight() as u64
    }

    #[inline]
    pub(crate) fn admit_or_queue(&self, class: usize) -> Admission {
        self.shared.admit_or_queue(class)
    }

    pub(crate) fn note_bypass(&self) {
        self.shared.bypassed.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.shared.metrics.bypassed.increment(1);
    }

    pub(crate) fn queue_interval(&self) -> Option<Duration> {
        self.shared.queue.as_ref().map(|q| q.config.interval)
    }

    pub(crate) fn shed_timed_out(&self, class: usize) -> Overloaded {
        let now = self.shared.now_ns();
        self.shared
            .shed(self.partition_index(class), ShedReason::QueueTimeout, now)
    }

    pub(crate) fn dropped_from_queue(&self, class: usize) -> Overloaded {
        // Already counted by whoever dropped it.
        self.shared
            .overloaded(self.partition_index(class), ShedReason::QueueTimeout)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind: keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_of_a_nanosecond_clock_are_nanoseconds() {
        let (clock, _mock) = quanta::Clock::mock();
        assert_eq!(ns_as_ticks(&clock, 1_234_567), 1_234_567);
        // The TSC-backed clock: scaling the ticks back gives the span again (within 0.1 %).
        let clock = quanta::Clock::new();
        let ns = 100_000_000;
        let back = clock.delta_as_nanos(0, ns_as_ticks(&clock, ns));
        assert!(back.abs_diff(ns) <= ns / 1000, "{back} vs {ns}");
    }
}
