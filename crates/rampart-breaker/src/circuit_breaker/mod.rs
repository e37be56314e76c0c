//! [`CircuitBreaker`]: the tower middleware.
//!
//! Each call asks the shared breaker for a [`Permit`](crate::Permit); a rejected call returns
//! [`BreakerOpen`] at once without touching the inner service, an admitted one is classified
//! by a [`Classify`] when it completes and recorded.
//!
//! # Readiness
//!
//! By default `poll_ready` follows the inner service and an open breaker fails in `call`
//! (fail fast): the caller gets an immediate, typed error that says when to retry, which is
//! what a request handler wants.
//!
//! With [`not_ready_while_open`](CircuitBreaker::not_ready_while_open) the service instead
//! reports *not ready* while the breaker is open, and wakes the task when the open period ends
//! (a tokio timer stored in the service; a forced-open breaker is re-checked every second).
//! That is what a balancer wants: tower's `p2c::Balance` skips endpoints that are not ready,
//! so traffic flows to healthy replicas instead of failing. The trade-off: a caller that
//! drives this service alone (no balancer, no timeout) *waits* for the whole open duration
//! instead of failing fast, and a tower `Buffer` in front queues requests meanwhile. A call
//! made anyway (tower allows `call` only after ready, but the state can change in between)
//! still fails fast.
//!
//! In both modes a half-open breaker whose trial permits are all taken rejects in `call`:
//! permits are taken in `call`, never reserved by `poll_ready`, so an idle ready service never
//! sits on one of the few half-open permits.
//!
//! ```
//! use rampart_breaker::{CircuitBreakerLayer, Policy, SlidingWindow, BreakerOpen};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let policy = Policy::builder()
//!     .sliding_window(SlidingWindow::count(10))
//!     .minimum_calls(2)
//!     .build()
//!     .unwrap();
//! let layer = CircuitBreakerLayer::new(policy);
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer.clone())
//!     .service(service_fn(|fail: bool| async move {
//!         if fail { Err(std::io::Error::other("down")) } else { Ok("ok") }
//!     }));
//! for _ in 0..2 {
//!     let _ = svc.ready().await.unwrap().call(true).await;
//! }
//! let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
//! let open = BreakerOpen::find(&*err).unwrap();
//! assert!(open.retry_after().is_some());
//! assert!(layer.handle().state().is_open());
//! # }
//! ```

mod error;
mod future;
mod grpc;
mod layer;

use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rampart_health::{BoxError, Classify, FnClassify};
use tower_service::Service;

pub use error::BreakerOpen;
pub use future::ResponseFuture;
pub use grpc::{GrpcCircuitBreaker, GrpcCircuitBreakerLayer, GrpcResponseFuture, RecordOutcome};
pub use layer::CircuitBreakerLayer;

use crate::BreakerHandle;
use crate::machine::Rejecting;

/// How a forced-open breaker in not-ready mode is re-checked (there is no timer to wait for).
const FORCED_OPEN_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    FailFast,
    NotReadyWhileOpen,
}

/// A circuit breaker around a service. See the [module docs](self).
pub struct CircuitBreaker<S, C = FnClassify> {
    inner: S,
    handle: BreakerHandle,
    classify: C,
    readiness: Readiness,
    /// Not-ready mode only: the timer that wakes us when the open period ends. Allocated
    /// only while open; never cloned.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> CircuitBreaker<S> {
    /// Wraps `inner` in `breaker`; every `Err` is a failure, every `Ok` a success.
    pub fn new(inner: S, breaker: BreakerHandle) -> Self {
        Self::with_classifier(inner, breaker, FnClassify::errors_are_failures())
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Wraps `inner` in `breaker`, classifying results with `classify` (for HTTP:
    /// [`HttpClassifier`](rampart_health::HttpClassifier)).
    pub fn with_classifier(inner: S, breaker: BreakerHandle, classify: C) -> Self {
        Self {
            inner,
            handle: breaker,
            classify,
            readiness: Readiness::FailFast,
            sleep: None,
        }
    }

    /// Reports not-ready while the breaker is open (and wakes the task when the open period
    /// ends) instead of failing calls fast. For use behind a balancer; see the
    /// [module docs](self#readiness) for the trade-off. The timer is a tokio `Sleep`, so
    /// `poll_ready` must then run inside a tokio runtime with the time driver enabled.
    pub fn not_ready_while_open(mut self, yes: bool) -> Self {
        self.readiness = if yes {
            Readiness::NotReadyWhileOpen
        } else {
            Readiness::FailFast
        };
        self
    }

    /// The breaker.
    pub fn handle(&self) -> &BreakerHandle {
        &self.handle
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Not-ready mode: `Pending` (with a timer armed) while the breaker rejects on a timer.
    #[inline(never)]
    fn poll_breaker(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            // Wake up when the open period ends (rounded up to whole ms by the breaker).
            let wait = match self.handle.rejecting() {
                Rejecting::No => {
                    self.sleep = None;
                    return Poll::Ready(());
                }
                Rejecting::For(left) => left,
                Rejecting::UntilReleased => FORCED_OPEN_RECHECK,
            }
            .max(Duration::from_millis(1));
            let deadline = tokio::time::Instant::now() + wait;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Elapsed: check the breaker again (re-arming the timer if it is still open).
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// `poll_ready` of every classifier's service.
    #[inline]
    pub(super) fn poll_ready_inner<Req>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        if self.readiness == Readiness::NotReadyWhileOpen && self.poll_breaker(cx).is_pending() {
            return Poll::Pending;
        }
        // Fail-fast mode follows the inner service even while open: reporting ready with an
        // unready inner service would break the contract of `call`, and an open breaker's
        // `call` never reaches the inner service anyway.
        self.inner.poll_ready(cx).map_err(Into::into)
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    /// A clone shares the breaker but not readiness: its timer starts empty.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            handle: self.handle.clone(),
            classify: self.classify.clone(),
            readiness: self.readiness,
            sleep: None,
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("handle", &self.handle)
            .field("classify", &self.classify)
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_ready_inner(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.handle.try_acquire() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classify.clone())
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
