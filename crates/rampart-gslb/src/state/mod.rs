//! The decision state: site health with failback hold, the precomputed split (`Table`), and
//! the background task that recomputes it when health changes.
//!
//! Recomputation happens off the request path (health change, hold deadline, operator
//! action), under a mutex; the result is an immutable `Table` published through a
//! `tokio::sync::watch`. Each `Gslb` clone caches an `Arc<Table>` and only re-reads it when the
//! watch's version moved (one atomic load per request).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rampart_health::{Health, HealthReport};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use self::failback::{EPS, Hold, Step};
pub(crate) use self::latency::Latency;
pub(crate) use self::task::run;
use crate::failover::{availability, distribute, priority_health};
use crate::gslb::config::LatencyConfig;
use crate::snapshot::{
    LevelSnapshot, LevelTable, Mode, SiteMeta, SiteSnapshot, SiteView, Snapshot, Table,
};

mod failback;
mod latency;
mod task;

/// Mutable, lock-protected health state of one site.
#[derive(Debug)]
struct SiteState {
    report: Option<watch::Receiver<HealthReport>>,
    probe: Option<watch::Receiver<Health>>,
    /// The share the signals say now.
    observed: f64,
    /// The share the split uses and the failback hold's progress.
    hold: Hold,
    drained: bool,
}

#[derive(Debug)]
struct State {
    sites: Vec<SiteState>,
    version: u64,
    last_decision: Option<Decision>,
}

/// What counts as a "change of decision": mode, per-level loads and the routable set.
#[derive(Debug, Clone, PartialEq)]
struct Decision {
    mode: Mode,
    loads: Vec<u32>,
    routable: Vec<bool>,
}

/// Shared control block: static metadata, the lock-protected state and the table channel.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) name: Arc<str>,
    pub(crate) meta: Box<[SiteMeta]>,
    pub(crate) level_sites: Box<[Vec<usize>]>,
    pub(crate) level_priorities: Box<[u32]>,
    pub(crate) fallback: Option<Arc<str>>,
    pub(crate) factor_pct: u32,
    pub(crate) hold: Duration,
    pub(crate) all_as_healthy: bool,
    pub(crate) unknown_is_routable: bool,
    pub(crate) latency: Option<Latency>,
    state: Mutex<State>,
    table_tx: watch::Sender<Arc<Table>>,
    pub(crate) wake: Notify,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::Metrics,
}

/// A site's static facts and health signals.
pub(crate) type SiteInit = (
    SiteMeta,
    Option<watch::Receiver<HealthReport>>,
    Option<watch::Receiver<Health>>,
);

/// Inputs for building a [`Control`].
pub(crate) struct ControlInit {
    pub(crate) name: Arc<str>,
    pub(crate) sites: Vec<SiteInit>,
    pub(crate) fallback: Option<Arc<str>>,
    pub(crate) factor_pct: u32,
    pub(crate) hold: Duration,
    pub(crate) all_as_healthy: bool,
    pub(crate) unknown_is_routable: bool,
    pub(crate) latency: Option<LatencyConfig>,
}

/// A receiver the background task waits on.
pub(crate) enum Watched {
    Report(watch::Receiver<HealthReport>),
    Probe(watch::Receiver<Health>),
}

