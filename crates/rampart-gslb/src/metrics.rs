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
//! Handles are registered once, when the selector is built; the request path only increments
//! a cached counter.

use metrics::{Counter, Gauge, counter, gauge};

use crate::state::{SiteMeta, SiteView};

#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Box<[Counter]>,
    retries: Counter,
    no_site: Counter,
    decisions: Counter,
    active_priority: Gauge,
    fallback_active: Gauge,
    traffic: Box<[Gauge]>,
    health: Box<[Gauge]>,
    drained: Box<[Gauge]>,
}

impl Metrics {
    pub(crate) fn new(gslb: &str, sites: &[SiteMeta], fallback: Option<&str>) -> Self {
        let g = gslb.to_owned();
        let per_site = |name: &'static str| -> Box<[Gauge]> {
            sites
                .iter()
                .map(|m| gauge!(name, "gslb" => g.clone(), "site" => m.name.to_string()))
                .collect()
        };
        let mut requests: Vec<Counter> = sites
            .iter()
            .map(|m| {
                counter!("rampart_gslb_requests_total", "gslb" => g.clone(), "site" => m.name.to_string())
            })
            .collect();
        if let Some(f) = fallback {
            requests.push(
                counter!("rampart_gslb_requests_total", "gslb" => g.clone(), "site" => f.to_owned()),
            );
        }
        Self {
            requests: requests.into(),
            retries: counter!("rampart_gslb_retries_total", "gslb" => g.clone()),
            no_site: counter!("rampart_gslb_no_healthy_site_total", "gslb" => g.clone()),
            decisions: counter!("rampart_gslb_decision_changes_total", "gslb" => g.clone()),
            active_priority: gauge!("rampart_gslb_active_priority", "gslb" => g.clone()),
            fallback_active: gauge!("rampart_gslb_fallback_active", "gslb" => g.clone()),
            traffic: per_site("rampart_gslb_site_traffic_share"),
            health: per_site("rampart_gslb_site_health_share"),
            drained: per_site("rampart_gslb_site_drained"),
        }
    }

    #[inline]
    pub(crate) fn request(&self, site: usize) {
        if let Some(c) = self.requests.get(site) {
            c.increment(1);
        }
    }

    pub(crate) fn retry(&self) {
        self.retries.increment(1);
    }

    pub(crate) fn no_healthy_site(&self) {
        self.no_site.increment(1);
    }

    pub(crate) fn decision_changed(&self) {
        self.decisions.increment(1);
    }

    pub(crate) fn update(
        &self,
        changed: bool,
        active_priority: Option<u32>,
        sites: &[SiteView],
        fallback_active: bool,
    ) {
        if changed {
            self.decisions.increment(1);
        }
        self.active_priority
            .set(active_priority.map_or(-1.0, f64::from));
        self.fallback_active
            .set(if fallback_active { 1.0 } else { 0.0 });
        for (i, s) in sites.iter().enumerate() {
            self.traffic[i].set(s.traffic_share);
            self.health[i].set(s.admitted);
            self.drained[i].set(if s.drained { 1.0 } else { 0.0 });
        }
    }
}
