//! Degradation for non-critical dependencies: a default instead of a failure.
//!
//! A product page must not fail because recommendations are down. [`Degrade`] runs the call
//! to such a dependency with an optional deadline; when the call fails or the deadline passes,
//! it answers with a fallback value instead — `T::default()`, a given value, or the output of
//! a fallback future — and records why ([`DegradeReason`]): a `tracing` event (target
//! `rampart_fallback`, level `WARN`), a counter readable through [`Degrade::snapshot`], and
//! with the `metrics` feature `rampart_fallback_degraded_total{layer, dependency, reason}` (both
//! labels carry the dependency's name).
//!
//! The call is dropped (cancelled) when its deadline passes. No task is spawned.
//!
//! For tower services there is [`DegradeLayer`]: `Service<Req, Response = T>` becomes
//! `Service<Req, Response = Degraded<T>, Error = Infallible>`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use rampart_fallback::{Degrade, DegradeReason};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), rampart_health::ConfigError> {
//! let recommendations = Degrade::builder("recommendations")
//!     .deadline(Duration::from_millis(50))
//!     .build()?;
//!
//! async fn fetch() -> Result<Vec<String>, std::io::Error> {
//!     Err(std::io::Error::other("connection refused"))
//! }
//! let items = recommendations.or_default(fetch()).await;
//! assert!(items.value.is_empty());
//! assert_eq!(items.reason, Some(DegradeReason::Failed));
//!
//! let ok = recommendations.or_default(async { Ok::<_, std::io::Error>(vec!["socks".to_string()]) }).await;
//! assert_eq!(ok.into_inner(), vec!["socks".to_string()]);
//! assert_eq!(recommendations.snapshot().failed, 1);
//! # Ok(()) }
//! ```

mod future;
mod layer;
mod reason;
mod strategy;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rampart_health::{BoxError, ConfigError};

pub use self::future::DegradeFuture;
pub use self::layer::{DegradeLayer, DegradeService, DegradeServiceFuture};
pub use self::reason::DegradeReason;
pub use self::strategy::{FallbackValue, OrDefault, OrElse, OrValue, OrWith};

/// A result that may have been degraded: the value, and why it is a fallback if it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded<T> {
    /// The dependency's answer, or the fallback.
    pub value: T,
    /// `None` when `value` is the dependency's answer.
    pub reason: Option<DegradeReason>,
}

impl<T> Degraded<T> {
    /// `true` when `value` is the fallback.
    pub fn is_degraded(&self) -> bool {
        self.reason.is_some()
    }

    /// The value, degraded or not.
    pub fn into_inner(self) -> T {
        self.value
    }
}

#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    unavailable: AtomicU64,
    deadline: AtomicU64,
}

pub(crate) struct DegradeInner {
    name: Cow<'static, str>,
    deadline: Option<Duration>,
    counters: Counters,
}

/// Runs calls to one non-critical dependency with a deadline and a fallback.
///
/// Cheap to clone; clones share the counters.
#[derive(Clone)]
pub struct Degrade {
    inner: Arc<DegradeInner>,
}

impl fmt::Debug for Degrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Degrade")
            .field("name", &self.inner.name)
            .field("deadline", &self.inner.deadline)
            .finish()
    }
}

impl Degrade {
    /// No deadline: degrades on errors only.
    pub fn new(dependency: impl Into<Cow<'static, str>>) -> Self {
        Self {
            inner: Arc::new(DegradeInner {
                name: dependency.into(),
                deadline: None,
                counters: Counters::default(),
            }),
        }
    }

    /// Starts a builder (for a deadline).
    pub fn builder(dependency: impl Into<Cow<'static, str>>) -> DegradeBuilder {
        DegradeBuilder {
            name: dependency.into(),
            deadline: None,
        }
    }

