//! The reverse proxy: routes by host and path prefix to named upstream clusters.
//!
//! ```text
//! client ── server (crate::server) ── Proxy: route table (host, path prefix → cluster), swapped on reload
//!             └── per cluster: Fallback (its apology: 503 + Retry-After)
//!                   └── CircuitBreaker
//!                         └── Timeout (total, until the response head)
//!                               └── Balance: active checks, passive ejection, P2C (peak EWMA),
//!                                     │      retries on another endpoint within a budget
//!                                     └── endpoint: per-attempt timeout, Host rewrite,
//!                                           per-worker pooled hyper::client::conn::http1
//! ```
//!
//! Every layer is a named tower type around the balancer, the endpoint is a `service_fn`
//! over [`Upstream::send`]: the whole request path is dispatched statically and boxes no
//! future (the upstream connection is boxed once, when it is opened).
//!
//! # Forwarding (RFC 9110 §7.6)
//!
//! - Hop-by-hop headers are removed from the request and from the response: `Connection`
//!   and every header it names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`,
//!   `Upgrade` and every `Proxy-*` header (hyper frames both connections itself).
//! - `Via: 1.1 rampart` is appended on the request and on the response (§7.6.3).
//! - `X-Forwarded-For` is appended with the client's IP address, which the server provides
//!   as a [`ConnectionInfo`] request extension (`unknown` without one, so the chain still
//!   counts this hop); `X-Forwarded-Proto` (`https` when the server terminated TLS, else
//!   `http`) and `X-Forwarded-Host` (the client's `Host`) are set.
//!   The `Forwarded` header (RFC 7239) is not added: the de facto headers are what most
//!   applications read, and one convention avoids two disagreeing chains.
//! - `Host`: kept as the client sent it (`host = "preserve"`, default), or set to the
//!   endpoint's `host:port` (`host = "upstream"`), per cluster.
//!
//! ```no_run
//! use rampart_gateway::config::GatewayConfig;
//! use rampart_gateway::proxy::Proxy;
//! use rampart_gateway::server::{self, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = GatewayConfig::from_file("gateway.toml".as_ref())?;
//! let proxy = Proxy::build(&config)?; // balancers and checkers start on this runtime
//! let server = config.server.to_server_config("gateway")?;
//! let listener = server::bind(config.server.listen, &server)?;
//! server::serve(listener, &server, proxy, server::shutdown_signal()).await;
//! # Ok(()) }
//! ```

mod body;
pub mod endpoints;
mod forward;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HOST, HeaderValue, TE};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use rampart_balance::discover::DnsDiscover;
use rampart_balance::{Balance, BalanceHandle, BalancePolicy, Endpoint, Picker};
use rampart_breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer};
use rampart_fallback::{
    ApologyBody, ApologyPage, FailureStatuses, Fallback, FallbackBody, FallbackLayer,
};
use rampart_health::deadline::{GRPC_TIMEOUT_HEADER, format_grpc_timeout};
use rampart_health::grpc::GRPC_STATUS;
use rampart_health::{BoxError, Classify, Deadline, Outcome, is_never_reached};
use tower::timeout::Timeout;
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt};

use crate::config::{self, ClusterSection, ConfigError, GatewayConfig};
use crate::server::{ConnectionInfo, Handler};
use body::TrailerVerdict;
use endpoints::EndpointMaker;

pub use body::ProxyBody;
pub use endpoints::{ClusterClassifier, PooledEndpoint};
pub use forward::strip_hop_by_hop;
pub use upstream::{UpBody, Upstream, UpstreamError, clone_request, up_body};

