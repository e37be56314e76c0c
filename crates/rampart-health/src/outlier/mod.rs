//! Passive outlier detection: eject endpoints whose real traffic fails.
//!
//! An [`OutlierDetector`] watches a set of endpoints. Each endpoint gets an
//! [`OutlierTracker`] ([`OutlierDetector::track`]) into which the caller records the
//! [`Outcome`] of every call it served; the detector ejects endpoints that fail and brings them
//! back after a while. A balancer skips endpoints whose [`OutlierTracker::is_ejected`] is
//! `true`.
//!
//! The algorithm follows Envoy's outlier detection
//! (<https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier>,
//! configuration in `config.cluster.v3.OutlierDetection`):
//!
//! - **Consecutive failures** (Envoy's `consecutive_5xx`, default 5): the call that makes the
//!   streak reach the threshold ejects the endpoint at once. A success resets the streak;
//!   [`Outcome::Ignored`] leaves it alone. `0` disables this detector.
//! - **Failure percentage** (Envoy's `failure_percentage_threshold` and
//!   `failure_percentage_request_volume`; disabled by default): once per `interval` window,
//!   an endpoint that served at least `minimum_requests` calls in the window, of which at
//!   least `threshold_percent` % failed, is ejected. The counts then start over. Unlike Envoy
//!   there is no `failure_percentage_minimum_hosts`.
//! - **Ejection time** = `base_ejection_time × ejection count`, capped at
//!   `max_ejection_time`; the count is incremented by each ejection, so an endpoint that keeps
//!   failing stays out longer each time.
//! - **Decay**: the ejection count drops by one for every full `interval` the endpoint spends
//!   not ejected (Envoy decrements its ejection multiplier once per interval while the host
//!   stays healthy), so an endpoint that recovered for good is eventually forgiven. The decay
//!   is settled at every evaluation and before every ejection, so an ejection's time never
//!   depends on when the last evaluation happened to run.
//! - **Strict `max_ejection_percent`** (default 10 %): an ejection happens only if afterwards
//!   `ejected × 100 ≤ max_ejection_percent × endpoints`. An ejection that would push the ejected
//!   share above the cap does not happen (the endpoint's streak stays over the threshold, so
//!   its next failure tries again, and succeeds once another ejection has ended). This is
//!   stricter than Envoy, which always allows at least one ejection: here, with 3 endpoints, a
//!   10 % cap ejects nobody (one of three is 33 %), 34 % ejects one, and 100 % can eject all
//!   three; a pool of one endpoint can only lose it with a cap of 100 %. Manual ejections
//!   ([`OutlierTracker::eject`]) ignore the cap but count toward it.
//! - **Expiry** is lazy: an ejection ends when its time is up, noticed by
//!   [`OutlierTracker::is_ejected`] (which reads the clock only while ejected), by
//!   [`OutlierDetector::ejected`], or by an evaluation. Evaluations run lazily from the failure
//!   path once an `interval` has passed, and callers may also run
//!   [`OutlierDetector::evaluate`] on a timer of any period (needed for failure-percentage
//!   ejection of an endpoint that receives no further failures, and for timely decay); the
//!   failure-percentage window stays one `interval` long however often it runs.
//!
//! Failures recorded while an endpoint is ejected (calls that were in flight when it was
//! ejected) are not counted; the streak and the interval counts restart when it returns.
//!
//! # Cost
//!
//! Recording a success or an ignored outcome is a few relaxed atomic operations: no lock, no
//! allocation, no clock read. The failure path reads the clock and takes the detector's mutex
//! only to eject, expire or evaluate.
//!
//! # Observability
//!
//! Ejections and restorations are broadcast as [`OutlierEvent`]s
//! ([`OutlierDetector::subscribe`]) and emit `tracing` events (`warn` on ejection, `info` on
//! return, `debug` when the cap prevents an ejection). With the `metrics` feature, the counter
//! `rampart_health_outlier_ejections_total{endpoint, reason}` and the gauge
//! `rampart_health_outlier_ejected{endpoint}` (1 while ejected) are recorded. The current state
//! is readable through [`OutlierDetector::snapshot`] and the tracker's getters.
//!
//! # Example
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

use crate::{ConfigError, Outcome};

/// How many events a slow [`OutlierDetector::subscribe`] receiver may lag behind before it
/// starts missing the oldest ones.
const EVENT_CAPACITY: usize = 256;

