//! Passive outlier detection: eject endpoints whose real traffic fails.
//!
//! An [`OutlierDetector`] watches a set of endpoints; each gets an [`OutlierTracker`]
//! ([`OutlierDetector::track`]) into which the caller records the [`Outcome`](crate::Outcome) of every call.
//! Endpoints that fail are ejected for a while, and a balancer skips them. The rules follow
//! Envoy's outlier detection: consecutive failures, failure percentage and success rate
//! (mean − stdev × factor), with a backoff that grows with each ejection and decays while the
//! endpoint behaves, all under a strict `max_ejection_percent`. The crate README gives the
//! full semantics. Recording a success takes no lock, allocates nothing and reads no clock.
//!
//! ```
//! use std::time::Duration;
//! use rampart_health::{OutlierConfig, OutlierDetector, Outcome};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let detector = OutlierDetector::new(
//!     OutlierConfig::builder()
//!         .consecutive_failures(3)
//!         .base_ejection_time(Duration::from_secs(30))
//!         .max_ejection_percent(50.0)
//!         .build()
//!         .unwrap(),
//! );
//! let a = detector.track("a");
//! let _b = detector.track("b");
//!
//! for _ in 0..3 {
//!     a.record(Outcome::Failure);
//! }
//! assert!(a.is_ejected());
//! assert_eq!(detector.ejected(), 1);
//!
//! tokio::time::advance(Duration::from_secs(30)).await;
//! assert!(!a.is_ejected()); // back after base_ejection_time × 1
//! # }
//! ```

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

mod config;
mod event;
pub mod stats;
mod tracker;

pub use config::{OutlierConfig, OutlierConfigBuilder, SuccessRate};
pub use event::{EjectionReason, EndpointOutlierState, OutlierEvent};
pub use tracker::OutlierTracker;

/// How many events a slow [`OutlierDetector::subscribe`] receiver may lag behind before it
/// starts missing the oldest ones.
const EVENT_CAPACITY: usize = 256;

/// Passive outlier detection over a set of endpoints. Cheap to clone (an `Arc` inside).
///
/// See the [module documentation](self) for the algorithm.
#[derive(Clone, Debug)]
pub struct OutlierDetector {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: OutlierConfig,
    /// Time origin of every `*_nanos` value.
    epoch: Instant,
    /// When the next lazy evaluation is due, in nanoseconds since `epoch`.
    next_evaluation: AtomicU64,
    registry: Mutex<Registry>,
    events: broadcast::Sender<OutlierEvent>,
    /// `config.counts_calls()`, read on every success.
    counts_calls: bool,
}

#[derive(Debug, Default)]
struct Registry {
    endpoints: Vec<Arc<EndpointState>>,
    ejected: usize,
    next_id: u64,
}

/// One endpoint. The hot counters are plain atomics; the ejection fields are written only
/// under the registry mutex and read lock-free.
#[derive(Debug)]
struct EndpointState {
    id: u64,
    name: Arc<str>,
    consecutive: AtomicU32,
    successes: AtomicU64,
    failures: AtomicU64,
    ejected: AtomicBool,
    until_nanos: AtomicU64,
    count: AtomicU32,
    /// Start of the current not-ejected stretch still owed decay, in nanoseconds since epoch.
    decay_from_nanos: AtomicU64,
}

impl OutlierDetector {
    /// A detector with no endpoints.
    pub fn new(config: OutlierConfig) -> Self {
        let epoch = Instant::now();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let first = config.interval.as_nanos() as u64;
        Self {
            shared: Arc::new(Shared {
                counts_calls: config.counts_calls(),
                config,
                epoch,
                next_evaluation: AtomicU64::new(first),
                registry: Mutex::new(Registry::default()),
                events,
            }),
        }
    }

    /// Registers an endpoint; dropping the tracker unregisters it.
    pub fn track(&self, name: impl Into<Arc<str>>) -> OutlierTracker {
        let now = self.shared.nanos(Instant::now());
        let mut registry = self.shared.lock();
        let id = registry.next_id;
        registry.next_id += 1;
        let state = Arc::new(EndpointState {
            id,
            name: name.into(),
            consecutive: AtomicU32::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejected: AtomicBool::new(false),
            until_nanos: AtomicU64::new(0),
            count: AtomicU32::new(0),
            decay_from_nanos: AtomicU64::new(now),
        });
        registry.endpoints.push(Arc::clone(&state));
        drop(registry);
        OutlierTracker {
            shared: Arc::clone(&self.shared),
            state,
        }
    }

