//! The gateway's configuration file: TOML, read with serde.
//!
//! Every table refuses unknown keys (`#[serde(deny_unknown_fields)]`), durations are
//! humantime strings (`"10s"`, `"500ms"`), and [`GatewayConfig::validate`] names the key path
//! and the bad value of the first problem (`clusters.catalog.retries: 99 is above the maximum
//! of 10`). Every key, its default and its meaning are in the crate's README.
//!
//! ```
//! use rampart_gateway::config::GatewayConfig;
//!
//! let config = GatewayConfig::from_toml(r#"
//!     [server]
//!     listen = "127.0.0.1:0"
//!
//!     [[routes]]
//!     prefix = "/"
//!     cluster = "shop"
//!
//!     [clusters.shop]
//!     endpoints = ["127.0.0.1:8081", "127.0.0.1:8082"]
//! "#).unwrap();
//! assert_eq!(config.clusters["shop"].retries, 2);
//!
//! let err = GatewayConfig::from_toml(r#"
//!     [clusters.shop]
//!     endpoints = ["127.0.0.1:8081"]
//!     retries = 99
//! "#).unwrap_err();
//! assert_eq!(err.to_string(), "clusters.shop.retries: 99 is above the maximum of 10");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::server::{Runtime, ServerConfig, ServerTls};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// `[server]`: the listener and its limits.
    pub server: ServerSection,
    /// `[admin]`: the admin listener.
    pub admin: AdminSection,
    /// `[access_log]`: one line per request.
    pub access_log: AccessLogSection,
    /// `[[routes]]`: host and path prefix to a cluster, first match wins.
    pub routes: Vec<RouteSection>,
    /// `[clusters.<name>]`: the upstream clusters.
    pub clusters: BTreeMap<String, ClusterSection>,
}

/// `[server]`. Defaults are those of [`ServerConfig::default`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ServerSection {
    /// `listen`, default `"127.0.0.1:8080"`.
    pub listen: SocketAddr,
    /// `workers`, default `0` (one per core).
    pub workers: usize,
    /// `runtime`: `percore` (default), `percore-shared` or `multi`.
    pub runtime: String,
    /// `header_read_timeout`, default `"10s"`.
    #[serde(with = "humantime_serde_compat")]
    pub header_read_timeout: Duration,
    /// `keep_alive_timeout`, default `"60s"`.
    #[serde(with = "humantime_serde_compat")]
    pub keep_alive_timeout: Duration,
    /// `body_read_timeout`, default `"60s"`.
    #[serde(with = "humantime_serde_compat")]
    pub body_read_timeout: Duration,
    /// `send_timeout`, default `"60s"`: a client that takes none of its response for this
    /// long (its receive window full) is closed.
    #[serde(with = "humantime_serde_compat")]
    pub send_timeout: Duration,
    /// `max_concurrent_streams`, default `128`: streams in flight per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// `max_connections`, default `10000`.
    pub max_connections: usize,
    /// `max_header_size` in bytes, default `16384`.
    pub max_header_size: usize,
    /// `max_headers`, default `100`.
    pub max_headers: usize,
    /// `backlog`, default `4096`.
    pub backlog: u32,
    /// `shutdown_grace`, default `"30s"`.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
    /// `[server.tls]`: terminate TLS (ALPN `h2`, `http/1.1`); default: plain TCP, where
    /// HTTP/1 and h2c (HTTP/2 with prior knowledge) are served.
    pub tls: Option<ServerTlsSection>,
}

/// `[server.tls]`: the certificate the server presents.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerTlsSection {
    /// `cert` (required): a PEM file with the certificate chain, the server's first.
    pub cert: PathBuf,
    /// `key` (required): a PEM file with its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ServerSection {
    fn default() -> Self {
        let d = ServerConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            runtime: d.runtime().to_string(),
            header_read_timeout: d.header_read_timeout(),
            keep_alive_timeout: d.keep_alive_timeout(),
            body_read_timeout: d.body_read_timeout(),
            send_timeout: d.send_timeout(),
            max_concurrent_streams: d.max_concurrent_streams(),
            max_connections: d.max_connections(),
            max_header_size: d.max_header_size(),
            max_headers: d.max_headers(),
            backlog: d.backlog(),
            shutdown_grace: d.shutdown_grace(),
            tls: None,
        }
    }
}