impl Control {
    /// Builds the control block and the initial table (current health admitted at once).
    pub(crate) fn new(init: ControlInit) -> (Arc<Self>, Vec<Watched>) {
        let mut priorities: Vec<u32> = init.sites.iter().map(|(m, _, _)| m.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let mut level_sites = vec![Vec::new(); priorities.len()];
        let mut meta = Vec::with_capacity(init.sites.len());
        let mut states = Vec::with_capacity(init.sites.len());
        let mut watched = Vec::new();
        for (i, (mut m, report, probe)) in init.sites.into_iter().enumerate() {
            let level = priorities.partition_point(|&p| p < m.priority);
            m.level = level;
            level_sites[level].push(i);
            meta.push(m);
            if let Some(r) = &report {
                watched.push(Watched::Report(r.clone()));
            }
            if let Some(p) = &probe {
                watched.push(Watched::Probe(p.clone()));
            }
            states.push(SiteState {
                report,
                probe,
                observed: 0.0,
                hold: Hold {
                    admitted: 0.0,
                    pending_since: None,
                },
                drained: false,
            });
        }
        let latency = init
            .latency
            .map(|c| Latency::new(c, meta.len(), &level_sites));
        #[cfg(feature = "metrics")]
        let metrics = crate::metrics::Metrics::new(&init.name, &meta, init.fallback.as_ref());
        let (table_tx, _) = watch::channel(Arc::new(Table {
            version: 0,
            mode: Mode::Unavailable,
            levels: Box::new([]),
            routable: Box::new([]),
            failover: Box::new([]),
            active_priority: None,
            sites: Box::new([]),
        }));
        let control = Arc::new(Self {
            name: init.name,
            meta: meta.into(),
            level_sites: level_sites.into(),
            level_priorities: priorities.into(),
            fallback: init.fallback,
            factor_pct: init.factor_pct,
            hold: init.hold,
            all_as_healthy: init.all_as_healthy,
            unknown_is_routable: init.unknown_is_routable,
            latency,
            state: Mutex::new(State {
                sites: states,
                version: 0,
                last_decision: None,
            }),
            table_tx,
            wake: Notify::new(),
            #[cfg(feature = "metrics")]
            metrics,
        });
        {
            let mut state = control.lock();
            for s in &mut state.sites {
                s.observed = observe(s, control.unknown_is_routable);
                s.hold.admitted = s.observed;
            }
        }
        control.recompute(Instant::now());
        (control, watched)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent in a way that
        // matters (every field is recomputed from the signals), so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new subscription to the table.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Table>> {
        self.table_tx.subscribe()
    }

    /// The current table (takes the watch's read lock: not for the request path).
    pub(crate) fn table(&self) -> Arc<Table> {
        self.table_tx.borrow().clone()
    }

    /// Index of the site named `name`.
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.meta.iter().position(|m| &*m.name == name)
    }

    /// Sets or clears the drain flag of site `i` and recomputes. Returns the previous flag.
    pub(crate) fn set_drained(&self, i: usize, drained: bool) -> bool {
        let previous = {
            let mut state = self.lock();
            let Some(site) = state.sites.get_mut(i) else {
                return false;
            };
            std::mem::replace(&mut site.drained, drained)
        };
        if previous != drained {
            if let Some(m) = self.meta.get(i) {
                tracing::info!(
                    target: "rampart_gslb",
                    gslb = %self.name,
                    site = %m.name,
                    drained,
                    "site {}",
                    if drained { "drained" } else { "restored" }
                );
            }
            self.recompute(Instant::now());
            self.wake.notify_one();
        }
        previous
    }

