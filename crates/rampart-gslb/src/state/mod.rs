//! The decision state: site health with failback hold, the precomputed split (`Table`), and
//! the background task that recomputes it when health changes.
//!
//! Recomputation happens off the request path (health change, hold deadline, operator
//! action), under a mutex; the result is an immutable `Table` published through a
//! `tokio::sync::watch`. Each `Gslb` clone caches an `Arc<Table>` and only re-reads it when the
//! watch's version moved (one atomic load per request).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use rampart_health::{Health, HealthReport};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::failover::{availability, distribute, priority_health};
use crate::gslb::layer::LatencyConfig;
use crate::handle::{LevelSnapshot, Mode, SiteSnapshot, Snapshot};

/// Static facts about a site.
#[derive(Debug)]
pub(crate) struct SiteMeta {
    pub(crate) name: Arc<str>,
    pub(crate) region: Arc<str>,
    pub(crate) priority: u32,
    pub(crate) weight: f64,
    pub(crate) level: usize,
}

/// Mutable, lock-protected health state of one site.
#[derive(Debug)]
struct SiteState {
    report: Option<watch::Receiver<HealthReport>>,
    probe: Option<watch::Receiver<Health>>,
    /// The share the signals say now.
    observed: f64,
    /// The share the split uses (increases wait for the failback hold).
    admitted: f64,
    /// Since when `observed` has been continuously above `admitted`.
    pending_since: Option<Instant>,
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

/// One priority level of the precomputed split.
#[derive(Debug)]
pub(crate) struct LevelTable {
    pub(crate) priority: u32,
    pub(crate) health: u32,
    pub(crate) load: u32,
    /// Cumulative load up to and including this level (out of 100).
    pub(crate) load_cum: u32,
    /// Sites of this level with a positive effective weight, with cumulative weights.
    pub(crate) picks: Box<[(f64, usize)]>,
    pub(crate) total: f64,
}

impl LevelTable {
    /// A weighted pick among this level's sites.
    #[inline]
    pub(crate) fn pick_weighted(&self) -> Option<usize> {
        match self.picks.len() {
            0 => None,
            1 => Some(self.picks[0].1),
            n => {
                let r = fastrand::f64() * self.total;
                let i = self.picks.partition_point(|&(cum, _)| cum <= r);
                Some(self.picks[i.min(n - 1)].1)
            }
        }
    }
}

/// The immutable, precomputed split that the request path reads.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) version: u64,
    pub(crate) mode: Mode,
    pub(crate) levels: Box<[LevelTable]>,
    pub(crate) routable: Box<[bool]>,
    /// Routable sites in failover order: by priority, then effective weight (highest first).
    pub(crate) failover: Box<[usize]>,
    pub(crate) active_priority: Option<u32>,
    pub(crate) sites: Box<[SiteView]>,
}

/// Per-site facts for the snapshot.
#[derive(Debug, Clone)]
pub(crate) struct SiteView {
    pub(crate) report: Option<HealthReport>,
    pub(crate) probe: Option<Health>,
    pub(crate) observed: f64,
    pub(crate) admitted: f64,
    pub(crate) drained: bool,
    pub(crate) traffic_share: f64,
    pub(crate) failback_at: Option<Instant>,
}

impl Table {
    /// Picks a priority level by its load (integer percent, like Envoy).
    #[inline]
    pub(crate) fn pick_level(&self) -> Option<(usize, &LevelTable)> {
        match self.levels.len() {
            0 => None,
            1 => Some((0, &self.levels[0])).filter(|(_, l)| l.load > 0),
            _ => {
                let r = fastrand::u32(0..100);
                self.levels
                    .iter()
                    .enumerate()
                    .find(|(_, l)| l.load > 0 && r < l.load_cum)
            }
        }
    }
}

/// Lowest-latency steering state: one EWMA per site and one leader per level.
#[derive(Debug)]
pub(crate) struct Latency {
    pub(crate) config: LatencyConfig,
    /// EWMA in nanoseconds as `f64` bits; 0 = no sample yet.
    ewma: Box<[AtomicU64]>,
    leaders: Box<[AtomicUsize]>,
    /// Routability as of the last recompute, so that stale measurements of a site that went
    /// down do not make it leader again.
    routable: Box<[AtomicBool]>,
}