impl ServerSection {
    /// The server module's configuration for this section.
    pub fn to_server_config(&self, name: &str) -> Result<ServerConfig, ConfigError> {
        let runtime: Runtime = self.runtime.parse().map_err(|_| {
            ConfigError::new(
                "server.runtime",
                &self.runtime,
                "must be percore, percore-shared or multi",
            )
        })?;
        let tls = match &self.tls {
            None => None,
            Some(t) => Some(ServerTls::from_pem_files(&t.cert, &t.key).map_err(|e| {
                ConfigError::new(
                    format_args!("server.tls.{}", e.field()),
                    e.value(),
                    e.reason(),
                )
            })?),
        };
        ServerConfig::builder()
            .name(name)
            .workers(self.workers)
            .runtime(runtime)
            .header_read_timeout(self.header_read_timeout)
            .keep_alive_timeout(self.keep_alive_timeout)
            .body_read_timeout(self.body_read_timeout)
            .send_timeout(self.send_timeout)
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_connections(self.max_connections)
            .max_header_size(self.max_header_size)
            .max_headers(self.max_headers)
            .backlog(self.backlog)
            .shutdown_grace(self.shutdown_grace)
            .tls(tls)
            .build()
            .map_err(|e| ConfigError::wrap("server", &e))
    }
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AdminSection {
    /// `enabled`, default `true`.
    pub enabled: bool,
    /// `listen`, default `"127.0.0.1:9901"`.
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
        }
    }
}

/// `[access_log]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AccessLogSection {
    /// `enabled`, default `false`: one `tracing` event (target `rampart_gateway::access`) per
    /// request.
    pub enabled: bool,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteSection {
    /// `host`, default: any host. Compared with the request's `Host` without its port,
    /// ignoring case.
    #[serde(default)]
    pub host: Option<String>,
    /// `prefix`, default `"/"`: the path must start with it.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// `cluster` (required): the name of a `[clusters.<name>]` table.
    pub cluster: String,
}

fn default_prefix() -> String {
    "/".to_owned()
}

/// How the `Host` header reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HostMode {
    /// The client's `Host`, unchanged (default).
    #[default]
    Preserve,
    /// The endpoint's own `host:port`, as written in `endpoints`.
    Upstream,
}

/// How the gateway speaks to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over plain TCP, on the gateway's per-worker connection pools (default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP (h2c), as gRPC servers inside a cluster
    /// speak it: one multiplexed connection per endpoint.
    H2c,
    /// TLS (rustls), HTTP/2 or HTTP/1.1 as the server chooses by ALPN (`h2` first).
    Https,
}

impl UpstreamProtocol {
    /// The name written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Https => "https",
        }
    }
}

