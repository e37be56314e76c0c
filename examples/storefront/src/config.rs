//! Configuration: embedded defaults, a TOML file (`--config`), then command-line flags.
//!
//! Every duration is written the humantime way (`"2s"`, `"250ms"`). Unknown keys are refused,
//! and [`Config::validate`] names the key of any bad value.
//!
//! ```
//! use storefront::config::Config;
//! let cfg = Config::from_toml_str("[shop]\nupstream_timeout = \"1500ms\"\n").unwrap();
//! assert_eq!(cfg.shop.upstream_timeout, std::time::Duration::from_millis(1500));
//! let err = Config::from_toml_str("[shop]\nupstream_timeout = \"0s\"\n").unwrap_err();
//! assert!(err.to_string().contains("shop.upstream_timeout"));
//! let err = Config::from_toml_str("[shop]\nupstream_timout = \"1s\"\n").unwrap_err();
//! assert!(err.to_string().contains("upstream_timout"));
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart::health::ConfigError;
use rampart_gateway::server::ServerConfig;
use serde::{Deserialize, Deserializer};

use crate::fleet::{Region, ServiceName, Upstreams};

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration \"{s}\": {e}")))
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the shop listens (`demo`, `shop`) or the fleet's control API (`fleet`).
    pub listen: SocketAddr,
    /// Where the outbox and the checkout database live.
    pub data_dir: PathBuf,
    /// The shop's order store: a PostgreSQL URL (`postgres://user@host:port/db`, shared by
    /// every shop instance) instead of the embedded SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// The admin bearer token; generated at start-up when absent.
    pub admin_token: Option<String>,
    /// The simulated fleet.
    pub fleet: FleetConfig,
    /// The shop.
    pub shop: ShopConfig,
    /// Limits of the HTTP server (the shop's, or the fleet's control API): `[server]`.
    pub server: ServerSettings,
    /// The shop's adaptive concurrency limit and load shedding: `[limit]`.
    pub limit: LimitConfig,
    /// For `storefront shop`: where the fleet's replicas listen (as `storefront fleet`
    /// prints it). Ignored by `demo`, which starts its own fleet.
    pub upstreams: Option<Upstreams>,
    /// For `storefront shop`: the base URL of a separate fleet's control API
    /// (`http://127.0.0.1:8090`); the shop's admin routes forward to it.
    pub fleet_control: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            data_dir: PathBuf::from("./storefront-data"),
            database_url: None,
            admin_token: None,
            fleet: FleetConfig::default(),
            shop: ShopConfig::default(),
            server: ServerSettings::default(),
            limit: LimitConfig::default(),
            upstreams: None,
            fleet_control: None,
        }
    }
}

/// The simulated fleet.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Address the replicas bind.
    pub bind: IpAddr,
    /// First port of the replicas (one port each, in order); 0 for any free ports.
    pub base_port: u16,
    /// Replicas per service and region.
    pub replicas: usize,
    /// Products in the catalog.
    pub products: u32,
    /// Latency added by the `slow` fault.
    #[serde(deserialize_with = "duration")]
    pub slow_latency: Duration,
    /// Share of 500s answered by the `flaky` fault.
    pub flaky_error_rate: f64,
    /// How the catalog replicas are spoken: `http1` (the default), `h2c` (HTTP/2 with prior
    /// knowledge) or `https` (TLS with a CA and certificate made at start-up, ALPN `h2`);
    /// the shop dials them the same way.
    pub catalog_protocol: crate::fleet::CatalogProtocol,
    /// With `catalog_protocol = "https"`, for `storefront shop`: the CA certificate (PEM) to
    /// trust for the catalog (`storefront fleet` writes its CA and names it here in
    /// `fleet.toml`).
    pub catalog_ca_file: Option<PathBuf>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 0,
            replicas: 3,
            products: 300,
            slow_latency: Duration::from_millis(1500),
            flaky_error_rate: 0.5,
            catalog_protocol: crate::fleet::CatalogProtocol::Http1,
            catalog_ca_file: None,
        }
    }
}

