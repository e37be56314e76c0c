//! `storefront edge`: the edge gateway in front of several shop instances.
//!
//! ```text
//! client ── rampart-gateway's server: HTTP/1.1, one current-thread runtime per core,
//!            header-read / keep-alive / body timeouts, connection cap, graceful shutdown
//!             └── FallbackLayer ........ the edge's apology (503 + Retry-After) when no shop answers
//!                   └── ReplayBodyLayer  small bodies with a known length are buffered, so they can be replayed
//!                         └── Balance .. active checks (GET /healthz), passive ejection, P2C,
//!                               │        retry on the other shop
//!                               └── endpoint: per-worker pooled hyper::client::conn::http1
//! ```
//!
//! Every layer is an ordinary tower service with a named future: the stack is one concrete
//! type, dispatched statically, and nothing on the request path is boxed.
//!
//! - A request that never reached a shop (refused connection, the instance was killed) is
//!   retried on the other shop. An idempotent request (GET, HEAD...) or one carrying an
//!   `Idempotency-Key` header is also retried after a reset, a timeout, or a 502/503/504 (the
//!   checkout service deduplicates by that key, so a retried checkout is still one order).
//!   Every request header, `Idempotency-Key` included, is forwarded as it came (minus the
//!   hop-by-hop headers of RFC 9110 §7.6.1).
//! - A shop's own apology (`503` with `Retry-After`) passes through untouched and does not
//!   count against the instance ([`ShopFailures`]); the edge apologises itself only when no
//!   shop could answer. Its apology carries an `x-edge-apology` header naming the trigger.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use storefront::edge::{Edge, EdgeConfig};
//!
//! let mut cfg = EdgeConfig::default();
//! cfg.listen = "127.0.0.1:0".parse()?;
//! cfg.upstreams = vec!["http://127.0.0.1:8081".into(), "http://127.0.0.1:8082".into()];
//! let edge = Edge::start(cfg).await?;
//! println!("edge at http://{}", edge.addr());
//! # Ok(()) }
//! ```

mod classify;
mod config;

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use rampart::balance::{Balance, BalanceHandle, HttpPolicy, ReplayBodyLayer, Snapshot};
use rampart::fallback::{Apologized, ApologyPage, FallbackBody, FallbackLayer};
use rampart::health::{CheckerConfig, ConfigError, OutlierConfig};
use rampart_gateway::proxy::strip_hop_by_hop as remove_hop_by_hop;
use rampart_gateway::server::{self, TowerHandler, Workers};
use tower::{Service, ServiceBuilder};

pub use classify::ShopFailures;
pub use config::{EdgeConfig, EdgeConfigError};
pub use rampart_gateway::proxy::{UpBody, Upstream, UpstreamError};

/// The header the edge puts on its own apology: why it apologised (`never_reached`,
/// `error`, `status`).
pub const EDGE_APOLOGY_HEADER: HeaderName = HeaderName::from_static("x-edge-apology");

/// The response body of the edge: a shop's body streamed through, or the apology.
pub type EdgeBody = FallbackBody<Incoming>;

/// Flags of `storefront edge` (`--listen` and `--config` are the global flags).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EdgeArgs {
    /// A shop instance to balance over (repeat the flag): `http://127.0.0.1:8081`.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstreams: Vec<String>,
    /// Active check interval (`GET /healthz`), e.g. `500ms`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub check_interval: Option<Duration>,
    /// Timeout of one upstream attempt until the response head, e.g. `5s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// HTML file served as the edge's apology page.
    #[arg(long)]
    pub apology_file: Option<PathBuf>,
    /// Worker threads (0: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// How long a client may take to send a request head before a `408`, e.g. `10s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// How long a keep-alive connection may stay idle between requests, e.g. `60s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub keep_alive_timeout: Option<Duration>,
    /// Most client connections served at once (past it they wait in the listen backlog).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Address to listen on (filled from the global `--listen`).
    #[arg(skip)]
    pub listen: Option<SocketAddr>,
    /// `edge.toml` (filled from the global `--config`).
    #[arg(skip)]
    pub config: Option<PathBuf>,
}