/// `[clusters.<name>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ClusterSection {
    /// `endpoints`: `"host:port"` (or `"http://host:port"`, `"https://host:port"`), resolved
    /// when the configuration is loaded. Either `endpoints` (at least one) or `dns`.
    pub endpoints: Vec<String>,
    /// `dns`: `"name:port"`, a DNS name whose A/AAAA records are the endpoints (all on
    /// `port`), re-resolved on the records' TTL (clamped to `dns_ttl_floor` and
    /// `dns_ttl_ceiling`). Either `endpoints` or `dns`; default: none.
    pub dns: Option<String>,
    /// `dns_ttl_floor`, default `"1s"`: the shortest time between two lookups, whatever the
    /// TTL says (a TTL of 0 would otherwise mean asking all the time).
    #[serde(with = "humantime_serde_compat")]
    pub dns_ttl_floor: Duration,
    /// `dns_ttl_ceiling`, default `"60s"`: the longest time between two lookups, whatever
    /// the TTL says. Equal to `dns_ttl_floor`: a fixed refresh interval.
    #[serde(with = "humantime_serde_compat")]
    pub dns_ttl_ceiling: Duration,
    /// `dns_server`: `"ip:port"` of the DNS server to ask (UDP, then TCP); default: the
    /// system's resolver configuration (`/etc/resolv.conf`).
    pub dns_server: Option<SocketAddr>,
    /// `protocol`: `"http1"` (default), `"h2c"` (HTTP/2 with prior knowledge) or `"https"`
    /// (TLS, ALPN `h2` then `http/1.1`).
    pub protocol: UpstreamProtocol,
    /// `grpc`, default `false`: the cluster serves gRPC. Its answers are judged by their
    /// `grpc-status` (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN and DATA_LOSS are
    /// failures) by the breaker and the balancer, a request's `grpc-timeout` bounds its
    /// attempts, and the active checks use the gRPC health checking protocol. Needs
    /// `protocol = "h2c"` or `"https"`.
    pub grpc: bool,
    /// `[clusters.<name>.tls]`: TLS settings for `protocol = "https"`.
    pub tls: TlsSection,
    /// `host`: `"preserve"` (default) or `"upstream"`.
    pub host: HostMode,
    /// `connect_timeout`, default `"1s"`.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// `attempt_timeout`, default `"15s"`: one attempt, until the response head.
    #[serde(with = "humantime_serde_compat")]
    pub attempt_timeout: Duration,
    /// `total_timeout`, default `"30s"`: all attempts of a request, until the response head.
    #[serde(with = "humantime_serde_compat")]
    pub total_timeout: Duration,
    /// `retries`, default `2`, at most `10`: further attempts on other endpoints.
    pub retries: u32,
    /// `retry_budget_ratio`, default `0.2`: retries allowed as a share of recent requests.
    pub retry_budget_ratio: f64,
    /// `retry_budget_min_per_second`, default `10`: retries always allowed per second.
    pub retry_budget_min_per_second: u32,
    /// `apology_page`: an HTML file served as the apology; default: the built-in page.
    pub apology_page: Option<PathBuf>,
    /// `retry_after`, default `"5s"`: the apology's `Retry-After` when no breaker knows better.
    #[serde(with = "humantime_serde_compat")]
    pub retry_after: Duration,
    /// `[clusters.<name>.checks]`.
    pub checks: ChecksSection,
    /// `[clusters.<name>.ejection]`.
    pub ejection: EjectionSection,
    /// `[clusters.<name>.breaker]`.
    pub breaker: BreakerSection,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            dns: None,
            dns_ttl_floor: Duration::from_secs(1),
            dns_ttl_ceiling: Duration::from_secs(60),
            dns_server: None,
            protocol: UpstreamProtocol::Http1,
            grpc: false,
            tls: TlsSection::default(),
            host: HostMode::Preserve,
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(15),
            total_timeout: Duration::from_secs(30),
            retries: 2,
            retry_budget_ratio: 0.2,
            retry_budget_min_per_second: 10,
            apology_page: None,
            retry_after: Duration::from_secs(5),
            checks: ChecksSection::default(),
            ejection: EjectionSection::default(),
            breaker: BreakerSection::default(),
        }
    }
}

/// `[clusters.<name>.tls]`: how the gateway verifies (and shows itself to) an `https`
/// cluster's endpoints. Certificate errors are never ignored.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TlsSection {
    /// `ca`: a PEM file of the certificate authorities to trust; default: the system's
    /// roots.
    pub ca: Option<PathBuf>,
    /// `server_name`: the name sent by SNI and checked in the certificate; default: the
    /// endpoint's host (for a `dns` cluster, the DNS name).
    pub server_name: Option<String>,
    /// `client_cert`: a PEM certificate chain for mutual TLS (with `client_key`); default:
    /// none.
    pub client_cert: Option<PathBuf>,
    /// `client_key`: the PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// `[clusters.<name>.checks]`: active health checks (`GET path`, or the gRPC health
