//! The [`Gslb`] service: routes each request to one of several sites.

pub(crate) mod config;
pub(crate) mod error;
pub(crate) mod future;
pub(crate) mod layer;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use rampart_health::BoxError;
use tokio::sync::watch;
use tower_service::Service;

use self::config::{GslbConfig, Steering};
use self::future::ResponseFuture;
use crate::failover::factor_percent;
use crate::handle::GslbHandle;
use crate::site::Sites;
use crate::snapshot::Mode;
use crate::snapshot::{SiteMeta, Table};
use crate::state::{Control, ControlInit};

/// FNV-1a (Fowler–Noll–Vo), a fast hash for the short site and region names looked up on
/// the request path; the maps are built once from configuration, so hash flooding is not a
/// concern.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type NameMap<V> = HashMap<Arc<str>, V, std::hash::BuildHasherDefault<Fnv>>;

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// A site index; `sites.len()` is the fallback site.
    Site(usize),
    /// Nowhere: fail fast.
    None,
}

/// Aborts the background task when the last selector clone is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// State shared by every clone of a [`Gslb`] and its response futures.
pub(crate) struct Shared<S, Req> {
    pub(crate) control: Arc<Control>,
    services: Box<[S]>,
    fallback: Option<S>,
    pub(crate) config: GslbConfig<Req>,
    names: NameMap<usize>,
    geo: NameMap<Box<[usize]>>,
    _task: Option<AbortOnDrop>,
    _keep_alive: Vec<Box<dyn Any + Send + Sync>>,
}

impl<S, Req> Shared<S, Req> {
    /// The service of site `i` (`sites.len()` = the fallback site).
    pub(crate) fn service(&self, i: usize) -> &S {
        match self.services.get(i) {
            Some(s) => s,
            // `Target::Site(n)` is only produced when a fallback exists.
            None => self.fallback.as_ref().unwrap_or(&self.services[0]),
        }
    }

    pub(crate) fn site_name(&self, i: usize) -> &str {
        match self.control.meta.get(i) {
            Some(m) => &m.name,
            None => self.control.fallback.as_deref().unwrap_or("fallback"),
        }
    }

    /// The next site in failover order that has not been tried; then the fallback site.
    pub(crate) fn next_site(&self, tried: &[usize]) -> Option<usize> {
        let table = self.control.table();
        if let Some(&i) = table.failover.iter().find(|i| !tried.contains(i)) {
            return Some(i);
        }
        let fallback = self.services.len();
        (self.fallback.is_some() && !tried.contains(&fallback)).then_some(fallback)
    }
}

/// A failover selector over sites: routes each request to one of several sites.
///
/// # How a request is routed
///
/// 1. **Mode.** If no site is available, the request goes to the fallback site, or fails fast
///    with [`NoHealthySite`](crate::NoHealthySite) (or, with `all_down_as_healthy`, every
///    undrained site counts as healthy, Route 53's rule).
/// 2. **Affinity.** If configured and the request names a routable site, it goes there.
/// 3. **Priority level.** A level is drawn by its load percentage, computed with Envoy's
///    arithmetic ([`failover`](crate::failover)) from the levels' health.
/// 4. **Steering** within the level: weighted, geo or lowest latency
///    ([`Steering`](crate::Steering)).
/// 5. **Retry.** If the site fails the request with a [`NeverReached`] error in the chain
///    (its balancer had no healthy endpoint, its client's connection was refused) or a bare
///    `io::Error` of kind `ConnectionRefused`, and the request can be replayed, it is sent to
///    the next routable site in failover order, at most `retries` times.
///
/// The split is precomputed whenever health changes (see the crate docs); choosing a site
/// costs one atomic load, one or two random numbers and a binary search, without locks or
/// allocation.
///
/// # Readiness
///
/// The site depends on the request, so [`Gslb::poll_ready`](tower_service::Service::poll_ready)
/// always reports ready and the chosen site's readiness is awaited in the response future on a
/// clone of its service (the pattern of axum's `Router`). Inner services must therefore be
/// `Clone`; wrap one that is not in `tower::buffer::Buffer`.
///
/// [`NeverReached`]: rampart_health::NeverReached
///
/// # Access to the sites
///
/// [`get_ref`](Self::get_ref) and [`site`](Self::site) lend the inner services;
/// [`get_mut`](Self::get_mut) and [`into_inner`](Self::into_inner) exist but succeed only while
/// this is the only clone and no response future holds on to the services, because a
/// selector's services are shared by its clones and its in-flight retries.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use rampart_gslb::{Gslb, GslbConfig, Site, Sites};
/// use tower::{Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // Every site has the same service type (here: one closure, two regions).
/// let region = |name: &'static str| {
///     service_fn(move |req: u32| async move { Ok::<_, Infallible>(format!("{name}:{req}")) })
/// };
/// let (eu, us) = (region("eu"), region("us"));
/// let sites = Sites::builder()
///     .site(Site::new("eu-west", eu).region("eu").priority(0))
///     .site(Site::new("us-east", us).region("us").priority(1))
///     .build()
///     .unwrap();
/// let mut gslb = Gslb::new(GslbConfig::default(), sites);
/// // Both healthy: priority 0 takes everything.
/// assert_eq!(gslb.ready().await.unwrap().call(1).await.unwrap(), "eu:1");
/// gslb.handle().drain("eu-west").unwrap();
/// assert_eq!(gslb.ready().await.unwrap().call(2).await.unwrap(), "us:2");
/// # }
/// ```
pub struct Gslb<S, Req> {
    shared: Arc<Shared<S, Req>>,
    table_rx: watch::Receiver<Arc<Table>>,
    table: Arc<Table>,
}