/// Settings of an [`OutlierDetector`]; build one with [`OutlierConfig::builder`].
///
/// Defaults (Envoy's): `consecutive_failures` 5, `interval` 10 s, `base_ejection_time` 30 s,
/// `max_ejection_time` 300 s, `max_ejection_percent` 10 %, failure percentage disabled.
///
/// ```
/// use std::time::Duration;
/// use rampart_health::OutlierConfig;
/// let c = OutlierConfig::default();
/// assert_eq!(c.consecutive_failures(), 5);
/// assert_eq!(c.base_ejection_time(), Duration::from_secs(30));
/// assert_eq!(c.failure_percentage(), None);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    consecutive_failures: u32,
    failure_percentage: Option<(f64, u32)>,
    interval: Duration,
    base_ejection_time: Duration,
    max_ejection_time: Duration,
    max_ejection_percent: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_percentage: None,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10.0,
        }
    }
}

impl OutlierConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> OutlierConfigBuilder {
        OutlierConfigBuilder {
            config: Self::default(),
        }
    }

    /// Consecutive failures that eject (0 = disabled).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// `(threshold_percent, minimum_requests)` of failure-percentage ejection, if enabled.
    pub fn failure_percentage(&self) -> Option<(f64, u32)> {
        self.failure_percentage
    }

    /// Time between evaluations (failure-percentage windows, decay steps).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Ejection time of a first ejection.
    pub fn base_ejection_time(&self) -> Duration {
        self.base_ejection_time
    }

    /// Cap on the ejection time.
    pub fn max_ejection_time(&self) -> Duration {
        self.max_ejection_time
    }

    /// Cap on the share of endpoints ejected at once, in percent.
    pub fn max_ejection_percent(&self) -> f64 {
        self.max_ejection_percent
    }

    /// `base_ejection_time × count`, capped at `max_ejection_time`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rampart_health::OutlierConfig;
    /// let c = OutlierConfig::default(); // 30 s base, 300 s cap
    /// assert_eq!(c.ejection_time(1), Duration::from_secs(30));
    /// assert_eq!(c.ejection_time(4), Duration::from_secs(120));
    /// assert_eq!(c.ejection_time(50), Duration::from_secs(300));
    /// ```
    pub fn ejection_time(&self, count: u32) -> Duration {
        self.base_ejection_time
            .checked_mul(count.max(1))
            .map_or(self.max_ejection_time, |d| d.min(self.max_ejection_time))
    }
}

/// Builds an [`OutlierConfig`]; see [`OutlierConfig::builder`].
#[derive(Clone, Debug)]
pub struct OutlierConfigBuilder {
    config: OutlierConfig,
}

impl OutlierConfigBuilder {
    /// Consecutive failures that eject at once (default 5; 0 disables).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = n;
        self
    }

    /// Enables failure-percentage ejection: an endpoint with at least `minimum_requests` calls
    /// in an interval, of which at least `threshold_percent` % (in `(0, 100]`) failed, is
    /// ejected at the evaluation.
    pub fn failure_percentage(mut self, threshold_percent: f64, minimum_requests: u32) -> Self {
        self.config.failure_percentage = Some((threshold_percent, minimum_requests));
        self
    }

    /// Time between evaluations (default 10 s).
    pub fn interval(mut self, d: Duration) -> Self {
        self.config.interval = d;
        self
    }

    /// Ejection time of a first ejection (default 30 s).
    pub fn base_ejection_time(mut self, d: Duration) -> Self {
        self.config.base_ejection_time = d;
        self
    }

    /// Cap on the ejection time (default 300 s).
    pub fn max_ejection_time(mut self, d: Duration) -> Self {
        self.config.max_ejection_time = d;
        self
    }

    /// Cap on the share of endpoints ejected at once, `0.0..=100.0` percent (default 10).
    pub fn max_ejection_percent(mut self, p: f64) -> Self {
        self.config.max_ejection_percent = p;
        self
    }

    /// Validates and builds.
    ///
    /// Rejects a zero `interval` or `base_ejection_time`, a `max_ejection_time` shorter than
    /// `base_ejection_time`, a `max_ejection_percent` outside `0..=100` (or NaN), a failure
    /// percentage threshold outside `(0, 100]` and a minimum request volume of 0, with a
    /// [`ConfigError`] naming the field and the value.
    ///
    /// ```
    /// use rampart_health::OutlierConfig;
    /// let err = OutlierConfig::builder().max_ejection_percent(120.0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `max_ejection_percent` = 120.0: must be within 0..=100");
    /// ```
    pub fn build(self) -> Result<OutlierConfig, ConfigError> {
        let c = self.config;
        if c.interval.is_zero() {
            return Err(ConfigError::new(
                "interval",
                c.interval,
                "must be greater than zero",
            ));
        }
        if c.base_ejection_time.is_zero() {
            return Err(ConfigError::new(
                "base_ejection_time",
                c.base_ejection_time,
                "must be greater than zero",
            ));
        }
        if c.max_ejection_time < c.base_ejection_time {
            return Err(ConfigError::new(
                "max_ejection_time",
                c.max_ejection_time,
                "must be at least `base_ejection_time`",
            ));
        }
        if !(0.0..=100.0).contains(&c.max_ejection_percent) {
            return Err(ConfigError::new(
                "max_ejection_percent",
                c.max_ejection_percent,
                "must be within 0..=100",
            ));
        }
        if let Some((threshold, minimum)) = c.failure_percentage {
            if !(threshold > 0.0 && threshold <= 100.0) {
                return Err(ConfigError::new(
                    "failure_percentage_threshold",
                    threshold,
                    "must be within (0, 100]",
                ));
            }
            if minimum == 0 {
                return Err(ConfigError::new(
                    "failure_percentage_minimum_requests",
                    minimum,
                    "must be at least 1",
                ));
            }
        }
        Ok(c)
    }
}

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectionReason {
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// The failure percentage over an interval reached the threshold.
    FailurePercentage,
    /// [`OutlierTracker::eject`].
    Manual,
}