impl EdgeArgs {
    /// The configuration: the file (or the defaults), then the flags, validated.
    pub fn to_config(&self) -> Result<EdgeConfig, EdgeConfigError> {
        let mut cfg = match &self.config {
            Some(p) => EdgeConfig::load(p)?,
            None => EdgeConfig::default(),
        };
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if !self.upstreams.is_empty() {
            cfg.upstreams.clone_from(&self.upstreams);
        }
        if let Some(d) = self.check_interval {
            cfg.check_interval = d;
            cfg.check_timeout = cfg.check_timeout.min(d);
        }
        if let Some(d) = self.timeout {
            cfg.timeout = d;
        }
        if let Some(p) = &self.apology_file {
            cfg.apology_file = Some(p.clone());
        }
        if let Some(w) = self.workers {
            cfg.workers = w;
        }
        if let Some(d) = self.header_read_timeout {
            cfg.server.header_read_timeout = d;
        }
        if let Some(d) = self.keep_alive_timeout {
            cfg.server.keep_alive_timeout = d;
        }
        if let Some(n) = self.max_connections {
            cfg.server.max_connections = n;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Why the edge could not start.
#[derive(Debug)]
pub enum EdgeError {
    /// The configuration is invalid.
    Config(EdgeConfigError),
    /// The listener could not bind.
    Listen(SocketAddr, std::io::Error),
}

impl std::fmt::Display for EdgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EdgeError::Config(e) => write!(f, "{e}"),
            EdgeError::Listen(a, e) => write!(f, "cannot listen on {a}: {e}"),
        }
    }
}

impl std::error::Error for EdgeError {}

impl From<ConfigError> for EdgeError {
    fn from(e: ConfigError) -> Self {
        EdgeError::Config(EdgeConfigError::Invalid(e))
    }
}

impl From<EdgeConfigError> for EdgeError {
    fn from(e: EdgeConfigError) -> Self {
        EdgeError::Config(e)
    }
}

