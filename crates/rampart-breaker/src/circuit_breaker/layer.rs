//! [`CircuitBreakerLayer`]: the settings that wrap services in a [`CircuitBreaker`].

use rampart_health::{FnClassify, HttpClassifier};
use tower_layer::Layer;

use super::{CircuitBreaker, GrpcCircuitBreakerLayer, Readiness};
use crate::{BreakerHandle, Policy};

/// Wraps services in a [`CircuitBreaker`]. Every service this layer (or a clone of it) wraps
/// shares the same breaker: one layer per dependency.
///
/// ```
/// use rampart_breaker::{CircuitBreakerLayer, Policy};
/// use tower::{ServiceBuilder, service_fn};
///
/// let layer = CircuitBreakerLayer::new(Policy::default());
/// let handle = layer.handle().clone(); // for an operator endpoint
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
/// # let _ = (svc, handle);
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = FnClassify> {
    handle: BreakerHandle,
    classify: C,
    readiness: Readiness,
}

impl CircuitBreakerLayer {
    /// A layer with a new breaker; every `Err` is a failure, every `Ok` a success.
    pub fn new(policy: Policy) -> Self {
        Self::from_handle(BreakerHandle::new(policy))
    }

    /// A layer around an existing breaker.
    pub fn from_handle(handle: BreakerHandle) -> Self {
        Self {
            handle,
            classify: FnClassify::errors_are_failures(),
            readiness: Readiness::FailFast,
        }
    }

    /// A layer with a new breaker and the HTTP classifier (5xx and transport errors fail,
    /// 4xx succeed).
    pub fn http(policy: Policy) -> CircuitBreakerLayer<HttpClassifier> {
        Self::new(policy).classifier(HttpClassifier::new())
    }

    /// A layer with a new breaker that judges gRPC calls by their final `grpc-status` (in the
    /// response head, or in the trailers at the end of the body) with the default
    /// [`GrpcClassifier`](rampart_health::GrpcClassifier) codes; see
    /// [`GrpcCircuitBreaker`](super::GrpcCircuitBreaker).
    pub fn grpc(policy: Policy) -> GrpcCircuitBreakerLayer {
        GrpcCircuitBreakerLayer::new(BreakerHandle::new(policy))
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Classifies results with `classify` instead.
    pub fn classifier<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            handle: self.handle,
            classify,
            readiness: self.readiness,
        }
    }

    /// Reports not-ready while the breaker is open instead of failing calls fast; see
    /// [`CircuitBreaker::not_ready_while_open`].
    pub fn not_ready_while_open(mut self, yes: bool) -> Self {
        self.readiness = if yes {
            Readiness::NotReadyWhileOpen
        } else {
            Readiness::FailFast
        };
        self
    }

    /// The breaker the layer's services share.
    pub fn handle(&self) -> &BreakerHandle {
        &self.handle
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_classifier(inner, self.handle.clone(), self.classify.clone())
            .not_ready_while_open(self.readiness == Readiness::NotReadyWhileOpen)
    }
}
