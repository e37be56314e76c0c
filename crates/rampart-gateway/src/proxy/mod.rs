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
//!
//! [`ConnectionInfo`]: crate::server::ConnectionInfo

mod body;
mod cluster;
pub mod endpoints;
mod forward;
mod handler;
mod policy;
mod table;
pub mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use rampart_balance::BalanceHandle;
use rampart_health::BoxError;
use tower::Service;

use crate::config::{ClusterSection, ConfigError, GatewayConfig};
use cluster::build_balance;
use table::Table;

pub use body::ProxyBody;
pub use cluster::{Cluster, ClusterStack};
pub use endpoints::{ClusterClassifier, PooledEndpoint, endpoint};
pub use forward::strip_hop_by_hop;
pub use policy::GatewayPolicy;
pub use upstream::{UpBody, Upstream, UpstreamError, clone_request, up_body};

type MakeBalance<B> = fn(&str, &ClusterSection) -> Result<(B, BalanceHandle), ConfigError>;

/// The reverse proxy: a [`Handler`](crate::server::Handler) for the server. Clones share the
/// routing table, which [`reload`](Self::reload) swaps atomically (`arc-swap`): requests in
/// flight finish on the table they started with, connections stay open.
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
