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

use rampart_health::{ConfigError, Outcome};
use tokio::sync::oneshot;

use crate::algorithm::{Gradient2, LimitAlgorithm, Sample};
use crate::event::LogGate;
use crate::{Overloaded, ShedReason};

const NEVER: u64 = u64::MAX;

/// Which partition a request belongs to, or whether it bypasses the limiter.
///
/// Partitions are numbered in declaration order (0 is the first, highest-priority one);
/// [`Limiter::partition_class`] looks one up by name. An index past the last partition means
/// the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The request counts against partition `n`.
    Partition(usize),
    /// The request is not limited at all (health checks, admin routes).
    Bypass,
}

/// Classifies requests into [`Class`]es. Implemented for every `Fn(&Req) -> Class`.
pub trait PartitionBy<Req> {
    /// The class of `req`.
    fn class(&self, req: &Req) -> Class;
}

impl<F, Req> PartitionBy<Req> for F
where
    F: Fn(&Req) -> Class,
{
    #[inline]
    fn class(&self, req: &Req) -> Class {
        self(req)
    }
}

/// Every request in the first partition (the default of [`LimitLayer`](crate::LimitLayer)).
#[derive(Debug, Clone, Copy, Default)]
pub struct SinglePartition;

impl<Req> PartitionBy<Req> for SinglePartition {
    #[inline]
    fn class(&self, _req: &Req) -> Class {
        Class::Partition(0)
    }
}

/// Settings of the optional bounded queue: adaptive LIFO with CoDel.
///
/// Without a queue (the default) a request over the limit is shed at once. With one, it waits
/// (in its partition's line) for a slot, and the queue follows Facebook's "adaptive LIFO +
/// CoDel" (Maurer, *Fail at Scale*, ACM Queue 2015; CoDel: Nichols & Jacobson, RFC 8289):
///
/// - while the queue has been empty at some point in the last
///   [`interval`](Self::interval), it is FIFO and a request may wait up to `interval`;
/// - once it has not been empty for a whole `interval` (a standing queue), it serves the
///   **newest** request first (the one whose client is most likely still waiting) and drops
///   requests that waited longer than [`target`](Self::target);
/// - it holds at most [`max_len`](Self::new) requests: a newcomer to a full FIFO queue is
///   shed; in LIFO mode the oldest waiter makes room instead.
///
/// Defaults: target 5 ms, interval 100 ms (the paper's). No request waits longer than
/// `interval`. A waiting request's timer is a tokio `Sleep`: queued calls must be polled
/// inside a tokio runtime with the time driver enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoDelQueue {
    max_len: usize,
    target: Duration,
    interval: Duration,
}

impl CoDelQueue {
    /// A queue of at most `max_len` waiting requests, with the default delays.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
        }
    }

    /// The queue delay target: under a standing queue, requests that waited longer are
    /// dropped (default 5 ms).
    pub fn target(mut self, target: Duration) -> Self {
        self.target = target;
        self
    }

    /// How long the queue may stay non-empty before it counts as standing, and the longest
    /// any request waits (default 100 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_len == 0 {
            return Err(ConfigError::new(
                "queue.max_len",
                self.max_len,
                "must be at least 1",
            ));
        }
        if self.target.is_zero() {
            return Err(ConfigError::new(
                "queue.target",
                self.target,
                "must be positive",
            ));
        }
        if self.interval < self.target {
            return Err(ConfigError::new(
                "queue.interval",
                self.interval,
                "must be at least `queue.target`",
            ));
        }
        Ok(())
    }
}