    /// The earliest pending failback deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let state = self.lock();
        state
            .sites
            .iter()
            .filter_map(|s| s.hold.deadline(self.hold))
            .min()
    }

    /// Re-reads every signal, applies the failback hold, rebuilds and publishes the table,
    /// and reports a change of decision.
    pub(crate) fn recompute(&self, now: Instant) {
        let mut state = self.lock();
        let any_serving = state
            .sites
            .iter()
            .any(|s| !s.drained && s.hold.admitted > 0.0);
        for (i, s) in state.sites.iter_mut().enumerate() {
            let name = &self.meta[i].name;
            let observed = observe(s, self.unknown_is_routable);
            if (observed - s.observed).abs() > EPS {
                tracing::info!(
                    target: "rampart_gslb",
                    gslb = %self.name,
                    site = %name,
                    from = s.observed,
                    to = observed,
                    "site health changed"
                );
            }
            s.observed = observed;
            match s.hold.observe(observed, self.hold, any_serving, now) {
                Step::Quiet => {}
                Step::Cancelled => tracing::info!(
                    target: "rampart_gslb",
                    gslb = %self.name,
                    site = %name,
                    "failback cancelled: site not continuously healthy"
                ),
                Step::Pending => tracing::info!(
                    target: "rampart_gslb",
                    gslb = %self.name,
                    site = %name,
                    hold = ?self.hold,
                    "failback pending: site must stay healthy for the hold time"
                ),
                Step::Admitted => tracing::info!(
                    target: "rampart_gslb",
                    gslb = %self.name,
                    site = %name,
                    share = observed,
                    "failback: site admitted after the hold time"
                ),
            }
        }

        let shares: Vec<f64> = state
            .sites
            .iter()
            .map(|s| if s.drained { 0.0 } else { s.hold.admitted })
            .collect();
        let (mut mode, mut built) = self.build_levels(&shares);
        if mode == Mode::Unavailable {
            if self.fallback.is_some() {
                mode = Mode::Fallback;
            } else if self.all_as_healthy && state.sites.iter().any(|s| !s.drained) {
                let all: Vec<f64> = state
                    .sites
                    .iter()
                    .map(|s| if s.drained { 0.0 } else { 1.0 })
                    .collect();
                let (_, b) = self.build_levels(&all);
                built = b;
                mode = Mode::AllAsHealthy;
            }
        }
        let Built {
            levels,
            routable,
            failover,
            traffic,
        } = built;

        let active_priority = if matches!(mode, Mode::Normal | Mode::AllAsHealthy) {
            levels.iter().find(|l| l.load > 0).map(|l| l.priority)
        } else {
            None
        };
        let decision = Decision {
            mode,
            loads: levels.iter().map(|l| l.load).collect(),
            routable: routable.clone(),
        };
        let changed = state.last_decision.as_ref() != Some(&decision);
        if changed {
            state.version += 1;
            let loads: Vec<(u32, u32)> = levels.iter().map(|l| (l.priority, l.load)).collect();
            tracing::info!(
                target: "rampart_gslb",
                gslb = %self.name,
                version = state.version,
                mode = mode.as_str(),
                active_priority = ?active_priority,
                loads = ?loads,
                "gslb decision changed"
            );
        }
        let sites: Box<[SiteView]> = state
            .sites
            .iter()
            .zip(&traffic)
            .map(|(s, &traffic_share)| SiteView {
                report: s.report.as_ref().map(|r| *r.borrow()),
                probe: s.probe.as_ref().map(|p| *p.borrow()),
                observed: s.observed,
                admitted: s.hold.admitted,
                drained: s.drained,
                traffic_share: if mode == Mode::Fallback {
                    0.0
                } else {
                    traffic_share
                },
                failback_at: s.hold.deadline(self.hold),
            })
            .collect();

        // Lowest-latency leaders must be routable.
        if let Some(lat) = &self.latency {
            for (cell, &r) in lat.routable.iter().zip(&routable) {
                cell.store(r, Ordering::Relaxed);
            }
            for (level, members) in self.level_sites.iter().enumerate() {
                let leader = lat.leaders[level].load(Ordering::Relaxed);
                if routable.get(leader).copied().unwrap_or(false) {
                    continue;
                }
                let best = members
                    .iter()
                    .copied()
                    .filter(|&i| routable[i])
                    .min_by(|&a, &b| {
                        let ea = lat.ewma(a).unwrap_or(f64::MAX);
                        let eb = lat.ewma(b).unwrap_or(f64::MAX);
                        ea.total_cmp(&eb)
                    });
                if let Some(best) = best {
                    lat.leaders[level].store(best, Ordering::Relaxed);
                }
            }
        }

        #[cfg(feature = "metrics")]
        self.metrics.update(
            changed,
            active_priority,
            &sites,
            self.fallback.is_some() && mode == Mode::Fallback,
        );

        let table = Table {
            version: state.version,
            mode,
            levels: levels.into(),
            routable: routable.into(),
            failover: failover.into(),
            active_priority,
            sites,
        };
        state.last_decision = Some(decision);
        drop(state);
        self.table_tx.send_replace(Arc::new(table));
    }

    fn build_levels(&self, shares: &[f64]) -> (Mode, Built) {
        let f = self.factor_pct;
        let mut health = Vec::with_capacity(self.level_sites.len());
        for members in self.level_sites.iter() {
            let total_w: f64 = members.iter().map(|&i| self.meta[i].weight).sum();
            let healthy_w: f64 = members
                .iter()
                .map(|&i| self.meta[i].weight * shares[i])
                .sum();
            let share = if total_w > 0.0 {
                healthy_w / total_w
            } else {
                0.0
            };
            health.push(priority_health(share, f));
        }
        let mut loads = vec![0; health.len()];
        distribute(&health, &mut loads);
        let mode = if loads.iter().any(|&l| l > 0) {
            Mode::Normal
        } else {
            Mode::Unavailable
        };

        let mut levels = Vec::with_capacity(loads.len());
        let mut traffic = vec![0.0; shares.len()];
        let mut routable = vec![false; shares.len()];
        let mut failover = Vec::new();
        let mut cum_load = 0;
        for (level, members) in self.level_sites.iter().enumerate() {
            let mut picks = Vec::with_capacity(members.len());
            let mut total = 0.0;
            let mut order: Vec<(f64, usize)> = Vec::with_capacity(members.len());
            for &i in members {
                if shares[i] > 0.0 {
                    routable[i] = true;
                    let eff = self.meta[i].weight * availability(shares[i], f);
                    order.push((eff, i));
                    if eff > 0.0 {
                        total += eff;
                        picks.push((total, i));
                    }
                }
            }
            order.sort_by(|a, b| b.0.total_cmp(&a.0));
            failover.extend(order.iter().map(|&(_, i)| i));
            let load = loads[level];
            cum_load += load;
            if total > 0.0 {
                for &(eff, i) in &order {
                    traffic[i] = f64::from(load) / 100.0 * eff / total;
                }
            }
            levels.push(LevelTable {
                priority: self.level_priorities[level],
                health: health[level],
                load,
                load_cum: cum_load,
                picks: picks.into(),
                total,
            });
        }
        (
            mode,
            Built {
                levels,
                routable,
                failover,
                traffic,
            },
        )
    }

    /// A snapshot for operators.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let table = self.table();
        let now = Instant::now();
        let sites = self
            .meta
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let view = table.sites.get(i);
                SiteSnapshot {
                    name: m.name.clone(),
                    region: m.region.clone(),
                    priority: m.priority,
                    weight: m.weight,
                    report: view.and_then(|v| v.report),
                    probe: view.and_then(|v| v.probe),
                    observed_share: view.map_or(0.0, |v| v.observed),
                    admitted_share: view.map_or(0.0, |v| v.admitted),
                    drained: view.is_some_and(|v| v.drained),
                    routable: table.routable.get(i).copied().unwrap_or(false),
                    traffic_share: view.map_or(0.0, |v| v.traffic_share),
                    failback_at: view.and_then(|v| v.failback_at),
                    failback_in: view
                        .and_then(|v| v.failback_at)
                        .map(|at| at.saturating_duration_since(now)),
                    latency: self
                        .latency
                        .as_ref()
                        .and_then(|l| l.ewma(i))
                        .map(|n| Duration::from_nanos(n as u64)),
                    latency_leader: self
                        .latency
                        .as_ref()
                        .is_some_and(|l| l.is_leader(i, m.level)),
                }
            })
            .collect();
        Snapshot {
            name: self.name.clone(),
            version: table.version,
            mode: table.mode,
            active_priority: table.active_priority,
            levels: table
                .levels
                .iter()
                .map(|l| LevelSnapshot {
                    priority: l.priority,
                    health_percent: l.health,
                    load_percent: l.load,
                })
                .collect(),
            sites,
            fallback: self.fallback.clone(),
        }
    }
}

struct Built {
    levels: Vec<LevelTable>,
    routable: Vec<bool>,
    failover: Vec<usize>,
    traffic: Vec<f64>,
}

/// A site's healthy share from its signals.
fn observe(s: &SiteState, unknown_is_routable: bool) -> f64 {
    let probe = s.probe.as_ref().map_or(1.0, |p| {
        if p.borrow().is_routable(unknown_is_routable) {
            1.0
        } else {
            0.0
        }
    });
    let report = s
        .report
        .as_ref()
        .map_or(1.0, |r| r.borrow().healthy_share());
    probe * report
}
