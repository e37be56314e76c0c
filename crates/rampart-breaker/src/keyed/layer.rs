//! [`KeyedCircuitBreakerLayer`]: wraps services in a [`KeyedCircuitBreaker`].

use std::fmt;

use rampart_health::FnClassify;
use tower_layer::Layer;

use super::{KeyedBreaker, KeyedCircuitBreaker};

/// Wraps services in a [`KeyedCircuitBreaker`] sharing one [`KeyedBreaker`].
///
/// ```
/// use std::time::Duration;
/// use rampart_breaker::{KeyedBreaker, KeyedCircuitBreakerLayer, Policy};
/// use tower::{ServiceBuilder, service_fn};
///
/// let breakers = KeyedBreaker::<String>::new(Policy::default(), 10_000, Duration::from_secs(600));
/// let svc = ServiceBuilder::new()
///     .layer(KeyedCircuitBreakerLayer::new(breakers, |req: &(String, u32)| req.0.clone()))
///     .service(service_fn(|(_host, n): (String, u32)| async move { Ok::<_, std::io::Error>(n) }));
/// # let _ = svc;
/// ```
#[derive(Clone)]
pub struct KeyedCircuitBreakerLayer<K, F, C = FnClassify> {
    breakers: KeyedBreaker<K>,
    key_fn: F,
    classify: C,
}

impl<K, F> KeyedCircuitBreakerLayer<K, F> {
    /// A layer keying requests with `key_fn`; every `Err` is a failure.
    pub fn new(breakers: KeyedBreaker<K>, key_fn: F) -> Self {
        Self {
            breakers,
            key_fn,
            classify: FnClassify::errors_are_failures(),
        }
    }
}

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    /// Classifies results with `classify` instead.
    pub fn classifier<C2>(self, classify: C2) -> KeyedCircuitBreakerLayer<K, F, C2> {
        KeyedCircuitBreakerLayer {
            breakers: self.breakers,
            key_fn: self.key_fn,
            classify,
        }
    }

    /// The breakers.
    pub fn breakers(&self) -> &KeyedBreaker<K> {
        &self.breakers
    }
}

impl<K, F, C: fmt::Debug> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("breakers", &self.breakers)
            .field("classify", &self.classify)
            .finish_non_exhaustive()
    }
}

impl<S, K: Clone, F: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C> {
    type Service = KeyedCircuitBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker::with_classifier(
            inner,
            self.breakers.clone(),
            self.key_fn.clone(),
            self.classify.clone(),
        )
    }
}