    /// Interval work: ends expired ejections, decays ejection counts and, once per `interval`,
    /// runs success-rate and failure-percentage ejection over the counts gathered in the window that just
    /// closed (which then start over).
    ///
    /// Safe to call as often as you like (a balancer's maintenance tick of 100 ms is fine):
    /// expiry and decay follow the clock, and the failure-percentage window stays one
    /// `interval` long however often this runs. Also done lazily from the failure path once an
    /// `interval` has passed.
    ///
    /// A maintenance timer that stops when the detector's owner goes away:
    ///
    /// ```
    /// use std::time::Duration;
    /// use rampart_health::{OutlierConfig, OutlierDetector};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let detector = OutlierDetector::new(OutlierConfig::default());
    /// let ticker = tokio::spawn({
    ///     let detector = detector.clone();
    ///     async move {
    ///         let mut tick = tokio::time::interval(Duration::from_secs(1));
    ///         loop {
    ///             tick.tick().await;
    ///             detector.evaluate();
    ///         }
    ///     }
    /// });
    /// // … when the pool is dropped:
    /// ticker.abort();
    /// # }
    /// ```
    pub fn evaluate(&self) {
        let now = Instant::now();
        let mut registry = self.shared.lock();
        self.shared.evaluate_locked(&mut registry, now);
    }

    /// How many endpoints are ejected now (expired ejections are ended first).
    pub fn ejected(&self) -> usize {
        let now = Instant::now();
        let mut registry = self.shared.lock();
        self.shared.expire_due(&mut registry, now);
        registry.ejected
    }

    /// How many endpoints are tracked.
    pub fn len(&self) -> usize {
        self.shared.lock().endpoints.len()
    }