/// checking protocol for a `grpc` cluster).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ChecksSection {
    /// `enabled`, default `true`.
    pub enabled: bool,
    /// `path`, default `"/healthz"`.
    pub path: String,
    /// `grpc_service`, default `""` (the whole server): the service name a `grpc` cluster's
    /// checks ask about (`grpc.health.v1.Health/Check`; `NOT_SERVING` and `SERVICE_UNKNOWN`
    /// are unhealthy).
    pub grpc_service: String,
    /// `interval`, default `"1s"`.
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// `timeout`, default `"500ms"`.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// `rise`, default `2`: successes that make an endpoint healthy.
    pub rise: u32,
    /// `fall`, default `3`: failures that make it unhealthy.
    pub fall: u32,
}

impl Default for ChecksSection {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/healthz".to_owned(),
            grpc_service: String::new(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        }
    }
}

/// `[clusters.<name>.ejection]`: passive outlier ejection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EjectionSection {
    /// `consecutive_failures`, default `5`.
    pub consecutive_failures: u32,
    /// `base_ejection_time`, default `"30s"`.
    #[serde(with = "humantime_serde_compat")]
    pub base_ejection_time: Duration,
    /// `max_ejection_time`, default `"300s"`.
    #[serde(with = "humantime_serde_compat")]
    pub max_ejection_time: Duration,
    /// `max_ejection_percent`, default `50`.
    pub max_ejection_percent: f64,
}

impl Default for EjectionSection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50.0,
        }
    }
}

/// `[clusters.<name>.breaker]`: the cluster's circuit breaker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct BreakerSection {
    /// `window`, default `100`: the last calls considered.
    pub window: u32,
    /// `minimum_calls`, default `20`.
    pub minimum_calls: u32,
    /// `failure_rate`, default `50` (percent).
    pub failure_rate: f64,
    /// `open_duration`, default `"5s"`.
    #[serde(with = "humantime_serde_compat")]
    pub open_duration: Duration,
}

impl Default for BreakerSection {
    fn default() -> Self {
        Self {
            window: 100,
            minimum_calls: 20,
            failure_rate: 50.0,
            open_duration: Duration::from_secs(5),
        }
    }
}

/// The most retries a cluster may configure.
pub const MAX_RETRIES: u32 = 10;

/// A configuration the gateway refuses: the key path, the value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// `key: value reason`.
    pub fn new(
        key: impl fmt::Display,
        value: impl fmt::Display,
        reason: impl fmt::Display,
    ) -> Self {
        Self {
            message: format!("{key}: {value} {reason}"),
        }
    }

    pub(crate) fn wrap(prefix: &str, e: &dyn fmt::Display) -> Self {
        Self {
            message: format!("{prefix}: {e}"),
        }
    }

    fn plain(message: String) -> Self {
        Self { message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl GatewayConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            // toml's own message spans several lines with the offending source; keep the
            // reason and name the key path instead (the table header above, then the key).
            let msg = e.message().trim().to_owned();
            ConfigError::plain(
                match e.span().and_then(|span| key_path_at(text, span.start)) {
                    Some((line, path)) => format!("{path}: {msg} (line {line})"),
                    None => msg,
                },
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::plain(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// Checks every value; the first problem names its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.to_server_config("gateway")?;
        for (i, route) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if !route.prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{key}.prefix"),
                    format!("{:?}", route.prefix),
                    "must start with /",
                ));
            }
            if let Some(host) = &route.host
                && (host.is_empty() || host.contains(['/', ' ']))
            {
                return Err(ConfigError::new(
                    format!("{key}.host"),
                    format!("{host:?}"),
                    "is not a host name",
                ));
            }
            if !self.clusters.contains_key(&route.cluster) {
                return Err(ConfigError::new(
                    format!("{key}.cluster"),
                    format!("{:?}", route.cluster),
                    "names no [clusters] table",
                ));
            }
        }
        for (name, c) in &self.clusters {
            c.validate(name)?;
        }
        Ok(())
    }
}

