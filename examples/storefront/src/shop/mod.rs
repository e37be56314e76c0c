//! The shop: server-rendered pages over the three services, the order outbox, the operations
//! routes (`/healthz`, `/metrics`, `/status`, `/status.json`) and fault control.
//!
//! Build one with [`Shop::start`]; serve [`Shop::router`].

mod admin;
mod apology;
mod cart;
mod guard;
mod observe;
mod outbox;
mod pages;
mod stack;
mod upstream;
mod views;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use http::HeaderValue;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rampart::fallback::{Degrade, FallbackLayer, FallbackStats, StaleIfErrorLayer};
use rampart::health::{ConfigError, Outcome};
use rampart::limit::algorithm::{Aimd, Fixed, Gradient2, Vegas};
use rampart::limit::{Class, LimitLayer, Limiter, LimiterSnapshot};
use serde::Serialize;
use tower::ServiceBuilder;

pub use admin::{
    AdminState, FaultControl, constant_time_eq, generate_token, router as admin_router,
};
pub use cart::{COOKIE_NAME as CART_COOKIE, Cart, new_key};
pub use guard::{PageGuard, PageGuardFuture, PageGuardLayer};
pub use observe::{Observe, ObserveLayer, ResponseFuture as ObserveFuture};
pub use outbox::{Backoff, Checkout, DEFAULT_LEASE, Forwarded, OrderState, Outbox, OutboxOrder};
pub use upstream::{
    BreakerStatus, ReplicaStatus, ServiceStatus, SiteStatus, StackStatus, StatusProbe, Upstream,
    UpstreamBody, UpstreamError, UpstreamService, within, within_budget,
};

use crate::AbortOnDrop;
use crate::catalog::Product;
use crate::config::{LimitConfig, ShopConfig};
use crate::fleet::{ServiceName, Upstreams};

/// The header on a page the shop served degraded but working, naming how:
/// `search-partial` (search is unavailable: the friendly partial page), `cart-partial` (the
/// cart without the catalog's names and prices) or `order-pending` (the 202 "order received,
/// confirmation pending"). Complete pages never carry it; stale copies are marked by
/// [`rampart::fallback::STALE_HEADER`] and `Age` instead.
///
/// ```
/// assert_eq!(storefront::shop::DEGRADED_HEADER.as_str(), "x-rampart-degraded");
/// ```
pub const DEGRADED_HEADER: HeaderName = HeaderName::from_static("x-rampart-degraded");

/// Shared state of every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    inner: Arc<ShopInner>,
}

impl std::ops::Deref for AppState {
    type Target = ShopInner;
    fn deref(&self) -> &ShopInner {
        &self.inner
    }
}

pub(crate) struct ShopInner {
    pub(crate) catalog: Upstream,
    pub(crate) checkout: Upstream,
    pub(crate) recommendations: Upstream,
    pub(crate) outbox: Outbox,
    pub(crate) backoff: Backoff,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) recs_degrade: Degrade,
    /// How long `POST /checkout` waits for checkout before answering "pending".
    pub(crate) checkout_budget: Duration,
    /// How long recommendations may take before the page leaves them out.
    pub(crate) recs_budget: Duration,
    pub(crate) fallback: FallbackStats,
    pub(crate) stale: StaleIfErrorLayer,
    /// The pages' concurrency limit (`None` with `--no-limit`).
    pub(crate) limiter: Option<Limiter>,
}

impl AppState {
    /// Recommendations are optional (rampart-fallback's `Degrade`): whatever fails or is late
    /// within the budget, the page renders without them.
    ///
    /// The call takes a slot of the limiter's lowest partition first (the page already holds
    /// one of its own): under pressure the recommendations are left out before any page or
    /// checkout is shed.
    pub(crate) async fn recommendations_for(&self, id: u32) -> Option<Vec<Product>> {
        let permit = match &self.limiter {
            Some(limiter) => Some(
                limiter
                    .try_acquire(Class::Partition(RECOMMENDATIONS))
                    .ok()?,
            ),
            None => None,
        };
        let path = format!("/recommendations/{id}");
        let call = async {
            self.recommendations
                .get_json::<Vec<Product>>(&path)
                .await
                .map(Some)
        };
        // The header the recommendations service sees says what the degradation allows,
        // not the whole page's budget.
        let call = upstream::within_budget(self.recs_budget, call);
        let value = self.recs_degrade.or_default(call).await.value;
        if let Some(permit) = permit {
            permit.record(if value.is_some() {
                Outcome::Success
            } else {
                Outcome::Failure
            });
        }
        value
    }
}

