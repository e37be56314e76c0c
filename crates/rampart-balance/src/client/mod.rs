//! [`HttpEndpoint`]: a pooled HTTP client to one backend, as a tower service.
//!
//! It speaks HTTP/1.1 by default; [`HttpEndpointBuilder::http_version`] picks HTTP/2 (ALPN `h2`
//! over TLS, prior-knowledge h2c over plaintext) or lets ALPN choose (see rampart-health's
//! [`transport`](rampart_health::transport)). With the `tls` feature the base may be
//! `https://`: rustls on the ring provider, the system's roots unless a
//! [`TlsConfig`](rampart_health::tls::TlsConfig) says otherwise (custom CA bundle, client
//! certificate for mutual TLS, server name). Over HTTP/2 every request is one stream on a
//! shared connection, and the balancer's load (outstanding requests × peak EWMA latency)
//! counts streams, one per request in flight.
//!
//! The request's URI is rewritten to the endpoint: scheme and authority come from the base URI,
//! the base's path (if any) prefixes the request's path and query. Connecting has its own
//! timeout, and the whole request (until the response head) another one. A `Host` header
//! already on the request is kept (proxy semantics); without one, HTTP/1.1 requests get it
//! from the endpoint's authority (HTTP/2 sends the authority as `:authority`).
//!
//! Connections: HTTP/1.1 and [`HttpVersion::Auto`] use hyper-util's pooled client. With
//! [`HttpVersion::Http2`] the endpoint keeps its own HTTP/2 connections:
//!
//! - one multiplexed connection while it has room: a connection carries at most the server's
//!   `SETTINGS_MAX_CONCURRENT_STREAMS` streams (as hyper reports it once the server's SETTINGS
//!   arrived; before that the last limit this endpoint learned, else 100), capped by
//!   [`HttpEndpointBuilder::http2_max_streams_per_connection`]; when every connection is full,
//!   another one is opened. A stream holds its slot until its response head arrives (hyper does
//!   not tell when a response body ends; a stream still reading its body when the server's
//!   limit is reached waits in hyper for a free slot on that connection);
//! - a `GOAWAY` drains a connection: the streams the server accepted finish, new ones go to
//!   another connection;
//! - a stream the server never processed (`REFUSED_STREAM`, above a `GOAWAY`'s last-stream-id,
//!   or a request the connection had closed before taking) is sent again on another
//!   connection of this endpoint, a brand-new one if none has room, up to four attempts in
//!   all; its body is kept for that while it is at most 64 KiB (a larger body is sent once).
//!   When it cannot be sent again it fails as never reached, for the balancer to try another
//!   endpoint.
//!
//! Errors: a failed connection attempt (refused, unreachable, connect timeout, and every TLS
//! handshake failure: unknown CA, expired or mismatched certificate, a client certificate the
//! server refused) and an HTTP/2 stream the server refused (`REFUSED_STREAM`, or a stream above
//! the last-stream-id of a `GOAWAY`) are returned as
//! [`NeverReached`](rampart_health::NeverReached) with the transport error as its source, so
//! the balancer retries them elsewhere, counts them against this endpoint, and outer layers
//! know the backend never saw the request; a request timeout is a [`RequestTimeout`]; other
//! transport errors (a reset after the request was sent) are hyper-util's error.
//!
//! A request with a [`Deadline`] (an extension set by an outer layer, or `grpc-timeout` /
//! `x-rampart-deadline-ms` on the request) is bounded by it too (whichever of it and the
//! request timeout is shorter), and a request whose deadline has already passed (such as
//! `grpc-timeout: 0m`) is not sent: it fails at once with
//! [`DeadlineExceeded`](rampart_health::DeadlineExceeded).
//!
//! ```
//! use std::time::Duration;
//! use rampart_balance::HttpEndpoint;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let endpoint: HttpEndpoint<String> = HttpEndpoint::builder("http://127.0.0.1:8080/api".parse().unwrap())
//!     .connect_timeout(Duration::from_millis(250))
//!     .request_timeout(Duration::from_secs(5))
//!     .build()
//!     .unwrap();
//! assert_eq!(endpoint.name(), "http://127.0.0.1:8080/api");
//! # }
//! ```

