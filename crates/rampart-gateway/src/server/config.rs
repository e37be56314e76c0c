//! The server's limits and shape: [`ServerConfig`], built by [`ServerConfigBuilder`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rampart_health::ConfigError;

use super::ServerTls;

/// How [`spawn_workers`](super::spawn_workers) runs its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Runtime {
    /// One thread per worker, each with its own current-thread tokio runtime and its own
    /// listening socket bound with `SO_REUSEPORT` to the same address: the kernel spreads
    /// connections over the workers, and a connection, its requests and the connections the
    /// handler opens stay on one thread (nginx's shared-nothing shape with `reuseport`).
    #[default]
    PerCore,
    /// One current-thread runtime per worker thread, all accepting from one shared listening
    /// socket (nginx's default shape: a busy worker accepts less).
    PerCoreShared,
    /// One work-stealing multi-thread runtime with `workers` threads and one listener.
    MultiThread,
}

impl FromStr for Runtime {
    type Err = ConfigError;

    /// `percore` (or `per-core`), `percore-shared` (or `shared`), `multi` (or `multi-thread`).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "percore" | "per-core" => Ok(Self::PerCore),
            "percore-shared" | "shared" => Ok(Self::PerCoreShared),
            "multi" | "multi-thread" => Ok(Self::MultiThread),
            other => Err(ConfigError::new(
                "runtime",
                other,
                "must be percore, percore-shared or multi",
            )),
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PerCore => "percore",
            Self::PerCoreShared => "percore-shared",
            Self::MultiThread => "multi",
        })
    }
}

/// The server's limits and shape. [`ServerConfig::default`] holds the defaults below, each
/// chosen to match or beat nginx's and HAProxy's; [`ServerConfig::builder`] changes them and
/// validates the result.
///
/// | setting | default | nginx | HAProxy |
/// |---|---|---|---|
/// | [`header_read_timeout`](Self::header_read_timeout) | 10 s, then `408` | `client_header_timeout` 60 s, closes silently | `timeout http-request` (commonly 10 s), `408` |
/// | [`keep_alive_timeout`](Self::keep_alive_timeout) | 60 s | `keepalive_timeout` 75 s | `timeout http-keep-alive` (falls back to `http-request`) |
/// | [`body_read_timeout`](Self::body_read_timeout) | 60 s | `client_body_timeout` 60 s | `timeout client` |
/// | [`send_timeout`](Self::send_timeout) | 60 s | `send_timeout` 60 s | `timeout client` |
/// | [`max_concurrent_streams`](Self::max_concurrent_streams) | 128 per HTTP/2 connection | `http2_max_concurrent_streams` 128 | `tune.h2.max-concurrent-streams` 100 |
/// | [`max_connections`](Self::max_connections) | 10,000 | `worker_connections` 512 per worker | `maxconn` (from the file limit) |
/// | [`max_header_size`](Self::max_header_size) | 16 KiB, then `431` | `large_client_header_buffers` 4 × 8 KiB | `tune.bufsize` 16 KiB |
/// | [`max_headers`](Self::max_headers) | 100, then `431` | — | `tune.http.maxhdr` 101 |
/// | [`backlog`](Self::backlog) | 4,096 | 511 | `maxconn` |
/// | [`shutdown_grace`](Self::shutdown_grace) | 30 s | `worker_shutdown_timeout` (unset: forever) | `hard-stop-after` (unset: forever) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    name: String,
    header_read_timeout: Duration,
    keep_alive_timeout: Duration,
    body_read_timeout: Duration,
    send_timeout: Duration,
    max_concurrent_streams: u32,
    max_connections: usize,
    max_header_size: usize,
    max_headers: usize,
    backlog: u32,
    workers: usize,
    runtime: Runtime,
    shutdown_grace: Duration,
    tls: Option<ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            name: "gateway".to_owned(),
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_concurrent_streams: 128,
            max_connections: 10_000,
            max_header_size: 16 * 1024,
            max_headers: 100,
            backlog: 4096,
            workers: 0,
            runtime: Runtime::PerCore,
            shutdown_grace: Duration::from_secs(30),
            tls: None,
        }
    }
}