/// A cluster's settings, built and checked by the crates that use them.
pub(crate) struct ClusterParts {
    pub(crate) checks: rampart_health::CheckerConfig,
    pub(crate) outlier: rampart_health::OutlierConfig,
    pub(crate) budget: rampart_balance::RetryBudget,
    pub(crate) breaker: rampart_breaker::Policy,
}

impl ClusterSection {
    /// Builds the checker, ejection, retry budget and breaker settings (their own builders
    /// validate them); errors name the cluster's table.
    pub(crate) fn parts(&self, name: &str) -> Result<ClusterParts, ConfigError> {
        let wrap =
            |k: &str, e: &dyn fmt::Display| ConfigError::wrap(&format!("clusters.{name}.{k}"), e);
        let checks = rampart_health::CheckerConfig::builder()
            .interval(self.checks.interval)
            .timeout(self.checks.timeout)
            .rise(self.checks.rise)
            .fall(self.checks.fall)
            .build()
            .map_err(|e| wrap("checks", &e))?;
        let outlier = rampart_health::OutlierConfig::builder()
            .name(name.to_owned())
            .consecutive_failures(self.ejection.consecutive_failures)
            .base_ejection_time(self.ejection.base_ejection_time)
            .max_ejection_time(self.ejection.max_ejection_time)
            .max_ejection_percent(self.ejection.max_ejection_percent)
            .build()
            .map_err(|e| wrap("ejection", &e))?;
        let budget = rampart_balance::RetryBudget::builder()
            .ratio(self.retry_budget_ratio)
            .min_per_second(self.retry_budget_min_per_second)
            .build()
            .map_err(|e| wrap("retry_budget_ratio", &e))?;
        let breaker = rampart_breaker::Policy::builder()
            .name(name.to_owned())
            .sliding_window(rampart_breaker::SlidingWindow::count(self.breaker.window))
            .minimum_calls(self.breaker.minimum_calls)
            .failure_rate_threshold(self.breaker.failure_rate)
            .open_duration(self.breaker.open_duration)
            .build()
            .map_err(|e| wrap("breaker", &e))?;
        Ok(ClusterParts {
            checks,
            outlier,
            budget,
            breaker,
        })
    }