/// The balancer's policy for proxied HTTP requests.
///
/// - Replay: requests without a body are copied for a retry (see [`clone_request`]).
/// - Retry elsewhere: a request that never reached its endpoint always; one whose exchange
///   failed or timed out, or that got a 502/503/504, only when its method is idempotent or it
///   carries an `Idempotency-Key` (nginx's `proxy_next_upstream error timeout http_502
///   http_503`).
/// - Health: 5xx and transport errors are failures ([`HttpClassifier`](rampart_health::HttpClassifier)), or, for a `grpc`
///   cluster, the `grpc-status` decides ([`ClusterClassifier::grpc`]).
/// - Deadline: a request's [`Deadline`] extension (the handler sets it from `grpc-timeout`
///   for a `grpc` cluster): no attempt starts past it, and each attempt's `grpc-timeout` says
///   what is left.
#[derive(Debug, Clone, Default)]
pub struct GatewayPolicy {
    classify: ClusterClassifier,
}

impl GatewayPolicy {
    /// The policy with this classifier.
    pub fn with_classifier(classify: ClusterClassifier) -> Self {
        Self { classify }
    }
}

fn retryable(req: &Request<UpBody>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || req.headers().contains_key("idempotency-key")
}

impl BalancePolicy<Request<UpBody>, Response<Incoming>> for GatewayPolicy {
    fn clone_request(&self, req: &Request<UpBody>) -> Option<Request<UpBody>> {
        clone_request(req)
    }

    fn retry_error(&self, req: &Request<UpBody>, error: &BoxError) -> bool {
        is_never_reached(&**error) || retryable(req)
    }

    fn retry_response(&self, req: &Request<UpBody>, response: &Response<Incoming>) -> bool {
        matches!(
            response.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) && retryable(req)
    }

    fn classify(&self, result: Result<&Response<Incoming>, &BoxError>) -> Outcome {
        self.classify.classify(result)
    }

    fn deadline(&self, req: &Request<UpBody>) -> Option<Deadline> {
        // Only a gRPC cluster's handler sets one (from `grpc-timeout`): other clusters skip
        // the extension lookup.
        if self.classify.grpc_classifier().is_some() {
            Deadline::of(req)
        } else {
            None
        }
    }

    fn write_deadline(&self, req: &mut Request<UpBody>, remaining: Duration) {
        if req.headers().contains_key(GRPC_TIMEOUT_HEADER) {
            req.headers_mut()
                .insert(GRPC_TIMEOUT_HEADER, format_grpc_timeout(remaining));
        }
    }
}

/// An endpoint service: per-attempt timeout and `Host` rewrite around [`Upstream::send`].
/// A `service_fn`, so its future is concrete (no boxing).
pub fn endpoint(
    upstream: Upstream,
    attempt_timeout: Duration,
    host: Option<HeaderValue>,
) -> impl Service<
    Request<UpBody>,
    Response = Response<Incoming>,
    Error = UpstreamError,
    Future = impl Future<Output = Result<Response<Incoming>, UpstreamError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |mut req: Request<UpBody>| {
        if let Some(h) = &host {
            req.headers_mut().insert(HOST, h.clone());
        }
        async move {
            match tokio::time::timeout(attempt_timeout, upstream.send(req)).await {
                Ok(result) => result,
                Err(elapsed) => Err(UpstreamError::timed_out(upstream.addr(), elapsed)),
            }
        }
    })
}

/// Builds a cluster's balancer (its checkers and its DNS discovery start on the current
/// runtime).
fn build_balance(
    name: &str,
    c: &ClusterSection,
) -> Result<
    (
        impl Service<Request<UpBody>, Response = Response<Incoming>, Error = BoxError, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
        + use<>,
        BalanceHandle,
    ),
    ConfigError,
