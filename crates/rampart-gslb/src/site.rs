//! Sites: the things a [`Gslb`](crate::Gslb) chooses between.
//!
//! A [`Site`] is a named inner service (usually a balancer over one region's endpoints) with a
//! region tag, a priority (0 is the highest), a weight within its priority, and up to two
//! health signals:
//!
//! - a **report** of its healthy share, published by the inner service itself through
//!   [`ReportHealth`] (a balancer's healthy endpoints / all endpoints);
//! - an **active probe** of the site as a whole ([`HealthWatch`], for instance from a
//!   rampart-health `Checker`).
//!
//! With both, the site's healthy share is the report's share while the probe passes, and 0
//! while it fails. With neither, the site is always fully healthy (operators can still drain
//! it).
//!
//! [`Sites`] collects them, with an optional fallback site and geo orders, and validates the set.
//!
//! # Example
//!
//! ```
//! use rampart_gslb::{Site, Sites};
//! use rampart_health::{HealthReport, HealthReporter};
//!
//! let eu_health = HealthReporter::new(HealthReport::new(3, 3));
//! let sites = Sites::builder()
//!     .site(Site::new("eu-west", "eu service").region("eu").priority(0)
//!         .health_report(eu_health.subscribe()))
//!     .site(Site::new("us-east", "us service").region("us").priority(1))
//!     .build()
//!     .unwrap();
//! assert_eq!(sites.len(), 2);
//!
//! // Bad configuration is refused with the field and value.
//! let err = Sites::builder().site(Site::new("a", ()).weight(f64::NAN)).build().unwrap_err();
//! assert_eq!(err.field(), "site.weight");
//! ```

use std::any::Any;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use rampart_health::{ConfigError, Health, HealthReport, HealthWatch, ReportHealth};
use tokio::sync::watch;

/// One site: a named inner service with its region, priority, weight and health signals.
pub struct Site<S> {
    pub(crate) name: Arc<str>,
    pub(crate) region: Arc<str>,
    pub(crate) priority: u32,
    pub(crate) weight: f64,
    pub(crate) service: S,
    pub(crate) report: Option<watch::Receiver<HealthReport>>,
    pub(crate) probe: Option<watch::Receiver<Health>>,
    pub(crate) keep_alive: Vec<Box<dyn Any + Send + Sync>>,
}

impl<S> fmt::Debug for Site<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("name", &self.name)
            .field("region", &self.region)
            .field("priority", &self.priority)
            .field("weight", &self.weight)
            .field("report", &self.report.as_ref().map(|r| *r.borrow()))
            .field("probe", &self.probe.as_ref().map(|p| *p.borrow()))
            .finish_non_exhaustive()
    }
}

impl<S> Site<S> {
    /// A site named `name` served by `service`: region = its name, priority 0, weight 1, no
    /// health signal (always healthy).
    pub fn new(name: impl Into<Arc<str>>, service: S) -> Self {
        let name = name.into();
        Self {
            region: name.clone(),
            name,
            priority: 0,
            weight: 1.0,
            service,
            report: None,
            probe: None,
            keep_alive: Vec::new(),
        }
    }

    /// The region tag (geo steering sends a client of region R to sites tagged R first).
    pub fn region(mut self, region: impl Into<Arc<str>>) -> Self {
        self.region = region.into();
        self
    }

    /// The priority: 0 is the highest; traffic spills to higher numbers as health is lost.
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// The weight within its priority (finite, ≥ 0; checked by [`SitesBuilder::build`]).
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Follows a health report (a pool's healthy share).
    pub fn health_report(mut self, report: watch::Receiver<HealthReport>) -> Self {
        self.report = Some(report);
        self
    }

    /// Follows the health report of the inner service itself (for instance a rampart-balance
    /// balancer, which implements [`ReportHealth`]).
    pub fn reported(self) -> Self
    where
        S: ReportHealth,
    {
        let rx = self.service.health_report();
        self.health_report(rx)
    }

    /// Follows the health an active probe of the site publishes: a rampart-health
    /// `CheckerHandle::watch()`, or any [`HealthWatch`]. (Use [`checker`](Self::checker) to
    /// hand over the checker itself and keep it running.)
    pub fn health_watch(mut self, watch: HealthWatch) -> Self {
        self.probe = Some(watch.into_inner());
        self
    }

    /// Keeps `value` alive as long as the selector built from this site (for example the
    /// `CheckerHandle` whose last clone stops the probing task when dropped).
    pub fn keep_alive(mut self, value: impl Any + Send + Sync) -> Self {
        self.keep_alive.push(Box::new(value));
        self
    }

    /// Follows a rampart-health active checker of the whole site (an HTTP probe of the
    /// region's front door, say), and keeps the checker running as long as the selector.
    pub fn checker(self, checker: rampart_health::CheckerHandle) -> Self {
        let watch = checker.watch();
        self.health_watch(watch).keep_alive(checker)
    }

    /// The site's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The inner service.
    pub fn service(&self) -> &S {
        &self.service
    }
}

/// A validated set of sites, an optional fallback site and geo orders: what a
/// [`GslbLayer`](crate::GslbLayer) wraps.
pub struct Sites<S> {
    pub(crate) list: Vec<Site<S>>,
    pub(crate) fallback: Option<Site<S>>,
    pub(crate) geo: Vec<(Arc<str>, Vec<usize>)>,
}

impl<S> fmt::Debug for Sites<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sites")
            .field("sites", &self.list)
            .field("fallback", &self.fallback)
            .field("geo", &self.geo)
            .finish()
    }
}