impl EjectionReason {
    /// A lowercase name: `consecutive_failures`, `failure_percentage` or `manual`.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectionReason::ConsecutiveFailures => "consecutive_failures",
            EjectionReason::FailurePercentage => "failure_percentage",
            EjectionReason::Manual => "manual",
        }
    }
}

impl std::fmt::Display for EjectionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An ejection or a return, as broadcast by [`OutlierDetector::subscribe`].
#[derive(Clone, Debug)]
pub enum OutlierEvent {
    /// The endpoint was ejected until `until`; `count` is its ejection count after this one.
    Ejected {
        /// The endpoint.
        name: Arc<str>,
        /// When the ejection ends.
        until: Instant,
        /// The ejection count (the multiplier of `base_ejection_time`).
        count: u32,
        /// Why.
        reason: EjectionReason,
    },
    /// The endpoint is back (its ejection expired or it was restored manually).
    Restored {
        /// The endpoint.
        name: Arc<str>,
    },
}

/// One endpoint's state, as returned by [`OutlierDetector::snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointOutlierState {
    /// The endpoint's name.
    pub name: Arc<str>,
    /// When its ejection ends, if it is ejected.
    pub ejected_until: Option<Instant>,
    /// Its ejection count (decays while it is not ejected).
    pub ejection_count: u32,
    /// Its current streak of consecutive failures.
    pub consecutive_failures: u32,
}

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
    /// runs failure-percentage ejection over the counts gathered in the window that just
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

    /// Expiry and decay always; the failure-percentage check only when its window (one
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
        let endpoints = registry.endpoints.clone();
        for ep in &endpoints {
            let successes = ep.successes.swap(0, Ordering::Relaxed);
            let failures = ep.failures.swap(0, Ordering::Relaxed);
            let Some((threshold, minimum)) = self.config.failure_percentage else {
                continue;
            };
            if ep.ejected.load(Ordering::Acquire) {
                continue;
            }
            let total = successes.saturating_add(failures);
            if total >= u64::from(minimum)
                && failures as f64 * 100.0 >= threshold * total as f64
                && failures > 0
            {
                tracing::debug!(
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
                "endpoint" => ep.name.to_string(),
                "reason" => reason.as_str()
            )
            .increment(1);
            metrics::gauge!("rampart_health_outlier_ejected", "endpoint" => ep.name.to_string())
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
        tracing::info!(endpoint = %ep.name, ejected = registry.ejected, "endpoint returned");
        #[cfg(feature = "metrics")]
        metrics::gauge!("rampart_health_outlier_ejected", "endpoint" => ep.name.to_string())
            .set(0.0);
        let _ = self.events.send(OutlierEvent::Restored {
            name: Arc::clone(&ep.name),
        });
    }
}

/// One endpoint's handle into an [`OutlierDetector`]: record outcomes, ask whether it is
/// ejected. `Send + Sync`; share it (for example in an `Arc`) between the tasks that call the
/// endpoint. Dropping it unregisters the endpoint (without a [`OutlierEvent::Restored`]).
#[derive(Debug)]
pub struct OutlierTracker {
    shared: Arc<Shared>,
    state: Arc<EndpointState>,
}

