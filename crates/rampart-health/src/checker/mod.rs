//! The active checker: runs a [`Probe`] on a schedule and publishes [`Health`] with rise/fall
//! hysteresis.
//!
//! [`Checker::spawn`] starts one tokio task per checked thing and returns a [`CheckerHandle`].
//! The handle reads the current health ([`CheckerHandle::health`]), hands out a
//! [`HealthWatch`] that wakes on change ([`CheckerHandle::watch`]), and a broadcast of every
//! [`HealthTransition`] ([`CheckerHandle::subscribe`]). The task stops as soon as the last
//! clone of the handle is dropped.
//!
//! # Semantics
//!
//! - **Unknown → verdict.** Health starts at [`CheckerConfigBuilder::initial`] (default
//!   [`Health::Unknown`]). From `Unknown`, the first answer decides: a pass makes it `Healthy`,
//!   a failure `Unhealthy`.
//! - **Rise/fall** (HAProxy's `rise`/`fall`, Envoy's `healthy_threshold`/
//!   `unhealthy_threshold`): a `Healthy` target becomes `Unhealthy` after `fall` consecutive
//!   failed probes (default 3); an `Unhealthy` one becomes `Healthy` after `rise` consecutive
//!   passes (default 2). Any pass resets the failure streak and vice versa.
//! - **Timeout.** Every attempt is bounded by `timeout`; an attempt that exceeds it counts as a
//!   failure (and is cancelled). A probe that panics also counts as a failure.
//! - **Schedule.** Probes never overlap. Attempts start `interval` apart (start to start),
//!   or `unhealthy_interval` apart while the health is `Unhealthy`, so a sick target is
//!   re-checked faster (Envoy's `unhealthy_interval`). `timeout` may not exceed either
//!   interval, so an attempt always ends before the next one is due.
//! - **Jitter.** Each wait is stretched by a uniformly random extra in
//!   `[0, jitter × wait)`, and the very first attempt starts after a random delay in
//!   `[0, jitter × interval)`, so many checkers started together spread out. Jitter only ever
//!   lengthens a wait (as Envoy's `interval_jitter_percent` does), so a target is never
//!   probed more often than its interval says. With `jitter = 0` the schedule is exact and the
//!   first probe runs at once. (Tokio's timer has millisecond resolution and rounds deadlines
//!   up, so a wait may end up to 1 ms later than computed.)
//! - **Observability.** Every transition is sent on the broadcast, then published on the
//!   watch (so whoever sees the watch change finds the transition already broadcast), and
//!   emits a `tracing` event (`info` to healthy, `warn` to unhealthy); failed probes emit a
//!   `debug` event with the error. With the `metrics` feature, the counters
//!   `rampart_health_probes_total{checker, result}` (`result` = `pass`, `fail`, `timeout`) and
//!   `rampart_health_transitions_total{checker, to}` and the gauge
//!   `rampart_health_checker_healthy{checker}` (1 when healthy, else 0) are recorded.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use rampart_health::{Checker, CheckerConfig, Health, probe_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let config = CheckerConfig::builder()
//!     .interval(Duration::from_secs(5))
//!     .unhealthy_interval(Duration::from_secs(1))
//!     .timeout(Duration::from_millis(500))
//!     .rise(2)
//!     .fall(3)
//!     .build()
//!     .unwrap();
//! let handle = Checker::spawn("catalog-1", probe_fn(|| async { Ok(()) }), config);
//! let mut watch = handle.watch();
//! assert_eq!(watch.changed().await, Some(Health::Healthy));
//! assert_eq!(handle.health(), Health::Healthy);
//! drop(handle); // stops the probing task
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::{ConfigError, Health, HealthPublisher, HealthWatch, Probe, ProbeError};

/// How many transitions a slow [`CheckerHandle::subscribe`] receiver may lag behind before it
/// starts missing the oldest ones.
const EVENT_CAPACITY: usize = 64;

/// Settings of a [`Checker`]; build one with [`CheckerConfig::builder`].
///
/// Defaults: `interval` 5 s, `unhealthy_interval` 1 s, `timeout` 1 s, `jitter` 0.1, `rise` 2,
/// `fall` 3, `initial` [`Health::Unknown`].
///
/// ```
/// use std::time::Duration;
/// use rampart_health::CheckerConfig;
/// let c = CheckerConfig::default();
/// assert_eq!(c.interval(), Duration::from_secs(5));
/// assert_eq!((c.rise(), c.fall()), (2, 3));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CheckerConfig {
    interval: Duration,
    unhealthy_interval: Duration,
    timeout: Duration,
    jitter: f64,
    rise: u32,
    fall: u32,
    initial: Health,
}