> {
    let key = |k: &str| format!("clusters.{name}.{k}");
    let wrap = |k: &str, e: &dyn std::fmt::Display| ConfigError::new(key(k), "", e);
    let parts = c.parts(name)?;
    let (checks, outlier, budget) = (parts.checks, parts.outlier, parts.budget);
    let maker = EndpointMaker::new(name, c)?;
    let mut builder = Balance::builder()
        .name(name.to_owned())
        .policy(GatewayPolicy::with_classifier(
            ClusterClassifier::for_cluster(c),
        ))
        .picker(Picker::PeakEwma)
        .max_retries(c.retries)
        .retry_budget(budget)
        .outlier_detection(outlier);
    if maker.checks_enabled() {
        builder = builder.health_checks(checks);
    }
    for (i, e) in c.endpoints.iter().enumerate() {
        let ekey = format!("endpoints[{i}]");
        let bad = |why: &dyn std::fmt::Display| ConfigError::new(key(&ekey), format!("{e:?}"), why);
        let addr = config::resolve(e).map_err(|why| bad(&why))?;
        let authority = config::authority(e);
        let host = endpoints::host_header(c, authority).map_err(|why| bad(&why))?;
        let svc = maker.service(addr, authority, host);
        let mut endpoint = Endpoint::new(authority.to_owned(), svc);
        if let Some(probe) = maker.probe(authority).map_err(|why| bad(&why))? {
            endpoint = endpoint.probe(probe);
        }
        builder = builder.endpoint(endpoint);
    }
    if let Some(dns) = &c.dns {
        let bad =
            |why: &dyn std::fmt::Display| ConfigError::new(key("dns"), format!("{dns:?}"), why);
        let (host, port) = config::dns_name(dns).map_err(|why| bad(&why))?;
        let mut discover = DnsDiscover::builder()
            .name(host, port)
            .ttl_floor(c.dns_ttl_floor)
            .ttl_ceiling(c.dns_ttl_ceiling);
        if let Some(server) = c.dns_server {
            discover = discover
                .name_server(server)
                .map_err(|e| ConfigError::new(key("dns_server"), server, e))?;
        }
        // `host = "upstream"` sends the name the endpoints were found by.
        let host_header = endpoints::host_header(c, dns).map_err(|why| bad(&why))?;
        let make = maker.clone();
        let discover = discover
            .build(move |addr| make.service(addr, &addr.to_string(), host_header.clone()))
            .map_err(|e| bad(&e))?;
        builder = builder.discover(discover);
        if maker.checks_enabled() {
            let make = maker.clone();
            builder = builder.probe_with(move |endpoint: &str| match make.probe(endpoint) {
                Ok(probe) => probe,
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "no health check for a discovered endpoint");
                    None
                }
            });
        }
    }
    let balance = builder.build().map_err(|e| wrap("endpoints", &e))?;
    let handle = balance.handle();
    Ok((balance, handle))
}

/// The per-cluster stack around a balancer `B`.
pub type ClusterStack<B> =
    Fallback<CircuitBreaker<Timeout<B>, ClusterClassifier>, ApologyPage, FailureStatuses>;

/// One upstream cluster: its balancer, breaker and the stack around them.
#[derive(Debug)]
pub struct Cluster<B> {
    name: Arc<str>,
    section: ClusterSection,
    balance: B,
    balance_handle: BalanceHandle,
    breaker: BreakerHandle,
    classifier: ClusterClassifier,
    stack: ClusterStack<B>,
}

impl<B> Cluster<B> {
    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its balancer's handle (endpoints, health, ejections).
    pub fn balance_handle(&self) -> &BalanceHandle {
        &self.balance_handle
    }

    /// Its breaker.
    pub fn breaker(&self) -> &BreakerHandle {
        &self.breaker
    }
}

/// The settings that, unchanged, let a reload keep a cluster's balancer and its checks.
fn same_balancer(a: &ClusterSection, b: &ClusterSection) -> bool {
    a.endpoints == b.endpoints
        && a.host == b.host
        && a.connect_timeout == b.connect_timeout
        && a.attempt_timeout == b.attempt_timeout
        && a.retries == b.retries
        && a.retry_budget_ratio == b.retry_budget_ratio
        && a.retry_budget_min_per_second == b.retry_budget_min_per_second
        && a.checks == b.checks
        && a.ejection == b.ejection
        && a.dns == b.dns
        && a.dns_ttl_floor == b.dns_ttl_floor
        && a.dns_ttl_ceiling == b.dns_ttl_ceiling
        && a.dns_server == b.dns_server
        && a.protocol == b.protocol
        && a.grpc == b.grpc
        && a.tls == b.tls
}

