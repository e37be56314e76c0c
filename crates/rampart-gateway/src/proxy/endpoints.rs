//! A cluster's endpoints: how they are dialled (the per-worker HTTP/1 pools, or a pooled
//! HTTP/2 / TLS client), how they are checked, and how their answers are judged.
//!
//! - `protocol = "http1"`: [`Upstream`], the gateway's own per-worker HTTP/1 connection pools.
//! - `protocol = "h2c"` / `"https"`: rampart-balance's [`HttpEndpoint`]: one multiplexed
//!   HTTP/2 connection per endpoint (h2c with prior knowledge, or ALPN `h2` over rustls), or
//!   HTTP/1.1 over TLS when an `https` server does not offer `h2`. Request and response bodies
//!   stream through as frames, trailers included.
//! - A `grpc` cluster is judged by [`GrpcClassifier`] and checked with the gRPC health
//!   checking protocol ([`GrpcHealthProbe`]); other clusters by [`HttpClassifier`] (5xx and
//!   transport errors fail) and `GET checks.path`. A gRPC answer is judged at its head when the
//!   head decides (the `grpc-status` of a Trailers-Only answer, a non-200 HTTP status mapped as
//!   gRPC maps it); otherwise its status comes in the trailers, and the breaker and the
//!   balancer's passive ejection both take their verdict there: the balancer records only the
//!   head's latency and leaves a [`LateOutcome`](rampart_balance::LateOutcome) in the
//!   response, which the proxy's body records when the trailers arrive (UNKNOWN, a failure, if
//!   the body ends without them; nothing if the client goes away first).

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HOST, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use rampart_balance::{HttpEndpoint, HttpEndpointBuilder};
use rampart_health::transport::HttpVersion;
use rampart_health::{
    BoxError, Classify, GrpcClassifier, GrpcHealthProbe, HttpClassifier, HttpProbe, Outcome, Probe,
};
use tower::util::Either;
use tower::{Service, ServiceExt};

use super::upstream::{UpBody, Upstream, UpstreamError};
use crate::config::{ClusterSection, ConfigError, HostMode, UpstreamProtocol};

/// How a cluster judges its answers: HTTP (5xx and transport errors fail) or gRPC (by
/// `grpc-status`; see [`GrpcClassifier`]). The breaker and the balancer's passive ejection
/// both use it.
///
/// A gRPC answer whose status is still to come (HTTP 200 without `grpc-status` in its
/// headers: the status arrives in the trailers) is a provisional success, or, with
/// [`deferring_trailers`](Self::deferring_trailers) (the breaker's setting in the proxy),
/// [`Outcome::Ignored`] at the head: the proxy records the verdict of the trailers then. The
/// balancer never asks about such an answer: its policy defers it
/// ([`GatewayPolicy`](super::GatewayPolicy)), and the proxy records the trailers' verdict
/// with the balancer too.
///
/// ```
/// use rampart_gateway::proxy::ClusterClassifier;
/// use rampart_health::{Classify, GrpcClassifier, Outcome};
///
/// let streaming = http::Response::builder()
///     .header("content-type", "application/grpc")
///     .body(())
///     .unwrap();
/// let unavailable = http::Response::builder()
///     .header("content-type", "application/grpc")
///     .header("grpc-status", "14")
///     .body(())
///     .unwrap();
/// let grpc = ClusterClassifier::grpc(GrpcClassifier::new());
/// let judge = |c: ClusterClassifier, r| c.classify(Ok::<_, &std::io::Error>(r));
/// assert_eq!(judge(grpc, &unavailable), Outcome::Failure);
/// assert_eq!(judge(grpc, &streaming), Outcome::Success);
/// assert_eq!(judge(grpc.deferring_trailers(), &streaming), Outcome::Ignored);
/// assert_eq!(judge(ClusterClassifier::http(), &unavailable), Outcome::Success);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterClassifier {
    http: HttpClassifier,
    grpc: Option<GrpcClassifier>,
    defer: bool,
}

impl ClusterClassifier {
    /// [`HttpClassifier`]: every 5xx and every transport error is a failure.
    pub fn http() -> Self {
        Self::default()
    }

    /// `classifier`: UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN and DATA_LOSS fail by
    /// default, in a Trailers-Only answer's headers or mapped from a non-200 HTTP status.
    pub fn grpc(classifier: GrpcClassifier) -> Self {
        Self {
            grpc: Some(classifier),
            ..Self::default()
        }
    }

