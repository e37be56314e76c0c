//! [`LimitLayer`]: the settings that wrap services in a [`Limit`].

use rampart_health::{FnClassify, HttpClassifier};
use tower_layer::Layer;

use super::Limit;
use crate::limiter::{Limiter, SinglePartition};

/// Wraps services in a [`Limit`]. Every service this layer (or a clone of it) wraps shares
/// the same [`Limiter`]: one layer per protected resource.
///
/// | method | default |
/// |---|---|
/// | [`partition_by`](Self::partition_by) | every request in the first partition |
/// | [`classifier`](Self::classifier) / [`http`](Self::http) | every `Err` is a drop |
///
/// ```
/// use rampart_limit::{LimitLayer, Limiter};
/// use tower::{ServiceBuilder, service_fn};
///
/// let limiter = Limiter::builder().name("search").build()?;
/// let svc = ServiceBuilder::new()
///     .layer(LimitLayer::new(limiter.clone()))
///     .service(service_fn(|q: String| async move { Ok::<_, std::io::Error>(q.len()) }));
/// assert_eq!(limiter.limit(), 20); // Gradient2's initial limit
/// # let _ = svc;
/// # Ok::<(), rampart_health::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LimitLayer<P = SinglePartition, C = FnClassify> {
    limiter: Limiter,
    partition_by: P,
    classify: C,
}

impl LimitLayer {
    /// A layer around `limiter`: one partition, every `Err` counts as a drop.
    pub fn new(limiter: Limiter) -> Self {
        Self {
            limiter,
            partition_by: SinglePartition,
            classify: FnClassify::errors_are_failures(),
        }
    }

    /// A layer around `limiter` with the HTTP classifier: 5xx responses and transport errors
    /// count as drops, 4xx do not.
    pub fn http(limiter: Limiter) -> LimitLayer<SinglePartition, HttpClassifier> {
        Self::new(limiter).classifier(HttpClassifier::new())
    }
}

impl<P, C> LimitLayer<P, C> {
    /// Classifies requests into partitions (or the bypass) with `partition_by`, any
    /// `Fn(&Req) -> Class`.
    pub fn partition_by<P2>(self, partition_by: P2) -> LimitLayer<P2, C> {
        LimitLayer {
            limiter: self.limiter,
            partition_by,
            classify: self.classify,
        }
    }

    /// Classifies results with `classify` instead (a failure counts as a drop).
    pub fn classifier<C2>(self, classify: C2) -> LimitLayer<P, C2> {
        LimitLayer {
            limiter: self.limiter,
            partition_by: self.partition_by,
            classify,
        }
    }

    /// The limiter the layer's services share.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }
}

impl<S, P: Clone, C: Clone> Layer<S> for LimitLayer<P, C> {
    type Service = Limit<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Limit::with_parts(
            inner,
            self.limiter.clone(),
            self.partition_by.clone(),
            self.classify.clone(),
        )
    }
}
