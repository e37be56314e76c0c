//! [`Limit`]: the adaptive concurrency limit as tower middleware.
//!
//! Each call is classified into a partition (or bypasses the limiter), then asks the shared
//! [`Limiter`] for a slot. Admitted, it calls the inner service holding a
//! [`Permit`](crate::Permit); when the response arrives its round-trip time and outcome (by a
//! [`Classify`]: by default every `Err` is a drop) feed the limit algorithm. Shed, it fails at
//! once with [`Overloaded`], which carries rampart-health's "never reached" marker and a
//! retry-after hint.
//!
//! # Readiness
//!
//! The slot is taken in `call`, not reserved in `poll_ready`: the partition depends on the
//! request, which `poll_ready` does not see, and an idle ready service must not sit on a
//! slot. `poll_ready` follows the inner service. A shed call never reaches the inner service.
//!
//! With a [queue](crate::CoDelQueue), a call over the limit waits inside its response future
//! until a slot frees (or the queue drops it). It then calls the inner service that was made
//! ready for it: `call` hands the ready inner service to the future and keeps a clone (tower's
//! idiom for services that are called later), which is why `S: Clone`. Holding a ready service
//! is harmless for axum routers and hyper clients, whose readiness is always immediate.
//!
//! The slot returns when the response future completes **or is dropped** (a client that
//! hangs up does not leak capacity); a dropped call is not measured.
//!
//! # Example: a server-side limit on an axum router
//!
//! The fallback layer goes outermost, so a shed request becomes a fast `503` with
//! `Retry-After` (the hint the error carries) instead of an error:
//!
//! ```
//! use axum::{Router, routing::get};
//! use http::Request;
//! use rampart_fallback::FallbackLayer;
//! use rampart_limit::{Class, LimitLayer, Limiter, algorithm::Gradient2};
//! use tower::ServiceBuilder;
//!
//! let limiter = Limiter::builder()
//!     .name("shop")
//!     .algorithm(Gradient2::builder().min_limit(8).initial_limit(32).max_limit(512).build()?)
//!     .partition("checkout", 0.5)
//!     .partition("pages", 0.4)
//!     .partition("recommendations", 0.1)
//!     .build()?;
//! let limit = LimitLayer::http(limiter.clone()).partition_by(|req: &Request<axum::body::Body>| {
//!     let path = req.uri().path();
//!     if path == "/healthz" || path.starts_with("/admin") {
//!         Class::Bypass
//!     } else if path.starts_with("/checkout") {
//!         Class::Partition(0)
//!     } else if path.starts_with("/recommendations") {
//!         Class::Partition(2)
//!     } else {
//!         Class::Partition(1)
//!     }
//! });
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "home" }))
//!     .route("/checkout", get(|| async { "pay" }))
//!     .layer(ServiceBuilder::new().layer(FallbackLayer::new()).layer(limit));
//! // `limiter.snapshot()` feeds a status page.
//! assert_eq!(limiter.snapshot().partitions.len(), 3);
//! # let _ = app;
//! # Ok::<(), rampart_health::ConfigError>(())
//! ```
//!
//! # Example: a client-side limit in front of a dependency
//!
//! ```
//! use rampart_limit::{LimitLayer, Limiter, Overloaded, algorithm::Aimd};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let limiter = Limiter::builder()
//!     .name("catalog")
//!     .algorithm(Aimd::builder().min_limit(1).initial_limit(1).max_limit(64).build()?)
//!     .build()?;
//! let mut client = ServiceBuilder::new()
//!     .layer(LimitLayer::new(limiter.clone()))
//!     .service(service_fn(|id: u32| async move { Ok::<_, std::io::Error>(id) }));
//! assert_eq!(client.ready().await?.call(7).await?, 7);
//! // One slot: a second call while the first is in flight is shed.
//! let first = client.ready().await?.call(1);
//! let err = client.ready().await?.call(2).await.unwrap_err();
//! assert!(Overloaded::find(&*err).is_some());
//! assert_eq!(first.await?, 1);
//! # Ok(()) }
//! ```

mod error;
mod future;
mod layer;

use std::fmt;

use rampart_health::{BoxError, Classify, FnClassify};
use std::task::{Context, Poll};
use tower_service::Service;

pub use error::{Overloaded, ShedReason};
pub use future::ResponseFuture;
pub use layer::LimitLayer;

use crate::limiter::{Admission, Class, Limiter, PartitionBy, SinglePartition};

/// An adaptive concurrency limit around a service. See the [module docs](self).
pub struct Limit<S, P = SinglePartition, C = FnClassify> {
    inner: S,
    limiter: Limiter,
    partition_by: P,
    classify: C,
}

impl<S> Limit<S> {
    /// Wraps `inner` in `limiter`: one partition, every `Err` counts as a drop.
    pub fn new(inner: S, limiter: Limiter) -> Self {
        Self {
            inner,
            limiter,
            partition_by: SinglePartition,
            classify: FnClassify::errors_are_failures(),
        }
    }
}

impl<S, P, C> Limit<S, P, C> {
    /// Wraps `inner` in `limiter`, classifying requests with `partition_by` and results with
    /// `classify`.
    pub fn with_parts(inner: S, limiter: Limiter, partition_by: P, classify: C) -> Self {
        Self {
            inner,
            limiter,
            partition_by,
            classify,
        }
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
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
}

impl<S: Clone, P: Clone, C: Clone> Clone for Limit<S, P, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            partition_by: self.partition_by.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, P, C> fmt::Debug for Limit<S, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, P, C, Req> Service<Req> for Limit<S, P, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: PartitionBy<Req>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let class = match self.partition_by.class(&req) {
            Class::Bypass => {
                self.limiter.note_bypass();
                return ResponseFuture::bypass(self.inner.call(req));
            }
            Class::Partition(i) => self.limiter.partition_index(i),
        };
        match self.limiter.admit_or_queue(class) {
            Admission::Admitted(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classify.clone())
            }
            Admission::Shed(e) => ResponseFuture::rejected(e),
            Admission::Queued(rx) => {
                // The future calls the inner service once a slot frees: it takes the service
                // made ready by `poll_ready`, we keep a clone (not ready yet; the next
                // `poll_ready` readies it).
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::queued(
                    rx,
                    ready,
                    req,
                    self.limiter.clone(),
                    class,
                    self.classify.clone(),
                )
            }
        }
    }
}
