//! [`DegradeLayer`]: [`Degrade`](super::Degrade) as tower middleware.
//!
//! ```
//! use rampart_fallback::{Degrade, DegradeReason, Degraded};
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let recs = Degrade::new("recommendations");
//! let inner = tower::service_fn(|_: ()| async { Err::<Vec<u32>, _>(std::io::Error::other("down")) });
//! let mut svc = tower::ServiceBuilder::new()
//!     .layer(recs.layer(|_reason: DegradeReason| Vec::new()))
//!     .service(inner);
//! let out: Degraded<Vec<u32>> = svc.ready().await.unwrap().call(()).await.unwrap();
//! assert_eq!(out.reason, Some(DegradeReason::Failed));
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use rampart_health::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use super::future::DegradeFuture;
use super::strategy::OrWith;
use super::{Degrade, DegradeReason, Degraded};

/// Wraps a service so that its errors (and calls past the deadline) become
/// `fallback(reason)`; the service then never fails.
#[derive(Clone)]
pub struct DegradeLayer<G> {
    degrade: Degrade,
    fallback: G,
}

impl<G> fmt::Debug for DegradeLayer<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DegradeLayer")
            .field("degrade", &self.degrade)
            .finish_non_exhaustive()
    }
}

impl<G> DegradeLayer<G> {
    /// Degrades with `degrade`'s deadline and counters, answering `fallback(reason)`.
    pub fn new(degrade: Degrade, fallback: G) -> Self {
        Self { degrade, fallback }
    }
}

impl<S, G: Clone> Layer<S> for DegradeLayer<G> {
    type Service = DegradeService<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        DegradeService::new(inner, self.degrade.clone(), self.fallback.clone())
    }
}

/// The service of a [`DegradeLayer`].
pub struct DegradeService<S, G> {
    inner: S,
    degrade: Degrade,
    fallback: G,
    /// The inner service's `poll_ready` failed: the next call degrades without calling it.
    ready_error: Option<BoxError>,
}

impl<S: Clone, G: Clone> Clone for DegradeService<S, G> {
    /// A clone does not copy readiness.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            degrade: self.degrade.clone(),
            fallback: self.fallback.clone(),
            ready_error: None,
        }
    }
}

impl<S: fmt::Debug, G> fmt::Debug for DegradeService<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DegradeService")
            .field("inner", &self.inner)
            .field("degrade", &self.degrade)
            .finish_non_exhaustive()
    }
}

impl<S, G> DegradeService<S, G> {
    /// Wraps `inner`.
    pub fn new(inner: S, degrade: Degrade, fallback: G) -> Self {
        Self {
            inner,
            degrade,
            fallback,
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
}

pin_project! {
    /// The future of [`DegradeService`]: a [`DegradeFuture`] that never fails.
    pub struct DegradeServiceFuture<F, G, T>
    where
        G: FnOnce(DegradeReason) -> T,
    {
        #[pin]
        inner: DegradeFuture<F, OrWith<G, T>>,
    }
}

impl<F, G, T> fmt::Debug for DegradeServiceFuture<F, G, T>
where
    G: FnOnce(DegradeReason) -> T,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<F, G, T, E> Future for DegradeServiceFuture<F, G, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    G: FnOnce(DegradeReason) -> T,
{
    type Output = Result<Degraded<T>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(Ok)
    }
}

impl<S, G, Req> Service<Req> for DegradeService<S, G>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    G: Fn(DegradeReason) -> S::Response + Clone,
{
    type Response = Degraded<S::Response>;
    type Error = Infallible;
    type Future = DegradeServiceFuture<S::Future, G, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready_error.is_some() {
            // Ready although the inner service is not: its `poll_ready` failed and the next
            // call degrades without touching it.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                // Ready although the inner service is not (see above).
                self.ready_error = Some(e.into());
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fallback = OrWith::new(self.fallback.clone());
        let shared = std::sync::Arc::clone(self.degrade.shared());
        match self.ready_error.take() {
            Some(e) => DegradeServiceFuture {
                inner: DegradeFuture::failed(&e, fallback, shared),
            },
            None => DegradeServiceFuture {
                inner: DegradeFuture::new(self.inner.call(req), fallback, shared),
            },
        }
    }
}
