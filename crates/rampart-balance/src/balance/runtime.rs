//! The balancer's background work on the tokio runtime it was built in: starting it (the
//! maintenance tick, discovery streams, active checkers and health watches), the periodic
//! maintenance (slow-start steps, ejection and back-off expiry, idle EWMA decay), and stopping
//! all of it when the last [`Balance`] clone is dropped.

use std::sync::{Arc, Weak};

use rampart_health::{HealthWatch, OutlierConfig};
use std::sync::atomic::Ordering;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::builder::Settings;
use super::shared::Shared;
use super::{Balance, Checks};
use crate::budget::Budget;
use crate::discover::{DiscoverFn, EndpointSink};
use crate::endpoint::HealthSource;
use crate::table::Member;

/// Stops the background tasks when the last [`Balance`] clone is dropped.
pub(super) struct TaskGuard<S, P> {
    pub(super) shared: Arc<Shared<S, P>>,
}

impl<S, P> Drop for TaskGuard<S, P> {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

impl<S, P> EndpointSink<S> for Shared<S, P>
where
    S: Send + Sync + 'static,
    P: Send + Sync + 'static,
{
    fn insert_endpoint(self: Arc<Self>, name: Arc<str>, service: S, ramp: bool) -> u64 {
        self.insert(name, service, 1, HealthSource::None, ramp)
    }

    fn remove_endpoint(&self, id: u64) -> bool {
        self.remove(id)
    }

    fn routable_now(&self) -> usize {
        self.table().0.routable.len()
    }
}

impl<P> Settings<P>
where
    P: Send + Sync + 'static,
{
    pub(crate) fn start<S>(
        self,
        endpoints: Vec<crate::endpoint::Endpoint<S>>,
        discovers: Vec<DiscoverFn<S>>,
    ) -> Balance<S, P>
    where
        S: Send + Sync + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let shared = Arc::new(Shared::new(
            self.config.clone(),
            self.policy,
            self.clock.unwrap_or_default(),
            Budget::new(self.budget),
            self.outlier.map(|outlier| {
                // The detector's metrics and events carry the balancer's name unless the
                // settings were given one of their own.
                let outlier = if outlier.name() == OutlierConfig::default().name() {
                    outlier.with_name(Arc::clone(&self.config.name))
                } else {
                    outlier
                };
                rampart_health::OutlierDetector::new(outlier)
            }),
            Some(Checks {
                config: self.checker.unwrap_or_default(),
                probe_for: self.probe_for.unwrap_or_else(|| Arc::new(|_: &str| None)),
            }),
            runtime.clone(),
        ));
        #[cfg(feature = "metrics")]
        shared.register_metrics();
        for e in endpoints {
            shared.insert_with(e.name, e.service, e.weight, e.health, false, false);
        }
        shared.rebuild_now();
        if let Some(rt) = &runtime {
            let weak = Arc::downgrade(&shared);
            let tick = self.config.tick;
            let task = rt.spawn(async move {
                let mut interval = tokio::time::interval(tick);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let Some(shared) = weak.upgrade() else {
                        break;
                    };
                    shared.maintain();
                }
            });
            shared.add_task(task);
            for d in discovers {
                let sink: Arc<dyn EndpointSink<S>> = shared.clone();
                let weak: Weak<dyn EndpointSink<S>> = Arc::downgrade(&sink);
                drop(sink);
                shared.add_task(d(rt, weak));
            }
        } else if !discovers.is_empty() {
            tracing::error!("balancer built outside a tokio runtime: discovery not started");
        }
        Balance::from_shared(shared)
    }
}

impl<S, P> Shared<S, P> {
    pub(crate) fn add_task(&self, handle: JoinHandle<()>) {
        let mut reg = self.registry();
        if reg.shut_down {
            handle.abort();
        } else {
            reg.tasks.push(AbortOnDropHandle::new(handle));
        }
    }

    /// Stops every background task and every checker; called when the last balancer clone is
    /// dropped.
    pub(crate) fn shutdown(&self) {
        let (tasks, entries) = {
            let mut reg = self.registry();
            reg.shut_down = true;
            (
                std::mem::take(&mut reg.tasks),
                std::mem::take(&mut reg.entries),
            )
        };
        tracing::debug!(
            tasks = tasks.len(),
            endpoints = entries.len(),
            "balancer dropped: background tasks stopped"
        );
        drop(tasks);
        drop(entries);
    }
}

