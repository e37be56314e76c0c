//! The Rampart stack: `FallbackLayer` → `CircuitBreaker` → `Balance` (active checks, passive
//! ejection, P2C, retry elsewhere) over [`Upstream`] endpoints.
//!
//! Everything is concrete types built by inference: the endpoint is a `tower::service_fn`
//! over [`Upstream::send`], so no future is boxed on the request path.
//!
//! Per client connection the handler keeps its own clone of the stack in a `RefCell` (hyper's
//! HTTP/1 server calls the service for one request at a time per connection) and calls
//! `poll_ready` then `call` synchronously; no per-request clone of the stack.
//!
//! The breaker and the balancer are shared by all workers (one view of the fleet's health);
//! the fallback layer is built per worker, so its per-call reference count stays on one core.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use rampart::balance::{Balance, BalancePolicy, Picker};
use rampart::breaker::{BreakerHandle, CircuitBreakerLayer, Policy, SlidingWindow};
use rampart::fallback::{FallbackBody, FallbackLayer};
use rampart::health::{
    BoxError, CheckerConfig, Classify, ConfigError, HttpClassifier, HttpProbe, Outcome,
    is_never_reached,
};
use rampart_gateway::server::Handler;
use tower::{Layer, Service, ServiceExt};

use super::strip_hop_by_hop;
use super::upstream::{UpBody, Upstream, UpstreamError, clone_request};

/// The balancer's policy for proxied HTTP requests.
///
/// - Replay: requests without a body are copied for a retry (see [`clone_request`]).
/// - Retry elsewhere: a request that never reached its endpoint always; one whose exchange
///   failed, or that got a 502/503/504, only when its method is idempotent (nginx's
///   `proxy_next_upstream error timeout http_502 http_503`).
/// - Health: 5xx and transport errors are failures ([`HttpClassifier`]).
/// - Unlike the crate's `HttpPolicy`, it records no `ServedBy` response extension (an
///   allocation per request that a gateway does not need).
#[derive(Debug, Clone, Default)]
pub struct GatewayPolicy {
    classify: HttpClassifier,
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl BalancePolicy<Request<UpBody>, Response<Incoming>> for GatewayPolicy {
    fn clone_request(&self, req: &Request<UpBody>) -> Option<Request<UpBody>> {
        clone_request(req)
    }

    fn retry_error(&self, req: &Request<UpBody>, error: &BoxError) -> bool {
        is_never_reached(&**error) || idempotent(req.method())
    }

    fn retry_response(&self, req: &Request<UpBody>, response: &Response<Incoming>) -> bool {
        matches!(
            response.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) && idempotent(req.method())
    }

    fn classify(&self, result: Result<&Response<Incoming>, &BoxError>) -> Outcome {
        self.classify.classify(result)
    }
}

/// An endpoint service over one upstream: a `service_fn`, so its future is the concrete
/// `async` block of [`Upstream::send`] (no boxing). `Copy` state: cloning it per request
/// touches no reference count.
pub fn endpoint(
    upstream: Upstream,
) -> impl Service<
    Request<UpBody>,
    Response = Response<Incoming>,
    Error = UpstreamError,
    Future = impl Future<Output = Result<Response<Incoming>, UpstreamError>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    // `send` takes the `Copy` handle by value: the closure returns its future directly,
    // with no wrapping `async` block holding the request a second time.
    tower::service_fn(move |req: Request<UpBody>| upstream.send(req))
}

/// Settings of the Rampart stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The replicas.
    pub upstreams: Vec<SocketAddr>,
    /// Active checks (`GET /healthz`): rise, fall, interval, timeout.
    pub checks: CheckerConfig,
    /// Connect timeout to an upstream.
    pub connect_timeout: Duration,
    /// Retries on another endpoint per request.
    pub max_retries: u32,
    /// The apology's default `Retry-After`.
    pub retry_after: Duration,
    /// The breaker's open duration.
    pub open_duration: Duration,
}

/// The shared part of the stack: the balancer (with its checkers) and the breaker.
///
/// Build it inside the runtime that should run the active checks.
pub fn shared_parts(
    config: &StackConfig,
) -> Result<
    (
        impl Service<Request<UpBody>, Response = Response<Incoming>, Error = BoxError, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
        + use<>,
        BreakerHandle,
    ),
    ConfigError,
> {
    let mut builder = Balance::builder()
        .policy(GatewayPolicy::default())
        .picker(Picker::PeakEwma)
        .max_retries(config.max_retries)
        .health_checks(config.checks.clone());
    for addr in &config.upstreams {
        let probe = HttpProbe::builder(format!("http://{addr}").parse().map_err(|_| {
            ConfigError::new("upstream", addr.to_string(), "not a valid authority")
        })?)
        .path("/healthz")
        .timeout(config.checks.timeout())
        .build()?;
        builder = builder.endpoint_with_probe(
            addr.to_string(),
            endpoint(Upstream::new(*addr, config.connect_timeout)),
            probe,
        );
    }
    let balance = builder.build()?;
    let policy = Policy::builder()
        .name("upstreams")
        .sliding_window(SlidingWindow::count(100))
        .minimum_calls(20)
        .open_duration(config.open_duration)
        .build()?;
    Ok((balance, BreakerHandle::new(policy)))
}

