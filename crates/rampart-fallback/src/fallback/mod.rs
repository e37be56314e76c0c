//! The apology: the last line of defense for an HTTP service.
//!
//! [`Fallback`] wraps a `Service<http::Request<_>, Response = http::Response<_>>` whose error
//! converts into a [`BoxError`] and never fails itself (its error type is [`Infallible`]), so
//! it sits directly in an axum `Router`. It serves the apology when:
//!
//! - the inner service returns an `Err` (breaker open, no healthy endpoint or site, timeout,
//!   connection error; also when its `poll_ready` fails), or
//! - the response is classified a failure by its [`Classify`]
//!   (default [`FailureStatuses`](crate::FailureStatuses): 500, 502, 503, 504). A panic
//!   turned into a `500` by tower-http's `CatchPanicLayer` is one of these: put the
//!   `CatchPanicLayer` *inside* the `FallbackLayer`.
//!
//! The apology (built-in [`ApologyPage`], or any [`Apologize`] handler):
//!
//! - status `503` (configurable on the page);
//! - `Retry-After` in whole seconds: the hint found anywhere in the error chain
//!   ([`rampart_health::retry_after`], e.g. a breaker's time to its next probe, rounded up:
//!   7.2 s gives `8`), else the failed upstream response's own `Retry-After`, else the
//!   configured default (5 s);
//! - `Cache-Control: no-store`, and the request id (`x-request-id` by default) echoed;
//! - a body chosen by `Accept` with q-values ([`negotiate()`](crate::negotiate())): the HTML page,
//!   RFC 9457 `application/problem+json` (also for `application/json`; `instance` is the
//!   request path), or `text/plain`. `HEAD` gets the headers only.
//!
//! No error text, backend address or stack reaches the client: the handler never sees the
//! error, and the layer logs it with `tracing` (target `rampart_fallback`): one `WARN` event
//! per second per layer (with `more_since_last_warning`, the count logged at `DEBUG` since the
//! previous one), the others at `DEBUG`. During an outage every request is an apology; a log
//! line each would cost more than the apology itself.
//! The apology never does I/O or contacts a backend; the built-in page is shared bytes
//! prepared at build time. The apology carries an [`Apologized`] response extension, and an
//! outer `Fallback` lets such a response through as it is (nested layers apologise once).
//! [`FallbackStats`] counts apologies (and the `metrics` feature
//! exports `rampart_fallback_apologies_total{layer, trigger}`, `layer` being the
//! [`name`](FallbackLayer::name) of the layer).
//!
//! # Example: an axum router
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use rampart_fallback::{ApologyPage, Fallback, FallbackLayer};
//! use tower_http::catch_panic::CatchPanicLayer;
//!
//! # fn main() -> Result<(), rampart_health::ConfigError> {
//! let page = ApologyPage::builder()
//!     .detail("The shop is taking a short break.")
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .route("/boom", get(|| async { http::StatusCode::BAD_GATEWAY }))
//!     // Outermost: the apology. Inside it, panics become 500s, which it then replaces.
//!     .layer(CatchPanicLayer::new())
//!     .layer(FallbackLayer::with_page(page).retry_after(Duration::from_secs(10)));
//!
//! // A fallible tower service (here: one that always fails) behind a route.
//! let flaky = tower::service_fn(|_req: axum::extract::Request| async {
//!     Err::<http::Response<axum::body::Body>, std::io::Error>(std::io::Error::other("refused"))
//! });
//! let app = app.route_service("/catalog", Fallback::new(flaky));
//! # let _ = app;
//! # Ok(()) }
//! ```

mod future;
mod handler;
mod layer;
mod page;

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Method, Request, Response};
use rampart_health::{BoxError, Classify};
use tower_layer::Layer;
use tower_service::Service;

pub use self::future::ResponseFuture;
use self::handler::Captured;
pub use self::handler::{Apologize, ApologyRequest, Trigger};
pub use self::layer::FallbackLayer;
pub use self::page::{ApologyPage, ApologyPageBuilder};
use crate::body::{ApologyBody, FallbackBody};

/// Everything a [`Fallback`] service shares with its futures (one reference count per call).
pub(crate) struct Shared<H, C> {
    pub(crate) handler: Arc<H>,
    pub(crate) classify: C,
    pub(crate) retry_after: Option<u64>,
    /// The default `Retry-After`, encoded once.
    pub(crate) retry_after_value: Option<HeaderValue>,
    pub(crate) request_id: Option<HeaderName>,
    pub(crate) stats: FallbackStats,
    pub(crate) log_gate: LogGate,
}

/// Limits the `WARN` events about apologies to one per second per layer; the others are
/// `DEBUG` events. During an outage every request is an apology, and a log line per request
/// (formatting the error chain, writing it out) would cost more than the apology itself.
#[derive(Debug)]
pub(crate) struct LogGate {
    base: tokio::time::Instant,
    /// Whole seconds since `base` of the last `WARN`, plus one (0: never).
    last: AtomicU64,
    /// Apologies logged at `DEBUG` since the last `WARN`.
    suppressed: AtomicU64,
}

