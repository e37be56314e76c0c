//! The state every clone of a balancer shares: the endpoint registry (authoritative, behind a
//! mutex, touched only when something changes) and the routing table (an immutable snapshot of
//! the routable endpoints, swapped on change and cached by each clone behind a generation
//! counter, so picking takes no lock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rampart_health::{Health, HealthReport, HealthReporter, Outcome, OutlierDetector};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::budget::Budget;
use crate::endpoint::HealthSource;
use crate::handle::{EndpointSnapshot, Snapshot};
use crate::late::LateSink;
use crate::load::{LoadCell, Slab};
use crate::pick::Picker;
use crate::ring::Ring;
use crate::slow_start::SlowStart;
use crate::table::{Member, PickState, Table};

#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The balancer's name: the `balancer` label of every metric series and a field of its
    /// events.
    pub(crate) name: Arc<str>,
    pub(crate) picker: Picker,
    pub(crate) panic_threshold: f64,
    pub(crate) unknown_is_routable: bool,
    pub(crate) max_retries: u32,
    pub(crate) default_rtt: Duration,
    pub(crate) decay: Duration,
    pub(crate) slow_start: Option<SlowStart>,
    pub(crate) tick: Duration,
    /// The longest back-off an endpoint may ask for (zero: backpressure off).
    pub(crate) max_backoff: Duration,
    /// The least latency a failure counts as in the peak EWMA.
    pub(crate) failure_penalty: Duration,
    /// Hedged requests (off: `None`).
    pub(crate) hedge: Option<crate::Hedge>,
}

pub(crate) struct Entry<S> {
    pub(crate) ep: Arc<Member<S>>,
    pub(super) routable: bool,
    /// Not ramped on its first transition to routable (endpoints of the initial set).
    pub(super) no_ramp_once: bool,
    pub(super) ramp_start: Option<Instant>,
    pub(super) _health_task: Option<AbortOnDropHandle<()>>,
    pub(super) _checker: Option<rampart_health::CheckerHandle>,
}

pub(crate) struct Registry<S> {
    pub(crate) entries: Vec<Entry<S>>,
    pub(super) panic: bool,
    pub(super) routable: usize,
    pub(super) shut_down: bool,
    pub(super) tasks: Vec<AbortOnDropHandle<()>>,
    pub(super) last_decay: Option<Instant>,
}

pub(crate) struct Shared<S, P> {
    pub(crate) config: Config,
    pub(crate) policy: P,
    pub(crate) clock: quanta::Clock,
    pub(crate) budget: Budget,
    pub(crate) generation: AtomicU64,
    table: Mutex<Arc<Table<S>>>,
    registry: Mutex<Registry<S>>,
    pub(crate) reporter: HealthReporter,
    next_id: AtomicU64,
    rr: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) detector: Option<OutlierDetector>,
    /// The detector counts successes (failure-percentage ejection is on).
    record_successes: bool,
    pub(crate) checks: Option<crate::balance::Checks>,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    /// Every endpoint's load cell.
    slab: Arc<Slab>,
    /// The origin of the endpoints' back-off deadlines.
    epoch: Instant,
    /// The hedge delay (hedging on).
    pub(crate) hedge: Option<crate::hedge::HedgeState>,
}

