//! The `[server]`, `[admin]` and `[access_log]` tables: the listeners, their limits and TLS,
//! and the access log, turned into the server module's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, humantime_serde_compat};
use crate::server::{Runtime, ServerConfig, ServerTls};

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