    /// A gRPC answer whose status comes in the trailers is [`Outcome::Ignored`] at its head
    /// (its verdict is taken from the trailers by whoever reads the body).
    pub fn deferring_trailers(mut self) -> Self {
        self.defer = true;
        self
    }

    /// The gRPC classifier, for a gRPC cluster.
    pub fn grpc_classifier(&self) -> Option<GrpcClassifier> {
        self.grpc
    }

    /// The classifier a cluster's settings ask for (`grpc = true`: gRPC).
    pub fn for_cluster(c: &ClusterSection) -> Self {
        if c.grpc {
            Self::grpc(GrpcClassifier::new())
        } else {
            Self::http()
        }
    }
}

impl<B, E> Classify<Response<B>, E> for ClusterClassifier {
    #[inline]
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match (&self.grpc, result) {
            (None, result) => self.http.classify(result),
            (Some(_), Err(_)) => Outcome::Failure,
            (Some(g), Ok(response)) => match g.classify_head(response) {
                Some(outcome) => outcome,
                None if self.defer => Outcome::Ignored,
                None => Outcome::Success,
            },
        }
    }
}

/// An endpoint dialled by a pooled HTTP/2 or TLS client ([`HttpEndpoint`]), with the cluster's
/// `Host` rewrite. A client that could not be built (it cannot happen for an address once the
/// cluster's settings validated, but a discovered address is not validated again) answers
/// every request with an error instead.
#[derive(Clone, Debug)]
pub struct PooledEndpoint {
    inner: Either<HttpEndpoint<UpBody>, Unbuildable>,
    host: Option<HeaderValue>,
}

impl Service<Request<UpBody>> for PooledEndpoint {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = <Either<HttpEndpoint<UpBody>, Unbuildable> as Service<Request<UpBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<UpBody>) -> Self::Future {
        if let Some(h) = &self.host {
            req.headers_mut().insert(HOST, h.clone());
        }
        self.inner.call(req)
    }
}

/// The endpoint service of a client that could not be built: every call fails.
#[derive(Clone, Debug)]
pub struct Unbuildable(std::sync::Arc<str>);

impl Service<Request<UpBody>> for Unbuildable {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Ready<Result<Response<Incoming>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<UpBody>) -> Self::Future {
        ready(Err(BoxError::from(format!(
            "endpoint client unavailable: {}",
            self.0
        ))))
    }
}

fn boxed(e: UpstreamError) -> BoxError {
    Box::new(e)
}

/// The HTTP/1 endpoint service: [`endpoint`] with its error boxed.
fn http1(
    addr: SocketAddr,
    connect_timeout: Duration,
    attempt_timeout: Duration,
    host: Option<HeaderValue>,
) -> impl Service<
    Request<UpBody>,
    Response = Response<Incoming>,
    Error = BoxError,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    endpoint(Upstream::new(addr, connect_timeout), attempt_timeout, host)
        .map_err(boxed as fn(UpstreamError) -> BoxError)
}

/// An endpoint service: per-attempt timeout and `Host` rewrite around [`Upstream::send`].
/// A `service_fn`, so its future is concrete (no boxing).
pub fn endpoint(
    upstream: Upstream,
    attempt_timeout: Duration,
    host: Option<HeaderValue>,
) -> impl Service<
    Request<UpBody>,
    Response = Response<Incoming>,
    Error = UpstreamError,
    Future = impl Future<Output = Result<Response<Incoming>, UpstreamError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |mut req: Request<UpBody>| {
        if let Some(h) = &host {
            req.headers_mut().insert(HOST, h.clone());
        }
        async move {
            match tokio::time::timeout(attempt_timeout, upstream.send(req)).await {
                Ok(result) => result,
                Err(elapsed) => Err(UpstreamError::timed_out(upstream.addr(), elapsed)),
            }
        }
    })
}

/// Builds a cluster's endpoint services and probes from its settings (cloned into a DNS
/// discovery task, which makes one per address it finds).
#[derive(Clone, Debug)]
pub(crate) struct EndpointMaker {
    protocol: UpstreamProtocol,
    grpc: bool,
    connect_timeout: Duration,
    attempt_timeout: Duration,
    /// `protocol = "h2c"` / `"https"`: the client settings, pointed at each endpoint in turn.
    pooled: Option<HttpEndpointBuilder>,
    checks: Option<ProbeSettings>,
    tls: Option<rampart_health::tls::TlsConfig>,
}

