//! Request metrics as a plain tower layer: `storefront_http_requests_total` (by route and
//! status) and `storefront_http_request_duration_seconds` (by route).
//!
//! The metric handles of the known routes and of the statuses the shop answers with are
//! looked up in the recorder once (on first use) and kept, so a request costs two clock
//! reads, a short table scan and two atomic updates: no label strings are built, no
//! registry is searched and nothing is boxed. Other routes and statuses take the general
//! path (labels built per request), with the same metric names and labels.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Request, Response, StatusCode};
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

const REQUESTS: &str = "storefront_http_requests_total";
const DURATION: &str = "storefront_http_request_duration_seconds";

/// The statuses the shop answers with, each with a cached counter per route.
const STATUSES: [StatusCode; 10] = [
    StatusCode::OK,
    StatusCode::ACCEPTED,
    StatusCode::SEE_OTHER,
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::NOT_FOUND,
    StatusCode::UNPROCESSABLE_ENTITY,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::METHOD_NOT_ALLOWED,
];

/// One route's metric handles, created on first use.
struct RouteMetrics {
    route: &'static str,
    duration: OnceLock<Histogram>,
    statuses: [OnceLock<Counter>; STATUSES.len()],
}

impl RouteMetrics {
    fn new(route: &'static str) -> Self {
        Self {
            route,
            duration: OnceLock::new(),
            statuses: Default::default(),
        }
    }

    fn record(&self, status: StatusCode, secs: f64) {
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.statuses[i]
                .get_or_init(|| {
                    metrics::counter!(REQUESTS, "route" => self.route, "status" => STATUSES[i].as_str().to_owned())
                })
                .increment(1),
            None => metrics::counter!(REQUESTS, "route" => self.route, "status" => status.as_str().to_owned())
                .increment(1),
        }
        self.duration
            .get_or_init(|| metrics::histogram!(DURATION, "route" => self.route))
            .record(secs);
    }
}

/// Records the request metrics of every request through the wrapped service.
#[derive(Clone)]
pub struct RequestMetricsLayer {
    routes: Arc<[RouteMetrics]>,
}

impl std::fmt::Debug for RequestMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetricsLayer")
            .field(
                "routes",
                &self.routes.iter().map(|r| r.route).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RequestMetricsLayer {
    /// Metrics for requests to `routes` (axum route patterns, as `MatchedPath` reports them)
    /// kept in cached handles; requests without a matched route count as `unmatched`.
    pub fn new(routes: &[&'static str]) -> Self {
        Self {
            routes: routes
                .iter()
                .copied()
                .chain(["unmatched"])
                .map(RouteMetrics::new)
                .collect(),
        }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            routes: self.routes.clone(),
        }
    }
}

/// The service of [`RequestMetricsLayer`].
#[derive(Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    routes: Arc<[RouteMetrics]>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for RequestMetrics<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Which handles a request's metrics go to.
enum Route {
    Known(Arc<[RouteMetrics]>, usize),
    Other(String),
}

impl<S, B, RB> Service<Request<B>> for RequestMetrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        let route = match self.routes.iter().position(|r| r.route == path) {
            Some(i) => Route::Known(self.routes.clone(), i),
            None => Route::Other(path.to_owned()),
        };
        ResponseFuture {
            inner: self.inner.call(req),
            route: Some(route),
            started: Instant::now(),
        }
    }
}

pin_project! {
    /// The future of [`RequestMetrics`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        route: Option<Route>,
        started: Instant,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let (Ok(resp), Some(route)) = (&out, this.route.take()) {
            let secs = this.started.elapsed().as_secs_f64();
            match route {
                Route::Known(routes, i) => routes[i].record(resp.status(), secs),
                Route::Other(path) => {
                    metrics::counter!(REQUESTS, "route" => path.clone(), "status" => resp.status().as_str().to_owned())
                        .increment(1);
                    metrics::histogram!(DURATION, "route" => path).record(secs);
                }
            }
        }
        Poll::Ready(out)
    }
}
