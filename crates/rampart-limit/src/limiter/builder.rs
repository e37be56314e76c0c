//! Settings: [`LimiterBuilder`] (validated by [`build`](LimiterBuilder::build)) and the
//! optional queue's [`CoDelQueue`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_health::ConfigError;

use super::window::Window;
use super::{
    Control, Hot, Limiter, NEVER, PartitionState, Queue, QueueState, Shared, duration_ns,
    guarantee, ns_as_ticks,
};
use crate::algorithm::{Gradient2, LimitAlgorithm};
use crate::event::LogGate;

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
    pub(super) max_len: usize,
    pub(super) target: Duration,
    pub(super) interval: Duration,
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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
    pub(super) name: String,
    pub(super) algorithm: Box<dyn LimitAlgorithm>,
    pub(super) partitions: Vec<(String, f64)>,
    pub(super) queue: Option<CoDelQueue>,
    pub(super) window_samples: u32,
    pub(super) min_window: Duration,
    pub(super) max_window: Duration,
    pub(super) idle_after: Duration,
    pub(super) retry_after: Duration,
    pub(super) clock: Option<quanta::Clock>,
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

    /// The hint a shed request's [`Overloaded`](crate::Overloaded) error carries, which a
    /// fallback layer turns into `Retry-After` (default 1 s).
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
                min_window_ticks: ns_as_ticks(&clock, duration_ns(self.min_window)),
                max_window_ticks: ns_as_ticks(&clock, duration_ns(self.max_window)),
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