impl Default for CheckerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            unhealthy_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            jitter: 0.1,
            rise: 2,
            fall: 3,
            initial: Health::Unknown,
        }
    }
}

impl CheckerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CheckerConfigBuilder {
        CheckerConfigBuilder {
            config: Self::default(),
        }
    }

    /// Time between attempt starts while not unhealthy.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Time between attempt starts while unhealthy.
    pub fn unhealthy_interval(&self) -> Duration {
        self.unhealthy_interval
    }

    /// Bound on one attempt; exceeding it is a failure.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Jitter as a fraction (`0.0..=1.0`) of each wait.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Consecutive passes that turn `Unhealthy` into `Healthy`.
    pub fn rise(&self) -> u32 {
        self.rise
    }

    /// Consecutive failures that turn `Healthy` into `Unhealthy`.
    pub fn fall(&self) -> u32 {
        self.fall
    }

    /// The health before the first answer.
    pub fn initial(&self) -> Health {
        self.initial
    }

    /// The wait before the attempt after one that started in `state`, without jitter.
    fn base_wait(&self, state: Health) -> Duration {
        match state {
            Health::Unhealthy => self.unhealthy_interval,
            Health::Healthy | Health::Unknown => self.interval,
        }
    }
}

/// Builds a [`CheckerConfig`]; see [`CheckerConfig::builder`].
#[derive(Clone, Debug)]
pub struct CheckerConfigBuilder {
    config: CheckerConfig,
}

impl CheckerConfigBuilder {
    /// Time between attempt starts while not unhealthy (default 5 s).
    pub fn interval(mut self, d: Duration) -> Self {
        self.config.interval = d;
        self
    }

    /// Time between attempt starts while unhealthy (default 1 s).
    pub fn unhealthy_interval(mut self, d: Duration) -> Self {
        self.config.unhealthy_interval = d;
        self
    }

    /// Bound on one attempt (default 1 s); may not exceed either interval.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.timeout = d;
        self
    }

    /// Random extra wait, as a fraction `0.0..=1.0` of each wait (default 0.1).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.config.jitter = fraction;
        self
    }

    /// Consecutive passes from `Unhealthy` to `Healthy` (default 2).
    pub fn rise(mut self, n: u32) -> Self {
        self.config.rise = n;
        self
    }

    /// Consecutive failures from `Healthy` to `Unhealthy` (default 3).
    pub fn fall(mut self, n: u32) -> Self {
        self.config.fall = n;
        self
    }

    /// The health before the first answer (default [`Health::Unknown`]).
    pub fn initial(mut self, h: Health) -> Self {
        self.config.initial = h;
        self
    }

    /// Validates and builds.
    ///
    /// Rejects a zero `interval`, `unhealthy_interval` or `timeout`, a `timeout` longer than
    /// either interval, a `jitter` outside `0.0..=1.0` (or NaN), and a `rise` or `fall` of 0,
    /// with a [`ConfigError`] naming the field and the value.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rampart_health::CheckerConfig;
    /// let err = CheckerConfig::builder()
    ///     .interval(Duration::from_secs(1))
    ///     .timeout(Duration::from_secs(2))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "timeout");
    /// assert_eq!(err.to_string(), "invalid `timeout` = 2s: must not exceed `interval`");
    /// ```
    pub fn build(self) -> Result<CheckerConfig, ConfigError> {
        let c = self.config;
        if c.interval.is_zero() {
            return Err(ConfigError::new(
                "interval",
                c.interval,
                "must be greater than zero",
            ));
        }
        if c.unhealthy_interval.is_zero() {
            return Err(ConfigError::new(
                "unhealthy_interval",
                c.unhealthy_interval,
                "must be greater than zero",
            ));
        }
        if c.timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout",
                c.timeout,
                "must be greater than zero",
            ));
        }
        if c.timeout > c.interval {
            return Err(ConfigError::new(
                "timeout",
                c.timeout,
                "must not exceed `interval`",
            ));
        }
        if c.timeout > c.unhealthy_interval {
            return Err(ConfigError::new(
                "timeout",
                c.timeout,
                "must not exceed `unhealthy_interval`",
            ));
        }
        if !(0.0..=1.0).contains(&c.jitter) {
            return Err(ConfigError::new(
                "jitter",
                c.jitter,
                "must be a fraction within 0.0..=1.0",
            ));
        }
        if c.rise == 0 {
            return Err(ConfigError::new("rise", c.rise, "must be at least 1"));
        }
        if c.fall == 0 {
            return Err(ConfigError::new("fall", c.fall, "must be at least 1"));
        }
        Ok(c)
    }
}