/// The limiter's partitions, highest priority first.
pub const PARTITIONS: [&str; 3] = ["checkout", "pages", "recommendations"];
const CHECKOUT: usize = 0;
const PAGES: usize = 1;
const RECOMMENDATIONS: usize = 2;

/// The shop's limiter as `[limit]` configures it (`None` when `enabled = false`): named
/// `shop`, with the partitions of [`PARTITIONS`].
pub fn build_limiter(cfg: &LimitConfig) -> Result<Option<Limiter>, ConfigError> {
    if !cfg.enabled {
        return Ok(None);
    }
    cfg.validate()?;
    let builder = Limiter::builder().name("shop");
    let builder = match cfg.algorithm.as_str() {
        "aimd" => builder.algorithm(
            Aimd::builder()
                .min_limit(cfg.min_limit)
                .initial_limit(cfg.initial_limit)
                .max_limit(cfg.max_limit)
                .build()?,
        ),
        "vegas" => builder.algorithm(
            Vegas::builder()
                .min_limit(cfg.min_limit)
                .initial_limit(cfg.initial_limit)
                .max_limit(cfg.max_limit)
                .build()?,
        ),
        "fixed" => builder.algorithm(Fixed::new(cfg.max_limit)?),
        _ => builder.algorithm(
            Gradient2::builder()
                .min_limit(cfg.min_limit)
                .initial_limit(cfg.initial_limit)
                .max_limit(cfg.max_limit)
                .build()?,
        ),
    };
    builder
        .partition(PARTITIONS[CHECKOUT], cfg.shares.checkout)
        .partition(PARTITIONS[PAGES], cfg.shares.pages)
        .partition(PARTITIONS[RECOMMENDATIONS], cfg.shares.recommendations)
        .build()
        .map(Some)
}

/// The partition of a page request: the buying path (`/checkout`, `/cart`, `/cart/*`,
/// `/orders/*`) is `checkout`, every other page `pages`; the operations and admin routes
/// bypass (they are served outside the page layers anyway).
///
/// ```
/// use rampart::limit::Class;
/// use storefront::shop::classify_page;
/// assert_eq!(classify_page("/checkout"), Class::Partition(0));
/// assert_eq!(classify_page("/products/7"), Class::Partition(1));
/// assert_eq!(classify_page("/healthz"), Class::Bypass);
/// ```
pub fn classify_page(path: &str) -> Class {
    match path {
        "/healthz" | "/metrics" => Class::Bypass,
        p if p.starts_with("/status") || p.starts_with("/admin/") => Class::Bypass,
        "/checkout" | "/cart" => Class::Partition(CHECKOUT),
        p if p.starts_with("/cart/") || p.starts_with("/orders/") => Class::Partition(CHECKOUT),
        _ => Class::Partition(PAGES),
    }
}

/// The running shop: its router and its background outbox worker (stopped on drop).
pub struct Shop {
    router: Router,
    state: AppState,
    outbox: Outbox,
    upstreams: Vec<Upstream>,
    _replayer: AbortOnDrop,
    _sampler: AbortOnDrop,
}

impl std::fmt::Debug for Shop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shop").finish_non_exhaustive()
    }
}

/// Why the shop could not start.
#[derive(Debug)]
pub enum ShopError {
    /// The order store could not be opened.
    Outbox(crate::orders::StoreError),
    /// A service has no addresses.
    MissingUpstream(ServiceName),
    /// A layer refused its configuration.
    Config(ConfigError),
}

impl std::fmt::Display for ShopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShopError::Outbox(e) => write!(f, "order outbox: {e}"),
            ShopError::MissingUpstream(s) => write!(f, "no addresses for service {s}"),
            ShopError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ShopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShopError::Outbox(e) => Some(e),
            ShopError::Config(e) => Some(e),
            ShopError::MissingUpstream(_) => None,
        }
    }
}