#[derive(Clone, Debug)]
struct ProbeSettings {
    path: String,
    grpc_service: String,
    timeout: Duration,
}

impl EndpointMaker {
    /// Validates the settings of cluster `name` (TLS files are read here).
    pub(crate) fn new(name: &str, c: &ClusterSection) -> Result<Self, ConfigError> {
        let tls = c.tls_config(name)?;
        let pooled = match c.protocol {
            UpstreamProtocol::Http1 => None,
            UpstreamProtocol::H2c | UpstreamProtocol::Https => {
                let version = if c.protocol == UpstreamProtocol::H2c {
                    HttpVersion::Http2
                } else {
                    HttpVersion::Auto
                };
                let mut b = HttpEndpoint::builder(http::Uri::from_static("http://127.0.0.1"))
                    .connect_timeout(c.connect_timeout)
                    .request_timeout(c.attempt_timeout)
                    .http_version(version);
                if let Some(tls) = &tls {
                    b = b.tls(tls.clone());
                }
                Some(b)
            }
        };
        let checks = c.checks.enabled.then(|| ProbeSettings {
            path: c.checks.path.clone(),
            grpc_service: c.checks.grpc_service.clone(),
            timeout: c.checks.timeout,
        });
        let maker = Self {
            protocol: c.protocol,
            grpc: c.grpc,
            connect_timeout: c.connect_timeout,
            attempt_timeout: c.attempt_timeout,
            pooled,
            checks,
            tls,
        };
        Ok(maker)
    }

    fn base(&self, authority: &str) -> String {
        let scheme = if self.protocol == UpstreamProtocol::Https {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{authority}")
    }

    /// The service for the endpoint at `addr`, written `authority` (`host:port`).
    pub(crate) fn service(
        &self,
        addr: SocketAddr,
        authority: &str,
        host: Option<HeaderValue>,
    ) -> Either<
        impl Service<
            Request<UpBody>,
            Response = Response<Incoming>,
            Error = BoxError,
            Future: Send + 'static,
        >
        + Clone
        + Send
        + Sync
        + 'static
        + use<>,
        PooledEndpoint,
    > {
        let Some(template) = &self.pooled else {
            return Either::Left(http1(
                addr,
                self.connect_timeout,
                self.attempt_timeout,
                host,
            ));
        };
        let base = self.base(authority);
        let built = base
            .parse::<http::Uri>()
            .map_err(|e| e.to_string())
            .and_then(|uri| {
                template
                    .clone()
                    .base(uri)
                    .build::<UpBody>()
                    .map_err(|e| e.to_string())
            });
        let inner = match built {
            Ok(ep) => Either::Left(ep),
            Err(e) => {
                tracing::error!(endpoint = %base, error = %e, "cannot build the endpoint's client");
                Either::Right(Unbuildable(format!("{base}: {e}").into()))
            }
        };
        Either::Right(PooledEndpoint { inner, host })
    }

    /// Whether endpoints are checked actively.
    pub(crate) fn checks_enabled(&self) -> bool {
        self.checks.is_some()
    }

    /// The active check of the endpoint written `authority` (`None`: checks are off).
    pub(crate) fn probe(&self, authority: &str) -> Result<Option<Box<dyn Probe>>, String> {
        let Some(checks) = &self.checks else {
            return Ok(None);
        };
        let base: http::Uri = self
            .base(authority)
            .parse()
            .map_err(|_| "is not a valid authority".to_owned())?;
        let probe: Box<dyn Probe> = if self.grpc {
            let mut b = GrpcHealthProbe::builder(base)
                .service(checks.grpc_service.clone())
                .timeout(checks.timeout);
            if let Some(tls) = &self.tls {
                b = b.tls(tls.clone());
            }
            Box::new(b.build().map_err(|e| e.to_string())?)
        } else {
            let b = match &self.pooled {
                Some(template) => template.http_probe(base),
                None => HttpProbe::builder(base),
            };
            Box::new(
                b.path(checks.path.clone())
                    .timeout(checks.timeout)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        };
        Ok(Some(probe))
    }
}

/// The `Host` the cluster sends to the endpoint written `authority`: the client's
/// (`None`), or the endpoint's own.
pub(crate) fn host_header(
    c: &ClusterSection,
    authority: &str,
) -> Result<Option<HeaderValue>, &'static str> {
    match c.host {
        HostMode::Preserve => Ok(None),
        HostMode::Upstream => HeaderValue::from_str(authority)
            .map(Some)
            .map_err(|_| "is not a valid Host"),
    }
}
