//! The gRPC health checking protocol as a [`Probe`] (feature `grpc`).
//!
//! [`GrpcHealthProbe`] calls `grpc.health.v1.Health/Check` for one service name (empty: the
//! server as a whole) with tonic-health's generated client, over HTTP/2 (prior-knowledge h2c
//! for `http://`, ALPN `h2` for `https://` with the `tls` feature). The attempt passes when
//! the answer is `SERVING`; `NOT_SERVING`, `SERVICE_UNKNOWN` and `UNKNOWN` fail it with
//! [`ProbeErrorKind::Status`], a gRPC error status (such as `NOT_FOUND` from a server without
//! the service, or `UNIMPLEMENTED` from one without the health service) fails it with
//! [`ProbeErrorKind::Status`] too, and a connection that could not be made with
//! [`ProbeErrorKind::Connect`]. The whole attempt is bounded by the timeout (default 1 s),
//! which is also sent as the call's `grpc-timeout`.
//!
//! ```
//! use std::time::Duration;
//! use rampart_health::GrpcHealthProbe;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let probe = GrpcHealthProbe::builder("http://10.0.0.7:50051".parse().unwrap())
//!     .service("catalog.v1.Catalog")
//!     .timeout(Duration::from_millis(300))
//!     .build()
//!     .unwrap();
//! assert_eq!(probe.service(), "catalog.v1.Catalog");
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::probe::ProbeFuture;
use crate::probe::http::client_error_parts;
use crate::transport::{Connector, HttpVersion, Transport};
use crate::{ConfigError, Probe, ProbeError, ProbeErrorKind, find_in_chain};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

type GrpcClient = Client<Connector, tonic::body::Body>;

/// A gRPC health-checking probe (see the [module docs](self)). Cheap to clone; clones share
/// the HTTP/2 connection.
#[derive(Clone)]
pub struct GrpcHealthProbe {
    client: GrpcClient,
    origin: Uri,
    service: String,
    timeout: Duration,
}

impl fmt::Debug for GrpcHealthProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcHealthProbe")
            .field("origin", &self.origin)
            .field("service", &self.service)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`GrpcHealthProbe`]; see [`GrpcHealthProbe::builder`].
#[derive(Clone, Debug)]
pub struct GrpcHealthProbeBuilder {
    base: Uri,
    service: String,
    timeout: Duration,
    transport: Transport,
}

impl GrpcHealthProbe {
    /// A builder for probes of the server at `base` (`http://host:port` or, with the `tls`
    /// feature, `https://host:port`).
    pub fn builder(base: Uri) -> GrpcHealthProbeBuilder {
        GrpcHealthProbeBuilder {
            base,
            service: String::new(),
            timeout: DEFAULT_TIMEOUT,
            transport: Transport::new().http_version(HttpVersion::Http2),
        }
    }

    /// The service name checked (empty: the whole server).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn attempt(&self) -> Result<(), ProbeError> {
        let mut client = HealthClient::with_origin(self.client.clone(), self.origin.clone());
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.service.clone(),
        });
        request.set_timeout(self.timeout);
        let response = client.check(request).await.map_err(status_error)?;
        let status = response.into_inner().status();
        match status {
            ServingStatus::Serving => Ok(()),
            other => Err(ProbeError::new(
                ProbeErrorKind::Status,
                format!(
                    "service {:?} is {}",
                    self.service,
                    other.as_str_name().to_ascii_lowercase()
                ),
            )),
        }
    }
}

fn status_error(status: tonic::Status) -> ProbeError {
    // A connection that could not be made is a connect failure, whatever tonic wraps it in:
    // the HTTP probe's mapping decides its kind and message.
    if let Some(client) = find_in_chain::<hyper_util::client::legacy::Error>(&status)
        && client.is_connect()
    {
        let (kind, message) = client_error_parts(client);
        return ProbeError::new(kind, message).with_source(status);
    }
    let message = format!(
        "health check answered {}: {}",
        crate::grpc::GrpcCode::from_u32(status.code() as u32),
        status.message()
    );
    let kind = match status.code() {
        tonic::Code::DeadlineExceeded => ProbeErrorKind::Timeout,
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal => {
            ProbeErrorKind::Other
        }
        _ => ProbeErrorKind::Status,
    };
    ProbeError::new(kind, message).with_source(status)
}

impl Probe for GrpcHealthProbe {
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.attempt()).await {
                Ok(result) => result,
                Err(_) => Err(ProbeError::timeout()),
            }
        })
    }
}

impl GrpcHealthProbeBuilder {
    /// The service name to check (default empty: the server as a whole).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = name.into();
        self
    }

    /// Bounds the whole attempt, connect included (default 1 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// TLS settings for an `https://` base (default: the system's roots).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.transport = self.transport.tls(tls);
        self
    }

    /// HTTP/2 keep-alive of the probe's connection (see
    /// [`Transport::http2_keep_alive`]).
    pub fn http2_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.transport = self.transport.http2_keep_alive(interval, timeout);
        self
    }

    /// Validates and builds: the base must be `http://host[:port]` (or `https://` with the
    /// `tls` feature) without a path, and the timeout positive.
    pub fn build(self) -> Result<GrpcHealthProbe, ConfigError> {
        let https = self.transport.validate("base", &self.base)?;
        if self.base.authority().is_none() {
            return Err(ConfigError::new(
                "base",
                self.base.to_string(),
                "must name a host",
            ));
        }
        if !matches!(self.base.path(), "" | "/") {
            return Err(ConfigError::new(
                "base",
                self.base.to_string(),
                "must not have a path (gRPC paths are the method names)",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout",
                self.timeout,
                "must be greater than zero",
            ));
        }
        let connector = self.transport.connector(https, self.timeout)?;
        let client = self
            .transport
            .client_builder()
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(GrpcHealthProbe {
            client,
            origin: self.base,
            service: self.service,
            timeout: self.timeout,
        })
    }
}