impl Latency {
    fn new(config: LatencyConfig, sites: usize, level_sites: &[Vec<usize>]) -> Self {
        Self {
            config,
            ewma: (0..sites).map(|_| AtomicU64::new(0)).collect(),
            routable: (0..sites).map(|_| AtomicBool::new(true)).collect(),
            leaders: level_sites
                .iter()
                .map(|s| AtomicUsize::new(s.first().copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The EWMA of `site` in nanoseconds, if measured.
    pub(crate) fn ewma(&self, site: usize) -> Option<f64> {
        let bits = self.ewma.get(site)?.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    #[inline]
    pub(crate) fn leader(&self, level: usize) -> Option<usize> {
        Some(self.leaders.get(level)?.load(Ordering::Relaxed))
    }

    pub(crate) fn is_leader(&self, site: usize, level: usize) -> bool {
        self.leader(level) == Some(site)
    }
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
                admitted: 0.0,
                pending_since: None,
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
                s.admitted = s.observed;
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
            .filter_map(|s| s.pending_since)
            .min()
            .map(|since| since + self.hold)
    }

    /// Re-reads every signal, applies the failback hold, rebuilds and publishes the table,
    /// and reports a change of decision.
    pub(crate) fn recompute(&self, now: Instant) {
        let mut state = self.lock();
        let any_serving = state.sites.iter().any(|s| !s.drained && s.admitted > 0.0);
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
            if observed <= s.admitted + EPS {
                if observed < s.admitted - EPS {
                    s.admitted = observed;
                }
                if s.pending_since.take().is_some() {
                    tracing::info!(
                        target: "rampart_gslb",
                        gslb = %self.name,
                        site = %name,
                        "failback cancelled: site not continuously healthy"
                    );
                }
            } else if !any_serving || self.hold.is_zero() {
                // Nothing else is serving (or no hold configured): take it at once.
                s.admitted = observed;
                s.pending_since = None;
            } else {
                match s.pending_since {
                    None => {
                        s.pending_since = Some(now);
                        tracing::info!(
                            target: "rampart_gslb",
                            gslb = %self.name,
                            site = %name,
                            hold = ?self.hold,
                            "failback pending: site must stay healthy for the hold time"
                        );
                    }
                    Some(since) if now.saturating_duration_since(since) >= self.hold => {
                        s.admitted = observed;
                        s.pending_since = None;
                        tracing::info!(
                            target: "rampart_gslb",
                            gslb = %self.name,
                            site = %name,
                            share = observed,
                            "failback: site admitted after the hold time"
                        );
                    }
                    Some(_) => {}
                }
            }
        }

        let shares: Vec<f64> = state
            .sites
            .iter()
            .map(|s| if s.drained { 0.0 } else { s.admitted })
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
                admitted: s.admitted,
                drained: s.drained,
                traffic_share: if mode == Mode::Fallback {
                    0.0
                } else {
                    traffic_share
                },
                failback_at: s.pending_since.map(|t| t + self.hold),
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

    /// Records a latency sample for lowest-latency steering, and moves the level's leader if
    /// another site is faster by more than the hysteresis margin.
    pub(crate) fn record_latency(&self, site: usize, elapsed: Duration) {
        let (Some(lat), Some(meta)) = (&self.latency, self.meta.get(site)) else {
            return;
        };
        let sample = (elapsed.as_nanos() as f64).max(1.0);
        let alpha = lat.config.alpha;
        let cell = &lat.ewma[site];
        let mut new = sample;
        let mut old = f64::MAX;
        let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            old = if bits == 0 {
                f64::MAX
            } else {
                f64::from_bits(bits)
            };
            new = if bits == 0 {
                sample
            } else {
                alpha * sample + (1.0 - alpha) * f64::from_bits(bits)
            };
            Some(new.to_bits())
        });
        let level = meta.level;
        let margin = 1.0 + lat.config.hysteresis;
        let leader = lat.leaders[level].load(Ordering::Relaxed);
        if !lat.routable[site].load(Ordering::Relaxed) {
            // A late answer from a site that is out: measured, but it cannot lead.
            return;
        }
        if leader != site {
            let better = match lat.ewma(leader) {
                None => true,
                Some(l) => new * margin < l,
            };
            if better {
                self.switch_leader(lat, level, leader, site, new);
            }
        } else if new > old {
            // The leader got slower: is anyone else faster by the margin? (If it did not get
            // slower, no one can have overtaken it: others are checked on their own samples.)
            let best = self.level_sites[level]
                .iter()
                .copied()
                .filter(|&i| i != site && lat.routable[i].load(Ordering::Relaxed))
                .filter_map(|i| lat.ewma(i).map(|e| (e, i)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((e, i)) = best
                && e * margin < new
            {
                self.switch_leader(lat, level, site, i, e);
            }
        }
    }

    fn switch_leader(&self, lat: &Latency, level: usize, from: usize, to: usize, ewma: f64) {
        if lat.leaders[level]
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::info!(
                target: "rampart_gslb",
                gslb = %self.name,
                priority = self.level_priorities[level],
                from = %self.meta[from].name,
                to = %self.meta[to].name,
                ewma = ?Duration::from_nanos(ewma as u64),
                "lowest-latency site changed"
            );
            #[cfg(feature = "metrics")]
            self.metrics.decision_changed();
        }
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

const EPS: f64 = 1e-9;

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

/// The background task: recompute on every signal change and at hold deadlines.
pub(crate) async fn run(control: Arc<Control>, mut watched: Vec<Watched>) {
    loop {
        let deadline = control.next_deadline();
        let woken = control.wake.notified();
        tokio::select! {
            closed = any_changed(&mut watched) => {
                if let Some(i) = closed {
                    watched.swap_remove(i);
                }
            }
            () = sleep_until(deadline) => {}
            () = woken => {}
        }
        control.recompute(Instant::now());
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Waits until any watched signal changes; returns the index of a closed one (its sender
/// dropped) so the caller stops watching it.
async fn any_changed(watched: &mut [Watched]) -> Option<usize> {
    if watched.is_empty() {
        return std::future::pending().await;
    }
    type Changed<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
    let mut futures: Vec<Changed<'_>> = watched
        .iter_mut()
        .map(|w| -> Changed<'_> {
            match w {
                Watched::Report(rx) => Box::pin(async move { rx.changed().await.is_ok() }),
                Watched::Probe(rx) => Box::pin(async move { rx.changed().await.is_ok() }),
            }
        })
        .collect();
    std::future::poll_fn(|cx| {
        for (i, f) in futures.iter_mut().enumerate() {
            if let Poll::Ready(open) = f.as_mut().poll(cx) {
                return Poll::Ready(if open { None } else { Some(i) });
            }
        }
        Poll::Pending
    })
    .await
}