mod error;
mod future;
mod pool;
mod tape;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use rampart_health::deadline::{DEADLINE_HEADER, GRPC_TIMEOUT_HEADER};
use rampart_health::transport::{
    Connector, DEFAULT_H2_KEEP_ALIVE_INTERVAL, DEFAULT_H2_KEEP_ALIVE_TIMEOUT, HttpVersion,
    Transport,
};
use rampart_health::{BoxError, ConfigError, Deadline};
use tower_service::Service;

pub use error::RequestTimeout;
pub use future::ResponseFuture;

use pool::{H2Pool, H2Settings};

#[derive(Debug)]
struct Base {
    scheme: Scheme,
    authority: Authority,
    prefix: String,
}

/// How an endpoint holds its connections.
enum Conns<B> {
    /// hyper-util's pooled client (HTTP/1.1, or HTTP/2 chosen by ALPN).
    Legacy(Arc<Client<Connector, B>>),
    /// The endpoint's own HTTP/2 connections.
    H2(H2Pool<B>),
}

impl<B> Clone for Conns<B> {
    fn clone(&self) -> Self {
        match self {
            Conns::Legacy(client) => Conns::Legacy(client.clone()),
            Conns::H2(pool) => Conns::H2(pool.clone()),
        }
    }
}

/// A pooled client to one backend (see the [module docs](self)).
pub struct HttpEndpoint<B> {
    conns: Conns<B>,
    base: Arc<Base>,
    name: Arc<str>,
    timeout: Duration,
}

impl<B> Clone for HttpEndpoint<B> {
    fn clone(&self) -> Self {
        Self {
            conns: self.conns.clone(),
            base: self.base.clone(),
            name: self.name.clone(),
            timeout: self.timeout,
        }
    }
}