impl<S, Req> Clone for Gslb<S, Req> {
    /// A clone shares the sites, the split and the operator handle; it does not copy
    /// readiness (there is none to copy: see the type docs on readiness).
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            table_rx: self.table_rx.clone(),
            table: self.table.clone(),
        }
    }
}

impl<S, Req> fmt::Debug for Gslb<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gslb")
            .field("name", &self.shared.control.name)
            .field("sites", &self.shared.control.meta)
            .field("mode", &self.table.mode)
            .finish_non_exhaustive()
    }
}

impl<S, Req: 'static> Gslb<S, Req> {
    /// Builds the selector over `sites` with `config`.
    ///
    /// The current health of every site is taken as it is (no hold at start). A background
    /// task on the current tokio runtime follows health changes and failback deadlines; it
    /// stops when the last clone of this selector is dropped. Outside a tokio runtime there
    /// is no such task: the selector keeps the health it saw at construction (operators can
    /// still drain and restore) and says so with a `warn` event.
    pub fn new(config: GslbConfig<Req>, sites: Sites<S>) -> Self {
        let Sites {
            list,
            fallback,
            geo: geo_orders,
        } = sites;
        let mut services = Vec::with_capacity(list.len());
        let mut init_sites = Vec::with_capacity(list.len());
        let mut keep_alive = Vec::new();
        let mut names = NameMap::default();
        for (i, site) in list.into_iter().enumerate() {
            names.insert(site.name.clone(), i);
            keep_alive.extend(site.keep_alive);
            init_sites.push((
                SiteMeta {
                    name: site.name,
                    region: site.region,
                    priority: site.priority,
                    weight: site.weight,
                    level: 0,
                },
                site.report,
                site.probe,
            ));
            services.push(site.service);
        }
        let (fallback_name, fallback_service) = match fallback {
            Some(f) => {
                keep_alive.extend(f.keep_alive);
                (Some(f.name), Some(f.service))
            }
            None => (None, None),
        };
        let latency = match &config.steering {
            Steering::LowestLatency(c) => Some(*c),
            _ => None,
        };
        let (control, watched) = Control::new(ControlInit {
            name: config.name.clone(),
            sites: init_sites,
            fallback: fallback_name,
            factor_pct: factor_percent(config.factor),
            hold: config.failback_hold,
            all_as_healthy: config.all_down_as_healthy,
            unknown_is_routable: config.unknown_is_routable,
            latency,
        });

        // Geo orders: explicit ones, and for every region tag its sites in priority order.
        let mut geo: NameMap<Box<[usize]>> = NameMap::default();
        let mut by_region: Vec<(usize, usize)> = (0..control.meta.len())
            .map(|i| (control.meta[i].level, i))
            .collect();
        by_region.sort_unstable();
        for &(_, i) in &by_region {
            let region = control.meta[i].region.clone();
            let mut order: Vec<usize> = geo.remove(&region).map(Vec::from).unwrap_or_default();
            order.push(i);
            geo.insert(region, order.into());
        }
        for (region, order) in geo_orders {
            geo.insert(region, order.into());
        }

        let task = match tokio::runtime::Handle::try_current() {
            Ok(rt) => Some(AbortOnDrop(
                rt.spawn(crate::state::run(control.clone(), watched))
                    .abort_handle(),
            )),
            Err(_) => {
                tracing::warn!(
                    target: "rampart_gslb",
                    gslb = %control.name,
                    "gslb built outside a tokio runtime: site health changes will not be followed"
                );
                None
            }
        };
        let table_rx = control.subscribe();
        let table = table_rx.borrow().clone();
        Self {
            shared: Arc::new(Shared {
                control,
                services: services.into(),
                fallback: fallback_service,
                config,
                names,
                geo,
                _task: task,
                _keep_alive: keep_alive,
            }),
            table_rx,
            table,
        }
    }

    /// The operator handle (drain, restore, snapshot).
    pub fn handle(&self) -> GslbHandle {
        GslbHandle::new(self.shared.control.clone())
    }

    /// The inner services, in site order (the fallback site's is [`fallback_ref`]).
    ///
    /// [`fallback_ref`]: Self::fallback_ref
    pub fn get_ref(&self) -> &[S] {
        &self.shared.services
    }

    /// The inner services, mutably, in site order, if this is the only clone of the selector
    /// and no response future holds on to it (like [`Arc::get_mut`]).
    ///
    /// A `Gslb` owns many services, shared by all its clones and by in-flight response futures
    /// (which may retry on another site), so exclusive access is only possible while nothing
    /// else refers to them; otherwise this returns `None`. Each request is sent to a clone of
    /// the chosen site's service, so changes made here apply to requests made afterwards.
    pub fn get_mut(&mut self) -> Option<&mut [S]> {
        Arc::get_mut(&mut self.shared).map(|shared| &mut *shared.services)
    }

    /// Takes the selector apart: the inner services in site order, and the fallback site's
    /// service, if this is the only clone and no response future holds on to it. Otherwise
    /// the selector is handed back unchanged as the error.
    ///
    /// The background task stops and the values kept alive for the sites (such as their
    /// checkers) are dropped; handles still answer, with the last health they saw.
    ///
    /// ```
    /// use rampart_gslb::{Gslb, GslbConfig, Site, Sites};
    ///
    /// let sites = Sites::builder()
    ///     .site(Site::new("eu", "eu service"))
    ///     .fallback(Site::new("sorry", "apology"))
    ///     .build()
    ///     .unwrap();
    /// let gslb = Gslb::new(GslbConfig::<()>::default(), sites);
    /// let clone = gslb.clone();
    /// let gslb = gslb.into_inner().unwrap_err(); // a clone still shares the services
    /// drop(clone);
    /// let (services, fallback) = gslb.into_inner().unwrap();
    /// assert_eq!(services, ["eu service"]);
    /// assert_eq!(fallback, Some("apology"));
    /// ```
    pub fn into_inner(self) -> Result<(Vec<S>, Option<S>), Self> {
        let Self {
            shared,
            table_rx,
            table,
        } = self;
        match Arc::try_unwrap(shared) {
            Ok(shared) => Ok((shared.services.into_vec(), shared.fallback)),
            Err(shared) => Err(Self {
                shared,
                table_rx,
                table,
            }),
        }
    }

    /// The fallback site's service, if configured.
    pub fn fallback_ref(&self) -> Option<&S> {
        self.shared.fallback.as_ref()
    }

    /// The inner service of the site named `name`.
    pub fn site(&self, name: &str) -> Option<&S> {
        self.shared
            .names
            .get(name)
            .map(|&i| &self.shared.services[i])
    }

    /// The configuration.
    pub fn config(&self) -> &GslbConfig<Req> {
        &self.shared.config
    }

    #[inline]
    fn refresh(&mut self) {
        // One atomic load unless the split changed.
        if self.table_rx.has_changed().unwrap_or(false) {
            self.table = self.table_rx.borrow_and_update().clone();
        }
    }

    /// Chooses the target for `req` from the current table.
    #[inline]
    fn pick(&self, req: &Req) -> Target {
        let table = &*self.table;
        let shared = &*self.shared;
        match table.mode {
            Mode::Normal | Mode::AllAsHealthy => {}
            Mode::Fallback => return Target::Site(shared.services.len()),
            Mode::Unavailable => return Target::None,
        }
        if let Some(affinity) = &shared.config.affinity
            && let Some(&i) = affinity.extract(req).and_then(|k| shared.names.get(k))
            && table.routable[i]
        {
            return Target::Site(i);
        }
        let Some((level_index, level)) = table.pick_level() else {
            return Target::None;
        };
        let chosen = match &shared.config.steering {
            Steering::Weighted => level.pick_weighted(),
            Steering::Geo(region) => region
                .extract(req)
                .and_then(|r| shared.geo.get(r))
                .and_then(|order| {
                    order
                        .iter()
                        .copied()
                        .find(|&i| table.routable[i] && shared.control.meta[i].level == level_index)
                })
                .or_else(|| level.pick_weighted()),
            Steering::LowestLatency(c) => {
                let explore = c.explore > 0.0 && fastrand::f64() < c.explore;
                shared
                    .control
                    .latency
                    .as_ref()
                    .and_then(|l| l.leader(level_index))
                    .filter(|&i| !explore && table.routable.get(i).copied().unwrap_or(false))
                    .or_else(|| level.pick_weighted())
            }
        };
        chosen.map_or(Target::None, Target::Site)
    }
}

impl<S, Req: 'static> Service<Req> for Gslb<S, Req>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Reports ready although the sites may not be: which site serves depends on the
        // request, so readiness is awaited in the response future on a clone of the chosen
        // site's service (see the type docs). Nothing is reserved here.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.refresh();
        let target = self.pick(&req);
        ResponseFuture::new(&self.shared, target, req)
    }
}