impl<S, P> Shared<S, P>
where
    S: Send + Sync + 'static,
    P: Send + Sync + 'static,
{
    /// Turns a probe (given, or made by the balancer's probe factory) into a running checker.
    pub(super) fn active_health(&self, name: &Arc<str>, health: HealthSource) -> HealthSource {
        let probe = match health {
            HealthSource::Probe(p) => Some(p),
            HealthSource::None => self.checks.as_ref().and_then(|c| (c.probe_for)(name)),
            other => return other,
        };
        let (Some(probe), Some(rt)) = (probe, &self.runtime) else {
            return HealthSource::None;
        };
        let config = self
            .checks
            .as_ref()
            .map(|c| c.config.clone())
            .unwrap_or_default();
        HealthSource::Checker(rampart_health::Checker::spawn_on(
            rt,
            name.clone(),
            probe,
            config,
        ))
    }

    pub(super) fn spawn_health_watch(
        self: &Arc<Self>,
        ep: &Arc<Member<S>>,
        mut watch: HealthWatch,
    ) -> Option<AbortOnDropHandle<()>> {
        let rt = self.runtime.as_ref()?;
        let weak = Arc::downgrade(self);
        let ep = Arc::downgrade(ep);
        let task = rt.spawn(async move {
            while let Some(h) = watch.changed().await {
                let (Some(shared), Some(ep)) = (weak.upgrade(), ep.upgrade()) else {
                    break;
                };
                let before = ep.set_health(h);
                if before != h {
                    tracing::info!(endpoint = %ep.name, from = %before, to = %h, "endpoint health changed");
                    #[cfg(feature = "metrics")]
                    metrics::counter!("rampart_balance_endpoint_changes_total", "balancer" => shared.config.name.clone(), "change" => "health")
                        .increment(1);
                    let mut reg = shared.registry();
                    shared.rebuild(&mut reg);
                }
            }
        });
        Some(AbortOnDropHandle::new(task))
    }
}

impl<S, P> Shared<S, P> {
    /// Periodic work: slow-start ramps, ejection expiry, idle EWMA decay.
    pub(crate) fn maintain(&self) {
        let now = Instant::now();
        let mut reg = self.registry();
        let mut changed = false;
        if let Some(ss) = self.config.slow_start {
            for e in &mut reg.entries {
                if let Some(start) = e.ramp_start {
                    let f = ss.factor(now.duration_since(start));
                    e.ep.load().set_effective_weight(f64::from(e.ep.weight) * f);
                    if f >= 1.0 {
                        e.ramp_start = None;
                        tracing::debug!(endpoint = %e.ep.name, "slow start finished");
                        #[cfg(feature = "metrics")]
                        metrics::counter!("rampart_balance_endpoint_changes_total", "balancer" => self.config.name.clone(), "change" => "slow_start_finished")
                            .increment(1);
                    }
                }
            }
        }
        if let Some(detector) = &self.detector {
            detector.evaluate();
        }
        if let Some(hedge) = &self.hedge {
            hedge.maintain(now);
        }
        for e in &reg.entries {
            if let Some(t) = &e.ep.tracker {
                let ejected = t.is_ejected();
                if ejected != e.ep.ejected.swap(ejected, Ordering::AcqRel) {
                    changed = true;
                    if !ejected {
                        tracing::info!(endpoint = %e.ep.name, "endpoint returned from ejection");
                        #[cfg(feature = "metrics")]
                        metrics::counter!("rampart_balance_endpoint_changes_total", "balancer" => self.config.name.clone(), "change" => "unejected")
                            .increment(1);
                    } else {
                        // Ejected by the detector's periodic evaluation (failure percentage).
                        tracing::warn!(
                            endpoint = %e.ep.name,
                            count = t.ejection_count(),
                            "endpoint ejected (passive outlier detection)"
                        );
                        #[cfg(feature = "metrics")]
                        metrics::counter!("rampart_balance_ejections_total", "balancer" => self.config.name.clone()).increment(1);
                    }
                }
            }
        }
        let now_ns = self.since_epoch(now);
        for e in &reg.entries {
            let until = e.ep.backoff_until.load(Ordering::Acquire);
            if until != 0
                && until <= now_ns
                && e.ep
                    .backoff_until
                    .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                changed = true;
                tracing::info!(endpoint = %e.ep.name, balancer = %self.config.name, "endpoint back-off over");
            }
        }
        let decay_every = self.config.tick;
        if reg
            .last_decay
            .is_none_or(|t| now.duration_since(t) >= decay_every)
        {
            let dt = reg
                .last_decay
                .map_or(decay_every, |t| now.duration_since(t));
            reg.last_decay = Some(now);
            let factor = (-dt.as_secs_f64() / self.config.decay.as_secs_f64()).exp();
            let raw_now = self.clock.raw();
            let tick_ns = decay_every.as_nanos() as u64;
            for e in &reg.entries {
                let load = e.ep.load();
                if load.outstanding() == 0
                    && self.clock.delta_as_nanos(load.last_update_raw(), raw_now) > tick_ns
                {
                    load.decay(factor);
                }
            }
        }
        if changed {
            self.rebuild(&mut reg);
        }
    }
}
