//! The `[clusters.<name>]` tables: endpoints or DNS, protocol and TLS, timeouts, retries,
//! checks, ejection and breaker, and the settings the balancer and breaker crates build from
//! them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, dns_name, humantime_serde_compat};

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
    /// failures) by the breaker and the balancer's passive ejection, in the head of a
    /// Trailers-Only answer or else in the trailers, a request's `grpc-timeout` bounds its
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
}