    /// The TLS client configuration of an `https` cluster (`None` for the other protocols);
    /// files are read here, errors name the `tls.*` key.
    pub(crate) fn tls_config(
        &self,
        name: &str,
    ) -> Result<Option<rampart_health::tls::TlsConfig>, ConfigError> {
        if self.protocol != UpstreamProtocol::Https {
            return Ok(None);
        }
        let key = |k: &str| format!("clusters.{name}.tls.{k}");
        let t = &self.tls;
        let mut b = rampart_health::tls::TlsConfig::builder();
        if let Some(ca) = &t.ca {
            b = b.ca_pem_file(ca);
        }
        match (&t.client_cert, &t.client_key) {
            (None, None) => {}
            (Some(cert), Some(k)) => {
                let read = |k: &str, p: &Path| {
                    std::fs::read(p).map_err(|e| {
                        ConfigError::new(
                            key(k),
                            format!("{:?}", p.display().to_string()),
                            format!("cannot be read: {e}"),
                        )
                    })
                };
                b = b.client_cert_pem(read("client_cert", cert)?, read("client_key", k)?);
            }
            (Some(p), None) | (None, Some(p)) => {
                let (set, missing) = if t.client_cert.is_some() {
                    ("client_cert", "client_key")
                } else {
                    ("client_key", "client_cert")
                };
                return Err(ConfigError::new(
                    key(set),
                    format!("{:?}", p.display().to_string()),
                    format!("needs {missing} too"),
                ));
            }
        }
        let sni = t.server_name.clone().or_else(|| {
            self.dns
                .as_deref()
                .and_then(|d| dns_name(d).ok())
                .map(|(host, _)| host.trim_end_matches('.').to_owned())
        });
        if let Some(sni) = sni {
            b = b.server_name(sni);
        }
        b.build().map(Some).map_err(|e| {
            let k = match e.field() {
                "ca_pem_file" | "ca_pem" => "ca",
                "client_cert_pem" => "client_cert",
                "server_name" => "server_name",
                _ => "ca",
            };
            ConfigError::wrap(&key(k), &e)
        })
    }

    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("clusters.{name}.{k}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::new(
                "clusters",
                format!("{name:?}"),
                "is not a valid cluster name (letters, digits, - and _)",
            ));
        }
        match &self.dns {
            Some(dns) if !self.endpoints.is_empty() => {
                return Err(ConfigError::new(
                    key("dns"),
                    format!("{dns:?}"),
                    "cannot be combined with endpoints (use one or the other)",
                ));
            }
            Some(dns) => {
                dns_name(dns)
                    .map_err(|why| ConfigError::new(key("dns"), format!("{dns:?}"), why))?;
            }
            None if self.endpoints.is_empty() => {
                return Err(ConfigError::new(
                    key("endpoints"),
                    "[]",
                    "must name at least one endpoint (or set dns)",
                ));
            }
            None => {}
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let ekey = format!("clusters.{name}.endpoints[{i}]");
            let https = e.starts_with("https://");
            if https != (self.protocol == UpstreamProtocol::Https) && e.contains("://") {
                return Err(ConfigError::new(
                    ekey,
                    format!("{e:?}"),
                    format!(
                        "does not match protocol = \"{}\" (write host:port)",
                        self.protocol.as_str()
                    ),
                ));
            }
            resolve(e).map_err(|why| ConfigError::new(ekey, format!("{e:?}"), why))?;
        }
        if self.dns_ttl_ceiling < self.dns_ttl_floor {
            return Err(ConfigError::new(
                key("dns_ttl_ceiling"),
                format!("\"{}\"", humantime::format_duration(self.dns_ttl_ceiling)),
                "must be at least dns_ttl_floor",
            ));
        }
        if self.grpc && self.protocol == UpstreamProtocol::Http1 {
            return Err(ConfigError::new(
                key("grpc"),
                true,
                "needs protocol = \"h2c\" or \"https\" (gRPC runs over HTTP/2)",
            ));
        }
        if self.protocol != UpstreamProtocol::Https && self.tls != TlsSection::default() {
            return Err(ConfigError::new(
                key("tls"),
                "(a table)",
                "applies only to protocol = \"https\"",
            ));
        }
        self.tls_config(name)?;
        if self.retries > MAX_RETRIES {
            return Err(ConfigError::new(
                key("retries"),
                self.retries,
                format!("is above the maximum of {MAX_RETRIES}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.retry_budget_ratio) {
            return Err(ConfigError::new(
                key("retry_budget_ratio"),
                self.retry_budget_ratio,
                "must be between 0 and 1",
            ));
        }
        for (k, d) in [
            ("connect_timeout", self.connect_timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("total_timeout", self.total_timeout),
            ("retry_after", self.retry_after),
            ("dns_ttl_floor", self.dns_ttl_floor),
            ("checks.interval", self.checks.interval),
            ("checks.timeout", self.checks.timeout),
            (
                "ejection.base_ejection_time",
                self.ejection.base_ejection_time,
            ),
            ("breaker.open_duration", self.breaker.open_duration),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key(k), "\"0s\"", "must be above zero"));
            }
        }
        if self.total_timeout < self.attempt_timeout {
            return Err(ConfigError::new(
                key("total_timeout"),
                format!("\"{}\"", humantime::format_duration(self.total_timeout)),
                "must be at least attempt_timeout",
            ));
        }
        if !self.checks.path.starts_with('/') {
            return Err(ConfigError::new(
                key("checks.path"),
                format!("{:?}", self.checks.path),
                "must start with /",
            ));
        }
        for (k, n) in [
            ("checks.rise", self.checks.rise),
            ("checks.fall", self.checks.fall),
            ("breaker.window", self.breaker.window),
            ("breaker.minimum_calls", self.breaker.minimum_calls),
            (
                "ejection.consecutive_failures",
                self.ejection.consecutive_failures,
            ),
        ] {
            if n == 0 {
                return Err(ConfigError::new(key(k), 0, "must be at least 1"));
            }
        }
        if !(0.0..=100.0).contains(&self.breaker.failure_rate) || self.breaker.failure_rate == 0.0 {
            return Err(ConfigError::new(
                key("breaker.failure_rate"),
                self.breaker.failure_rate,
                "must be above 0 and at most 100",
            ));
        }
        if !(0.0..=100.0).contains(&self.ejection.max_ejection_percent) {
            return Err(ConfigError::new(
                key("ejection.max_ejection_percent"),
                self.ejection.max_ejection_percent,
                "must be between 0 and 100",
            ));
        }
        if let Some(page) = &self.apology_page
            && let Err(e) = std::fs::metadata(page)
        {
            return Err(ConfigError::new(
                key("apology_page"),
                format!("{:?}", page.display().to_string()),
                format!("cannot be read: {e}"),
            ));
        }
        self.parts(name)?;
        Ok(())
    }
}