/// One change of a checker's health, as broadcast by [`CheckerHandle::subscribe`].
#[derive(Clone, Debug)]
pub struct HealthTransition {
    /// The checker's name.
    pub name: Arc<str>,
    /// The health before.
    pub from: Health,
    /// The health after.
    pub to: Health,
    /// When the deciding probe answered.
    pub at: Instant,
}

/// Spawns checkers; see [`Checker::spawn`].
#[derive(Debug, Clone, Copy)]
pub struct Checker;

impl Checker {
    /// Spawns the probing task on the current tokio runtime and returns its handle.
    ///
    /// Never panics: called outside a tokio runtime, it emits a `tracing` error and returns
    /// an inert handle whose health stays at the configured initial value
    /// ([`CheckerHandle::is_running`] is `false`). Use [`Checker::spawn_on`] to pick the
    /// runtime explicitly.
    pub fn spawn<P: Probe>(
        name: impl Into<Arc<str>>,
        probe: P,
        config: CheckerConfig,
    ) -> CheckerHandle {
        let name = name.into();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Self::spawn_on(&runtime, name, probe, config),
            Err(_) => {
                tracing::error!(
                    checker = %name,
                    "Checker::spawn called outside a tokio runtime; the checker does not run"
                );
                CheckerHandle::new(name, &config, None)
            }
        }
    }

    /// Spawns the probing task on `runtime` and returns its handle.
    pub fn spawn_on<P: Probe>(
        runtime: &tokio::runtime::Handle,
        name: impl Into<Arc<str>>,
        probe: P,
        config: CheckerConfig,
    ) -> CheckerHandle {
        let name = name.into();
        let mut handle = CheckerHandle::new(name.clone(), &config, None);
        let task = CheckerTask {
            name,
            probe: Arc::new(probe),
            machine: RiseFall::new(config.initial, config.rise, config.fall),
            config,
            publisher: handle.inner.publisher.clone(),
            events: handle.inner.events.clone(),
        };
        let join = runtime.spawn(task.run());
        // Only this function holds `handle`, so `get_mut` succeeds; fall back to dropping the
        // task (aborting it through the guard) if that ever changed.
        match Arc::get_mut(&mut handle.inner) {
            Some(inner) => inner.task = Some(join.abort_handle()),
            None => join.abort(),
        }
        handle
    }
}

/// A running checker. Cheap to clone; the probing task stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct CheckerHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    name: Arc<str>,
    publisher: HealthPublisher,
    events: broadcast::Sender<HealthTransition>,
    task: Option<AbortHandle>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl CheckerHandle {
    fn new(name: Arc<str>, config: &CheckerConfig, task: Option<AbortHandle>) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            inner: Arc::new(HandleInner {
                name,
                publisher: HealthPublisher::with_initial(config.initial),
                events,
                task,
            }),
        }
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.inner.publisher.get()
    }

    /// A watch of the health that wakes on every change. It reports `None` from
    /// [`HealthWatch::changed`] once the checker is gone.
    pub fn watch(&self) -> HealthWatch {
        self.inner.publisher.subscribe()
    }

    /// A receiver of every transition from now on.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rampart_health::{Checker, CheckerConfig, Health, ProbeError, ProbeErrorKind, probe_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let probe = probe_fn(|| async { Err(ProbeError::new(ProbeErrorKind::Status, "status 503")) });
    /// let handle = Checker::spawn("checkout-2", probe, CheckerConfig::default());
    /// let mut transitions = handle.subscribe();
    /// let t = transitions.recv().await.unwrap();
    /// assert_eq!((&*t.name, t.from, t.to), ("checkout-2", Health::Unknown, Health::Unhealthy));
    /// # }
    /// ```
    pub fn subscribe(&self) -> broadcast::Receiver<HealthTransition> {
        self.inner.events.subscribe()
    }

    /// The checker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `true` while the probing task runs (always, until the last handle is dropped, unless
    /// the checker was spawned outside a runtime or the runtime shut down).
    pub fn is_running(&self) -> bool {
        self.inner.task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

/// Rise/fall hysteresis over probe answers.
#[derive(Debug, Clone)]
struct RiseFall {
    state: Health,
    passes: u32,
    failures: u32,
    rise: u32,
    fall: u32,
}

impl RiseFall {
    fn new(initial: Health, rise: u32, fall: u32) -> Self {
        Self {
            state: initial,
            passes: 0,
            failures: 0,
            rise,
            fall,
        }
    }

    /// Records one answer; returns the new health if it changed.
    fn observe(&mut self, passed: bool) -> Option<Health> {
        let next = if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            match self.state {
                Health::Unknown => Health::Healthy,
                Health::Unhealthy if self.passes >= self.rise => Health::Healthy,
                other => other,
            }
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            match self.state {
                Health::Unknown => Health::Unhealthy,
                Health::Healthy if self.failures >= self.fall => Health::Unhealthy,
                other => other,
            }
        };
        if next == self.state {
            None
        } else {
            self.state = next;
            self.passes = 0;
            self.failures = 0;
            Some(next)
        }
    }
}