impl OutlierTracker {
    /// Records the outcome of one call. Lock-free and allocation-free for
    /// [`Outcome::Success`] and [`Outcome::Ignored`]; a failure may eject the endpoint (or,
    /// once an interval has passed, run an evaluation).
    #[inline]
    pub fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ignored => {}
            Outcome::Success => {
                if self.shared.config.failure_percentage.is_some() {
                    self.state.successes.fetch_add(1, Ordering::Relaxed);
                }
                if self.state.consecutive.load(Ordering::Relaxed) != 0 {
                    self.state.consecutive.store(0, Ordering::Relaxed);
                }
            }
            Outcome::Failure => self.record_failure(),
        }
    }

    #[cold]
    fn record_failure(&self) {
        let now = Instant::now();
        self.shared.maybe_evaluate(now);
        let ep = &self.state;
        if ep.ejected.load(Ordering::Acquire) {
            if self.shared.nanos(now) < ep.until_nanos.load(Ordering::Acquire) {
                // A call that was in flight when the endpoint was ejected: not counted.
                return;
            }
            self.expire(now);
        }
        if self.shared.config.failure_percentage.is_some() {
            ep.failures.fetch_add(1, Ordering::Relaxed);
        }
        let streak = ep
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let threshold = self.shared.config.consecutive_failures;
        if threshold > 0 && streak >= threshold {
            let mut registry = self.shared.lock();
            self.shared
                .try_eject(&mut registry, ep, now, EjectionReason::ConsecutiveFailures);
        }
    }

    /// Ends the ejection if its time is up at `now`.
    fn expire(&self, now: Instant) {
        let mut registry = self.shared.lock();
        let until = self.state.until_nanos.load(Ordering::Acquire);
        if self.state.ejected.load(Ordering::Acquire) && self.shared.nanos(now) >= until {
            self.shared
                .restore_locked(&mut registry, &self.state, until);
        }
    }

    /// Whether the endpoint is ejected now. Lazily ends an ejection whose time is up; reads
    /// the clock only while ejected.
    #[inline]
    pub fn is_ejected(&self) -> bool {
        if !self.state.ejected.load(Ordering::Acquire) {
            return false;
        }
        let now = Instant::now();
        if self.shared.nanos(now) < self.state.until_nanos.load(Ordering::Acquire) {
            return true;
        }
        self.expire(now);
        self.state.ejected.load(Ordering::Acquire)
    }

    /// When the current ejection ends, if the endpoint is ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        if self.is_ejected() {
            Some(
                self.shared
                    .instant(self.state.until_nanos.load(Ordering::Acquire)),
            )
        } else {
            None
        }
    }

    /// The ejection count: how many ejections the current ejection time is based on (it
    /// decays by one per `interval` spent not ejected, applied at evaluations and before each
    /// ejection, so between those this reading may be higher than the count the next
    /// ejection will use).
    pub fn ejection_count(&self) -> u32 {
        self.state.count.load(Ordering::Relaxed)
    }

    /// The current streak of consecutive failures.
    pub fn consecutive_failures(&self) -> u32 {
        self.state.consecutive.load(Ordering::Relaxed)
    }

    /// Ejects the endpoint now, whatever `max_ejection_percent` says (the ejection counts
    /// toward the cap). Its ejection time follows the usual backoff. Returns `false` if it was
    /// already ejected.
    ///
    /// ```
    /// use rampart_health::{OutlierConfig, OutlierDetector};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let detector = OutlierDetector::new(OutlierConfig::default());
    /// let a = detector.track("a");
    /// assert!(a.eject()); // an operator takes it out (even past the 10 % cap)…
    /// assert!(a.is_ejected());
    /// a.restore(); // …and puts it back before its time is up
    /// assert!(!a.is_ejected());
    /// assert_eq!(a.ejection_count(), 1); // the backoff remembers it
    /// # }
    /// ```
    pub fn eject(&self) -> bool {
        let now = Instant::now();
        let mut registry = self.shared.lock();
        let ep = &self.state;
        if ep.ejected.load(Ordering::Acquire) {
            let until = ep.until_nanos.load(Ordering::Acquire);
            if self.shared.nanos(now) < until {
                return false;
            }
            self.shared.restore_locked(&mut registry, ep, until);
        }
        self.shared
            .eject_locked(&mut registry, ep, now, EjectionReason::Manual);
        true
    }

    /// Ends the endpoint's ejection now, if it is ejected (its ejection count is kept and
    /// decays as usual).
    pub fn restore(&self) {
        let now = Instant::now();
        let mut registry = self.shared.lock();
        if self.state.ejected.load(Ordering::Acquire) {
            let now_nanos = self.shared.nanos(now);
            self.shared
                .restore_locked(&mut registry, &self.state, now_nanos);
        }
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }
}