impl ServerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ServerConfigBuilder {
        ServerConfigBuilder {
            config: Self::default(),
        }
    }

    /// A builder starting from this configuration.
    pub fn to_builder(&self) -> ServerConfigBuilder {
        ServerConfigBuilder {
            config: self.clone(),
        }
    }

    /// The server's name: the `server` label of its metrics and a field of its events
    /// (default `gateway`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long a client may take to send a complete request head (request line and
    /// headers), counted from the accept for the first request and from its first byte for
    /// the next ones on a keep-alive connection. A client that sent part of a head is then
    /// answered `408 Request Timeout` and closed; one that sent nothing is closed silently
    /// (HAProxy's `option http-ignore-probes`). Default 10 s (HAProxy's usual
    /// `timeout http-request`; nginx's `client_header_timeout` is 60 s).
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// How long a keep-alive connection may stay idle between two requests before the server
    /// closes it. Default 60 s (nginx's `keepalive_timeout` is 75 s).
    pub fn keep_alive_timeout(&self) -> Duration {
        self.keep_alive_timeout
    }

    /// How long a request body may go without a byte arriving while the handler has not
    /// answered yet (between two successive reads, like nginx's `client_body_timeout`);
    /// the connection is then closed. Default 60 s.
    pub fn body_read_timeout(&self) -> Duration {
        self.body_read_timeout
    }

    /// How long a response may wait for the client to take more of it: the time between two
    /// writes the socket accepts while it refuses more (the client's receive window is full),
    /// like nginx's `send_timeout`; the connection is then closed. A response that is slow
    /// because the handler is slow is not concerned. Default 60 s.
    pub fn send_timeout(&self) -> Duration {
        self.send_timeout
    }

    /// Most streams (requests) in flight at once on one HTTP/2 connection, announced in the
    /// connection's `SETTINGS_MAX_CONCURRENT_STREAMS`. Default 128.
    pub fn max_concurrent_streams(&self) -> u32 {
        self.max_concurrent_streams
    }

    /// Most connections served at once (over all workers). At the cap the server stops
    /// accepting, so new connections wait in the kernel's listen backlog until one closes.
    /// Default 10,000.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Largest request head (request line and headers) in bytes; a larger one is answered
    /// `431 Request Header Fields Too Large`. Default 16 KiB.
    pub fn max_header_size(&self) -> usize {
        self.max_header_size
    }

    /// Most header fields in a request; more are answered `431`. Default 100.
    pub fn max_headers(&self) -> usize {
        self.max_headers
    }

    /// The listen backlog of sockets the server binds (the kernel caps it at
    /// `net.core.somaxconn`). Default 4,096.
    pub fn backlog(&self) -> u32 {
        self.backlog
    }

    /// Worker threads of [`spawn_workers`](super::spawn_workers); 0 (the default) means one
    /// per available core.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The workers' shape (default [`Runtime::PerCore`]).
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// After a shutdown signal: how long requests in flight may take to finish before the
    /// remaining connections are closed. Default 30 s.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }

    /// TLS termination: the certificate the server presents (ALPN `h2`, `http/1.1`), or
    /// `None` (the default) for plain TCP, where HTTP/1 and HTTP/2 with prior knowledge
    /// (h2c) are both served.
    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    /// The number of workers [`spawn_workers`](super::spawn_workers) starts.
    pub fn effective_workers(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            self.workers
        }
    }

    /// Checks every value; the error names the field and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        if self.name.is_empty() {
            return Err(ConfigError::new("name", &self.name, "must not be empty"));
        }
        for (field, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("send_timeout", self.send_timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(ConfigError::new(field, d, "must be at least 1ms"));
            }
            if d > DAY {
                return Err(ConfigError::new(field, d, "must be at most 24h"));
            }
        }
        if self.shutdown_grace > DAY {
            return Err(ConfigError::new(
                "shutdown_grace",
                self.shutdown_grace,
                "must be at most 24h",
            ));
        }
        if !(1..=10_000).contains(&self.max_concurrent_streams) {
            return Err(ConfigError::new(
                "max_concurrent_streams",
                self.max_concurrent_streams,
                "must be 1 to 10000",
            ));
        }
        if !(1..=10_000_000).contains(&self.max_connections) {
            return Err(ConfigError::new(
                "max_connections",
                self.max_connections,
                "must be 1 to 10000000",
            ));
        }
        if !(1024..=1024 * 1024).contains(&self.max_header_size) {
            return Err(ConfigError::new(
                "max_header_size",
                self.max_header_size,
                "must be 1024 to 1048576 bytes",
            ));
        }
        if !(1..=10_000).contains(&self.max_headers) {
            return Err(ConfigError::new(
                "max_headers",
                self.max_headers,
                "must be 1 to 10000",
            ));
        }
        if !(1..=65_535).contains(&self.backlog) {
            return Err(ConfigError::new(
                "backlog",
                self.backlog,
                "must be 1 to 65535",
            ));
        }
        if self.workers > 1024 {
            return Err(ConfigError::new(
                "workers",
                self.workers,
                "must be at most 1024 (0: one per core)",
            ));
        }
        Ok(())
    }
}