/// The 1-based line of `offset` and the dotted key path written there (`clusters.a.retries`,
/// `routes[1].prefix`), reconstructed from the nearest table header above it.
fn key_path_at(text: &str, offset: usize) -> Option<(usize, String)> {
    let offset = offset.min(text.len());
    let before = text.get(..offset)?;
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..)?.lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let mut header: Option<String> = None;
    for l in text.get(..line_start)?.lines().rev() {
        let l = l.trim();
        if let Some(name) = l
            .strip_prefix("[[")
            .and_then(|r| r.split_once("]]"))
            .map(|(n, _)| n.trim())
        {
            let heading = format!("[[{name}]]");
            let index = text
                .get(..line_start)?
                .lines()
                .filter(|x| x.trim().starts_with(&heading))
                .count()
                .saturating_sub(1);
            header = Some(format!("{name}[{index}]"));
            break;
        }
        if let Some(name) = l
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map(|(n, _)| n.trim())
        {
            header = Some(name.to_owned());
            break;
        }
    }
    let path = match (header, key) {
        (Some(h), Some(k)) => format!("{h}.{k}"),
        (None, Some(k)) => k,
        (Some(h), None) => h,
        (None, None) => return None,
    };
    Some((line_no, path))
}

/// `host:port` (an optional `http://` in front) to its first socket address.
pub(crate) fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    let hostport = authority(endpoint);
    if hostport.contains('/') || hostport.is_empty() {
        return Err("is not host:port".to_owned());
    }
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("does not resolve: {e}"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_owned())
}

/// The `host:port` part of an endpoint string.
pub(crate) fn authority(endpoint: &str) -> &str {
    endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint)
        .trim_end_matches('/')
}

/// A `dns` value, `"name:port"`, split into the name and the port.
pub(crate) fn dns_name(value: &str) -> Result<(String, u16), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("is not name:port".to_owned());
    };
    if host.is_empty()
        || host.contains(['/', ' ', '[', ']', ':'])
        || host.starts_with('.')
        || host.contains("..")
    {
        return Err("is not name:port (a DNS name and a port)".to_owned());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(format!("has no valid port ({port:?})")),
    }
}

/// serde helpers for humantime strings.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write e.g. \"10s\" or \"500ms\""
            ))
        })
    }
}