/// The process-wide Prometheus recorder (installed once; `None` if another recorder was
/// installed first).
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .clone()
}

/// Describes the shop's own series and registers the counters of rare events, so that every
/// series the README lists is on `/metrics` from the start (at zero) rather than from its
/// first event.
fn register_shop_metrics() {
    metrics::describe_counter!(
        "storefront_http_requests_total",
        "requests answered, by route and status"
    );
    metrics::describe_histogram!(
        "storefront_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "time to answer, by route"
    );
    metrics::describe_gauge!(
        "storefront_outbox_pending",
        "orders waiting for checkout's confirmation"
    );
    for (name, help) in [
        (
            "storefront_orders_received_total",
            "orders accepted by POST /checkout",
        ),
        (
            "storefront_orders_confirmed_total",
            "orders confirmed by checkout",
        ),
        (
            "storefront_orders_rejected_total",
            "orders checkout refused",
        ),
        (
            "storefront_orders_deferred_total",
            "order forwards deferred for a retry",
        ),
    ] {
        metrics::describe_counter!(name, help);
        drop(metrics::counter!(name));
    }
    metrics::describe_counter!(
        "storefront_degraded_total",
        "pages served degraded, by feature"
    );
    drop(metrics::counter!("storefront_degraded_total", "feature" => "search"));
    metrics::gauge!("storefront_outbox_pending").set(0.0);
}

impl Shop {
    /// Builds the shop over `upstreams`; the outbox lives in `data_dir/outbox.db` (SQLite).
    /// Its pages are limited as `limit` says.
    pub fn start(
        config: &ShopConfig,
        limit: &LimitConfig,
        upstreams: &Upstreams,
        admin: AdminState,
        data_dir: &Path,
    ) -> Result<Shop, ShopError> {
        let store = crate::orders::SqliteStore::open(&data_dir.join("outbox.db"))
            .map_err(ShopError::Outbox)?;
        Self::start_with_store(config, limit, upstreams, admin, Arc::new(store))
    }

    /// Builds the shop over `upstreams` with its orders in `store` (see
    /// [`crate::orders::open`]), its pages limited as `limit` says.
    pub fn start_with_store(
        config: &ShopConfig,
        limit: &LimitConfig,
        upstreams: &Upstreams,
        admin: AdminState,
        store: Arc<dyn crate::orders::OrderStore>,
    ) -> Result<Shop, ShopError> {
        // The recorder first: the middleware takes its metric handles from whatever recorder
        // is installed when the stack is built or first used.
        let metrics = prometheus();
        register_shop_metrics();
        let registry = admin.faults.registry().cloned();
        let build = |s: ServiceName| {
            upstreams
                .get(&s)
                .ok_or(ShopError::MissingUpstream(s))
                .and_then(|addrs| {
                    stack::build(s, addrs, config, registry.clone()).map_err(ShopError::Config)
                })
        };
        let catalog = build(ServiceName::Catalog)?;
        let checkout = build(ServiceName::Checkout)?;
        let recommendations = build(ServiceName::Recommendations)?;
        let outbox = Outbox::new(store, config.outbox_lease);
        let backoff = Backoff {
            base: config.outbox_retry_base,
            max: config.outbox_retry_max,
        };
        let replayer = outbox.spawn_replayer(checkout.clone(), backoff);
        let upstream_list = vec![catalog.clone(), checkout.clone(), recommendations.clone()];
        let sampled = upstream_list.clone();
        let sampler = AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                sampled.iter().for_each(Upstream::sample);
            }
        }));
        let recs_degrade = Degrade::builder("recommendations")
            .deadline(config.recommendations_budget)
            .build()
            .map_err(ShopError::Config)?;
        let limiter = build_limiter(limit).map_err(ShopError::Config)?;
        let layers = PageLayers::new(config)
            .map_err(ShopError::Config)?
            .limited(limiter.clone());
        let state = AppState {
            inner: Arc::new(ShopInner {
                catalog,
                checkout,
                recommendations,
                outbox: outbox.clone(),
                backoff,
                metrics,
                recs_degrade,
                checkout_budget: config.page_deadline / 2,
                recs_budget: config.recommendations_budget,
                fallback: layers.fallback.stats().clone(),
                stale: layers.stale.clone(),
                limiter,
            }),
        };
        let router = router(state.clone(), admin, &layers);
        Ok(Shop {
            router,
            state,
            outbox,
            upstreams: upstream_list,
            _replayer: replayer,
            _sampler: sampler,
        })
    }

    /// The shop's router (pages, operations and admin routes, with every layer).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The order outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The pages' limiter (`None` when `[limit] enabled = false`).
    pub fn limiter(&self) -> Option<&Limiter> {
        self.state.limiter.as_ref()
    }

    /// The live status of every service's stack.
    pub fn status(&self) -> Vec<ServiceStatus> {
        self.upstreams.iter().map(Upstream::status).collect()
    }
}