/// The shop and its resilience stack.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShopConfig {
    /// Timeout of one upstream attempt.
    #[serde(deserialize_with = "duration")]
    pub upstream_timeout: Duration,
    /// Overall deadline of one page.
    #[serde(deserialize_with = "duration")]
    pub page_deadline: Duration,
    /// How long a page waits for the optional recommendations.
    #[serde(deserialize_with = "duration")]
    pub recommendations_budget: Duration,
    /// Active health-check interval.
    #[serde(deserialize_with = "duration")]
    pub health_interval: Duration,
    /// Active health-check timeout.
    #[serde(deserialize_with = "duration")]
    pub health_timeout: Duration,
    /// First delay of the outbox replay backoff.
    #[serde(deserialize_with = "duration")]
    pub outbox_retry_base: Duration,
    /// Largest delay of the outbox replay backoff.
    #[serde(deserialize_with = "duration")]
    pub outbox_retry_max: Duration,
    /// How long a worker holds the orders it claimed (recorded, or took up for replay)
    /// before another instance sharing the store may take them over: longer than one
    /// forwarding attempt.
    #[serde(deserialize_with = "duration")]
    pub outbox_lease: Duration,
    /// Bytes of pages kept for stale-if-error.
    pub stale_cache_bytes: u64,
    /// How long the circuit breaker stays open before probing.
    #[serde(deserialize_with = "duration")]
    pub breaker_open_for: Duration,
    /// How long a recovered primary region must stay healthy before traffic fails back.
    #[serde(deserialize_with = "duration")]
    pub failback_hold: Duration,
    /// First ejection time of a replica that failed 3 times in a row.
    #[serde(deserialize_with = "duration")]
    pub ejection_time: Duration,
    /// Reads from the catalog and recommendations still unanswered after this percentile
    /// of the latencies their region's balancer observed are sent once more to another
    /// replica, and the first answer wins (hedging, within the retry budget); `0` turns it
    /// off.
    pub hedge_quantile: f64,
    /// The shortest hedge delay.
    #[serde(deserialize_with = "duration")]
    pub hedge_floor: Duration,
    /// The longest hedge delay (also the delay until latencies have been observed).
    #[serde(deserialize_with = "duration")]
    pub hedge_cap: Duration,
    /// How the shop dials the catalog: taken from the fleet's settings when the shop starts
    /// (`[fleet] catalog_protocol`), not a key of `[shop]`.
    #[serde(skip)]
    pub catalog_dial: crate::fleet::UpstreamDial,
}

impl Default for ShopConfig {
    fn default() -> Self {
        Self {
            upstream_timeout: Duration::from_secs(2),
            page_deadline: Duration::from_secs(5),
            recommendations_budget: Duration::from_millis(400),
            health_interval: Duration::from_secs(1),
            health_timeout: Duration::from_millis(500),
            outbox_retry_base: Duration::from_millis(250),
            outbox_retry_max: Duration::from_secs(30),
            outbox_lease: Duration::from_secs(10),
            stale_cache_bytes: 32 * 1024 * 1024,
            breaker_open_for: Duration::from_secs(5),
            failback_hold: Duration::from_secs(10),
            ejection_time: Duration::from_secs(5),
            hedge_quantile: 0.9,
            hedge_floor: Duration::from_millis(5),
            hedge_cap: Duration::from_millis(50),
            catalog_dial: crate::fleet::UpstreamDial::default(),
        }
    }
}