impl<S, P> Shared<S, P> {
    pub(crate) fn new(
        config: Config,
        policy: P,
        clock: quanta::Clock,
        budget: Budget,
        detector: Option<OutlierDetector>,
        checks: Option<crate::balance::Checks>,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Self {
        let hedge = config.hedge.map(crate::hedge::HedgeState::new);
        Self {
            config,
            policy,
            clock,
            budget,
            generation: AtomicU64::new(0),
            table: Mutex::new(Arc::new(Table::empty())),
            registry: Mutex::new(Registry {
                entries: Vec::new(),
                panic: false,
                routable: 0,
                shut_down: false,
                tasks: Vec::new(),
                last_decay: None,
            }),
            reporter: HealthReporter::new(HealthReport::new(0, 0)),
            next_id: AtomicU64::new(1),
            rr: Arc::default(),
            record_successes: detector
                .as_ref()
                .is_some_and(|d| d.config().failure_percentage().is_some()),
            detector,
            checks,
            runtime,
            slab: Arc::default(),
            epoch: Instant::now(),
            hedge,
        }
    }

    /// Nanoseconds from the epoch to `at` (at least 1: 0 means "not backing off").
    pub(super) fn since_epoch(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.epoch).as_nanos() as u64).max(1)
    }

    /// The endpoint asked not to be sent anything for `wanted` (a `Retry-After`, a gRPC
    /// pushback): it leaves the routing table until then (at most `max_backoff`), healthy.
    pub(crate) fn back_off(&self, ep: &Member<S>, wanted: Duration) {
        let d = wanted.min(self.config.max_backoff);
        if d.is_zero() {
            return;
        }
        let until = self.since_epoch(Instant::now() + d);
        let before = ep.backoff_until.fetch_max(until, Ordering::AcqRel);
        if before == 0 {
            tracing::info!(
                endpoint = %ep.name,
                balancer = %self.config.name,
                backoff_ms = d.as_millis() as u64,
                "endpoint asked for a back-off: out of picking until then"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!("rampart_balance_backoffs_total", "balancer" => self.config.name.clone())
                .increment(1);
            let mut reg = self.registry();
            self.rebuild(&mut reg);
        }
    }

    /// Time left in `ep`'s back-off.
    fn backoff_left(&self, ep: &Member<S>, now: Instant) -> Option<Duration> {
        let until = ep.backoff_until.load(Ordering::Acquire);
        (until != 0).then(|| Duration::from_nanos(until.saturating_sub(self.since_epoch(now))))
    }

    /// Registers the counters of rare events, so that they show (at zero) from the start
    /// rather than from their first event. Every series is looked up when it changes, so a
    /// recorder installed later still receives them from then on.
    #[cfg(feature = "metrics")]
    pub(crate) fn register_metrics(&self) {
        let name = &self.config.name;
        drop(metrics::counter!("rampart_balance_ejections_total", "balancer" => name.clone()));
        drop(metrics::counter!(
            "rampart_balance_no_healthy_endpoints_total",
            "balancer" => name.clone()
        ));
        drop(metrics::counter!("rampart_balance_backoffs_total", "balancer" => name.clone()));
        for result in ["retried", "budget_exhausted"] {
            drop(metrics::counter!(
                "rampart_balance_retries_total",
                "balancer" => name.clone(),
                "result" => result
            ));
        }
        if self.config.hedge.is_some() {
            for result in ["sent", "won", "budget_exhausted"] {
                drop(metrics::counter!(
                    "rampart_balance_hedges_total",
                    "balancer" => name.clone(),
                    "result" => result
                ));
            }
        }
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry<S>> {
        // A poisoned registry still holds consistent data (every update is a plain store).
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current table and its generation.
    pub(crate) fn table(&self) -> (Arc<Table<S>>, u64) {
        let t = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (t.clone(), self.generation.load(Ordering::Acquire))
    }

    pub(super) fn mean_ewma(&self, reg: &Registry<S>) -> Duration {
        let mut sum = 0.0;
        let mut n = 0.0;
        // A sample of the pool is enough for a starting estimate (and keeps inserts O(1)).
        for e in reg.entries.iter().take(64) {
            let load = e.ep.load();
            if load.last_update_raw() != 0 && e.routable {
                sum += load.ewma_ns();
                n += 1.0;
            }
        }
        if n > 0.0 {
            Duration::from_nanos((sum / n) as u64)
        } else {
            self.config.default_rtt
        }
    }
}

impl<S, P> Shared<S, P>
where
    S: Send + Sync + 'static,
    P: Send + Sync + 'static,
{
    /// Adds an endpoint and returns its id.
    pub(crate) fn insert(
        self: &Arc<Self>,
        name: Arc<str>,
        service: S,
        weight: u32,
        health: HealthSource,
        ramp: bool,
    ) -> u64 {
        self.insert_with(name, service, weight, health, ramp, true)
    }

    /// Adds an endpoint; `rebuild: false` defers the table rebuild (bulk inserts).
    pub(crate) fn insert_with(
        self: &Arc<Self>,
        name: Arc<str>,
        service: S,
        weight: u32,
        health: HealthSource,
        ramp: bool,
        rebuild: bool,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut reg = self.registry();
        if reg.shut_down {
            return id;
        }
        let health = self.active_health(&name, health);
        let initial = match &health {
            HealthSource::None => Health::Healthy,
            HealthSource::Watch(w) => w.get(),
            HealthSource::Checker(c) => c.health(),
            HealthSource::Probe(_) => Health::Unknown,
        };
        let tracker = self.detector.as_ref().map(|d| d.track(name.clone()));
        tracing::info!(endpoint = %name, id, weight, health = %initial, "endpoint added");
        let ep = Arc::new(Member::new(
            &self.slab,
            id,
            name,
            service,
            weight,
            self.mean_ewma(&reg),
            initial,
            tracker,
        ));
        let (watch, checker) = match health {
            HealthSource::None => (None, None),
            HealthSource::Watch(w) => (Some(w), None),
            HealthSource::Checker(c) => (Some(c.watch()), Some(c)),
            HealthSource::Probe(_) => (None, None),
        };
        let health_task = watch.and_then(|w| self.spawn_health_watch(&ep, w));
        #[cfg(feature = "metrics")]
        metrics::counter!("rampart_balance_endpoint_changes_total", "balancer" => self.config.name.clone(), "change" => "added")
            .increment(1);
        reg.entries.push(Entry {
            ep,
            routable: false,
            no_ramp_once: !ramp,
            ramp_start: None,
            _health_task: health_task,
            _checker: checker,
        });
        if rebuild {
            self.rebuild(&mut reg);
        }
        id
    }
}

impl<S, P> Shared<S, P> {
    /// Removes the endpoint `id`; in-flight requests on it finish normally.
    pub(crate) fn remove(&self, id: u64) -> bool {
        let mut reg = self.registry();
        let Some(pos) = reg.entries.iter().position(|e| e.ep.id == id) else {
            return false;
        };
        let entry = reg.entries.swap_remove(pos);
        tracing::info!(endpoint = %entry.ep.name, id, "endpoint removed");
        #[cfg(feature = "metrics")]
        metrics::counter!("rampart_balance_endpoint_changes_total", "balancer" => self.config.name.clone(), "change" => "removed")
            .increment(1);
        self.rebuild(&mut reg);
        drop(reg);
        drop(entry);
        true
    }

    /// Sets or clears `draining` on every endpoint called `name`; `false` when none is.
    pub(crate) fn set_draining(&self, name: &str, draining: bool) -> bool {
        let mut reg = self.registry();
        let mut found = false;
        for e in reg.entries.iter().filter(|e| &*e.ep.name == name) {
            found = true;
            if e.ep.draining.swap(draining, Ordering::AcqRel) != draining {
                tracing::info!(endpoint = %name, draining, "endpoint drain changed");
                #[cfg(feature = "metrics")]
                metrics::counter!(
                    "rampart_balance_endpoint_changes_total",
                    "balancer" => self.config.name.clone(),
                    "change" => if draining { "drained" } else { "undrained" }
                )
                .increment(1);
            }
        }
        if found {
            self.rebuild(&mut reg);
        }
        found
    }

    /// Records a finished attempt: latency into the peak EWMA (failures count double, and at
    /// least the failure penalty, so a failing endpoint loses the comparison), the outcome into passive outlier detection.
    pub(crate) fn record(&self, ep: &Member<S>, load: &LoadCell, outcome: Outcome, start_raw: u64) {
        if outcome == Outcome::Ignored {
            return;
        }
        let end = self.clock.raw();
        let rtt = self.clock.delta_as_nanos(start_raw, end) as f64;
        let elapsed = self.clock.delta_as_nanos(load.last_update_raw(), end) as f64;
        let sample = if outcome.is_failure() {
            ep.failures.fetch_add(1, Ordering::Relaxed);
            self.failure_sample(load, rtt)
        } else {
            rtt
        };
        load.observe_latency(sample, end, elapsed, self.config.decay.as_nanos() as f64);
        if let Some(hedge) = &self.hedge
            && hedge.observes()
        {
            hedge.observe(rtt);
        }
        self.judge(ep, load, outcome);
    }

    /// What a failure counts as in the peak EWMA: twice the slower of its latency and the
    /// estimate, at least the failure penalty.
    #[inline]
    fn failure_sample(&self, load: &LoadCell, rtt: f64) -> f64 {
        (rtt.max(load.ewma_ns()) * 2.0).max(self.config.failure_penalty.as_nanos() as f64)
    }

    /// Feeds an outcome to passive outlier detection, ejecting the endpoint when its tracker
    /// says so.
    #[inline]
    fn judge(&self, ep: &Member<S>, load: &LoadCell, outcome: Outcome) {
        if outcome.is_success() && !self.record_successes && !load.failing() {
            // Nothing for the outlier tracker to reset: skip the endpoint's (cold) memory.
            return;
        }
        if let Some(tracker) = &ep.tracker {
            load.set_failing(outcome.is_failure());
            tracker.record(outcome);
            if outcome.is_failure() && !ep.ejected.load(Ordering::Acquire) && tracker.is_ejected() {
                ep.ejected.store(true, Ordering::Release);
                tracing::warn!(
                    endpoint = %ep.name,
                    count = tracker.ejection_count(),
                    "endpoint ejected (passive outlier detection)"
                );
                #[cfg(feature = "metrics")]
                metrics::counter!("rampart_balance_ejections_total", "balancer" => self.config.name.clone()).increment(1);
                let mut reg = self.registry();
                self.rebuild(&mut reg);
            }
        }
    }

    /// Records the head of an attempt whose outcome comes later: its latency (a success's
    /// sample) into the peak EWMA and the hedge delay, no outcome. Returns the latency, for
    /// the late record.
    pub(crate) fn record_head(&self, load: &LoadCell, start_raw: u64) -> f64 {
        let end = self.clock.raw();
        let rtt = self.clock.delta_as_nanos(start_raw, end) as f64;
        let elapsed = self.clock.delta_as_nanos(load.last_update_raw(), end) as f64;
        load.observe_latency(rtt, end, elapsed, self.config.decay.as_nanos() as f64);
        if let Some(hedge) = &self.hedge
            && hedge.observes()
        {
            hedge.observe(rtt);
        }
        rtt
    }

    /// Records the late outcome of an attempt whose head took `rtt` nanoseconds (see
    /// [`record_head`](Self::record_head)): a failure is counted, and weighs in the peak EWMA
    /// as a failure at the head would have; the outcome goes to passive outlier detection. The
    /// attempt's in-flight count and the hedge delay are not touched (the attempt released the
    /// one and fed the other at its head).
    pub(crate) fn record_late(&self, ep: &Member<S>, outcome: Outcome, rtt: f64) {
        if outcome == Outcome::Ignored {
            return;
        }
        let load = ep.load();
        if outcome.is_failure() {
            ep.failures.fetch_add(1, Ordering::Relaxed);
            let end = self.clock.raw();
            let elapsed = self.clock.delta_as_nanos(load.last_update_raw(), end) as f64;
            let sample = self.failure_sample(load, rtt);
            load.observe_latency(sample, end, elapsed, self.config.decay.as_nanos() as f64);
        }
        self.judge(ep, load, outcome);
    }

    /// Feeds the time an attempt has taken so far into its endpoint's peak EWMA, without an
    /// outcome (a hedged attempt that lost: it was at least this slow).
    pub(crate) fn record_latency(&self, load: &LoadCell, start_raw: u64) {
        let end = self.clock.raw();
        let rtt = self.clock.delta_as_nanos(start_raw, end) as f64;
        if rtt > load.ewma_ns() {
            let elapsed = self.clock.delta_as_nanos(load.last_update_raw(), end) as f64;
            load.observe_latency(rtt, end, elapsed, self.config.decay.as_nanos() as f64);
        }
    }

    /// Rebuilds the table now (after bulk inserts).
    pub(crate) fn rebuild_now(&self) {
        let mut reg = self.registry();
        self.rebuild(&mut reg);
    }

    /// Recomputes routability, panic mode and the routing table; publishes the health report.
    pub(crate) fn rebuild(&self, reg: &mut Registry<S>) {
        let now = Instant::now();
        let unknown = self.config.unknown_is_routable;
        let prev_routable = reg.routable;
        let mean = self.mean_ewma(reg);
        let mut routable = Vec::with_capacity(reg.entries.len());
        let mut all = Vec::with_capacity(reg.entries.len());
        let mut routable_slots = Vec::with_capacity(reg.entries.len());
        let mut all_slots = Vec::with_capacity(reg.entries.len());
        for e in &mut reg.entries {
            let r = e.ep.is_routable(unknown);
            if r != e.routable {
                if r {
                    let ramp = !e.no_ramp_once && prev_routable > 0;
                    if let (Some(ss), true) = (self.config.slow_start, ramp) {
                        e.ramp_start = Some(now);
                        e.ep.load()
                            .set_effective_weight(f64::from(e.ep.weight) * ss.min_weight);
                    } else {
                        e.ramp_start = None;
                        e.ep.load().set_effective_weight(f64::from(e.ep.weight));
                    }
                    if !e.no_ramp_once {
                        // Forget the latency it had while failing: start at the pool's mean.
                        e.ep.load().reset_ewma(mean.as_nanos() as f64);
                    }
                }
                #[cfg(feature = "metrics")]
                metrics::counter!(
                    "rampart_balance_endpoint_changes_total",
                    "balancer" => self.config.name.clone(),
                    "change" => if r { "routable" } else { "unroutable" }
                )
                .increment(1);
                tracing::info!(
                    endpoint = %e.ep.name,
                    routable = r,
                    health = %e.ep.health(),
                    ejected = e.ep.ejected.load(Ordering::Relaxed),
                    draining = e.ep.draining.load(Ordering::Relaxed),
                    slow_start = e.ramp_start.is_some(),
                    "endpoint routability changed"
                );
                e.routable = r;
            }
            e.no_ramp_once = false;
            if r {
                routable.push(e.ep.clone());
                routable_slots.push(e.ep.slot());
            }
            if !e.ep.draining.load(Ordering::Acquire) {
                all.push(e.ep.clone());
                all_slots.push(e.ep.slot());
            }
        }
        let total = reg.entries.len();
        // An endpoint backing off is healthy, only busy: the report (and panic mode) count it.
        let backing_off = reg
            .entries
            .iter()
            .filter(|e| e.ep.backing_off() && e.ep.routable_but_for_backoff(unknown))
            .count();
        let report = HealthReport::new(routable.len() + backing_off, total);
        let panic = self.config.panic_threshold > 0.0
            && total > 0
            && report.healthy_share() < self.config.panic_threshold;
        if panic != reg.panic {
            if panic {
                tracing::warn!(
                    routable = routable.len(),
                    total,
                    threshold = self.config.panic_threshold,
                    "panic mode: spreading over all endpoints"
                );
            } else {
                tracing::info!(routable = routable.len(), total, "panic mode over");
            }
            reg.panic = panic;
        }
        reg.routable = routable.len();
        let state = |ring: Option<Ring>| PickState {
            rr: self.rr.clone(),
            wrr: Mutex::default(),
            ring,
        };
        let (routable_state, all_state) =
            match self.config.picker {
                Picker::ConsistentHash { virtual_nodes } => (
                    state(Some(Ring::build(
                        routable.iter().map(|e| (&*e.name, e.weight)),
                        virtual_nodes,
                    ))),
                    state(panic.then(|| {
                        Ring::build(all.iter().map(|e| (&*e.name, e.weight)), virtual_nodes)
                    })),
                ),
                _ => (state(None), state(None)),
            };
        #[cfg(feature = "metrics")]
        {
            let name = &self.config.name;
            metrics::gauge!("rampart_balance_endpoints", "balancer" => name.clone(), "state" => "routable")
                .set(routable.len() as f64);
            metrics::gauge!("rampart_balance_endpoints", "balancer" => name.clone(), "state" => "total")
                .set(total as f64);
            metrics::gauge!("rampart_balance_panic", "balancer" => name.clone()).set(if panic {
                1.0
            } else {
                0.0
            });
        }
        let table = Arc::new(Table {
            routable,
            all,
            routable_slots,
            all_slots,
            chunks: self.slab.chunks(),
            panic,
            total,
            routable_state,
            all_state,
        });
        {
            let mut t = self
                .table
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *t = table;
            self.generation.fetch_add(1, Ordering::Release);
        }
        self.reporter.publish(report);
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let reg = self.registry();
        let now = Instant::now();
        let endpoints = reg
            .entries
            .iter()
            .map(|e| {
                let ep = &e.ep;
                EndpointSnapshot {
                    id: ep.id,
                    name: ep.name.to_string(),
                    health: ep.health(),
                    ejected: ep.ejected.load(Ordering::Relaxed),
                    ejected_until: ep
                        .tracker
                        .as_ref()
                        .and_then(|t| t.ejected_until())
                        .map(|u| u.saturating_duration_since(now)),
                    ejection_count: ep.tracker.as_ref().map_or(0, |t| t.ejection_count()),
                    backing_off_until: self.backoff_left(ep, now),
                    draining: ep.draining.load(Ordering::Relaxed),
                    routable: e.routable,
                    outstanding: u64::from(ep.load().outstanding()),
                    ewma: Duration::from_nanos(ep.load().ewma_ns() as u64),
                    weight: ep.weight,
                    effective_weight: ep.load().effective_weight(),
                    slow_start: e.ramp_start.is_some(),
                    requests: ep.load().requests(),
                    failures: ep.failures.load(Ordering::Relaxed),
                }
            })
            .collect();
        Snapshot {
            name: self.config.name.clone(),
            endpoints,
            panic: reg.panic,
            routable: reg.routable,
            total: reg.entries.len(),
        }
    }
}

/// The late outcome of one attempt: its balancer, its endpoint and the latency of its head.
pub(crate) struct Late<S, P> {
    pub(crate) shared: Arc<Shared<S, P>>,
    pub(crate) ep: Arc<Member<S>>,
    pub(crate) rtt: f64,
}

impl<S, P> LateSink for Late<S, P>
where
    S: Send + Sync + 'static,
    P: Send + Sync + 'static,
{
    fn record(&self, outcome: Outcome) {
        self.shared.record_late(&self.ep, outcome, self.rtt);
    }

    fn endpoint(&self) -> &str {
        &self.ep.name
    }
}
