//! [`HttpEndpoint`]: a pooled HTTP/1 client to one backend, as a tower service.
//!
//! The request's URI is rewritten to the endpoint: scheme and authority come from the base URI,
//! the base's path (if any) prefixes the request's path and query. Connections are pooled
//! (hyper-util's legacy client); connecting has its own timeout, and the whole request (until
//! the response head) another one. A `Host` header already on the request is kept (proxy
//! semantics); without one, hyper-util sets it from the endpoint's authority.
//!
//! Errors: a failed connection attempt (refused, unreachable, connect timeout) is returned as
//! [`NeverReached`](rampart_health::NeverReached) with the transport error as its source, so
//! the balancer retries it elsewhere and outer layers know the backend never saw it; a request
//! timeout is a [`RequestTimeout`]; other transport errors (a reset before the response) are
//! hyper-util's error.
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

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rampart_health::{BoxError, ConfigError};
use tower_service::Service;

pub use error::RequestTimeout;
pub use future::ResponseFuture;

#[derive(Debug)]
struct Base {
    scheme: Scheme,
    authority: Authority,
    prefix: String,
}

/// A pooled client to one backend (see the [module docs](self)).
pub struct HttpEndpoint<B> {
    client: Client<HttpConnector, B>,
    base: Arc<Base>,
    name: Arc<str>,
    timeout: Duration,
}

impl<B> Clone for HttpEndpoint<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
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

    /// Validates the base URI (`http` scheme and an authority) and the timeouts.
    pub fn build<B>(self) -> Result<HttpEndpoint<B>, ConfigError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let base = self.base;
        let name: Arc<str> = base.to_string().trim_end_matches('/').into();
        let scheme = match base.scheme() {
            Some(s) if *s == Scheme::HTTP => s.clone(),
            _ => {
                return Err(ConfigError::new(
                    "base",
                    base.to_string(),
                    "must be an http:// URI (TLS is not supported)",
                ));
            }
        };
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
        let prefix = base.path().trim_end_matches('/').to_string();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(connector);
        Ok(HttpEndpoint {
            client,
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
        // hyper-util's client is always ready (its pool waits inside the response future).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.rewrite(req.uri()) {
            Ok(uri) => *req.uri_mut() = uri,
            // Never send a request whose URI we could not point at this endpoint.
            Err(e) => return ResponseFuture::failed(Box::new(e)),
        }
        ResponseFuture::new(self.client.request(req), self.timeout)
    }
}