fn wrap_stack<B>(
    name: &str,
    c: &ClusterSection,
    balance: B,
    breaker: &BreakerHandle,
) -> Result<ClusterStack<B>, ConfigError> {
    let page = match &c.apology_page {
        Some(path) => ApologyPage::builder()
            .html_file(path.clone())
            .build()
            .map_err(|e| {
                ConfigError::new(
                    format!("clusters.{name}.apology_page"),
                    format!("{:?}", path.display().to_string()),
                    e,
                )
            })?,
        None => ApologyPage::default(),
    };
    // A gRPC call whose status comes in the trailers gets its verdict there (`ProxyBody`).
    let breaker = CircuitBreakerLayer::from_handle(breaker.clone())
        .classifier(ClusterClassifier::for_cluster(c).deferring_trailers());
    Ok(FallbackLayer::with_page(page)
        .name(name.to_owned())
        .retry_after(c.retry_after)
        .layer(breaker.layer(Timeout::new(balance, c.total_timeout))))
}

fn breaker_for(name: &str, c: &ClusterSection) -> Result<BreakerHandle, ConfigError> {
    Ok(BreakerHandle::new(c.parts(name)?.breaker))
}

struct Route {
    host: Option<String>,
    prefix: String,
    cluster: usize,
}

/// The routing table: what a reload swaps.
struct Table<B> {
    routes: Vec<Route>,
    clusters: Vec<Arc<Cluster<B>>>,
}

impl<B> Table<B> {
    fn route(&self, host: Option<&str>, path: &str) -> Option<&Cluster<B>> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| {
                path.starts_with(r.prefix.as_str())
                    && r.host
                        .as_deref()
                        .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
            })
            .and_then(|r| self.clusters.get(r.cluster))
            .map(|c| &**c)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

type MakeBalance<B> = fn(&str, &ClusterSection) -> Result<(B, BalanceHandle), ConfigError>;

/// The reverse proxy: a [`Handler`] for the server. Clones share the routing table, which
/// [`reload`](Self::reload) swaps atomically (`arc-swap`): requests in flight finish on the
/// table they started with, connections stay open.
pub struct Proxy<B> {
    table: Arc<ArcSwap<Table<B>>>,
    make_balance: MakeBalance<B>,
    access_log: bool,
}

impl<B> Clone for Proxy<B> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            make_balance: self.make_balance,
            access_log: self.access_log,
        }
    }
}

impl<B> std::fmt::Debug for Proxy<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.table.load();
        f.debug_struct("Proxy")
            .field("routes", &t.routes.len())
            .field(
                "clusters",
                &t.clusters
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>(),
            )
            .field("access_log", &self.access_log)
            .finish()
    }
}

/// What a [`Proxy::reload`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadSummary {
    /// Clusters whose balancer (and health-check state) was kept.
    pub kept: Vec<String>,
    /// Clusters built anew (new, or their endpoints or checks changed).
    pub rebuilt: Vec<String>,
    /// Clusters gone.
    pub removed: Vec<String>,
}

/// The balancer type [`Proxy::build`] uses (an opaque type: one concrete stack, no boxing).
pub trait ProxyBalance:
    Service<
        Request<UpBody>,
        Response = Response<Incoming>,
        Error = BoxError,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> ProxyBalance for T where
    T: Service<
            Request<UpBody>,
            Response = Response<Incoming>,
            Error = BoxError,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

impl Proxy<()> {
    /// Builds the proxy for `config` (validated again here). The balancers' active checks
    /// start on the current tokio runtime and live as long as the clusters.
    pub fn build(config: &GatewayConfig) -> Result<Proxy<impl ProxyBalance + use<>>, ConfigError> {
        Proxy::with_builder(config, build_balance)
    }
}