/// `base` stretched by a uniformly random extra in `[0, jitter × base)`.
fn jittered(base: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return base;
    }
    base + base.mul_f64(jitter * fastrand::f64())
}

/// How one attempt ended.
enum Attempt {
    Pass,
    Fail(ProbeError),
    Timeout,
    Panicked,
}

struct CheckerTask<P> {
    name: Arc<str>,
    probe: Arc<P>,
    config: CheckerConfig,
    machine: RiseFall,
    publisher: HealthPublisher,
    events: broadcast::Sender<HealthTransition>,
}

impl<P: Probe> CheckerTask<P> {
    async fn run(mut self) {
        let first = if self.config.jitter > 0.0 {
            self.config
                .interval
                .mul_f64(self.config.jitter * fastrand::f64())
        } else {
            Duration::ZERO
        };
        let mut next = Instant::now() + first;
        #[cfg(feature = "metrics")]
        self.record_gauge();
        loop {
            tokio::time::sleep_until(next).await;
            let started = Instant::now();
            let attempt = self.attempt().await;
            self.observe(&attempt);
            let wait = jittered(
                self.config.base_wait(self.machine.state),
                self.config.jitter,
            );
            next = started + wait;
        }
    }

    /// One attempt in its own task, so that a panicking probe is a failure rather than the end
    /// of the checker, and a timed-out one is cancelled.
    async fn attempt(&self) -> Attempt {
        let probe = Arc::clone(&self.probe);
        // Aborted when dropped: a timed-out attempt is cancelled.
        let task = AbortOnDropHandle::new(tokio::spawn(async move { probe.probe().await }));
        match tokio::time::timeout(self.config.timeout, task).await {
            Ok(Ok(Ok(()))) => Attempt::Pass,
            Ok(Ok(Err(e))) => Attempt::Fail(e),
            Ok(Err(_join_error)) => Attempt::Panicked,
            Err(_elapsed) => Attempt::Timeout,
        }
    }

    fn observe(&mut self, attempt: &Attempt) {
        let passed = matches!(attempt, Attempt::Pass);
        #[cfg(feature = "metrics")]
        {
            let result = match *attempt {
                Attempt::Pass => "pass",
                Attempt::Timeout => "timeout",
                Attempt::Fail(_) | Attempt::Panicked => "fail",
            };
            metrics::counter!(
                "rampart_health_probes_total",
                "checker" => self.name.to_string(),
                "result" => result
            )
            .increment(1);
        }
        match attempt {
            Attempt::Pass => {
                tracing::trace!(checker = %self.name, "probe passed");
            }
            Attempt::Fail(e) => {
                tracing::debug!(checker = %self.name, kind = %e.kind(), error = %e, "probe failed");
            }
            Attempt::Timeout => {
                tracing::debug!(checker = %self.name, timeout = ?self.config.timeout, "probe timed out");
            }
            Attempt::Panicked => {
                tracing::error!(checker = %self.name, "probe panicked; counted as a failure");
            }
        }

        let from = self.machine.state;
        let Some(to) = self.machine.observe(passed) else {
            return;
        };
        match to {
            Health::Unhealthy => {
                let reason = match attempt {
                    Attempt::Fail(e) => e.to_string(),
                    Attempt::Timeout => "probe timed out".to_owned(),
                    Attempt::Panicked => "probe panicked".to_owned(),
                    Attempt::Pass => String::new(),
                };
                tracing::warn!(checker = %self.name, %from, %to, last_error = %reason, "health changed");
            }
            _ => tracing::info!(checker = %self.name, %from, %to, "health changed"),
        }
        #[cfg(feature = "metrics")]
        {
            metrics::counter!(
                "rampart_health_transitions_total",
                "checker" => self.name.to_string(),
                "to" => to.as_str()
            )
            .increment(1);
            self.record_gauge();
        }
        // Broadcast first, then publish: whoever sees the watch change finds the transition
        // already on the broadcast. No receiver is fine.
        let _ = self.events.send(HealthTransition {
            name: self.name.clone(),
            from,
            to,
            at: Instant::now(),
        });
        self.publisher.set(to);
    }

    #[cfg(feature = "metrics")]
    fn record_gauge(&self) {
        let healthy = if self.machine.state == Health::Healthy {
            1.0
        } else {
            0.0
        };
        metrics::gauge!("rampart_health_checker_healthy", "checker" => self.name.to_string())
            .set(healthy);
    }
}

#[cfg(test)]
mod tests;