    /// `true` when no endpoint is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver of every ejection and return from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<OutlierEvent> {
        self.shared.events.subscribe()
    }

    /// The settings.
    pub fn config(&self) -> &OutlierConfig {
        &self.shared.config
    }

    /// The state of every tracked endpoint, in registration order (expired ejections are
    /// ended first).
    pub fn snapshot(&self) -> Vec<EndpointOutlierState> {
        let now = Instant::now();
        let mut registry = self.shared.lock();
        self.shared.expire_due(&mut registry, now);
        registry
            .endpoints
            .iter()
            .map(|ep| EndpointOutlierState {
                name: Arc::clone(&ep.name),
                ejected_until: ep
                    .ejected
                    .load(Ordering::Acquire)
                    .then(|| self.shared.instant(ep.until_nanos.load(Ordering::Acquire))),
                ejection_count: ep.count.load(Ordering::Relaxed),
                consecutive_failures: ep.consecutive.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Nothing under this lock panics; if something ever did, the counters are still
        // consistent enough to keep going.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    /// Runs an evaluation if one is due.
    fn maybe_evaluate(&self, now: Instant) {
        if self.nanos(now) >= self.next_evaluation.load(Ordering::Relaxed) {
            let mut registry = self.lock();
            // Another thread may have just run it.
            if self.nanos(now) >= self.next_evaluation.load(Ordering::Relaxed) {
                self.evaluate_locked(&mut registry, now);
            }
        }
    }

    /// Expiry and decay always; the statistical checks only when its window (one
    /// `interval`) is complete, so evaluating more often than `interval` is harmless.
    fn evaluate_locked(&self, registry: &mut Registry, now: Instant) {
        let now_nanos = self.nanos(now);
        self.expire_due(registry, now);

        // Decay: one step per full interval spent not ejected.
        for ep in &registry.endpoints {
            if !ep.ejected.load(Ordering::Acquire) {
                self.decay(ep, now_nanos);
            }
        }

        // Failure percentage over the counts of the window that just closed.
        let interval = self.config.interval.as_nanos() as u64;
        if now_nanos < self.next_evaluation.load(Ordering::Relaxed) {
            return;
        }
        self.next_evaluation
            .store(now_nanos.saturating_add(interval), Ordering::Relaxed);
        // The window's counts, taken (and reset) for every endpoint at once.
        let window: Vec<(Arc<EndpointState>, u64, u64)> = registry
            .endpoints
            .iter()
            .map(|ep| {
                let successes = ep.successes.swap(0, Ordering::Relaxed);
                let failures = ep.failures.swap(0, Ordering::Relaxed);
                (Arc::clone(ep), successes, failures)
            })
            .collect();
        let hosts = window.len();

        // Success rate (Envoy's statistical ejection): only endpoints with enough volume
        // count, and only when enough of them do.
        if let Some(sr) = self.config.success_rate {
            let counted: Vec<(&Arc<EndpointState>, f64)> = window
                .iter()
                .filter(|(ep, s, f)| {
                    !ep.ejected.load(Ordering::Acquire)
                        && s.saturating_add(*f) >= u64::from(sr.request_volume)
                })
                .map(|(ep, s, f)| (ep, *s as f64 * 100.0 / s.saturating_add(*f) as f64))
                .collect();
            if counted.len() >= sr.minimum_hosts as usize {
                let rates: Vec<f64> = counted.iter().map(|(_, r)| *r).collect();
                let threshold = stats::success_rate_threshold(&rates, sr.stdev_factor);
                let outliers = stats::success_rate_outliers(&rates, sr.stdev_factor);
                for ((ep, rate), outlier) in counted.iter().zip(outliers) {
                    if outlier {
                        tracing::debug!(
                            detector = %self.config.name,
                            endpoint = %ep.name,
                            success_rate = rate,
                            threshold,
                            "success rate below the pool's"
                        );
                        self.try_eject(registry, ep, now, EjectionReason::SuccessRate);
                    }
                }
            }
        }

        // Failure percentage: an absolute threshold, in a pool large enough.
        if let Some((threshold, minimum)) = self.config.failure_percentage
            && hosts >= self.config.failure_percentage_minimum_hosts as usize
        {
            for (ep, successes, failures) in &window {
                if ep.ejected.load(Ordering::Acquire) {
                    continue;
                }
                let total = successes.saturating_add(*failures);
                if stats::failure_percentage_exceeded(*failures, total, threshold, minimum) {
                    tracing::debug!(
                        detector = %self.config.name,
                        endpoint = %ep.name,
                        failures,
                        total,
                        threshold,
                        "failure percentage over threshold"
                    );
                    self.try_eject(registry, ep, now, EjectionReason::FailurePercentage);
                }
            }
        }
    }

    /// Applies the decay a not-ejected `ep` is owed at `now_nanos`: one step of its ejection
    /// count per full `interval` since its not-ejected stretch began. Called under the
    /// registry mutex (from evaluations, and before every ejection so that the backoff is
    /// based on an up-to-date count however long ago the last evaluation ran).
    fn decay(&self, ep: &EndpointState, now_nanos: u64) {
        let interval = self.config.interval.as_nanos() as u64;
        let count = ep.count.load(Ordering::Relaxed);
        let from = ep.decay_from_nanos.load(Ordering::Relaxed);
        if count == 0 {
            ep.decay_from_nanos.store(now_nanos, Ordering::Relaxed);
            return;
        }
        let steps = now_nanos.saturating_sub(from) / interval;
        if steps > 0 {
            let dropped = steps.min(u64::from(count)) as u32;
            ep.count.store(count - dropped, Ordering::Relaxed);
            ep.decay_from_nanos
                .store(from + steps * interval, Ordering::Relaxed);
            tracing::trace!(endpoint = %ep.name, count = count - dropped, "ejection count decayed");
        }
    }

    /// Ends every ejection whose time is up.
    fn expire_due(&self, registry: &mut Registry, now: Instant) {
        if registry.ejected == 0 {
            return;
        }
        let now_nanos = self.nanos(now);
        let endpoints = registry.endpoints.clone();
        for ep in &endpoints {
            if ep.ejected.load(Ordering::Acquire) {
                let until = ep.until_nanos.load(Ordering::Acquire);
                if now_nanos >= until {
                    self.restore_locked(registry, ep, until);
                }
            }
        }
    }

    /// Whether one more ejection keeps the ejected share within the cap.
    fn cap_allows_one_more(&self, registry: &Registry) -> bool {
        (registry.ejected + 1) as f64 * 100.0
            <= self.config.max_ejection_percent * registry.endpoints.len() as f64
    }

    /// Ejects `ep` unless it is ejected already or the cap forbids it. Returns whether it did.
    fn try_eject(
        &self,
        registry: &mut Registry,
        ep: &Arc<EndpointState>,
        now: Instant,
        reason: EjectionReason,
    ) -> bool {
        if ep.ejected.load(Ordering::Acquire) {
            return false;
        }
        if !self.cap_allows_one_more(registry) {
            // Expired ejections may still be counted: end them and look again.
            self.expire_due(registry, now);
            if !self.cap_allows_one_more(registry) {
                tracing::debug!(
                    endpoint = %ep.name,
                    %reason,
                    ejected = registry.ejected,
                    endpoints = registry.endpoints.len(),
                    max_ejection_percent = self.config.max_ejection_percent,
                    "ejection skipped: max_ejection_percent reached"
                );
                return false;
            }
        }
        self.eject_locked(registry, ep, now, reason);
        true
    }

    fn eject_locked(
        &self,
        registry: &mut Registry,
        ep: &EndpointState,
        now: Instant,
        reason: EjectionReason,
    ) {
        // `ep` is not ejected here: settle the decay it is owed before backing off.
        self.decay(ep, self.nanos(now));
        let count = ep.count.load(Ordering::Relaxed).saturating_add(1);
        let duration = self.config.ejection_time(count);
        let until = now + duration;
        ep.count.store(count, Ordering::Relaxed);
        ep.until_nanos.store(self.nanos(until), Ordering::Release);
        ep.ejected.store(true, Ordering::Release);
        ep.consecutive.store(0, Ordering::Relaxed);
        registry.ejected += 1;
        tracing::warn!(
            detector = %self.config.name,
            endpoint = %ep.name,
            %reason,
            count,
            duration = ?duration,
            ejected = registry.ejected,
            endpoints = registry.endpoints.len(),
            "endpoint ejected"
        );
        #[cfg(feature = "metrics")]
        {
            metrics::counter!(
                "rampart_health_outlier_ejections_total",
                "detector" => self.config.name.to_string(),
                "endpoint" => ep.name.to_string(),
                "reason" => reason.as_str()
            )
            .increment(1);
            metrics::gauge!(
                "rampart_health_outlier_ejected",
                "detector" => self.config.name.to_string(),
                "endpoint" => ep.name.to_string()
            )
            .set(1.0);
        }
        let _ = self.events.send(OutlierEvent::Ejected {
            name: Arc::clone(&ep.name),
            until,
            count,
            reason,
        });
    }

    /// Ends `ep`'s ejection; its not-ejected stretch (for decay) starts at `since`.
    fn restore_locked(&self, registry: &mut Registry, ep: &EndpointState, since_nanos: u64) {
        if !ep.ejected.swap(false, Ordering::AcqRel) {
            return;
        }
        registry.ejected = registry.ejected.saturating_sub(1);
        ep.decay_from_nanos.store(since_nanos, Ordering::Relaxed);
        ep.consecutive.store(0, Ordering::Relaxed);
        ep.successes.store(0, Ordering::Relaxed);
        ep.failures.store(0, Ordering::Relaxed);
        tracing::info!(
            detector = %self.config.name,
            endpoint = %ep.name,
            ejected = registry.ejected,
            "endpoint returned"
        );
        #[cfg(feature = "metrics")]
        metrics::gauge!(
            "rampart_health_outlier_ejected",
            "detector" => self.config.name.to_string(),
            "endpoint" => ep.name.to_string()
        )
        .set(0.0);
        let _ = self.events.send(OutlierEvent::Restored {
            name: Arc::clone(&ep.name),
        });
    }
}

#[cfg(test)]
mod tests;