/// The layers around the pages. Outermost first: the request's metrics and trace
/// ([`ObserveLayer`]), the apology (`FallbackLayer`), the concurrency limit (rampart-limit's
/// `LimitLayer`, when there is one), stale copies (`StaleIfError`), then the page guard
/// ([`PageGuardLayer`]: the page's deadline for its upstream calls, panics to 500s, and a
/// `503` when the page's budget is spent), then the handlers. A shed request becomes the apology with
/// `503` and `Retry-After` at once; a stale copy is preferred to the apology, and a panic or
/// a late page becomes a failure the outer layers handle.
#[derive(Debug, Clone)]
pub struct PageLayers {
    /// The apology (line 4).
    pub fallback: FallbackLayer,
    /// Stale copies of cacheable pages (shares its cache across clones).
    pub stale: StaleIfErrorLayer,
    /// The per-page deadline.
    pub deadline: Duration,
    /// The concurrency limit, partitioned by [`classify_page`].
    pub limiter: Option<Limiter>,
    /// The request metrics and trace (its metric handles shared across clones).
    pub observe: ObserveLayer,
}

impl PageLayers {
    /// The layers for `config` (stale cache size, page deadline) with the shop's apology page.
    pub fn new(config: &ShopConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            fallback: FallbackLayer::with_page(apology::page()?)
                .name("pages")
                .retry_after(Duration::from_secs(5)),
            // Keyed by the path and the query parameters the pages read (`page` of the
            // catalog, `q` of the search): made-up query strings share those copies instead
            // of filling the cache with their own.
            stale: StaleIfErrorLayer::builder()
                .name("pages")
                .max_bytes(config.stale_cache_bytes)
                .build()?
                .key(rampart::fallback::stale::path_with_params(["page", "q"])),
            deadline: config.page_deadline,
            limiter: None,
            observe: ObserveLayer::new(&ROUTES),
        })
    }

    /// The same layers with `limiter` (or none).
    pub fn limited(mut self, limiter: Option<Limiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// `routes` wrapped in the layers, all in one layer of the router (each layer of an axum
    /// router boxes and clones the routes' services once more per request). Innermost, the
    /// framework's plain-text client errors (a query, form or method the routes refuse) are
    /// given the shop's look.
    pub fn apply(&self, routes: Router) -> Router {
        let guard = PageGuardLayer::new(self.deadline);
        match &self.limiter {
            Some(limiter) => routes.layer(
                ServiceBuilder::new()
                    .layer(self.observe.clone())
                    .layer(self.fallback.clone())
                    .layer(LimitLayer::http(limiter.clone()).partition_by(
                        |req: &http::Request<axum::body::Body>| classify_page(req.uri().path()),
                    ))
                    .layer(self.stale.clone())
                    .layer(guard)
                    .map_response(pages::brand_errors),
            ),
            None => routes.layer(
                ServiceBuilder::new()
                    .layer(self.observe.clone())
                    .layer(self.fallback.clone())
                    .layer(self.stale.clone())
                    .layer(guard)
                    .map_response(pages::brand_errors),
            ),
        }
    }
}