    /// The dependency's name (used in logs and metrics).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.inner.deadline
    }

    /// Runs `call`; on error or past the deadline, answers `T::default()`.
    pub fn or_default<F, T, E>(&self, call: F) -> DegradeFuture<F, OrDefault<T>>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
        T: Default,
    {
        DegradeFuture::new(call, OrDefault::new(), Arc::clone(&self.inner))
    }

    /// Runs `call`; on error or past the deadline, answers `value`.
    pub fn or_value<F, T, E>(&self, call: F, value: T) -> DegradeFuture<F, OrValue<T>>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        DegradeFuture::new(call, OrValue::new(value), Arc::clone(&self.inner))
    }

    /// Runs `call`; on error or past the deadline, answers with the output of
    /// `fallback(reason)` (for example a read from a local copy). The fallback future gets no
    /// deadline of its own: keep it local and fast.
    pub fn or_else<F, T, E, G, Fut>(&self, call: F, fallback: G) -> DegradeFuture<F, OrElse<G, Fut>>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
        G: FnOnce(DegradeReason) -> Fut,
        Fut: Future<Output = T>,
    {
        DegradeFuture::new(call, OrElse::new(fallback), Arc::clone(&self.inner))
    }

    /// A tower layer that degrades a service's errors to `fallback(reason)`.
    pub fn layer<G>(&self, fallback: G) -> DegradeLayer<G> {
        DegradeLayer::new(self.clone(), fallback)
    }

    /// How many calls went through and how many were degraded, by reason.
    pub fn snapshot(&self) -> DegradeSnapshot {
        let c = &self.inner.counters;
        DegradeSnapshot {
            ok: c.ok.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            deadline_exceeded: c.deadline.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<DegradeInner> {
        &self.inner
    }
}

impl DegradeInner {
    pub(crate) fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    pub(crate) fn record_ok(&self) {
        self.counters.ok.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a degradation; `error` is logged, never returned.
    pub(crate) fn record(&self, reason: DegradeReason, error: Option<&BoxError>) {
        let c = match reason {
            DegradeReason::Failed => &self.counters.failed,
            DegradeReason::Unavailable => &self.counters.unavailable,
            DegradeReason::DeadlineExceeded => &self.counters.deadline,
        };
        c.fetch_add(1, Ordering::Relaxed);
        match error {
            Some(e) => tracing::warn!(
                target: "rampart_fallback",
                dependency = %self.name,
                reason = reason.as_str(),
                error = %crate::fallback::ErrorChain(&**e),
                "dependency degraded to its fallback"
            ),
            None => tracing::warn!(
                target: "rampart_fallback",
                dependency = %self.name,
                reason = reason.as_str(),
                deadline_ms = self.deadline.map(|d| d.as_millis() as u64),
                "dependency degraded to its fallback"
            ),
        }
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "rampart_fallback_degraded_total",
            "layer" => self.name.clone(),
            "dependency" => self.name.clone(),
            "reason" => reason.as_str()
        )
        .increment(1);
    }
}

/// Builds a [`Degrade`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct DegradeBuilder {
    name: Cow<'static, str>,
    deadline: Option<Duration>,
}

impl DegradeBuilder {
    /// Degrades calls that take longer than `deadline` (the call is dropped then).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the deadline is zero or the name is empty.
    pub fn build(self) -> Result<Degrade, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::new(
                "dependency",
                &self.name,
                "must not be empty",
            ));
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "deadline",
                Duration::ZERO,
                "must be above zero",
            ));
        }
        Ok(Degrade {
            inner: Arc::new(DegradeInner {
                name: self.name,
                deadline: self.deadline,
                counters: Counters::default(),
            }),
        })
    }
}

/// Calls and degradations of one [`Degrade`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DegradeSnapshot {
    /// Calls answered by the dependency.
    pub ok: u64,
    /// Degraded: the call failed.
    pub failed: u64,
    /// Degraded: the call never reached the dependency (breaker open, no healthy endpoint).
    pub unavailable: u64,
    /// Degraded: the deadline passed.
    pub deadline_exceeded: u64,
}

impl DegradeSnapshot {
    /// All degradations.
    pub fn degraded(&self) -> u64 {
        self.failed + self.unavailable + self.deadline_exceeded
    }
}