/// The shop's adaptive concurrency limit (rampart-limit): `[limit]`.
///
/// The limit follows measured latency between `min_limit` and `max_limit`, starting at
/// `initial_limit`; each partition is guaranteed its share of it and may borrow what the
/// others leave idle, and the partitions over their share are shed first (a fast `503` with
/// `Retry-After`).
///
/// ```
/// use storefront::config::Config;
/// let cfg = Config::from_toml_str("[limit]\nmax_limit = 100\n\n[limit.shares]\ncheckout = 0.6\npages = 0.3\n").unwrap();
/// assert_eq!(cfg.limit.max_limit, 100);
/// assert_eq!(cfg.limit.shares.checkout, 0.6);
/// let err = Config::from_toml_str("[limit]\nalgorithm = \"magic\"\n").unwrap_err();
/// assert!(err.to_string().contains("limit.algorithm"));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Whether the shop limits its pages at all (`--no-limit` turns it off).
    pub enabled: bool,
    /// `gradient2` (the default), `aimd`, `vegas` or `fixed` (always `max_limit`).
    pub algorithm: String,
    /// The lowest the limit goes.
    pub min_limit: usize,
    /// The highest the limit goes.
    pub max_limit: usize,
    /// The limit at start-up.
    pub initial_limit: usize,
    /// The partitions' guaranteed shares of the limit: `[limit.shares]`.
    pub shares: LimitShares,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            algorithm: "gradient2".into(),
            min_limit: 32,
            max_limit: 512,
            initial_limit: 64,
            shares: LimitShares::default(),
        }
    }
}

/// The partitions' guaranteed shares of the limit, highest priority first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitShares {
    /// `POST /checkout`, `GET /checkout`, `/cart`, `/cart/*` and `/orders/*`: the buying path.
    pub checkout: f64,
    /// Every other page.
    pub pages: f64,
    /// The product pages' calls to the recommendations service.
    pub recommendations: f64,
}

impl Default for LimitShares {
    fn default() -> Self {
        Self {
            checkout: 0.5,
            pages: 0.4,
            recommendations: 0.1,
        }
    }
}

impl LimitConfig {
    /// Checks every value; the error names the key (`limit.max_limit`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !["gradient2", "aimd", "vegas", "fixed"].contains(&self.algorithm.as_str()) {
            return Err(ConfigError::new(
                "limit.algorithm",
                &self.algorithm,
                "must be gradient2, aimd, vegas or fixed",
            ));
        }
        if self.min_limit == 0 {
            return Err(ConfigError::new(
                "limit.min_limit",
                self.min_limit,
                "must be at least 1",
            ));
        }
        if self.max_limit < self.min_limit {
            return Err(ConfigError::new(
                "limit.max_limit",
                self.max_limit,
                "must be at least limit.min_limit",
            ));
        }
        if !(self.min_limit..=self.max_limit).contains(&self.initial_limit) {
            return Err(ConfigError::new(
                "limit.initial_limit",
                self.initial_limit,
                "must be between limit.min_limit and limit.max_limit",
            ));
        }
        let s = &self.shares;
        for (key, v) in [
            ("limit.shares.checkout", s.checkout),
            ("limit.shares.pages", s.pages),
            ("limit.shares.recommendations", s.recommendations),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(ConfigError::new(
                    key,
                    v,
                    "must be above 0.0 and at most 1.0",
                ));
            }
        }
        if s.checkout + s.pages + s.recommendations > 1.0 + 1e-9 {
            return Err(ConfigError::new(
                "limit.shares",
                s.checkout + s.pages + s.recommendations,
                "must add up to at most 1.0",
            ));
        }
        Ok(())
    }
}

/// Limits of an HTTP listener, served by rampart-gateway's server: the `[server]` table of
/// the shop's configuration and of `edge.toml`. The defaults are the gateway's (header read
/// 10 s, keep-alive idle 60 s, body read 60 s, 10,000 connections, 16 KiB of headers).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// How long a client may take to send a request head; a stalled one gets a `408`.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may stay idle between requests.
    #[serde(deserialize_with = "duration")]
    pub keep_alive_timeout: Duration,
    /// How long a request body may go without a byte arriving.
    #[serde(deserialize_with = "duration")]
    pub body_read_timeout: Duration,
    /// Most connections served at once; past it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Largest request head in bytes (larger: `431`).
    pub max_header_size: usize,
    /// On shutdown, how long requests in flight may take to finish.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let d = ServerConfig::default();
        Self {
            header_read_timeout: d.header_read_timeout(),
            keep_alive_timeout: d.keep_alive_timeout(),
            body_read_timeout: d.body_read_timeout(),
            max_connections: d.max_connections(),
            max_header_size: d.max_header_size(),
            shutdown_grace: d.shutdown_grace(),
        }
    }
}