/// Builds a [`ServerConfig`]; [`build`](Self::build) validates it.
#[derive(Debug, Clone)]
pub struct ServerConfigBuilder {
    config: ServerConfig,
}

impl ServerConfigBuilder {
    /// See [`ServerConfig::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// See [`ServerConfig::header_read_timeout`].
    pub fn header_read_timeout(mut self, d: Duration) -> Self {
        self.config.header_read_timeout = d;
        self
    }

    /// See [`ServerConfig::keep_alive_timeout`].
    pub fn keep_alive_timeout(mut self, d: Duration) -> Self {
        self.config.keep_alive_timeout = d;
        self
    }

    /// See [`ServerConfig::body_read_timeout`].
    pub fn body_read_timeout(mut self, d: Duration) -> Self {
        self.config.body_read_timeout = d;
        self
    }

    /// See [`ServerConfig::send_timeout`].
    pub fn send_timeout(mut self, d: Duration) -> Self {
        self.config.send_timeout = d;
        self
    }

    /// See [`ServerConfig::max_concurrent_streams`].
    pub fn max_concurrent_streams(mut self, n: u32) -> Self {
        self.config.max_concurrent_streams = n;
        self
    }

    /// See [`ServerConfig::max_connections`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// See [`ServerConfig::max_header_size`].
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.config.max_header_size = bytes;
        self
    }

    /// See [`ServerConfig::max_headers`].
    pub fn max_headers(mut self, n: usize) -> Self {
        self.config.max_headers = n;
        self
    }

    /// See [`ServerConfig::backlog`].
    pub fn backlog(mut self, n: u32) -> Self {
        self.config.backlog = n;
        self
    }

    /// See [`ServerConfig::workers`].
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n;
        self
    }

    /// See [`ServerConfig::runtime`].
    pub fn runtime(mut self, r: Runtime) -> Self {
        self.config.runtime = r;
        self
    }

    /// See [`ServerConfig::shutdown_grace`].
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.config.shutdown_grace = d;
        self
    }

    /// See [`ServerConfig::tls`].
    pub fn tls(mut self, tls: impl Into<Option<ServerTls>>) -> Self {
        self.config.tls = tls.into();
        self
    }

    /// The configuration, validated: the error names the field and the value.
    pub fn build(self) -> Result<ServerConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = ServerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.header_read_timeout(), Duration::from_secs(10));
        assert_eq!(c.max_connections(), 10_000);
        assert_eq!(c.send_timeout(), Duration::from_secs(60));
        assert_eq!(c.max_concurrent_streams(), 128);
        assert_eq!(ServerConfig::builder().build().unwrap(), c);
    }

    #[test]
    fn runtime_parses_and_names_the_field() {
        assert_eq!("percore".parse::<Runtime>().unwrap(), Runtime::PerCore);
        assert_eq!("multi".parse::<Runtime>().unwrap(), Runtime::MultiThread);
        let e = "turbo".parse::<Runtime>().unwrap_err();
        assert_eq!(e.field(), "runtime");
    }
}