/// The routes, the page layers, and the operations and admin routes beside them.
fn router(state: AppState, admin: AdminState, layers: &PageLayers) -> Router {
    let pages = Router::new()
        .route("/", get(pages::home))
        .route("/products", get(pages::products))
        .route("/products/{id}", get(pages::product))
        .route("/search", get(pages::search))
        .route("/cart", get(pages::cart))
        .route("/cart/add", post(pages::cart_add))
        .route("/cart/remove", post(pages::cart_remove))
        .route(
            "/checkout",
            get(pages::checkout_form).post(pages::checkout_submit),
        )
        .route("/orders/{id}", get(pages::order))
        .fallback(pages::not_found)
        .with_state(state.clone());
    let routes = Router::new()
        .route("/healthz", get(pages::healthz))
        .route("/metrics", get(metrics_route))
        .route("/status", get(status_page))
        .route("/status.json", get(status_json))
        .with_state(state)
        .merge(admin::router(admin));
    // The pages are observed by their own layers; the page router's fallback (the 404 page)
    // answers every path no route matches.
    routes
        .layer(layers.observe.clone())
        .merge(layers.apply(pages))
}

/// Every route of the shop, as `MatchedPath` reports it (the request metrics keep cached
/// handles for these).
pub const ROUTES: [&str; 15] = [
    "/",
    "/products",
    "/products/{id}",
    "/search",
    "/cart",
    "/cart/add",
    "/cart/remove",
    "/checkout",
    "/orders/{id}",
    "/healthz",
    "/metrics",
    "/status",
    "/status.json",
    "/admin/faults",
    "/admin/faults/reset",
];

/// The request metrics and trace ([`ObserveLayer`]: `storefront_http_requests_total` by route
/// and status, `storefront_http_request_duration_seconds` by route, and the trace of
/// tower-http's `TraceLayer`) around every route of `routes`. The shop puts it around its
/// operations and admin routes; [`PageLayers::apply`] puts it around the pages, with the
/// page layers in the same layer of the router.
///
/// Install the metrics recorder first: the metric handles are taken from the recorder in
/// place when they are first used.
pub fn observe(routes: Router) -> Router {
    routes.layer(ObserveLayer::new(&ROUTES))
}

async fn metrics_route(State(st): State<AppState>) -> Response {
    if let Ok(n) = st.outbox.pending_count().await {
        metrics::gauge!("storefront_outbox_pending").set(n as f64);
    }
    let body = st
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        body,
    )
        .into_response()
}

/// What `/status.json` answers.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Every service.
    pub services: Vec<ServiceStatus>,
    /// Orders waiting for checkout's confirmation.
    pub pending_orders: u64,
    /// The shop's own last lines of defense.
    pub fallback: FallbackStatus,
    /// The pages' concurrency limit: the limit, calls in flight, and per partition its
    /// share, in flight, admitted and shed (`null` when the limiter is off).
    pub limiter: Option<LimiterSnapshot>,
}

/// What the fallback layers did so far.
#[derive(Debug, Serialize)]
pub struct FallbackStatus {
    /// Apologies served.
    pub apologies: u64,
    /// Failures answered with a stale copy.
    pub stale_served: u64,
    /// Pages kept for stale-if-error.
    pub stale_entries: u64,
    /// Product pages rendered without recommendations.
    pub recommendations_left_out: u64,
}

async fn report(st: &AppState) -> StatusReport {
    StatusReport {
        services: vec![
            st.catalog.status(),
            st.checkout.status(),
            st.recommendations.status(),
        ],
        pending_orders: st.outbox.pending_count().await.unwrap_or(0),
        fallback: FallbackStatus {
            apologies: st.fallback.snapshot().total(),
            stale_served: st.stale.snapshot().served,
            stale_entries: st.stale.snapshot().entries,
            recommendations_left_out: st.recs_degrade.snapshot().degraded(),
        },
        limiter: st.limiter.as_ref().map(Limiter::snapshot),
    }
}

async fn status_page(State(st): State<AppState>) -> Response {
    let r = report(&st).await;
    let page = views::StatusPage {
        services: r.services,
        pending_orders: r.pending_orders,
        fallback: r.fallback,
        limiter: r.limiter,
    };
    let body = page
        .render()
        .unwrap_or_else(|e| format!("status page failed: {e}"));
    (
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(body),
    )
        .into_response()
}

async fn status_json(State(st): State<AppState>) -> Response {
    (
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(report(&st).await),
    )
        .into_response()
}
