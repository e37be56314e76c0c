//! Request observation as one plain tower layer: the request metrics
//! (`storefront_http_requests_total` by route and status,
//! `storefront_http_request_duration_seconds` by route) and the request's trace.
//!
//! The metric handles of the known routes and of the statuses the shop answers with are
//! looked up in the recorder once (on first use) and kept, so a request costs two clock
//! reads, a short table scan and two atomic updates: no label strings are built, no
//! registry is searched and nothing is boxed. Other routes and statuses take the general
//! path (labels built per request), with the same metric names and labels.
//!
//! The trace is what tower-http's `TraceLayer::new_for_http()` records, with its targets, so
//! the same `RUST_LOG` directives select it: a `request` span at `DEBUG` (`method`, `uri`,
//! `version`), `started processing request` and `finished processing request` (`latency`,
//! `status`) at `DEBUG`, and `response failed` (`classification`, `latency`) at `ERROR` for a
//! `5xx`. The span is made only when a subscriber wants it, and the response body is not
//! wrapped (so, unlike tower-http's layer, it does not report a body that fails while
//! streaming): with the shop's default filter (`warn`) a healthy request costs a few level
//! checks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use http::{Request, Response, StatusCode};
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Span;

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

/// Records the request metrics (cached handles per route and status) and the trace (what
/// tower-http's `TraceLayer::new_for_http()` records, the span made only when a subscriber
/// wants it) of every request through the wrapped service.
#[derive(Clone)]
pub struct ObserveLayer {
    routes: Arc<[RouteMetrics]>,
}

impl std::fmt::Debug for ObserveLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserveLayer")
            .field(
                "routes",
                &self.routes.iter().map(|r| r.route).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ObserveLayer {
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

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            routes: self.routes.clone(),
        }
    }
}

/// The service of [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    routes: Arc<[RouteMetrics]>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Observe<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observe")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Which handles a request's metrics go to.
enum Route {
    Known(Arc<[RouteMetrics]>, usize),
    Other(String),
}

impl<S, B, RB> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: std::fmt::Display,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let span = tracing::debug_span!(
            target: "tower_http::trace::make_span",
            "request",
            method = %req.method(),
            uri = %req.uri(),
            version = ?req.version(),
        );
        let path = req
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        let route = match self.routes.iter().position(|r| r.route == path) {
            Some(i) => Route::Known(self.routes.clone(), i),
            None => Route::Other(path.to_owned()),
        };
        let inner = {
            let _entered = span.enter();
            tracing::debug!(
                target: "tower_http::trace::on_request",
                "started processing request"
            );
            self.inner.call(req)
        };
        ResponseFuture {
            inner,
            route: Some(route),
            started,
            span,
        }
    }
}

pin_project! {
    /// The future of [`Observe`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        route: Option<Route>,
        started: Instant,
        span: Span,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: std::fmt::Display,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let out = std::task::ready!(this.inner.poll(cx));
        let Some(route) = this.route.take() else {
            // Polled again after its answer: nothing more to record.
            return Poll::Ready(out);
        };
        let latency = this.started.elapsed();
        let resp = match &out {
            Ok(resp) => resp,
            Err(e) => {
                tracing::error!(
                    target: "tower_http::trace::on_failure",
                    classification = %format_args!("Error: {e}"),
                    latency = %Millis(latency),
                    "response failed"
                );
                return Poll::Ready(out);
            }
        };
        let status = resp.status();
        tracing::debug!(
            target: "tower_http::trace::on_response",
            latency = %Millis(latency),
            status = i32::from(status.as_u16()),
            "finished processing request"
        );
        if status.is_server_error() {
            tracing::error!(
                target: "tower_http::trace::on_failure",
                classification = %format_args!("Status code: {status}"),
                latency = %Millis(latency),
                "response failed"
            );
        }
        let secs = latency.as_secs_f64();
        match route {
            Route::Known(routes, i) => routes[i].record(status, secs),
            Route::Other(path) => {
                metrics::counter!(REQUESTS, "route" => path.clone(), "status" => status.as_str().to_owned())
                    .increment(1);
                metrics::histogram!(DURATION, "route" => path).record(secs);
            }
        }
        Poll::Ready(out)
    }
}

/// A latency as tower-http's trace shows it: whole milliseconds.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}