/// Wraps the shared balancer and breaker in this worker's fallback layer.
pub fn worker_stack<B>(
    balance: B,
    breaker: &BreakerHandle,
    retry_after: Duration,
) -> impl Service<
    Request<UpBody>,
    Response = Response<FallbackBody<Incoming>>,
    Error = Infallible,
    Future: Send,
>
+ Clone
+ Send
+ 'static
+ use<B>
where
    B: Service<Request<UpBody>, Response = Response<Incoming>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    B::Future: Send,
{
    let breaker =
        CircuitBreakerLayer::from_handle(breaker.clone()).classifier(HttpClassifier::new());
    FallbackLayer::new()
        .retry_after(retry_after)
        .layer(breaker.layer(balance))
}

/// The handler over a Rampart stack: one clone of the stack per client connection.
#[derive(Debug, Clone)]
pub struct Stacked<S> {
    svc: RefCell<S>,
}

impl<S> Stacked<S> {
    /// A handler over `svc`.
    pub fn new(svc: S) -> Self {
        Self {
            svc: RefCell::new(svc),
        }
    }
}

pin_project! {
    // The response future of `Stacked`: the stack's own future, polled in place (an `async`
    // block awaiting it would hold it twice, and hyper moves this future by value), then
    // hop-by-hop headers removed from the response.
    //
    // `Now`: the stack was ready, its future. `Later`: the stack was not ready at once, a
    // clone that waits for readiness (boxed: this path is not expected, and it would
    // otherwise double every request's future).
    #[project = StackedFutureProj]
    enum StackedFuture<F, L> {
        Now {
            #[pin]
            fut: F,
        },
        Later {
            fut: Pin<Box<L>>,
        },
    }
}

impl<F, L, B> Future for StackedFuture<F, L>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
    L: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Response<B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<B>> {
        let result = match self.project() {
            StackedFutureProj::Now { fut } => ready!(fut.poll(cx)),
            StackedFutureProj::Later { fut } => ready!(fut.as_mut().poll(cx)),
        };
        match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Poll::Ready(Response::from_parts(parts, body))
            }
            Err(never) => match never {},
        }
    }
}

impl<S> Handler for Stacked<S>
where
    S: Service<Request<UpBody>, Response = Response<FallbackBody<Incoming>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Body = FallbackBody<Incoming>;

    fn handle(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static + use<S> {
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let req = Request::from_parts(parts, UpBody::from_incoming(body));
        let mut svc = self.svc.borrow_mut();
        // Readiness is polled with a no-op waker: the fallback layer is ready whenever the
        // breaker is, and the balancer always is. Should it ever be pending, the request goes
        // to a clone that waits for readiness properly (`oneshot`), and the connection's own
        // clone is left as it was.
        let mut cx = Context::from_waker(Waker::noop());
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => StackedFuture::Now { fut: svc.call(req) },
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => StackedFuture::Later {
                fut: Box::pin(svc.clone().oneshot(req)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use http_body_util::BodyExt;

    async fn replica(body: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/", axum::routing::get(move || async move { body }))
            .route("/healthz", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    async fn dead_port() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
        // dropped here: connections to it are refused
    }

    fn config(upstreams: Vec<SocketAddr>) -> StackConfig {
        StackConfig {
            upstreams,
            checks: CheckerConfig::builder()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap(),
            connect_timeout: Duration::from_secs(1),
            max_retries: 2,
            retry_after: Duration::from_secs(7),
            open_duration: Duration::from_secs(2),
        }
    }

    fn get() -> Request<UpBody> {
        Request::get("/").body(UpBody::Empty).unwrap()
    }

    #[tokio::test]
    async fn proxies_gets_to_the_replicas() {
        let a = replica("a").await;
        let b = replica("b").await;
        let (balance, breaker) = shared_parts(&config(vec![a, b])).unwrap();
        let svc = worker_stack(balance, &breaker, Duration::from_secs(7));
        for _ in 0..6 {
            let resp = svc.clone().oneshot(get()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(body == "a" || body == "b", "{body:?}");
        }
    }

    #[tokio::test]
    async fn a_refused_replica_costs_no_error() {
        let live = replica("live").await;
        let dead = dead_port().await;
        let (balance, breaker) = shared_parts(&config(vec![dead, live, dead])).unwrap();
        let svc = worker_stack(balance, &breaker, Duration::from_secs(7));
        for _ in 0..20 {
            let resp = svc.clone().oneshot(get()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "live");
        }
    }

    #[tokio::test]
    async fn all_down_answers_the_apology_with_retry_after() {
        let (balance, breaker) =
            shared_parts(&config(vec![dead_port().await, dead_port().await])).unwrap();
        let svc = worker_stack(balance, &breaker, Duration::from_secs(7));
        let resp = svc.oneshot(get()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key(http::header::RETRY_AFTER));
        assert_eq!(resp.headers()[http::header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn only_bodiless_requests_are_replayed() {
        let mut req = get();
        req.headers_mut()
            .insert("x-test", http::HeaderValue::from_static("1"));
        let copy = clone_request(&req).unwrap();
        assert_eq!(copy.headers()["x-test"], "1");
        assert_eq!(copy.uri(), "/");
        let policy = GatewayPolicy::default();
        let post = Request::post("/").body(UpBody::Empty).unwrap();
        let err: BoxError = "reset".into();
        assert!(policy.retry_error(&req, &err));
        assert!(!policy.retry_error(&post, &err));
    }
}