/// One shop instance as a tower service: the gateway's endpoint (a closure over a `Copy`
/// [`Upstream`] handle with the per-attempt timeout, its future concrete, no boxing).
fn endpoint(
    up: Upstream,
    timeout: Duration,
) -> impl Service<
    Request<UpBody>,
    Response = Response<Incoming>,
    Error = UpstreamError,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    rampart_gateway::proxy::endpoint(up, timeout, None)
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 from a request (hyper manages each
/// connection itself); everything else, `Idempotency-Key` included, is forwarded.
fn strip_hop_by_hop<B>(mut req: Request<B>) -> Request<B> {
    remove_hop_by_hop(req.headers_mut());
    req
}

/// Marks the edge's own apology with [`EDGE_APOLOGY_HEADER`]; strips hop-by-hop headers of
/// shop responses.
fn mark_response<B>(mut resp: Response<B>) -> Response<B> {
    if let Some(a) = resp.extensions().get::<Apologized>() {
        let why = HeaderValue::from_static(a.trigger.as_str());
        resp.headers_mut().insert(EDGE_APOLOGY_HEADER, why);
    } else {
        remove_hop_by_hop(resp.headers_mut());
    }
    resp
}

/// Builds the edge's service stack over the configured upstreams (inside a runtime: the
/// active checks start on it).
fn stack(
    cfg: &EdgeConfig,
) -> Result<
    (
        impl Service<
            Request<Incoming>,
            Response = Response<EdgeBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
        BalanceHandle,
    ),
    EdgeError,
> {
    let checks = CheckerConfig::builder()
        .interval(cfg.check_interval)
        .unhealthy_interval(cfg.check_interval)
        .timeout(cfg.check_timeout)
        .fall(cfg.fall)
        .rise(cfg.rise)
        .build()?;
    let outliers = OutlierConfig::builder()
        .consecutive_failures(cfg.eject_after)
        .base_ejection_time(cfg.eject_for)
        .max_ejection_time(cfg.eject_for.max(Duration::from_secs(30)))
        .build()?;
    let mut balance = Balance::builder()
        .name("edge")
        .policy(HttpPolicy::new().with_classifier(ShopFailures))
        .health_checks(checks)
        .http_health_checks("/healthz")
        .outlier_detection(outliers)
        .max_retries(cfg.max_retries)
        // A shop's 503 with Retry-After is an apology for one of its dependencies (or a shed
        // page), not a sign that the shop itself should rest: backing a shop off would take
        // checkout down with the page that failed. The edge keeps picking shops by health.
        .max_backoff(Duration::ZERO);
    for addr in cfg.upstream_addrs()? {
        let up = Upstream::new(addr, cfg.connect_timeout);
        balance = balance.endpoint(rampart::balance::Endpoint::new(
            format!("http://{addr}"),
            endpoint(up, cfg.timeout),
        ));
    }
    let balance = balance.build()?;
    let handle = balance.handle();
    let page = match &cfg.apology_file {
        Some(p) => ApologyPage::builder().html_file(p.clone()).build()?,
        None => ApologyPage::builder()
            .detail("The shop is taking a short break. Please try again in a few seconds.")
            .build()?,
    };
    let svc = ServiceBuilder::new()
        .map_response(mark_response::<EdgeBody>)
        .layer(
            FallbackLayer::with_page(page)
                .name("edge")
                .classify(ShopFailures)
                .retry_after(cfg.retry_after),
        )
        .map_request(strip_hop_by_hop::<Incoming>)
        .layer(ReplayBodyLayer::new())
        .service(balance);
    Ok((svc, handle))
}

/// A running edge gateway. Dropping it stops the workers and the active checks.
#[derive(Debug)]
pub struct Edge {
    addr: SocketAddr,
    balance: BalanceHandle,
    _workers: Workers,
}

impl Edge {
    /// Starts the edge on `config.listen` (port 0 for any).
    pub async fn start(config: EdgeConfig) -> Result<Edge, EdgeError> {
        Self::start_with(config, |_| {}).await
    }

    /// Starts the edge and calls `on_bound` with the bound address before anything else
    /// happens (so that `storefront edge` can print it as its first line).
    pub async fn start_with(
        config: EdgeConfig,
        on_bound: impl FnOnce(SocketAddr),
    ) -> Result<Edge, EdgeError> {
        config.validate()?;
        let server_config = config
            .server
            .to_server_config("edge")?
            .to_builder()
            .workers(config.workers)
            .build()?;
        let listeners = server::bind_workers(config.listen, &server_config)
            .map_err(|e| EdgeError::Listen(config.listen, e))?;
        let addr = listeners.local_addr();
        on_bound(addr);
        // Built on the caller's runtime (the active checks run there); each worker serves a
        // clone of it on its own runtime.
        let (svc, balance) = stack(&config)?;
        let workers = listeners
            .spawn(&server_config, move |_| TowerHandler::new(svc.clone()))
            .map_err(|e| EdgeError::Listen(addr, e))?;
        tracing::info!(%addr, upstreams = ?config.upstreams, "edge gateway started");
        Ok(Edge {
            addr,
            balance,
            _workers: workers,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The balancer's handle (drain an instance, read its health report).
    pub fn balance(&self) -> &BalanceHandle {
        &self.balance
    }

    /// Every upstream's state: health, ejection, outstanding requests, failures.
    pub fn snapshot(&self) -> Snapshot {
        self.balance.snapshot()
    }

    /// Stops accepting, lets the requests in flight finish within the server's grace period,
    /// then closes every connection and waits for the workers to end. (Dropping the edge
    /// starts the same shutdown without waiting for it.)
    pub async fn shutdown(self) {
        let workers = self._workers;
        workers.shutdown();
        let _ = tokio::task::spawn_blocking(move || workers.join()).await;
    }
}

/// `storefront edge`: starts the edge, prints its address as the first line of stdout, and
/// serves until Ctrl-C.
pub async fn run(args: EdgeArgs) -> Result<(), String> {
    let cfg = args.to_config().map_err(|e| e.to_string())?;
    let upstreams = cfg.upstreams.clone();
    let edge = Edge::start_with(cfg, |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{addr}");
        let _ = out.flush();
    })
    .await
    .map_err(|e| e.to_string())?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "Rampart storefront edge is running");
        let _ = writeln!(out, "  edge:       http://{}/", edge.addr());
        for u in &upstreams {
            let _ = writeln!(out, "  upstream:   {u}");
        }
        let _ = writeln!(out, "Press Ctrl-C to stop.");
        let _ = out.flush();
    }
    server::shutdown_signal().await;
    tracing::info!("shutting down: finishing the requests in flight");
    edge.shutdown().await;
    Ok(())
}