impl<B: ProxyBalance> Proxy<B> {
    fn with_builder(
        config: &GatewayConfig,
        make_balance: MakeBalance<B>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let table = Self::build_table(config, make_balance, None)?.0;
        Ok(Self {
            table: Arc::new(ArcSwap::from_pointee(table)),
            make_balance,
            access_log: config.access_log.enabled,
        })
    }

    fn build_table(
        config: &GatewayConfig,
        make_balance: MakeBalance<B>,
        old: Option<&Table<B>>,
    ) -> Result<(Table<B>, ReloadSummary), ConfigError> {
        let mut summary = ReloadSummary::default();
        let mut clusters = Vec::with_capacity(config.clusters.len());
        for (name, section) in &config.clusters {
            let previous = old.and_then(|t| t.clusters.iter().find(|c| &*c.name == name.as_str()));
            let (balance, balance_handle) = match previous {
                Some(p) if same_balancer(&p.section, section) => {
                    summary.kept.push(name.clone());
                    (p.balance.clone(), p.balance_handle.clone())
                }
                _ => {
                    if old.is_some() {
                        summary.rebuilt.push(name.clone());
                    }
                    make_balance(name, section)?
                }
            };
            let breaker = match previous {
                Some(p) if p.section.breaker == section.breaker => p.breaker.clone(),
                _ => breaker_for(name, section)?,
            };
            let stack = wrap_stack(name, section, balance.clone(), &breaker)?;
            clusters.push(Arc::new(Cluster {
                name: Arc::from(name.as_str()),
                section: section.clone(),
                balance,
                balance_handle,
                breaker,
                classifier: ClusterClassifier::for_cluster(section),
                stack,
            }));
        }
        if let Some(old) = old {
            for c in &old.clusters {
                if !config.clusters.contains_key(&*c.name) {
                    summary.removed.push(c.name.to_string());
                }
            }
        }
        let routes = config
            .routes
            .iter()
            .map(|r| Route {
                host: r.host.clone(),
                prefix: r.prefix.clone(),
                cluster: config
                    .clusters
                    .keys()
                    .position(|k| *k == r.cluster)
                    .unwrap_or(usize::MAX),
            })
            .collect();
        Ok((Table { routes, clusters }, summary))
    }

    /// Validates `config` and, if it is valid, swaps the routing table. Clusters whose
    /// endpoints, checks and retry settings are unchanged keep their balancer (and with it
    /// their health-check and ejection state); others are built anew. Invalid: the old
    /// table stays and the error names the key.
    pub fn reload(&self, config: &GatewayConfig) -> Result<ReloadSummary, ConfigError> {
        config.validate()?;
        let old = self.table.load_full();
        let (table, summary) = Self::build_table(config, self.make_balance, Some(&old))?;
        self.table.store(Arc::new(table));
        tracing::info!(kept = ?summary.kept, rebuilt = ?summary.rebuilt, removed = ?summary.removed, "configuration reloaded");
        Ok(summary)
    }

    /// The clusters of the current table.
    pub fn clusters(&self) -> Vec<Arc<Cluster<B>>> {
        self.table.load().clusters.clone()
    }