impl Default for LogGate {
    fn default() -> Self {
        Self {
            base: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl LogGate {
    /// `Some(n)`: log this one at `WARN`, saying `n` apologies were logged at `DEBUG` since
    /// the last `WARN`. `None`: log it at `DEBUG`. Costs nothing when `WARN` is disabled.
    pub(crate) fn warn(&self) -> Option<u64> {
        if !tracing::enabled!(target: "rampart_fallback", tracing::Level::WARN) {
            return None;
        }
        let now = self.base.elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != now
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Serves the apology instead of the inner service's errors and failed responses.
///
/// Build it with [`FallbackLayer`] or [`Fallback::new`]. See the [module docs](self).
pub struct Fallback<S, H = ApologyPage, C = crate::FailureStatuses> {
    inner: S,
    shared: Arc<Shared<H, C>>,
    /// The inner service's `poll_ready` failed: the next call answers with the apology.
    ready_error: Option<BoxError>,
}

impl<S: Clone, H, C> Clone for Fallback<S, H, C> {
    /// A clone does not copy readiness (nor a pending `poll_ready` error).
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            ready_error: None,
        }
    }
}

impl<S: fmt::Debug, H, C: fmt::Debug> fmt::Debug for Fallback<S, H, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("handler", &std::any::type_name::<H>())
            .field("classify", &self.shared.classify)
            .finish()
    }
}

impl<S> Fallback<S> {
    /// Wraps `inner` with the built-in page and default settings
    /// (the same as `FallbackLayer::new().layer(inner)`).
    pub fn new(inner: S) -> Self {
        FallbackLayer::new().layer(inner)
    }
}

impl<S, H, C> Fallback<S, H, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<H, C>>) -> Self {
        Self {
            inner,
            shared,
            ready_error: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The counters shared with the layer that built this service.
    pub fn stats(&self) -> &FallbackStats {
        &self.shared.stats
    }
}

impl<S, H, C, ReqB, ResB> Service<Request<ReqB>> for Fallback<S, H, C>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    H: Apologize,
    C: Classify<Response<ResB>, BoxError>,
    ResB: http_body::Body<Data = Bytes>,
{
    type Response = Response<FallbackBody<ResB>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, H, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready_error.is_some() {
            // Ready although the inner service is not: its `poll_ready` failed, and the call
            // that follows answers with the apology without touching it.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                // Ready although the inner service is not (see above): we cannot return the
                // error (`Infallible`), so the next call turns it into the apology.
                self.ready_error = Some(e.into());
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let captured = Captured::from_request(&req, self.shared.request_id.as_ref());
        match self.ready_error.take() {
            Some(error) => ResponseFuture::failed(error, captured, Arc::clone(&self.shared)),
            None => ResponseFuture::new(self.inner.call(req), captured, Arc::clone(&self.shared)),
        }
    }
}

/// Builds the apology and logs why.
pub(crate) fn apologize<H: Apologize, C, B>(
    shared: &Shared<H, C>,
    captured: Captured,
    trigger: Trigger,
    retry_after: Option<u64>,
) -> Response<FallbackBody<B>> {
    shared.stats.record(trigger);
    let head = captured.method == Method::HEAD;
    let request_id = captured.request_id.clone();
    let request = ApologyRequest {
        captured,
        trigger,
        retry_after,
    };
    let mut resp = shared.handler.apologize(&request);
    let h = resp.headers_mut();
    // The built-in page's prebuilt headers already say it; a lookup is cheaper than a
    // replacing insert.
    if h.get(CACHE_CONTROL).is_none_or(|v| v != "no-store") {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(secs) = retry_after
        && !h.contains_key(RETRY_AFTER)
    {
        let value = match &shared.retry_after_value {
            Some(v) if shared.retry_after == Some(secs) => v.clone(),
            _ => retry_after_value(secs),
        };
        h.insert(RETRY_AFTER, value);
    }
    if let (Some(name), Some(id)) = (&shared.request_id, request_id) {
        h.insert(name.clone(), id);
    }
    resp.extensions_mut().insert(Apologized { trigger });
    if head {
        // HEAD: the same headers (Content-Length included), no body.
        *resp.body_mut() = ApologyBody::empty();
    }
    resp.map(FallbackBody::apology)
}

/// `Retry-After` values up to two minutes, as static strings (a breaker's hint changes every
/// second, so encoding it would allocate on every apology).
static SECONDS: [&str; 121] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32",
    "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47", "48",
    "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61", "62", "63", "64",
    "65", "66", "67", "68", "69", "70", "71", "72", "73", "74", "75", "76", "77", "78", "79", "80",
    "81", "82", "83", "84", "85", "86", "87", "88", "89", "90", "91", "92", "93", "94", "95", "96",
    "97", "98", "99", "100", "101", "102", "103", "104", "105", "106", "107", "108", "109", "110",
    "111", "112", "113", "114", "115", "116", "117", "118", "119", "120",
];

fn retry_after_value(secs: u64) -> HeaderValue {
    match usize::try_from(secs).ok().and_then(|i| SECONDS.get(i)) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(secs),
    }
}