/// Writes an already formatted value as it is (`ConfigError::new` takes a `Debug` value).
struct Formatted<'a>(&'a str);

impl std::fmt::Debug for Formatted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl ServerSettings {
    /// The server's configuration, named `name` (its metrics' `server` label); an error
    /// names the key as written in the `[server]` table (`server.max_connections`).
    pub fn to_server_config(&self, name: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::builder()
            .name(name)
            .header_read_timeout(self.header_read_timeout)
            .keep_alive_timeout(self.keep_alive_timeout)
            .body_read_timeout(self.body_read_timeout)
            .max_connections(self.max_connections)
            .max_header_size(self.max_header_size)
            .shutdown_grace(self.shutdown_grace)
            .build()
            .map_err(|e| {
                let key = match e.field() {
                    "header_read_timeout" => "server.header_read_timeout",
                    "keep_alive_timeout" => "server.keep_alive_timeout",
                    "body_read_timeout" => "server.body_read_timeout",
                    "max_connections" => "server.max_connections",
                    "max_header_size" => "server.max_header_size",
                    "shutdown_grace" => "server.shutdown_grace",
                    other => other,
                };
                ConfigError::new(key, Formatted(e.value()), e.reason())
            })
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Read(PathBuf, std::io::Error),
    /// The TOML is malformed or has an unknown key or a value of the wrong type.
    Parse(toml::de::Error),
    /// A value is out of range.
    Invalid(ConfigError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            LoadError::Parse(e) => write!(f, "invalid configuration: {e}"),
            LoadError::Invalid(e) => write!(f, "invalid configuration: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        LoadError::Invalid(e)
    }
}

impl Config {
    /// Parses and validates TOML.
    pub fn from_toml_str(s: &str) -> Result<Config, LoadError> {
        let cfg: Config = toml::from_str(s).map_err(LoadError::Parse)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let s = std::fs::read_to_string(path).map_err(|e| LoadError::Read(path.into(), e))?;
        Self::from_toml_str(&s)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = &self.fleet;
        if !(1..=16).contains(&f.replicas) {
            return Err(ConfigError::new(
                "fleet.replicas",
                f.replicas,
                "must be 1 to 16",
            ));
        }
        if !(10..=100_000).contains(&f.products) {
            return Err(ConfigError::new(
                "fleet.products",
                f.products,
                "must be 10 to 100000",
            ));
        }
        if !(0.0..=1.0).contains(&f.flaky_error_rate) {
            return Err(ConfigError::new(
                "fleet.flaky_error_rate",
                f.flaky_error_rate,
                "must be between 0.0 and 1.0",
            ));
        }
        let s = &self.shop;
        for (key, d) in [
            ("shop.upstream_timeout", s.upstream_timeout),
            ("shop.page_deadline", s.page_deadline),
            ("shop.recommendations_budget", s.recommendations_budget),
            ("shop.health_interval", s.health_interval),
            ("shop.health_timeout", s.health_timeout),
            ("shop.outbox_retry_base", s.outbox_retry_base),
            ("shop.outbox_retry_max", s.outbox_retry_max),
            ("shop.outbox_lease", s.outbox_lease),
            ("shop.breaker_open_for", s.breaker_open_for),
            ("shop.failback_hold", s.failback_hold),
            ("shop.ejection_time", s.ejection_time),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, d, "must be greater than zero"));
            }
        }
        if s.page_deadline < s.upstream_timeout {
            return Err(ConfigError::new(
                "shop.page_deadline",
                s.page_deadline,
                "must be at least shop.upstream_timeout",
            ));
        }
        if s.health_timeout > s.health_interval {
            return Err(ConfigError::new(
                "shop.health_timeout",
                s.health_timeout,
                "must not exceed shop.health_interval",
            ));
        }
        if s.outbox_retry_max < s.outbox_retry_base {
            return Err(ConfigError::new(
                "shop.outbox_retry_max",
                s.outbox_retry_max,
                "must be at least shop.outbox_retry_base",
            ));
        }
        if !(0.0..1.0).contains(&s.hedge_quantile) {
            return Err(ConfigError::new(
                "shop.hedge_quantile",
                s.hedge_quantile,
                "must be at least 0.0 (off) and below 1.0",
            ));
        }
        if s.hedge_floor.is_zero() || s.hedge_floor > s.hedge_cap {
            return Err(ConfigError::new(
                "shop.hedge_floor",
                s.hedge_floor,
                "must be greater than zero and at most shop.hedge_cap",
            ));
        }
        if s.hedge_cap > s.upstream_timeout {
            return Err(ConfigError::new(
                "shop.hedge_cap",
                s.hedge_cap,
                "must not exceed shop.upstream_timeout",
            ));
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "database_url",
                url.split('@').next_back().unwrap_or_default(),
                "must be a postgres:// URL",
            ));
        }
        self.server.to_server_config("shop")?;
        self.limit.validate()?;
        if let Some(t) = &self.admin_token
            && t.len() < 8
        {
            return Err(ConfigError::new(
                "admin_token",
                "<hidden>",
                "must be at least 8 characters",
            ));
        }
        if let Some(up) = &self.upstreams {
            for service in ServiceName::ALL {
                let primary = up.get(&service).and_then(|r| r.get(&Region::UsEast));
                if primary.is_none_or(Vec::is_empty) {
                    return Err(ConfigError::new(
                        match service {
                            ServiceName::Catalog => "upstreams.catalog.us-east",
                            ServiceName::Checkout => "upstreams.checkout.us-east",
                            ServiceName::Recommendations => "upstreams.recommendations.us-east",
                        },
                        primary.map_or(0, Vec::len),
                        "needs at least one address",
                    ));
                }
            }
        }
        if let Some(url) = &self.fleet_control
            && !url.starts_with("http://")
        {
            return Err(ConfigError::new(
                "fleet_control",
                url,
                "must be an http:// URL",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        let cfg = Config::from_toml_str("").unwrap();
        assert_eq!(cfg.fleet.replicas, 3);
    }

    #[test]
    fn errors_name_the_key() {
        for (toml, key) in [
            ("[fleet]\nreplicas = 0\n", "fleet.replicas"),
            (
                "[fleet]\nflaky_error_rate = 1.5\n",
                "fleet.flaky_error_rate",
            ),
            ("[shop]\npage_deadline = \"1s\"\n", "shop.page_deadline"),
            ("[shop]\nhealth_timeout = \"2s\"\n", "shop.health_timeout"),
            ("[shop]\nhedge_quantile = 1.0\n", "shop.hedge_quantile"),
            ("[shop]\nhedge_floor = \"1s\"\n", "shop.hedge_floor"),
            ("[shop]\nhedge_cap = \"3s\"\n", "shop.hedge_cap"),
            ("[shop]\nhealth_interval = \"soon\"\n", "health_interval"),
            ("admin_token = \"short\"\n", "admin_token"),
            (
                "[server]\nheader_read_timeout = \"0s\"\n",
                "server.header_read_timeout",
            ),
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            ("[server]\nmax_conections = 5\n", "max_conections"),
            (
                "[upstreams.catalog]\n\"eu-west\" = [\"127.0.0.1:1\"]\n",
                "upstreams",
            ),
            (
                "[upstreams.cart]\n\"us-east\" = [\"127.0.0.1:1\"]\n",
                "cart",
            ),
            ("[fleet]\nreplica = 3\n", "replica"),
        ] {
            let e = Config::from_toml_str(toml).unwrap_err().to_string();
            assert!(e.contains(key), "{toml:?}: {e}");
        }
    }

    #[test]
    fn upstreams_parse() {
        let cfg = Config::from_toml_str(
            "[upstreams.catalog]\n\"us-east\" = [\"127.0.0.1:1\"]\n[upstreams.checkout]\n\"us-east\" = [\"127.0.0.1:2\"]\n[upstreams.recommendations]\n\"us-east\" = [\"127.0.0.1:3\"]\n\"eu-west\" = [\"127.0.0.1:4\"]\n",
        )
        .unwrap();
        let up = cfg.upstreams.unwrap();
        assert_eq!(up[&ServiceName::Recommendations][&Region::EuWest].len(), 1);
    }
}