impl Drop for OutlierTracker {
    fn drop(&mut self) {
        let mut registry = self.shared.lock();
        let id = self.state.id;
        if let Some(pos) = registry.endpoints.iter().position(|ep| ep.id == id) {
            registry.endpoints.remove(pos);
            if self.state.ejected.swap(false, Ordering::AcqRel) {
                registry.ejected = registry.ejected.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// consecutive 5, interval 10 s, base 30 s, max 300 s, cap 100 %.
    fn config() -> OutlierConfigBuilder {
        OutlierConfig::builder().max_ejection_percent(100.0)
    }

    fn fail(t: &OutlierTracker, n: usize) {
        for _ in 0..n {
            t.record(Outcome::Failure);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_at_the_threshold() {
        let d = OutlierDetector::new(config().build().unwrap());
        let mut events = d.subscribe();
        let a = d.track("a");
        let start = Instant::now();

        fail(&a, 4);
        a.record(Outcome::Success); // resets the streak
        fail(&a, 4);
        a.record(Outcome::Ignored); // does not
        assert!(!a.is_ejected());
        assert_eq!(a.consecutive_failures(), 4);
        a.record(Outcome::Failure);
        assert!(a.is_ejected());
        assert_eq!(a.ejected_until(), Some(start + secs(30)));
        assert_eq!(a.ejection_count(), 1);
        assert_eq!(d.ejected(), 1);
        match events.try_recv().unwrap() {
            OutlierEvent::Ejected {
                name,
                until,
                count,
                reason,
            } => {
                assert_eq!(&*name, "a");
                assert_eq!(until, start + secs(30));
                assert_eq!(count, 1);
                assert_eq!(reason, EjectionReason::ConsecutiveFailures);
            }
            other => panic!("unexpected {other:?}"),
        }

        tokio::time::advance(secs(29)).await;
        assert!(a.is_ejected());
        tokio::time::advance(secs(1)).await;
        assert!(!a.is_ejected());
        assert_eq!(d.ejected(), 0);
        assert!(
            matches!(events.try_recv().unwrap(), OutlierEvent::Restored { name } if &*name == "a")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_zero_disables() {
        let d = OutlierDetector::new(config().consecutive_failures(0).build().unwrap());
        let a = d.track("a");
        fail(&a, 1000);
        assert!(!a.is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_backs_off_and_is_capped() {
        let d = OutlierDetector::new(
            config()
                .base_ejection_time(secs(30))
                .max_ejection_time(secs(100))
                .build()
                .unwrap(),
        );
        let a = d.track("a");
        // Re-eject as soon as each ejection ends: no time to decay in between.
        for (count, expected) in [(1, 30), (2, 60), (3, 90), (4, 100), (5, 100)] {
            let start = Instant::now();
            fail(&a, 5);
            assert_eq!(a.ejection_count(), count);
            assert_eq!(
                a.ejected_until(),
                Some(start + secs(expected)),
                "count {count}"
            );
            tokio::time::advance(secs(expected)).await;
            assert!(!a.is_ejected());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_while_ejected_do_not_count() {
        let d = OutlierDetector::new(config().build().unwrap());
        let a = d.track("a");
        fail(&a, 5);
        assert!(a.is_ejected());
        fail(&a, 20); // in-flight calls failing after the ejection
        assert_eq!(a.consecutive_failures(), 0);
        tokio::time::advance(secs(30)).await;
        assert!(!a.is_ejected());
        fail(&a, 4);
        assert!(!a.is_ejected());
        assert_eq!(a.ejection_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_count_decays_once_per_interval_while_not_ejected() {
        let d = OutlierDetector::new(config().build().unwrap()); // interval 10 s, base 30 s
        let a = d.track("a");
        // Three back-to-back ejections: 30 + 60 + 90 s.
        for wait in [30, 60, 90] {
            fail(&a, 5);
            tokio::time::advance(secs(wait)).await;
        }
        assert_eq!(a.ejection_count(), 3);

        // Ejected now (count 4 after this one, 120 s): no decay while ejected.
        fail(&a, 5);
        assert_eq!(a.ejection_count(), 4);
        tokio::time::advance(secs(100)).await;
        d.evaluate();
        assert_eq!(a.ejection_count(), 4);

        // Expires at 120 s; decay counts from then, one step per full 10 s.
        tokio::time::advance(secs(29)).await; // 9 s after the expiry
        d.evaluate();
        assert!(!a.is_ejected());
        assert_eq!(a.ejection_count(), 4);
        tokio::time::advance(secs(1)).await; // 10 s
        d.evaluate();
        assert_eq!(a.ejection_count(), 3);
        tokio::time::advance(secs(25)).await; // 35 s: two more full intervals
        d.evaluate();
        assert_eq!(a.ejection_count(), 1);

        // The next ejection is based on the decayed count: 2 × 30 s.
        let start = Instant::now();
        fail(&a, 5);
        assert_eq!(a.ejection_count(), 2);
        assert_eq!(a.ejected_until(), Some(start + secs(60)));

        // After long enough, the count is back to zero and stays there.
        tokio::time::advance(secs(60 + 200)).await;
        d.evaluate();
        assert_eq!(a.ejection_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn decay_also_happens_lazily_on_the_failure_path() {
        let d = OutlierDetector::new(config().build().unwrap());
        let a = d.track("a");
        fail(&a, 5);
        tokio::time::advance(secs(30)).await;
        assert!(!a.is_ejected());
        assert_eq!(a.ejection_count(), 1);
        tokio::time::advance(secs(15)).await;
        // No explicit evaluate: the failure runs the overdue evaluation first.
        a.record(Outcome::Failure);
        assert_eq!(a.ejection_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_settles_the_decay_owed_since_the_last_evaluation() {
        let d = OutlierDetector::new(config().build().unwrap()); // interval 10 s, base 30 s
        let a = d.track("a");
        fail(&a, 5); // t = 0, count 1, back at 30 s
        tokio::time::advance(secs(39)).await;
        d.evaluate(); // 9 s after the return: no decay yet; the next evaluation is due at 49 s
        assert!(!a.is_ejected());
        assert_eq!(a.ejection_count(), 1);

        // At 45 s the endpoint has been back 15 s (one full interval), but no evaluation ran
        // since 39 s. Its next ejection must still use the decayed count: 1 × 30 s, not 2 × 30 s.
        tokio::time::advance(secs(6)).await;
        let start = Instant::now();
        fail(&a, 5);
        assert_eq!(a.ejection_count(), 1);
        assert_eq!(a.ejected_until(), Some(start + secs(30)));

        // The same holds for a manual ejection.
        tokio::time::advance(secs(30 + 25)).await; // back for 25 s: two full intervals
        assert!(!a.is_ejected());
        let start = Instant::now();
        assert!(a.eject());
        assert_eq!(a.ejection_count(), 1);
        assert_eq!(a.ejected_until(), Some(start + secs(30)));
    }

    #[test]
    fn the_success_path_takes_no_lock() {
        // Hold the detector's mutex on this thread; another thread records successes and
        // ignored outcomes and asks `is_ejected`. If any of these locked, it would block until
        // the safety net below expires (not a timing assertion: it only turns a hang into a
        // failure).
        let d = OutlierDetector::new(config().failure_percentage(50.0, 10).build().unwrap());
        let a = Arc::new(d.track("a"));
        fail(&a, 2); // a streak, so that the success path also resets it
        let guard = d.shared.lock();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let tracker = Arc::clone(&a);
        let worker = std::thread::spawn(move || {
            for _ in 0..10_000 {
                tracker.record(Outcome::Success);
                tracker.record(Outcome::Ignored);
                assert!(!tracker.is_ejected());
            }
            let _ = done_tx.send(tracker.consecutive_failures());
        });
        let done = done_rx.recv_timeout(Duration::from_secs(10));
        drop(guard);
        worker.join().unwrap();
        assert_eq!(
            done,
            Ok(0),
            "the success path waited for the detector's lock"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failure_percentage_needs_the_minimum_volume() {
        let d = OutlierDetector::new(
            config()
                .consecutive_failures(0)
                .failure_percentage(50.0, 10)
                .build()
                .unwrap(),
        );
        let mut events = d.subscribe();
        let a = d.track("a");
        let good = d.track("good");

        // 4 of 8 failed: over the threshold, under the volume.
        for _ in 0..4 {
            a.record(Outcome::Failure);
            a.record(Outcome::Success);
        }
        for _ in 0..100 {
            good.record(Outcome::Success);
        }
        tokio::time::advance(secs(10)).await;
        d.evaluate();
        assert!(!a.is_ejected());

        // The window started over: 5 of 10 failed (exactly 50 %).
        for _ in 0..5 {
            a.record(Outcome::Failure);
            a.record(Outcome::Success);
        }
        tokio::time::advance(secs(10)).await;
        d.evaluate();
        assert!(a.is_ejected());
        assert!(!good.is_ejected());
        assert!(matches!(
            events.try_recv().unwrap(),
            OutlierEvent::Ejected {
                reason: EjectionReason::FailurePercentage,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn frequent_evaluations_keep_the_failure_percentage_window_an_interval_long() {
        let d = OutlierDetector::new(
            config()
                .consecutive_failures(0)
                .failure_percentage(50.0, 80)
                .build()
                .unwrap(),
        );
        let a = d.track("a");
        let start = Instant::now();
        // One call per 100 ms, every other one failing, and an evaluation every 100 ms (as a
        // balancer's maintenance tick would): 100 calls per 10 s window.
        for tick in 0..100u32 {
            a.record(if tick % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            });
            tokio::time::advance(Duration::from_millis(100)).await;
            d.evaluate();
            if Instant::now() - start < secs(10) {
                assert!(!a.is_ejected(), "ejected early, at tick {tick}");
            }
        }
        assert!(a.is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn failure_percentage_below_threshold_does_not_eject() {
        let d = OutlierDetector::new(
            config()
                .consecutive_failures(0)
                .failure_percentage(50.0, 10)
                .build()
                .unwrap(),
        );
        let a = d.track("a");
        for _ in 0..4 {
            a.record(Outcome::Failure);
        }
        for _ in 0..6 {
            a.record(Outcome::Success);
        }
        tokio::time::advance(secs(10)).await;
        d.evaluate();
        assert!(!a.is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn failure_percentage_runs_lazily_from_the_failure_path() {
        let d = OutlierDetector::new(
            config()
                .consecutive_failures(0)
                .failure_percentage(80.0, 5)
                .build()
                .unwrap(),
        );
        let a = d.track("a");
        fail(&a, 9);
        assert!(!a.is_ejected());
        tokio::time::advance(secs(10)).await;
        a.record(Outcome::Failure); // the due evaluation sees 9 of 9 failed
        assert!(a.is_ejected());
    }

    /// Ejects as many of `n` endpoints as `cap` allows, each by 5 consecutive failures.
    fn eject_all(n: usize, cap: f64) -> (OutlierDetector, Vec<OutlierTracker>) {
        let d = OutlierDetector::new(config().max_ejection_percent(cap).build().unwrap());
        let ts: Vec<_> = (0..n).map(|i| d.track(format!("e{i}"))).collect();
        for t in &ts {
            fail(t, 5);
        }
        (d, ts)
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_one_of_three() {
        // 1 of 3 is 33.3 %: over a 10 % cap, so nobody is ejected (stricter than Envoy).
        let (d, ts) = eject_all(3, 10.0);
        assert_eq!(d.ejected(), 0);
        assert!(ts.iter().all(|t| !t.is_ejected()));

        // 34 %: one fits (33.3 %), a second (66.7 %) does not.
        let (d, ts) = eject_all(3, 34.0);
        assert_eq!(d.ejected(), 1);
        assert!(ts[0].is_ejected());
        assert!(!ts[1].is_ejected() && !ts[2].is_ejected());

        // 100 %: all three.
        let (d, _ts) = eject_all(3, 100.0);
        assert_eq!(d.ejected(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_pool_of_one() {
        // 0 of 1 stays 0 of 1 unless the cap is 100 %.
        for cap in [0.0, 10.0, 50.0, 99.9] {
            let (d, ts) = eject_all(1, cap);
            assert_eq!(d.ejected(), 0, "cap {cap}");
            assert!(!ts[0].is_ejected());
        }
        // 1 of 1 at 100 %.
        let (d, ts) = eject_all(1, 100.0);
        assert_eq!(d.ejected(), 1);
        assert!(ts[0].is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_zero_ejects_nobody() {
        let (d, _ts) = eject_all(10, 0.0);
        assert_eq!(d.ejected(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_ejection_happens_once_the_cap_frees_up() {
        let (d, ts) = eject_all(3, 34.0);
        assert!(ts[0].is_ejected());
        assert!(!ts[1].is_ejected());
        // The streak of e1 stays over the threshold; once e0 returns, its next failure ejects.
        tokio::time::advance(secs(30)).await;
        ts[1].record(Outcome::Failure);
        assert!(ts[1].is_ejected());
        assert!(!ts[0].is_ejected());
        assert_eq!(d.ejected(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn manual_eject_ignores_the_cap_and_restore_ends_it() {
        let d = OutlierDetector::new(OutlierConfig::default()); // cap 10 %
        let mut events = d.subscribe();
        let a = d.track("a");
        let b = d.track("b");
        let start = Instant::now();
        assert!(a.eject());
        assert!(!a.eject()); // already ejected
        assert!(b.eject());
        assert_eq!(d.ejected(), 2);
        assert_eq!(a.ejected_until(), Some(start + secs(30)));
        assert!(matches!(
            events.try_recv().unwrap(),
            OutlierEvent::Ejected {
                reason: EjectionReason::Manual,
                count: 1,
                ..
            }
        ));

        a.restore();
        assert!(!a.is_ejected());
        assert_eq!(d.ejected(), 1);
        assert_eq!(a.ejection_count(), 1);
        let _ = events.try_recv().unwrap(); // b's ejection
        assert!(matches!(
            events.try_recv().unwrap(),
            OutlierEvent::Restored { .. }
        ));
        a.restore(); // no-op
        assert!(events.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_tracker_unregisters_it() {
        let d = OutlierDetector::new(config().build().unwrap());
        assert!(d.is_empty());
        let a = d.track("a");
        let b = d.track("b");
        assert_eq!(d.len(), 2);
        fail(&a, 5);
        assert_eq!(d.ejected(), 1);
        drop(a);
        assert_eq!(d.len(), 1);
        assert_eq!(d.ejected(), 0);
        let snapshot = d.snapshot();
        assert_eq!(snapshot.len(), 1);
        assert_eq!(&*snapshot[0].name, "b");
        assert_eq!(snapshot[0].ejected_until, None);
        assert_eq!(b.name(), "b");
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_shows_ejections() {
        let d = OutlierDetector::new(config().build().unwrap());
        let a = d.track("a");
        let start = Instant::now();
        fail(&a, 5);
        let s = d.snapshot();
        assert_eq!(s[0].ejected_until, Some(start + secs(30)));
        assert_eq!(s[0].ejection_count, 1);
        tokio::time::advance(secs(30)).await;
        assert_eq!(d.snapshot()[0].ejected_until, None);
    }

    #[test]
    fn config_validation_names_field_and_value() {
        let cases = [
            (config().interval(Duration::ZERO), "interval", "0ns"),
            (
                config().base_ejection_time(Duration::ZERO),
                "base_ejection_time",
                "0ns",
            ),
            (
                config().max_ejection_time(secs(10)),
                "max_ejection_time",
                "10s",
            ),
            (
                config().max_ejection_percent(100.5),
                "max_ejection_percent",
                "100.5",
            ),
            (
                config().max_ejection_percent(-1.0),
                "max_ejection_percent",
                "-1.0",
            ),
            (
                config().max_ejection_percent(f64::NAN),
                "max_ejection_percent",
                "NaN",
            ),
            (
                config().failure_percentage(0.0, 10),
                "failure_percentage_threshold",
                "0.0",
            ),
            (
                config().failure_percentage(101.0, 10),
                "failure_percentage_threshold",
                "101.0",
            ),
            (
                config().failure_percentage(50.0, 0),
                "failure_percentage_minimum_requests",
                "0",
            ),
        ];
        for (builder, field, value) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!((err.field(), err.value()), (field, value), "{err}");
        }
        let c = config().failure_percentage(85.0, 100).build().unwrap();
        assert_eq!(c.failure_percentage(), Some((85.0, 100)));
        assert_eq!(c.max_ejection_percent(), 100.0);
        assert_eq!(c.interval(), secs(10));
        assert_eq!(c.max_ejection_time(), secs(300));
    }

    #[test]
    fn concurrent_failures_never_exceed_the_cap() {
        // Real threads racing to eject 8 endpoints under a 50 % cap (outside a runtime the
        // clock is the real one; no ejection expires within the test).
        let d = OutlierDetector::new(
            OutlierConfig::builder()
                .consecutive_failures(3)
                .max_ejection_percent(50.0)
                .build()
                .unwrap(),
        );
        let trackers: Vec<_> = (0..8).map(|i| Arc::new(d.track(format!("e{i}")))).collect();
        std::thread::scope(|scope| {
            for worker in 0..4 {
                let trackers = &trackers;
                let d = &d;
                scope.spawn(move || {
                    for round in 0..200 {
                        for (i, t) in trackers.iter().enumerate() {
                            if (i + worker + round) % 5 == 0 {
                                t.record(Outcome::Success);
                            } else {
                                t.record(Outcome::Failure);
                            }
                            assert!(d.ejected() <= 4);
                        }
                    }
                });
            }
        });
        assert_eq!(d.ejected(), 4);
        assert_eq!(trackers.iter().filter(|t| t.is_ejected()).count(), 4);
    }

    #[test]
    fn tracker_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<OutlierTracker>();
        assert_send_sync::<OutlierDetector>();
    }
}
