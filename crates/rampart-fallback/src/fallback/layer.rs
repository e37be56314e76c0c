//! [`FallbackLayer`]: the apology's settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tower_layer::Layer;

use super::handler::{Apologize, retry_after_secs};
use super::page::ApologyPage;
use super::{Fallback, FallbackStats, Shared};
use crate::classify::FailureStatuses;

/// Wraps an HTTP service so that its errors and failed responses become the apology.
///
/// See the [module docs](crate::fallback) for the semantics. Settings:
///
/// | method | default |
/// |---|---|
/// | [`new`](Self::new) / [`with_page`](Self::with_page) / [`custom`](Self::custom) | the built-in [`ApologyPage`] |
/// | [`classify`](Self::classify) | [`FailureStatuses`]: 500, 502, 503, 504 |
/// | [`retry_after`](Self::retry_after) / [`no_retry_after`](Self::no_retry_after) | 5 s when the error chain has no hint |
/// | [`request_id_header`](Self::request_id_header) / [`no_request_id`](Self::no_request_id) | `x-request-id` |
/// | [`name`](Self::name) | `fallback` (the `layer` label of its metric series) |
pub struct FallbackLayer<H = ApologyPage, C = FailureStatuses> {
    handler: Arc<H>,
    classify: C,
    retry_after: Option<u64>,
    request_id: Option<HeaderName>,
    stats: FallbackStats,
}

impl<H, C: Clone> Clone for FallbackLayer<H, C> {
    fn clone(&self) -> Self {
        Self {
            handler: Arc::clone(&self.handler),
            classify: self.classify.clone(),
            retry_after: self.retry_after,
            request_id: self.request_id.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<H, C: fmt::Debug> fmt::Debug for FallbackLayer<H, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("handler", &std::any::type_name::<H>())
            .field("classify", &self.classify)
            .field("retry_after_secs", &self.retry_after)
            .field("request_id", &self.request_id)
            .field("name", &self.stats.name())
            .finish()
    }
}

impl Default for FallbackLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl FallbackLayer {
    /// The built-in apology page ([`ApologyPage::default`]).
    pub fn new() -> Self {
        Self::with_page(ApologyPage::default())
    }

    /// A page built with [`ApologyPage::builder`] (from a string, bytes or a file).
    pub fn with_page(page: ApologyPage) -> Self {
        Self::custom(page)
    }
}

impl<H: Apologize> FallbackLayer<H> {
    /// Any [`Apologize`] handler, closures included.
    pub fn custom(handler: H) -> Self {
        Self {
            handler: Arc::new(handler),
            classify: FailureStatuses::default(),
            retry_after: Some(5),
            request_id: Some(HeaderName::from_static("x-request-id")),
            stats: FallbackStats::default(),
        }
    }
}

impl<H, C> FallbackLayer<H, C> {
    /// Which responses count as failures (default [`FailureStatuses`]: 500, 502, 503, 504).
    /// Errors always do.
    pub fn classify<C2>(self, classify: C2) -> FallbackLayer<H, C2> {
        FallbackLayer {
            handler: self.handler,
            classify,
            retry_after: self.retry_after,
            request_id: self.request_id,
            stats: self.stats,
        }
    }

    /// `Retry-After` when neither the error chain ([`rampart_health::retry_after`]) nor a
    /// failed upstream response says when to retry (default 5 s; rounded up to whole seconds,
    /// at least 1).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(retry_after_secs(after));
        self
    }

    /// Sends `Retry-After` only when the error chain or the upstream response gives one.
    pub fn no_retry_after(mut self) -> Self {
        self.retry_after = None;
        self
    }

    /// The request-id header echoed on the apology (default `x-request-id`).
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        self.request_id = Some(name);
        self
    }

    /// Echoes no request id.
    pub fn no_request_id(mut self) -> Self {
        self.request_id = None;
        self
    }

    /// Names this layer: the `layer` label of its `rampart_fallback_apologies_total` series
    /// (default `fallback`), so that several layers in one process write distinct series.
    ///
    /// Starts fresh counters: call it while building, before taking [`stats`](Self::stats).
    ///
    /// ```
    /// use rampart_fallback::FallbackLayer;
    ///
    /// let layer = FallbackLayer::new().name("storefront-pages");
    /// assert_eq!(layer.stats().name(), "storefront-pages");
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.stats = FallbackStats::named(name.into());
        self
    }

    /// Counters shared by this layer and every service it builds.
    pub fn stats(&self) -> &FallbackStats {
        &self.stats
    }
}

impl<S, H, C: Clone> Layer<S> for FallbackLayer<H, C> {
    type Service = Fallback<S, H, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::from_shared(
            inner,
            Arc::new(Shared {
                handler: Arc::clone(&self.handler),
                classify: self.classify.clone(),
                retry_after: self.retry_after,
                retry_after_value: self.retry_after.map(HeaderValue::from),
                request_id: self.request_id.clone(),
                stats: self.stats.clone(),
                log_gate: super::LogGate::default(),
            }),
        )
    }
}