/// Builds a [`Limiter`]; [`build`](Self::build) validates.
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"limiter"` |
/// | [`algorithm`](Self::algorithm) | [`Gradient2`] with its defaults |
/// | [`partition`](Self::partition) | one partition, `default`, share 1.0 |
/// | [`queue`](Self::queue) | none: shed at once |
/// | [`window_samples`](Self::window_samples), [`min_window`](Self::min_window), [`max_window`](Self::max_window) | 10, 100 ms, 1 s |
/// | [`partition_idle_after`](Self::partition_idle_after) | 1 s |
/// | [`retry_after`](Self::retry_after) | 1 s |
/// | [`clock`](Self::clock) | a TSC-backed [`quanta::Clock`] |
pub struct LimiterBuilder {
    name: String,
    algorithm: Box<dyn LimitAlgorithm>,
    partitions: Vec<(String, f64)>,
    queue: Option<CoDelQueue>,
    window_samples: u32,
    min_window: Duration,
    max_window: Duration,
    idle_after: Duration,
    retry_after: Duration,
    clock: Option<quanta::Clock>,
}

impl fmt::Debug for LimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimiterBuilder")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("partitions", &self.partitions)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Default for LimiterBuilder {
    fn default() -> Self {
        Self {
            name: "limiter".to_owned(),
            algorithm: Box::new(Gradient2::default()),
            partitions: Vec::new(),
            queue: None,
            window_samples: 10,
            min_window: Duration::from_millis(100),
            max_window: Duration::from_secs(1),
            idle_after: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
            clock: None,
        }
    }
}

impl LimiterBuilder {
    /// The limiter's name, the `limiter` label of its metrics and the field of its events.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The algorithm that sets the limit ([`Gradient2`], [`Aimd`](crate::algorithm::Aimd),
    /// [`Vegas`](crate::algorithm::Vegas), [`Fixed`](crate::algorithm::Fixed) or your own).
    pub fn algorithm(mut self, algorithm: impl LimitAlgorithm) -> Self {
        self.algorithm = Box::new(algorithm);
        self
    }

    /// Adds a partition with a guaranteed `share` of the limit, in `(0, 1]`; the shares may
    /// add up to at most 1. Declaration order is priority order: the first is the highest.
    pub fn partition(mut self, name: impl Into<String>, share: f64) -> Self {
        self.partitions.push((name.into(), share));
        self
    }

    /// Requests over the limit wait in a bounded adaptive-LIFO/CoDel queue instead of being
    /// shed at once.
    pub fn queue(mut self, queue: CoDelQueue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Calls per measurement window (default 10; a window also lasts at least
    /// [`min_window`](Self::min_window)).
    pub fn window_samples(mut self, n: u32) -> Self {
        self.window_samples = n;
        self
    }

    /// The shortest measurement window (default 100 ms).
    pub fn min_window(mut self, d: Duration) -> Self {
        self.min_window = d;
        self
    }

    /// The longest measurement window: a window closes after this even with fewer than
    /// [`window_samples`](Self::window_samples) calls (default 1 s).
    pub fn max_window(mut self, d: Duration) -> Self {
        self.max_window = d;
        self
    }

    /// A partition without calls in flight and without requests for this long lends its
    /// whole share (default 1 s).
    pub fn partition_idle_after(mut self, d: Duration) -> Self {
        self.idle_after = d;
        self
    }

    /// The hint a shed request's [`Overloaded`] error carries, which a fallback layer turns
    /// into `Retry-After` (default 1 s).
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = d;
        self
    }

    /// The clock that times calls (tests pass [`quanta::Clock::mock`]). Queue delays use
    /// tokio's clock, so `tokio::time::pause` drives them.
    pub fn clock(mut self, clock: quanta::Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the settings and builds the limiter.
    pub fn build(self) -> Result<Limiter, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", &self.name, "must not be empty"));
        }
        let mut partitions = self.partitions;
        if partitions.is_empty() {
            partitions.push(("default".to_owned(), 1.0));
        }
        if partitions.len() > 64 {
            return Err(ConfigError::new(
                "partition",
                partitions.len(),
                "at most 64 partitions",
            ));
        }
        let mut total = 0.0;
        for (i, (name, share)) in partitions.iter().enumerate() {
            if name.is_empty() {
                return Err(ConfigError::new(
                    "partition",
                    name,
                    "name must not be empty",
                ));
            }
            if partitions[..i].iter().any(|(n, _)| n == name) {
                return Err(ConfigError::new("partition", name, "duplicate name"));
            }
            if !(*share > 0.0 && *share <= 1.0) {
                return Err(ConfigError::new(
                    "partition.share",
                    share,
                    "must lie in (0, 1]",
                ));
            }
            total += share;
        }
        if total > 1.0 + 1e-9 {
            return Err(ConfigError::new(
                "partition.share",
                total,
                "shares must add up to at most 1",
            ));
        }
        if self.window_samples == 0 {
            return Err(ConfigError::new(
                "window_samples",
                self.window_samples,
                "must be at least 1",
            ));
        }
        if self.max_window.is_zero() {
            return Err(ConfigError::new(
                "max_window",
                self.max_window,
                "must be positive",
            ));
        }
        if self.min_window > self.max_window {
            return Err(ConfigError::new(
                "min_window",
                self.min_window,
                "must not exceed `max_window`",
            ));
        }
        if self.idle_after.is_zero() {
            return Err(ConfigError::new(
                "partition_idle_after",
                self.idle_after,
                "must be positive",
            ));
        }
        if let Some(q) = &self.queue {
            q.validate()?;
        }
        let clock = self.clock.unwrap_or_default();
        let name: Arc<str> = self.name.into();
        let limit = self.algorithm.limit().max(1);
        let parts: Box<[PartitionState]> = partitions
            .into_iter()
            .map(|(pname, share)| {
                let pname: Arc<str> = pname.into();
                PartitionState {
                    share,
                    guaranteed: AtomicUsize::new(guarantee(share, limit)),
                    in_flight: AtomicUsize::new(0),
                    last_arrival: AtomicU64::new(NEVER),
                    admitted: AtomicU64::new(0),
                    shed: AtomicU64::new(0),
                    #[cfg(feature = "metrics")]
                    metrics: crate::event::PartitionMetrics::new(&name, &pname),
                    name: pname,
                }
            })
            .collect();
        let queue = self.queue.map(|config| Queue {
            config,
            len: AtomicUsize::new(0),
            state: Mutex::new(QueueState {
                lines: (0..parts.len()).map(|_| VecDeque::new()).collect(),
                len: 0,
                last_empty: tokio::time::Instant::now(),
            }),
        });
        #[cfg(feature = "metrics")]
        let metrics = {
            let m = crate::event::LimiterMetrics::new(&name);
            m.limit.set(limit as f64);
            m
        };
        let epoch = clock.raw();
        Ok(Limiter {
            shared: Arc::new(Shared {
                algorithm_name: self.algorithm.name(),
                hot: Hot {
                    limit: AtomicUsize::new(limit),
                    in_flight: AtomicUsize::new(0),
                },
                single: parts.len() == 1,
                partitions: parts,
                window: Window::new(),
                control: Mutex::new(Control {
                    algorithm: self.algorithm,
                    changes: 0,
                }),
                window_samples: self.window_samples,
                min_window_ns: duration_ns(self.min_window),
                max_window_ns: duration_ns(self.max_window),
                idle_after_ns: duration_ns(self.idle_after),
                retry_after: self.retry_after,
                queue,
                bypassed: AtomicU64::new(0),
                change_gate: LogGate::new(),
                shed_gate: LogGate::new(),
                clock,
                epoch,
                #[cfg(feature = "metrics")]
                metrics,
                name,
            }),
        })
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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
    min_window_ns: u64,
    max_window_ns: u64,
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

/// Window shards: threads add their measurements to different cache lines.
const SHARDS: usize = 4;

/// The current measurement window, accumulated on the request path.
#[repr(align(128))]
struct Window {
    /// When the window opened (ns since the limiter's epoch); read-mostly.
    started: AtomicU64,
    /// Calls measured in closed windows, cumulative.
    measured: AtomicU64,
    shards: [Shard; SHARDS],
}

/// One thread group's share of the window.
#[repr(align(128))]
struct Shard {
    /// Calls in the low 32 bits, dropped calls in the high 32 bits.
    counts: AtomicU64,
    rtt_sum: AtomicU64,
    min_rtt: AtomicU64,
    max_in_flight: AtomicUsize,
    /// Calls that finished without a measurement (cancelled or ignored), cumulative.
    unmeasured: AtomicU64,
}

impl Window {
    fn new() -> Self {
        Self {
            started: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            shards: std::array::from_fn(|_| Shard {
                counts: AtomicU64::new(0),
                rtt_sum: AtomicU64::new(0),
                min_rtt: AtomicU64::new(u64::MAX),
                max_in_flight: AtomicUsize::new(0),
                unmeasured: AtomicU64::new(0),
            }),
        }
    }

    /// This thread's shard (threads are spread over the shards round robin).
    #[inline]
    fn shard(&self) -> &Shard {
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
            .map(|sh| {
                (sh.counts.load(Ordering::Relaxed) & 0xffff_ffff)
                    + sh.unmeasured.load(Ordering::Relaxed)
            })
            .sum();
        w.measured.load(Ordering::Relaxed) + open + self.in_flight() as u64
    }

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

impl Shared {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.ns(self.clock.raw())
    }

    /// A raw clock reading as ns since the limiter's epoch.
    #[inline]
    fn ns(&self, raw: u64) -> u64 {
        self.clock.delta_as_nanos(self.epoch, raw)
    }

    /// Takes a slot for partition `i` if the admission rule allows it; `raw` is the clock
    /// now (the call's start).
    #[inline]
    fn try_admit(self: &Arc<Self>, i: usize, raw: u64) -> Option<Permit> {
        let p = &self.partitions[i];
        let limit = self.hot.limit.load(Ordering::Relaxed);
        let cap = if self.single {
            limit
        } else {
            let now = self.ns(raw);
            p.last_arrival.store(now, Ordering::Relaxed);
            if p.in_flight.load(Ordering::Relaxed) < p.guaranteed.load(Ordering::Relaxed) {
                limit
            } else {
                limit.saturating_sub(self.reserve(i, now))
            }
        };
        let mut cur = self.hot.in_flight.load(Ordering::Relaxed);
        loop {
            if cur >= cap {
                return None;
            }
            match self.hot.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        // With one partition its in-flight count is the total, and admissions are derived
        // from the windows (see `Limiter::admitted_single`): no shared write here.
        if !self.single {
            p.in_flight.fetch_add(1, Ordering::Relaxed);
            p.admitted.fetch_add(1, Ordering::Relaxed);
        }
        #[cfg(feature = "metrics")]
        p.metrics.admitted.increment(1);
        Some(Permit {
            shared: Some(Arc::clone(self)),
            partition: i as u32,
            start: raw,
            in_flight: cur + 1,
        })
    }

    /// Unused guarantees of the other active partitions.
    fn reserve(&self, i: usize, now: u64) -> usize {
        let mut reserve = 0usize;
        for (j, q) in self.partitions.iter().enumerate() {
            if j == i {
                continue;
            }
            let busy = q.in_flight.load(Ordering::Relaxed);
            let last = q.last_arrival.load(Ordering::Relaxed);
            let active =
                busy > 0 || (last != NEVER && now.saturating_sub(last) < self.idle_after_ns);
            if active {
                reserve += q.guaranteed.load(Ordering::Relaxed).saturating_sub(busy);
            }
        }
        reserve
    }

    fn overloaded(&self, i: usize, reason: ShedReason) -> Overloaded {
        Overloaded::new(
            Arc::clone(&self.name),
            Some(Arc::clone(&self.partitions[i].name)),
            reason,
            self.retry_after,
        )
    }

    /// Counts a shed request of partition `i` and builds its error.
    fn shed(&self, i: usize, reason: ShedReason, now: u64) -> Overloaded {
        let p = &self.partitions[i];
        p.shed.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        p.metrics.shed(reason);
        match self.shed_gate.pass(now) {
            Some(suppressed) => tracing::warn!(
                target: "rampart_limit",
                limiter = %self.name,
                partition = %p.name,
                reason = reason.as_str(),
                limit = self.hot.limit.load(Ordering::Relaxed),
                in_flight = self.hot.in_flight.load(Ordering::Relaxed),
                more_since_last_warning = suppressed,
                "request shed"
            ),
            None => tracing::trace!(
                target: "rampart_limit",
                limiter = %self.name,
                partition = %p.name,
                reason = reason.as_str(),
                "request shed"
            ),
        }
        self.overloaded(i, reason)
    }

    fn admit_or_queue(self: &Arc<Self>, i: usize) -> Admission {
        let raw = self.clock.raw();
        let Some(queue) = &self.queue else {
            return match self.try_admit(i, raw) {
                Some(p) => Admission::Admitted(p),
                None => Admission::Shed(self.shed(i, ShedReason::Limit, self.ns(raw))),
            };
        };
        let now = self.ns(raw);
        // No barging: while others wait, a newcomer joins the queue.
        if queue.len.load(Ordering::Acquire) == 0 {
            if let Some(p) = self.try_admit(i, raw) {
                return Admission::Admitted(p);
            }
        } else if !self.single {
            self.partitions[i]
                .last_arrival
                .store(now, Ordering::Relaxed);
        }
        let rx = {
            let mut state = lock(&queue.state);
            let t = tokio::time::Instant::now();
            if state.len >= queue.config.max_len {
                let standing =
                    t.saturating_duration_since(state.last_empty) >= queue.config.interval;
                // LIFO mode: the oldest waiter of the lowest partition makes room.
                let evicted = if standing {
                    state
                        .lines
                        .iter_mut()
                        .enumerate()
                        .rev()
                        .find_map(|(j, l)| l.pop_front().map(|_| j))
                } else {
                    None
                };
                let Some(evicted) = evicted else {
                    drop(state);
                    return Admission::Shed(self.shed(i, ShedReason::QueueFull, now));
                };
                // The evicted waiter's receiver reports the drop; it is counted here.
                state.len -= 1;
                let _ = self.shed(evicted, ShedReason::QueueFull, now);
            }
            if state.len == 0 {
                // The queue was empty until now.
                state.last_empty = t;
            }
            let (tx, rx) = oneshot::channel();
            state.lines[i].push_back(Waiter { since: t, tx });
            state.len += 1;
            queue.len.store(state.len, Ordering::Release);
            #[cfg(feature = "metrics")]
            self.metrics.queue_length.set(state.len as f64);
            rx
        };
        // A slot may have freed between the failed admission and the enqueue.
        self.dispatch();
        Admission::Queued(rx)
    }

    /// Hands free slots to waiting requests, and drops the ones CoDel gives up on.
    fn dispatch(self: &Arc<Self>) {
        let Some(queue) = &self.queue else { return };
        if queue.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut dropped: Vec<usize> = Vec::new();
        {
            let mut state = lock(&queue.state);
            let t = tokio::time::Instant::now();
            let raw = self.clock.raw();
            loop {
                if state.len == 0 {
                    state.last_empty = t;
                    break;
                }
                let standing =
                    t.saturating_duration_since(state.last_empty) >= queue.config.interval;
                let max_wait = if standing {
                    queue.config.target
                } else {
                    queue.config.interval
                };
                // Drop what waited too long (oldest first) and what nobody waits for.
                let mut removed = 0;
                for (j, line) in state.lines.iter_mut().enumerate() {
                    while let Some(w) = line.front() {
                        if w.tx.is_closed() {
                            line.pop_front();
                            removed += 1;
                        } else if t.saturating_duration_since(w.since) > max_wait {
                            line.pop_front();
                            removed += 1;
                            dropped.push(j);
                        } else {
                            break;
                        }
                    }
                }
                state.len -= removed;
                if state.len == 0 {
                    continue;
                }
                // Serve the highest-priority partition that may take a slot.
                let mut served = false;
                for j in 0..state.lines.len() {
                    if state.lines[j].is_empty() {
                        continue;
                    }
                    let Some(permit) = self.try_admit(j, raw) else {
                        continue;
                    };
                    let waiter = if standing {
                        state.lines[j].pop_back()
                    } else {
                        state.lines[j].pop_front()
                    };
                    state.len -= 1;
                    match waiter {
                        Some(w) => {
                            if let Err(permit) = w.tx.send(permit) {
                                // The waiter left: return the slot without dispatching again
                                // (we hold the queue lock) and keep going.
                                permit.release_quietly();
                            }
                        }
                        None => permit.release_quietly(),
                    }
                    served = true;
                    break;
                }
                if !served {
                    break;
                }
            }
            queue.len.store(state.len, Ordering::Release);
            #[cfg(feature = "metrics")]
            self.metrics.queue_length.set(state.len as f64);
        }
        let now = self.now_ns();
        for j in dropped {
            // Their receivers see the sender dropped and report `Overloaded`.
            let _ = self.shed(j, ShedReason::QueueTimeout, now);
        }
    }

    /// Returns a slot; records the call's sample when it has a verdict.
    #[inline]
    fn release(self: &Arc<Self>, permit: &Permit, outcome: Option<Outcome>, dispatch: bool) {
        if !self.single {
            self.partitions[permit.partition as usize]
                .in_flight
                .fetch_sub(1, Ordering::Relaxed);
        }
        self.hot.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut limit_rose = false;
        if let Some(outcome) = outcome
            && outcome != Outcome::Ignored
        {
            let end = self.clock.raw();
            let rtt = self.clock.delta_as_nanos(permit.start, end);
            let now = self.clock.delta_as_nanos(self.epoch, end);
            limit_rose = self.record(rtt, permit.in_flight, outcome.is_failure(), now);
        } else if self.single {
            self.window
                .shard()
                .unmeasured
                .fetch_add(1, Ordering::Relaxed);
        }
        if dispatch && (limit_rose || self.queue.is_some()) {
            self.dispatch();
        }
    }

    /// Adds one call to the window; closes the window when it is complete. Returns whether
    /// the limit rose.
    #[inline]
    fn record(&self, rtt: u64, in_flight: usize, dropped: bool, now: u64) -> bool {
        let w = &self.window;
        let shard = w.shard();
        // Minimum and maximum by load-compare-store: the shard is (nearly) this thread's
        // alone, and a lost update only blurs a statistic.
        let inc = if dropped {
            1 | (1 << 32)
        } else {
            shard.rtt_sum.fetch_add(rtt, Ordering::Relaxed);
            if rtt < shard.min_rtt.load(Ordering::Relaxed) {
                shard.min_rtt.store(rtt, Ordering::Relaxed);
            }
            1
        };
        if in_flight > shard.max_in_flight.load(Ordering::Relaxed) {
            shard.max_in_flight.store(in_flight, Ordering::Relaxed);
        }
        let n = (shard.counts.fetch_add(inc, Ordering::AcqRel) + inc) as u32;
        let elapsed = now.saturating_sub(w.started.load(Ordering::Relaxed));
        // Per shard: with several threads a window holds more than `window_samples` calls.
        if (n >= self.window_samples && elapsed >= self.min_window_ns)
            || elapsed >= self.max_window_ns
        {
            return self.close_window(now);
        }
        false
    }

    #[cold]
    fn close_window(&self, now: u64) -> bool {
        // Someone else is closing it: our sample lands in the next window.
        let Ok(mut control) = self.control.try_lock() else {
            return false;
        };
        let w = &self.window;
        let elapsed = now.saturating_sub(w.started.load(Ordering::Relaxed));
        let count: u64 = w
            .shards
            .iter()
            .map(|s| s.counts.load(Ordering::Acquire) & 0xffff_ffff)
            .sum();
        if count == 0 || (count < u64::from(self.window_samples) && elapsed < self.max_window_ns) {
            return false;
        }
        w.started.store(now, Ordering::Relaxed);
        let (mut count, mut drops, mut sum, mut min, mut max_in_flight) = (0, 0, 0, u64::MAX, 0);
        for s in &w.shards {
            let c = s.counts.swap(0, Ordering::AcqRel);
            count += c & 0xffff_ffff;
            drops += c >> 32;
            sum += s.rtt_sum.swap(0, Ordering::Relaxed);
            min = min.min(s.min_rtt.swap(u64::MAX, Ordering::Relaxed));
            max_in_flight = max_in_flight.max(s.max_in_flight.swap(0, Ordering::Relaxed));
        }
        w.measured.fetch_add(count, Ordering::Relaxed);
        let ok = count.saturating_sub(drops);
        let rtt = Duration::from_nanos(sum.checked_div(ok).unwrap_or(0));
        let min_rtt = if min == u64::MAX {
            Duration::ZERO
        } else {
            Duration::from_nanos(min)
        };
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

/// One admitted call's slot. Return it by [`record`](Self::record)ing the call's outcome
/// (which also feeds the limit algorithm) or by dropping it (no measurement: the call was
/// cancelled).
pub struct Permit {
    shared: Option<Arc<Shared>>,
    partition: u32,
    start: u64,
    in_flight: usize,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("partition", &self.partition)
            .field("bypass", &self.shared.is_none())
            .finish_non_exhaustive()
    }
}

impl Permit {
    fn bypass(shared: &Arc<Shared>) -> Self {
        shared.bypassed.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        shared.metrics.bypassed.increment(1);
        Self {
            shared: None,
            partition: 0,
            start: 0,
            in_flight: 0,
        }
    }

    /// Returns the slot, recording the call's round-trip time (since the permit was granted)
    /// and outcome: a [`Failure`](Outcome::Failure) counts as a drop, an
    /// [`Ignored`](Outcome::Ignored) call is not measured.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        if let Some(shared) = self.shared.take() {
            shared.release(&self, Some(outcome), true);
        }
    }

    fn release_quietly(mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release(&self, None, false);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release(self, None, true);
        }
    }
}

/// A limiter's state, for an operator endpoint.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LimiterSnapshot {
    /// The limiter's name.
    pub name: String,
    /// The algorithm's name (`"gradient2"`, …).
    pub algorithm: &'static str,
    /// The current limit.
    pub limit: usize,
    /// Calls in flight.
    pub in_flight: usize,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// Requests that bypassed the limiter since it was built.
    pub bypassed: u64,
    /// Per partition, in priority order.
    pub partitions: Vec<PartitionSnapshot>,
}

impl LimiterSnapshot {
    /// Requests shed since the limiter was built, over all partitions.
    pub fn shed(&self) -> u64 {
        self.partitions.iter().map(|p| p.shed).sum()
    }
}

/// One partition's state in a [`LimiterSnapshot`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PartitionSnapshot {
    /// The partition's name.
    pub name: String,
    /// Its guaranteed share of the limit.
    pub share: f64,
    /// Its guaranteed slots at the current limit.
    pub guaranteed: usize,
    /// Its calls in flight.
    pub in_flight: usize,
    /// Its requests waiting in the queue.
    pub queued: usize,
    /// Requests admitted since the limiter was built.
    pub admitted: u64,
    /// Requests shed since the limiter was built.
    pub shed: u64,
}