impl<S> Sites<S> {
    /// An empty builder.
    pub fn builder() -> SitesBuilder<S> {
        SitesBuilder {
            list: Vec::new(),
            fallback: None,
            geo: Vec::new(),
        }
    }

    /// The number of sites (the fallback site not included).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never true for a built set (`build()` refuses an empty one).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Builds [`Sites`]; [`build`](SitesBuilder::build) validates.
pub struct SitesBuilder<S> {
    list: Vec<Site<S>>,
    fallback: Option<Site<S>>,
    geo: Vec<(Arc<str>, Vec<Arc<str>>)>,
}

impl<S> fmt::Debug for SitesBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SitesBuilder")
            .field("sites", &self.list)
            .field("fallback", &self.fallback)
            .field("geo", &self.geo)
            .finish()
    }
}

impl<S> SitesBuilder<S> {
    /// Adds a site.
    pub fn site(mut self, site: Site<S>) -> Self {
        self.list.push(site);
        self
    }

    /// The fallback site (Cloudflare's "fallback pool"): used, whatever its health, only when
    /// no regular site is available. Its priority and weight are ignored.
    pub fn fallback(mut self, site: Site<S>) -> Self {
        self.fallback = Some(site);
        self
    }

    /// Geo steering: clients of `region` prefer these sites, in this order (within each
    /// priority level). Without an explicit order, a region's clients prefer the sites tagged
    /// with that region.
    pub fn geo_order<I, N>(mut self, region: impl Into<Arc<str>>, sites: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<Arc<str>>,
    {
        self.geo
            .push((region.into(), sites.into_iter().map(Into::into).collect()));
        self
    }

    /// Validates: at least one site, unique names (fallback included), finite non-negative
    /// weights, a positive total weight in every priority, and geo orders naming known sites.
    pub fn build(self) -> Result<Sites<S>, ConfigError> {
        if self.list.is_empty() {
            return Err(ConfigError::new(
                "sites",
                0,
                "at least one site is required",
            ));
        }
        let mut names = HashSet::new();
        for site in self.list.iter().chain(self.fallback.iter()) {
            if site.name.is_empty() {
                return Err(ConfigError::new("site.name", "", "must not be empty"));
            }
            if !names.insert(site.name.clone()) {
                return Err(ConfigError::new(
                    "site.name",
                    &*site.name,
                    "duplicate site name",
                ));
            }
            if !site.weight.is_finite() || site.weight < 0.0 {
                return Err(ConfigError::new(
                    "site.weight",
                    site.weight,
                    "must be a finite number >= 0",
                ));
            }
        }
        let mut priorities: Vec<u32> = self.list.iter().map(|s| s.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        for p in priorities {
            let total: f64 = self
                .list
                .iter()
                .filter(|s| s.priority == p)
                .map(|s| s.weight)
                .sum();
            if total <= 0.0 {
                return Err(ConfigError::new(
                    "site.weight",
                    format!("total 0 at priority {p}"),
                    "every priority needs a positive total weight",
                ));
            }
        }
        let mut geo = Vec::with_capacity(self.geo.len());
        for (region, order) in self.geo {
            let mut indices = Vec::with_capacity(order.len());
            for name in order {
                let Some(i) = self.list.iter().position(|s| s.name == name) else {
                    return Err(ConfigError::new(
                        "geo_order",
                        &*name,
                        "names no site of this selector",
                    ));
                };
                indices.push(i);
            }
            geo.push((region, indices));
        }
        Ok(Sites {
            list: self.list,
            fallback: self.fallback,
            geo,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_configuration() {
        let none: Result<Sites<()>, _> = Sites::builder().build();
        assert_eq!(none.unwrap_err().field(), "sites");

        let dup = Sites::builder()
            .site(Site::new("a", ()))
            .site(Site::new("a", ()))
            .build()
            .unwrap_err();
        assert_eq!(dup.field(), "site.name");
        assert_eq!(dup.value(), "\"a\"");
        assert!(dup.to_string().contains("duplicate"), "{dup}");

        let dup_fallback = Sites::builder()
            .site(Site::new("a", ()))
            .fallback(Site::new("a", ()))
            .build()
            .unwrap_err();
        assert_eq!(dup_fallback.field(), "site.name");

        for w in [-1.0, f64::NAN, f64::INFINITY] {
            let e = Sites::builder()
                .site(Site::new("a", ()).weight(w))
                .build()
                .unwrap_err();
            assert_eq!(e.field(), "site.weight");
            assert_eq!(e.value(), format!("{w:?}"));
            assert!(e.to_string().contains("site.weight"), "{e}");
        }

        let zero = Sites::builder()
            .site(Site::new("a", ()).weight(0.0))
            .build()
            .unwrap_err();
        assert_eq!(zero.field(), "site.weight");
        assert_eq!(zero.value(), "\"total 0 at priority 0\"");

        let geo = Sites::builder()
            .site(Site::new("a", ()))
            .geo_order("eu", ["b"])
            .build()
            .unwrap_err();
        assert_eq!(geo.field(), "geo_order");
        assert_eq!(geo.value(), "\"b\"");
    }

    #[test]
    fn accepts_a_valid_set() {
        let sites = Sites::builder()
            .site(Site::new("a", ()).weight(0.0).priority(1))
            .site(Site::new("b", ()).weight(2.0).priority(1))
            .site(Site::new("c", ()))
            .fallback(Site::new("sorry", ()))
            .geo_order("eu", ["b", "a"])
            .build()
            .unwrap();
        assert_eq!(sites.len(), 3);
        assert_eq!(sites.geo[0].1, vec![1, 0]);
    }
}
