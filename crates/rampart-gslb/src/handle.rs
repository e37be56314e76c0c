//! The operator handle: drain and restore sites, read a snapshot, wait for decisions.
//!
//! Every [`Gslb`](crate::Gslb) clone shares one control block; [`GslbHandle`] is a cheap clone
//! of it for an admin endpoint or a test. Drain and restore take effect before they return:
//! the split is recomputed synchronously and the next request sees it.
//!
//! # Example
//!
//! ```
//! use rampart_gslb::{Gslb, GslbConfig, Mode, Site, Sites};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) });
//! let sites = Sites::builder()
//!     .site(Site::new("eu", svc))
//!     .site(Site::new("us", svc).priority(1))
//!     .build()
//!     .unwrap();
//! let gslb = Gslb::new(GslbConfig::<()>::default(), sites);
//! let handle = gslb.handle();
//! assert_eq!(handle.snapshot().active_priority, Some(0));
//!
//! handle.drain("eu").unwrap();
//! let snap = handle.snapshot();
//! assert_eq!(snap.active_priority, Some(1));
//! assert_eq!(snap.site("us").unwrap().traffic_share, 1.0);
//! assert!(handle.drain("nowhere").is_err());
//! handle.restore("eu").unwrap();
//! assert_eq!(handle.snapshot().mode, Mode::Normal);
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rampart_health::{Health, HealthReport};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::gslb::error::UnknownSite;
use crate::state::{Control, Table};

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

/// Operator controls for a [`Gslb`](crate::Gslb): drain, restore, snapshot, change
/// notification. Cheap to clone.
#[derive(Clone)]
pub struct GslbHandle {
    control: Arc<Control>,
    rx: watch::Receiver<Arc<Table>>,
}

impl fmt::Debug for GslbHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GslbHandle")
            .field("name", &self.control.name)
            .finish_non_exhaustive()
    }
}

impl GslbHandle {
    pub(crate) fn new(control: Arc<Control>) -> Self {
        let rx = control.subscribe();
        Self { control, rx }
    }

    /// Stops sending new requests to `site` (requests in flight finish). Takes effect before
    /// this returns.
    pub fn drain(&self, site: &str) -> Result<(), UnknownSite> {
        let i = self.index(site)?;
        self.control.set_drained(i, true);
        Ok(())
    }

    /// Undoes [`drain`](Self::drain): the site takes traffic again as its health allows.
    pub fn restore(&self, site: &str) -> Result<(), UnknownSite> {
        let i = self.index(site)?;
        self.control.set_drained(i, false);
        Ok(())
    }

    /// The current state: sites, health, traffic shares, active priority.
    pub fn snapshot(&self) -> Snapshot {
        self.control.snapshot()
    }

    /// Waits until the selector recomputes its split (a health change, a failback admitted,
    /// an operator action), then returns the new snapshot. Returns at once if a recompute
    /// happened since the last call.
    pub async fn changed(&mut self) -> Snapshot {
        // The sender lives in the control block that this handle holds: it cannot be dropped.
        let _ = self.rx.changed().await;
        self.rx.borrow_and_update();
        self.snapshot()
    }

    /// The selector's name.
    pub fn name(&self) -> &str {
        &self.control.name
    }

    fn index(&self, site: &str) -> Result<usize, UnknownSite> {
        self.control
            .index_of(site)
            .ok_or_else(|| UnknownSite::new(site))
    }
}
