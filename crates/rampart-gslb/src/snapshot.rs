//! What the selector decided, in two forms: the immutable split the request path reads
//! ([`Table`], published by the decision state through a `tokio::sync::watch`) and the
//! operator's [`Snapshot`] of it.
//!
//! Both the decision state (which builds them), the handle (which reads them) and the
//! metrics (which report them) use these types; none of them depends on another for them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rampart_health::{Health, HealthReport};
use tokio::time::Instant;

/// How the selector is currently routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Some site is healthy: Envoy's priority split over healthy sites.
    Normal,
    /// No site is healthy and the selector treats every (undrained) site as healthy
    /// (Route 53's rule).
    AllAsHealthy,
    /// No site is healthy: everything goes to the fallback site.
    Fallback,
    /// No site is healthy and there is no fallback: requests fail fast with
    /// [`NoHealthySite`](crate::NoHealthySite).
    Unavailable,
}

impl Mode {
    /// A lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::AllAsHealthy => "all_as_healthy",
            Mode::Fallback => "fallback",
            Mode::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One priority level in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LevelSnapshot {
    /// The priority (0 is the highest).
    pub priority: u32,
    /// Envoy's priority health in percent: `min(100, ⌊factor × healthy share⌋)`.
    pub health_percent: u32,
    /// The share of traffic sent to this level, in percent.
    pub load_percent: u32,
}

/// One site in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SiteSnapshot {
    /// The site's name.
    pub name: Arc<str>,
    /// Its region tag.
    pub region: Arc<str>,
    /// Its priority.
    pub priority: u32,
    /// Its configured weight.
    pub weight: f64,
    /// The last health report of its inner service, if it reports.
    pub report: Option<HealthReport>,
    /// The last verdict of its active probe, if probed.
    pub probe: Option<Health>,
    /// The healthy share its signals say now (0.0..=1.0).
    pub observed_share: f64,
    /// The healthy share the split uses: increases wait for the failback hold.
    pub admitted_share: f64,
    /// Drained by an operator.
    pub drained: bool,
    /// Takes new requests (admitted share > 0 and not drained).
    pub routable: bool,
    /// The planned share of all traffic (0.0..=1.0) under weighted steering. Geo and
    /// lowest-latency steering, and session affinity, move traffic between the sites of a
    /// level without changing the level's total.
    pub traffic_share: f64,
    /// When a pending failback will be admitted, if the site is waiting out its hold.
    pub failback_at: Option<Instant>,
    /// The time left of the failback hold, when the snapshot was taken (`None` when no
    /// failback is pending). See [`held_for_failback`](Self::held_for_failback).
    pub failback_in: Option<Duration>,
    /// The latency EWMA, under lowest-latency steering, once measured.
    pub latency: Option<Duration>,
    /// The lowest-latency leader of its level.
    pub latency_leader: bool,
}

impl SiteSnapshot {
    /// `true` while the site's signals say it is healthier than the split admits, because it
    /// is waiting out the failback hold: e.g. every replica is healthy again, yet the site
    /// takes no traffic (it is not [`routable`](Self::routable)) for
    /// [`failback_in`](Self::failback_in) more. Such a site is "healthy, held for failback",
    /// not down.
    pub fn held_for_failback(&self) -> bool {
        self.failback_at.is_some() && self.observed_share > self.admitted_share
    }
}

/// The selector's state for operators.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The selector's name.
    pub name: Arc<str>,
    /// Increases at every change of decision (mode, loads or routable set).
    pub version: u64,
    /// How the selector routes now.
    pub mode: Mode,
    /// The highest priority that takes traffic (`None` in fallback or unavailable mode).
    pub active_priority: Option<u32>,
    /// The priority levels, highest first.
    pub levels: Vec<LevelSnapshot>,
    /// The sites, in configuration order.
    pub sites: Vec<SiteSnapshot>,
    /// The fallback site's name, if one is configured.
    pub fallback: Option<Arc<str>>,
}

impl Snapshot {
    /// The site named `name`.
    pub fn site(&self, name: &str) -> Option<&SiteSnapshot> {
        self.sites.iter().find(|s| &*s.name == name)
    }

    /// The level of priority `priority`.
    pub fn level(&self, priority: u32) -> Option<&LevelSnapshot> {
        self.levels.iter().find(|l| l.priority == priority)
    }
}

/// Static facts about a site.
#[derive(Debug)]
pub(crate) struct SiteMeta {
    pub(crate) name: Arc<str>,
    pub(crate) region: Arc<str>,
    pub(crate) priority: u32,
    pub(crate) weight: f64,
    pub(crate) level: usize,
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