    /// `/status.json`'s document: every cluster with its breaker and endpoints.
    pub fn status(&self) -> serde_json::Value {
        let clusters: Vec<_> = self
            .table
            .load()
            .clusters
            .iter()
            .map(|c| {
                let snap = c.balance_handle.snapshot();
                let b = c.breaker.snapshot();
                serde_json::json!({
                    "name": &*c.name,
                    "routable": snap.routable,
                    "total": snap.total,
                    "panic": snap.panic,
                    "breaker": {
                        "state": format!("{:?}", b.state).to_lowercase(),
                        "calls": b.calls,
                        "failures": b.failures,
                        "failure_rate": b.failure_rate,
                    },
                    "endpoints": snap.endpoints.iter().map(|e| serde_json::json!({
                        "name": e.name,
                        "health": format!("{:?}", e.health).to_lowercase(),
                        "routable": e.routable,
                        "ejected": e.ejected,
                        "draining": e.draining,
                        "outstanding": e.outstanding,
                        "requests": e.requests,
                        "failures": e.failures,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({ "clusters": clusters })
    }
}

/// Makes an HTTP/2 request forwardable on any upstream connection (RFC 9113 §8.3.1): its
/// `:authority` becomes `Host` when it has none, its target the origin form, its version
/// HTTP/1.1 (the upstream connection decides the version on the wire).
fn from_http2(parts: &mut http::request::Parts) {
    if let Some(authority) = parts.uri.authority()
        && !parts.headers.contains_key(HOST)
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(HOST, v);
    }
    if parts.uri.authority().is_some()
        && let Some(pq) = parts.uri.path_and_query()
        && let Ok(uri) = http::Uri::try_from(pq.as_str())
    {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_11;
}

fn no_route() -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::new(FallbackBody::apology(ApologyBody::new(
        Bytes::from_static(b"no route for this host and path\n"),
    ))));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

/// A routed request: the cluster's call, for a gRPC cluster its breaker's verdict to take
/// from the trailers, and, when the access log is on, its entry.
type Routed<B> = (
    Oneshot<ClusterStack<B>, Request<UpBody>>,
    Option<TrailerVerdict>,
    Option<AccessEntry>,
);

struct AccessEntry {
    method: Method,
    uri: http::Uri,
    cluster: Arc<str>,
    start: Instant,
}

impl<B: ProxyBalance> Handler for Proxy<B> {
    type Body = ProxyBody;

    fn handle(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static + use<B> {
        let (mut parts, body) = req.into_parts();
        if parts.version == Version::HTTP_2 {
            from_http2(&mut parts);
        }
        let table = self.table.load();
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.host());
        let routed: Option<Routed<B>> = match table.route(host, parts.uri.path()) {
            None => None,
            Some(cluster) => {
                let conn = parts.extensions.get::<ConnectionInfo>().copied();
                let grpc = cluster.section.grpc;
                // gRPC servers expect `TE: trailers` (the one TE value HTTP/2 allows).
                let te_trailers = grpc
                    && parts
                        .headers
                        .get(TE)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
                forward::request_headers(&mut parts.headers, conn);
                if grpc {
                    if te_trailers {
                        parts
                            .headers
                            .insert(TE, HeaderValue::from_static("trailers"));
                    }
                    // The caller's `grpc-timeout`: no attempt is sent past it.
                    if let Some(deadline) = Deadline::from_headers(&parts.headers) {
                        parts.extensions.insert(deadline);
                    }
                }
                let entry = self.access_log.then(|| AccessEntry {
                    method: parts.method.clone(),
                    uri: parts.uri.clone(),
                    cluster: cluster.name.clone(),
                    start: Instant::now(),
                });
                let verdict = cluster
                    .classifier
                    .grpc_classifier()
                    .map(|g| TrailerVerdict::new(g, cluster.breaker.clone()));
                let req = Request::from_parts(parts, up_body(body));
                Some((cluster.stack.clone().oneshot(req), verdict, entry))
            }
        };
        drop(table);
        async move {
            let Some((call, verdict, entry)) = routed else {
                return no_route();
            };
            let resp = match call.await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            // A gRPC answer whose status is still to come (no `grpc-status` in its head: not
            // Trailers-Only, not our apology) is judged by its trailers.
            let mut resp = match verdict {
                Some(v)
                    if resp.status() == StatusCode::OK
                        && !resp.headers().contains_key(GRPC_STATUS) =>
                {
                    resp.map(|b| ProxyBody::with_verdict(b, v))
                }
                _ => resp.map(ProxyBody::new),
            };
            forward::response_headers(resp.headers_mut());
            if let Some(e) = entry {
                tracing::info!(
                    target: "rampart_gateway::access",
                    method = %e.method,
                    uri = %e.uri,
                    cluster = &*e.cluster,
                    status = resp.status().as_u16(),
                    micros = u64::try_from(e.start.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "request"
                );
            }
            resp
        }
    }
}
