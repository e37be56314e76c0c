//! [`AdaptiveThrottleLayer`]: wraps services in a [`Throttle`].

use rampart_health::{FnClassify, HttpClassifier};
use tower_layer::Layer;

use super::{AdaptiveThrottle, Throttle};

/// Wraps services in a [`Throttle`]; every service shares the layer's [`AdaptiveThrottle`].
///
/// ```
/// use rampart_limit::{AdaptiveThrottle, AdaptiveThrottleLayer};
/// let layer = AdaptiveThrottleLayer::http(AdaptiveThrottle::builder().name("inventory").build()?);
/// # let _ = layer;
/// # Ok::<(), rampart_health::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveThrottleLayer<C = FnClassify> {
    throttle: AdaptiveThrottle,
    classify: C,
}

impl AdaptiveThrottleLayer {
    /// Every `Ok` is an accept, every `Err` a rejection.
    pub fn new(throttle: AdaptiveThrottle) -> Self {
        Self {
            throttle,
            classify: FnClassify::errors_are_failures(),
        }
    }

    /// HTTP: 5xx responses and transport errors are rejections, and so is
    /// `429 Too Many Requests`.
    pub fn http(throttle: AdaptiveThrottle) -> AdaptiveThrottleLayer<HttpClassifier> {
        Self::new(throttle).classifier(HttpClassifier::new().rate_limit_is_failure(true))
    }
}

impl<C> AdaptiveThrottleLayer<C> {
    /// Which results are accepts (successes) and which rejections (failures).
    pub fn classifier<C2>(self, classify: C2) -> AdaptiveThrottleLayer<C2> {
        AdaptiveThrottleLayer {
            throttle: self.throttle,
            classify,
        }
    }

    /// The shared throttle.
    pub fn throttle(&self) -> &AdaptiveThrottle {
        &self.throttle
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveThrottleLayer<C> {
    type Service = Throttle<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle::with_classifier(inner, self.throttle.clone(), self.classify.clone())
    }
}