/// Response extension that marks an apology (and says why it was served).
///
/// An outer [`Fallback`] passes a response carrying it through unchanged, so nested fallback
/// layers (a route's own and the router's) apologise once. Other layers can read it too, for
/// example to count apologies by route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Apologized {
    /// Why the apology was served.
    pub trigger: Trigger,
}

/// Displays an error and its `source()` chain as `a: b: c`.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        let mut depth = 0;
        while let Some(e) = next {
            write!(f, ": {e}")?;
            depth += 1;
            if depth > 16 {
                break;
            }
            next = e.source();
        }
        Ok(())
    }
}

/// Counters of a [`FallbackLayer`] and its services (cheap to clone: shared).
///
/// With the `metrics` feature the same counts go to `rampart_fallback_apologies_total`,
/// labelled `layer` (the layer's [`name`](FallbackLayer::name), default `fallback`) and
/// `trigger` (`error`, `never_reached` or `status`). The metric handles are resolved from the
/// recorder on the first apology, not when the layer is built: a recorder installed after the
/// stack was built but before the first apology still receives every count.
#[derive(Debug, Clone)]
pub struct FallbackStats {
    inner: Arc<Counters>,
}

impl Default for FallbackStats {
    fn default() -> Self {
        Self::named(Arc::from(DEFAULT_NAME))
    }
}

/// The name of a layer that was not given one.
pub(crate) const DEFAULT_NAME: &str = "fallback";

#[derive(Debug)]
struct Counters {
    errors: AtomicU64,
    never_reached: AtomicU64,
    statuses: AtomicU64,
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    handles: std::sync::OnceLock<Handles>,
}

/// The metric handles of one layer, one per trigger.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Handles {
    error: metrics::Counter,
    never_reached: metrics::Counter,
    status: metrics::Counter,
}

#[cfg(feature = "metrics")]
impl Handles {
    fn register(name: &Arc<str>) -> Self {
        let apologies = |trigger: &'static str| {
            metrics::counter!(
                "rampart_fallback_apologies_total",
                "layer" => Arc::clone(name),
                "trigger" => trigger
            )
        };
        Self {
            error: apologies("error"),
            never_reached: apologies("never_reached"),
            status: apologies("status"),
        }
    }
}

impl FallbackStats {
    pub(crate) fn named(name: Arc<str>) -> Self {
        Self {
            inner: Arc::new(Counters {
                errors: AtomicU64::new(0),
                never_reached: AtomicU64::new(0),
                statuses: AtomicU64::new(0),
                name,
                #[cfg(feature = "metrics")]
                handles: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The name of the layer these counters belong to (the `layer` label of its series).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn record(&self, trigger: Trigger) {
        let c = match trigger {
            Trigger::Error {
                never_reached: false,
            } => &self.inner.errors,
            Trigger::Error {
                never_reached: true,
            } => &self.inner.never_reached,
            Trigger::Status(_) => &self.inner.statuses,
        };
        c.fetch_add(1, Ordering::Relaxed);
        // Handles resolved once per layer: no label allocation per apology.
        #[cfg(feature = "metrics")]
        {
            let h = self
                .inner
                .handles
                .get_or_init(|| Handles::register(&self.inner.name));
            let counter = match trigger {
                Trigger::Error {
                    never_reached: false,
                } => &h.error,
                Trigger::Error {
                    never_reached: true,
                } => &h.never_reached,
                Trigger::Status(_) => &h.status,
            };
            counter.increment(1);
        }
    }

    /// A point-in-time copy of the counters.
    pub fn snapshot(&self) -> FallbackSnapshot {
        FallbackSnapshot {
            errors: self.inner.errors.load(Ordering::Relaxed),
            never_reached: self.inner.never_reached.load(Ordering::Relaxed),
            statuses: self.inner.statuses.load(Ordering::Relaxed),
        }
    }
}

/// How many apologies were served, by trigger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FallbackSnapshot {
    /// For errors that reached a backend (or did not say).
    pub errors: u64,
    /// For errors marked [`rampart_health::NeverReached`].
    pub never_reached: u64,
    /// For responses classified as failures.
    pub statuses: u64,
}

impl FallbackSnapshot {
    /// All apologies.
    pub fn total(&self) -> u64 {
        self.errors + self.never_reached + self.statuses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        for secs in [0u64, 1, 8, 99, 120, 121, 86_400] {
            assert_eq!(retry_after_value(secs), HeaderValue::from(secs), "{secs}");
        }
    }
}