impl<B> fmt::Debug for HttpEndpoint<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpEndpoint")
            .field("base", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpEndpoint<()> {
    /// A builder for a client to `base` (e.g. `http://10.0.0.7:8080` or
    /// `http://10.0.0.7:8080/prefix`); the request body type is chosen by
    /// [`HttpEndpointBuilder::build`].
    pub fn builder(base: Uri) -> HttpEndpointBuilder {
        HttpEndpointBuilder {
            base,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 32,
            transport: Transport::new(),
            keep_alive: (
                DEFAULT_H2_KEEP_ALIVE_INTERVAL,
                DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
            ),
            h2_max_streams: usize::MAX,
        }
    }
}

impl<B> HttpEndpoint<B> {
    /// The base URI as given (the endpoint's name in the balancer).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared.
    pub fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    fn rewrite(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let pq: PathAndQuery = if self.base.prefix.is_empty() {
            PathAndQuery::try_from(pq)?
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base.prefix, pq))?
        };
        Uri::builder()
            .scheme(self.base.scheme.clone())
            .authority(self.base.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// Builds an [`HttpEndpoint`].
#[derive(Debug, Clone)]
pub struct HttpEndpointBuilder {
    base: Uri,
    connect_timeout: Duration,
    request_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    transport: Transport,
    keep_alive: (Duration, Duration),
    h2_max_streams: usize,
}

impl HttpEndpointBuilder {
    /// Points the builder at another base URI (reuse one builder as a template).
    pub fn base(mut self, base: Uri) -> Self {
        self.base = base;
        self
    }

    /// Connect timeout (default 1 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Timeout until the response head arrives (default 30 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// How long an idle pooled connection is kept (default 90 s).
    pub fn pool_idle_timeout(mut self, d: Duration) -> Self {
        self.pool_idle_timeout = d;
        self
    }

    /// Idle connections kept (default 32).
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = n;
        self
    }

    /// The HTTP versions to speak (default [`HttpVersion::Http1`]).
    pub fn http_version(mut self, version: HttpVersion) -> Self {
        self.transport = self.transport.http_version(version);
        self
    }

    /// TLS settings for an `https://` base (default: the system's roots, SNI from the host).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: rampart_health::tls::TlsConfig) -> Self {
        self.transport = self.transport.tls(tls);
        self
    }

    /// HTTP/2 keep-alive: a PING every `interval`, the connection closed when one is not
    /// answered within `timeout` (defaults 10 s and 5 s).
    pub fn http2_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.transport = self.transport.http2_keep_alive(interval, timeout);
        self.keep_alive = (interval, timeout);
        self
    }

    /// With [`HttpVersion::Http2`]: the most streams this client opens on one connection, below
    /// the server's own limit if that is higher (default: the server's limit alone). Another
    /// connection is opened when every one is full.
    pub fn http2_max_streams_per_connection(mut self, n: usize) -> Self {
        self.h2_max_streams = n;
        self
    }

    /// An [`HttpProbe`](rampart_health::HttpProbe) builder for `base` that dials the way this
    /// endpoint does (HTTP versions, TLS settings, keep-alive): an `https` pool with its own CA
    /// is checked with that CA.
    ///
    /// ```
    /// use rampart_balance::HttpEndpoint;
    ///
    /// let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap());
    /// let probe = template
    ///     .http_probe("http://10.0.0.7:8080".parse().unwrap())
    ///     .path("/healthz")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(probe.uri(), "http://10.0.0.7:8080/healthz");
    /// ```
    pub fn http_probe(&self, base: Uri) -> rampart_health::HttpProbeBuilder {
        rampart_health::HttpProbe::builder(base).transport(self.transport.clone())
    }

    /// Validates the base URI (`http` scheme, or `https` with the `tls` feature, and an
    /// authority), the timeouts and the transport settings.
    pub fn build<B>(self) -> Result<HttpEndpoint<B>, ConfigError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let base = self.base;
        let name: Arc<str> = base.to_string().trim_end_matches('/').into();
        let https = self.transport.validate("base", &base)?;
        let scheme = if https { Scheme::HTTPS } else { Scheme::HTTP };
        let Some(authority) = base.authority().cloned() else {
            return Err(ConfigError::new(
                "base",
                base.to_string(),
                "must have a host",
            ));
        };
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                "connect_timeout",
                self.connect_timeout,
                "must be positive",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new(
                "request_timeout",
                self.request_timeout,
                "must be positive",
            ));
        }
        if self.h2_max_streams == 0 {
            return Err(ConfigError::new(
                "http2_max_streams_per_connection",
                self.h2_max_streams,
                "must be positive",
            ));
        }
        let prefix = base.path().trim_end_matches('/').to_string();
        let connector = self.transport.connector(https, self.connect_timeout)?;
        let conns = if self.transport.version() == HttpVersion::Http2 {
            let target = Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .map_err(|_| {
                    ConfigError::new("base", base.to_string(), "must have a valid authority")
                })?;
            Conns::H2(H2Pool::new(
                name.clone(),
                target,
                connector,
                H2Settings {
                    connect_timeout: self.connect_timeout,
                    keep_alive_interval: self.keep_alive.0,
                    keep_alive_timeout: self.keep_alive.1,
                    max_streams_per_connection: self.h2_max_streams,
                },
            ))
        } else {
            Conns::Legacy(Arc::new(
                self.transport
                    .client_builder()
                    .pool_idle_timeout(self.pool_idle_timeout)
                    .pool_max_idle_per_host(self.pool_max_idle_per_host)
                    .build(connector),
            ))
        };
        Ok(HttpEndpoint {
            conns,
            base: Arc::new(Base {
                scheme,
                authority,
                prefix,
            }),
            name,
            timeout: self.request_timeout,
        })
    }
}

impl<B> Service<http::Request<B>> for HttpEndpoint<B>
where
    B: Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Incoming>;
    type Error = BoxError;
    type Future = future::ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both pools are always ready: hyper-util's waits inside its response future, the
        // HTTP/2 pool opens a connection when every one is full.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.rewrite(req.uri()) {
            Ok(uri) => *req.uri_mut() = uri,
            // Never send a request whose URI we could not point at this endpoint.
            Err(e) => return ResponseFuture::failed(Box::new(e)),
        }
        let mut timeout = self.timeout;
        // The caller's deadline: set by an outer layer, or read from `grpc-timeout` /
        // `x-rampart-deadline-ms` (relative to now: the request has just arrived).
        let deadline = Deadline::of(&req).or_else(|| {
            let h = req.headers();
            if h.contains_key(GRPC_TIMEOUT_HEADER) || h.contains_key(DEADLINE_HEADER) {
                Deadline::from_headers(h)
            } else {
                None
            }
        });
        if let Some(deadline) = deadline {
            // Past it: sending would only make the backend work for nobody.
            if let Err(e) = deadline.check() {
                return ResponseFuture::failed(Box::new(e));
            }
            timeout = deadline.attempt_timeout(Some(timeout));
        }
        match &self.conns {
            Conns::Legacy(client) => ResponseFuture::new(client.request(req), timeout),
            Conns::H2(pool) => ResponseFuture::pooled(Box::pin(pool.send(req)), timeout),
        }
    }
}
