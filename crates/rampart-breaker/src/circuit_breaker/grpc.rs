//! gRPC calls judged by their final `grpc-status`, in the response head or in the trailers at
//! the end of the body: [`GrpcCircuitBreaker`].
//!
//! ```
//! use rampart_breaker::{CircuitBreakerLayer, Policy};
//! use tower::ServiceBuilder;
//!
//! let layer = CircuitBreakerLayer::grpc(Policy::default());
//! let client = ServiceBuilder::new().layer(layer).service(tower::service_fn(
//!     |_req: http::Request<()>| async { Ok::<_, std::io::Error>(http::Response::new(())) },
//! ));
//! # let _ = client;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use rampart_health::{BoxError, GrpcBody, GrpcClassifier, Outcome};
use tower_layer::Layer;
use tower_service::Service;

use super::CircuitBreaker;
use crate::{BreakerHandle, BreakerOpen, Permit};

/// A circuit breaker for gRPC calls: a [`CircuitBreaker`] that judges each call by its final
/// `grpc-status`. Built by [`CircuitBreakerLayer::grpc`] or [`GrpcCircuitBreaker::new`].
///
/// A gRPC server that fails a call after sending the response head (HTTP 200) says so in the
/// trailers at the end of the body (`grpc-status: 14`). A breaker that judged the head alone
/// would count every such call as a success. This breaker judges each call with
/// rampart-health's [`GrpcClassifier`]:
///
/// - a response head that carries the verdict (a non-200 HTTP status, or a *Trailers-Only*
///   `grpc-status`) and transport errors are recorded at once;
/// - otherwise the response body is wrapped in a [`GrpcBody`] that holds the call's permit and
///   records the outcome when the trailers arrive (their `grpc-status`), when the body ends
///   without them (UNKNOWN: a failure) or fails (a failure); a body dropped before its end
///   returns the permit without a verdict (the caller went away: that says nothing about the
///   server).
///
/// The breaker's slow-call duration, if set, then covers the whole stream. The plain
/// [`CircuitBreaker`] keeps its own path: nothing here runs for it.
///
/// [`CircuitBreakerLayer::grpc`]: super::CircuitBreakerLayer::grpc
#[derive(Clone, Debug)]
pub struct GrpcCircuitBreaker<S> {
    breaker: CircuitBreaker<S, GrpcClassifier>,
}

impl<S> GrpcCircuitBreaker<S> {
    /// Wraps `inner` in `breaker`, with the default [`GrpcClassifier`] codes.
    pub fn new(inner: S, breaker: BreakerHandle) -> Self {
        Self::with_codes(inner, breaker, GrpcClassifier::new())
    }

    /// Wraps `inner` in `breaker`; `codes` says which gRPC codes are failures.
    pub fn with_codes(inner: S, breaker: BreakerHandle, codes: GrpcClassifier) -> Self {
        Self {
            breaker: CircuitBreaker::with_classifier(inner, breaker, codes),
        }
    }

    /// Reports not-ready while the breaker is open, as
    /// [`CircuitBreaker::not_ready_while_open`].
    pub fn not_ready_while_open(self, yes: bool) -> Self {
        Self {
            breaker: self.breaker.not_ready_while_open(yes),
        }
    }

    /// The breaker.
    pub fn handle(&self) -> &BreakerHandle {
        self.breaker.handle()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.breaker.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.breaker.get_mut()
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.breaker.into_inner()
    }
}

/// The settings that wrap services in a [`GrpcCircuitBreaker`]; from
/// [`CircuitBreakerLayer::grpc`].
///
/// [`CircuitBreakerLayer::grpc`]: super::CircuitBreakerLayer::grpc
#[derive(Debug, Clone)]
pub struct GrpcCircuitBreakerLayer {
    handle: BreakerHandle,
    codes: GrpcClassifier,
    not_ready_while_open: bool,
}

impl GrpcCircuitBreakerLayer {
    pub(super) fn new(handle: BreakerHandle) -> Self {
        Self {
            handle,
            codes: GrpcClassifier::new(),
            not_ready_while_open: false,
        }
    }

    /// Which gRPC codes are failures (default: [`GrpcClassifier::new`]).
    pub fn codes(mut self, codes: GrpcClassifier) -> Self {
        self.codes = codes;
        self
    }

    /// Reports not-ready while the breaker is open (for use behind a balancer), as
    /// [`CircuitBreaker::not_ready_while_open`].
    pub fn not_ready_while_open(mut self, yes: bool) -> Self {
        self.not_ready_while_open = yes;
        self
    }

    /// The breaker every service made by this layer shares.
    pub fn handle(&self) -> &BreakerHandle {
        &self.handle
    }
}

impl<S> Layer<S> for GrpcCircuitBreakerLayer {
    type Service = GrpcCircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcCircuitBreaker::with_codes(inner, self.handle.clone(), self.codes)
            .not_ready_while_open(self.not_ready_while_open)
    }
}

/// Records a gRPC call's final outcome into the breaker (the callback of the [`GrpcBody`]
/// returned by a [`GrpcCircuitBreaker`]).
pub type RecordOutcome = Box<dyn FnOnce(Outcome) + Send + Sync>;

impl<S, B, Req> Service<Req> for GrpcCircuitBreaker<S>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<GrpcBody<B, RecordOutcome>>;
    type Error = BoxError;
    type Future = GrpcResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.breaker.poll_ready_inner(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let b = &mut self.breaker;
        let kind = match b.handle.try_acquire() {
            Ok(permit) => Kind::Called {
                future: b.inner.call(req),
                permit: Some(permit),
                codes: b.classify,
            },
            Err(open) => Kind::Rejected { error: Some(open) },
        };
        GrpcResponseFuture { kind }
    }
}

pin_project! {
    /// The future of a call through a gRPC [`CircuitBreaker`]: the response, its body wrapped
    /// so that the call's final status is recorded, or an immediate [`BreakerOpen`] error.
    pub struct GrpcResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
            codes: GrpcClassifier,
        },
        Rejected {
            error: Option<BreakerOpen>,
        },
    }
}

impl<F> fmt::Debug for GrpcResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("GrpcResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> Future for GrpcResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<GrpcBody<B, RecordOutcome>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                codes,
            } => {
                let result = ready!(future.poll(cx));
                let Some(permit) = permit.take() else {
                    return Poll::Ready(Err(
                        "circuit breaker response future polled after completion".into(),
                    ));
                };
                let response = match result {
                    Ok(response) => response,
                    Err(e) => {
                        permit.record(Outcome::Failure);
                        return Poll::Ready(Err(e.into()));
                    }
                };
                let record: RecordOutcome = match codes.classify_head(&response) {
                    Some(outcome) => {
                        permit.record(outcome);
                        // Judged already: the body reports to nobody (a zero-sized closure,
                        // so the box does not allocate).
                        Box::new(|_| {})
                    }
                    None => Box::new(move |outcome| permit.record(outcome)),
                };
                let codes = *codes;
                Poll::Ready(Ok(response.map(|body| codes.wrap_body(body, record))))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(match error.take() {
                Some(e) => e.into(),
                None => "circuit breaker response future polled after completion".into(),
            })),
        }
    }
}
