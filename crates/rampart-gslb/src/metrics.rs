//! Counters and gauges through the `metrics` facade (feature `metrics`).
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `rampart_gslb_requests_total` | counter | `gslb`, `site` | requests sent to a site (retries included) |
//! | `rampart_gslb_retries_total` | counter | `gslb` | retries on the next site after a never-reached failure |
//! | `rampart_gslb_no_healthy_site_total` | counter | `gslb` | requests failed fast with `NoHealthySite` |
//! | `rampart_gslb_decision_changes_total` | counter | `gslb` | changes of decision (mode, loads, routable set, latency leader) |
//! | `rampart_gslb_active_priority` | gauge | `gslb` | highest priority taking traffic (-1: none) |
//! | `rampart_gslb_fallback_active` | gauge | `gslb` | 1 while traffic goes to the fallback site |
//! | `rampart_gslb_site_traffic_share` | gauge | `gslb`, `site` | planned share of traffic (0..1) |
//! | `rampart_gslb_site_health_share` | gauge | `gslb`, `site` | admitted healthy share (0..1) |
//! | `rampart_gslb_site_drained` | gauge | `gslb`, `site` | 1 while drained |
//!
//! Every series carries the selector's name (`gslb`). The counters' handles are taken from
//! the recorder on first use (the first request, retry or decision change), not when the
//! selector is built, so a recorder installed after the selector was built but before traffic
//! starts still receives every series; the gauges are looked up whenever the split is
//! recomputed. Building the
//! selector with a recorder installed also shows every series at once (counters at zero).
//! **Install the recorder before the first request**: the request counters of a selector
//! whose first request went to no recorder keep counting into nothing.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, counter, gauge};

use crate::snapshot::{SiteMeta, SiteView};

#[derive(Debug)]
pub(crate) struct Metrics {
    gslb: Arc<str>,
    /// Site names in index order, then the fallback site's.
    sites: Box<[Arc<str>]>,
    /// Resolved on first use.
    handles: OnceLock<Handles>,
}

#[derive(Debug)]
struct Handles {
    /// Per site, then the fallback site.
    requests: Box<[Counter]>,
    retries: Counter,
    no_site: Counter,
    decisions: Counter,
}

impl Metrics {
    pub(crate) fn new(gslb: &Arc<str>, sites: &[SiteMeta], fallback: Option<&Arc<str>>) -> Self {
        let m = Self {
            gslb: gslb.clone(),
            sites: sites
                .iter()
                .map(|m| m.name.clone())
                .chain(fallback.cloned())
                .collect(),
            handles: OnceLock::new(),
        };
        // Registered now so that they show (at zero) with a recorder already installed.
        drop(m.register());
        m
    }

    fn register(&self) -> Handles {
        let g = &self.gslb;
        Handles {
            requests: self
                .sites
                .iter()
                .map(|site| {
                    counter!("rampart_gslb_requests_total", "gslb" => g.clone(), "site" => site.clone())
                })
                .collect(),
            retries: counter!("rampart_gslb_retries_total", "gslb" => g.clone()),
            no_site: counter!("rampart_gslb_no_healthy_site_total", "gslb" => g.clone()),
            decisions: counter!("rampart_gslb_decision_changes_total", "gslb" => g.clone()),
        }
    }

    /// The counters, resolved from the recorder on first use (one load afterwards).
    #[inline]
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| self.register())
    }

    #[inline]
    pub(crate) fn request(&self, site: usize) {
        if let Some(c) = self.handles().requests.get(site) {
            c.increment(1);
        }
    }

    pub(crate) fn retry(&self) {
        self.handles().retries.increment(1);
    }

    pub(crate) fn no_healthy_site(&self) {
        self.handles().no_site.increment(1);
    }

    /// A change of decision on the request path (a new lowest-latency leader).
    pub(crate) fn decision_changed(&self) {
        self.handles().decisions.increment(1);
    }

    pub(crate) fn update(
        &self,
        changed: bool,
        active_priority: Option<u32>,
        sites: &[SiteView],
        fallback_active: bool,
    ) {
        let g = &self.gslb;
        if changed {
            // Not the cached handle: this also runs while the selector is being built, before
            // a recorder may be installed.
            counter!("rampart_gslb_decision_changes_total", "gslb" => g.clone()).increment(1);
        }
        gauge!("rampart_gslb_active_priority", "gslb" => g.clone())
            .set(active_priority.map_or(-1.0, f64::from));
        gauge!("rampart_gslb_fallback_active", "gslb" => g.clone()).set(if fallback_active {
            1.0
        } else {
            0.0
        });
        for (s, name) in sites.iter().zip(self.sites.iter()) {
            let site =
                |metric: &'static str| gauge!(metric, "gslb" => g.clone(), "site" => name.clone());
            site("rampart_gslb_site_traffic_share").set(s.traffic_share);
            site("rampart_gslb_site_health_share").set(s.admitted);
            site("rampart_gslb_site_drained").set(if s.drained { 1.0 } else { 0.0 });
        }
    }
}
