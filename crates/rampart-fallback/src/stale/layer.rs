//! [`StaleIfErrorLayer`]: the cache and its settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rampart_health::ConfigError;
use tower_layer::Layer;

use super::{Config, KeyFn, ServiceShared, StaleIfError, StaleShared, StaleSnapshot};
use crate::classify::FailureStatuses;

/// Adds a stale-if-error cache in front of an HTTP service.
///
/// Every service this layer builds shares one cache (so do clones of the layer): build the
/// layer once and apply it where you need it. See the [module docs](crate::stale).
pub struct StaleIfErrorLayer<C = FailureStatuses> {
    cache: Arc<StaleShared>,
    classify: C,
    key: Option<KeyFn>,
}

impl<C: Clone> Clone for StaleIfErrorLayer<C> {
    fn clone(&self) -> Self {
        Self {
            cache: Arc::clone(&self.cache),
            classify: self.classify.clone(),
            key: self.key.clone(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for StaleIfErrorLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleIfErrorLayer")
            .field("cache", &self.cache)
            .field("classify", &self.classify)
            .field("key", &self.key.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Default for StaleIfErrorLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl StaleIfErrorLayer {
    /// The defaults: 64 MiB in all, 1 MiB per response, a 5 minute window when the response
    /// has no `stale-if-error`, `stale-if-error` honoured up to 1 day.
    pub fn new() -> Self {
        Self {
            cache: Arc::new(StaleShared::new(
                StaleIfErrorBuilder::default().config(),
                Arc::from(DEFAULT_NAME),
            )),
            classify: FailureStatuses::default(),
            key: None,
        }
    }

    /// Starts from the defaults.
    pub fn builder() -> StaleIfErrorBuilder {
        StaleIfErrorBuilder::default()
    }
}

impl<C> StaleIfErrorLayer<C> {
    /// Which responses count as failures (default [`FailureStatuses`]: 500, 502, 503, 504).
    /// Errors always do.
    pub fn classify<C2>(self, classify: C2) -> StaleIfErrorLayer<C2> {
        StaleIfErrorLayer {
            cache: self.cache,
            classify,
            key: self.key,
        }
    }

    /// Keys the cache by `key(uri)` instead of the whole URI: the method and host stay in the
    /// key, `key` replaces the URI (default: the whole URI, query string included).
    /// Returning `None` leaves a request alone: it is never stored nor answered from the
    /// cache.
    ///
    /// With the default, every distinct query string is a key of its own, so anyone can
    /// make up new ones; keying by the path and the parameters the pages really read
    /// ([`path_with_params`](super::path_with_params)) makes them share one copy. Applies to
    /// the services built after this call.
    ///
    /// ```
    /// use rampart_fallback::{StaleIfErrorLayer, stale::path_with_params};
    ///
    /// let stale = StaleIfErrorLayer::new().key(path_with_params(["page"]));
    /// # let _ = stale;
    /// ```
    pub fn key<F>(mut self, key: F) -> Self
    where
        F: Fn(&http::Uri) -> Option<String> + Send + Sync + 'static,
    {
        self.key = Some(Arc::new(key));
        self
    }

    /// The layer's name (the `layer` label of its metric series; default `stale`).
    pub fn name(&self) -> &str {
        self.cache.name()
    }

    /// The cache's counters and size (runs pending evictions first).
    pub fn snapshot(&self) -> StaleSnapshot {
        self.cache.snapshot()
    }

    /// Drops every stored copy.
    pub fn clear(&self) {
        self.cache.cache.invalidate_all();
        self.cache.recent.clear();
        self.cache.doorkeeper.clear();
        tracing::info!(target: "rampart_fallback", "stale-if-error cache cleared");
    }
}

impl<S, C: Clone> Layer<S> for StaleIfErrorLayer<C> {
    type Service = StaleIfError<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        StaleIfError::from_shared(
            inner,
            Arc::new(ServiceShared {
                cache: Arc::clone(&self.cache),
                classify: self.classify.clone(),
                key: self.key.clone(),
            }),
        )
    }
}

/// The name of a stale-if-error layer that was not given one.
const DEFAULT_NAME: &str = "stale";

/// Settings of a [`StaleIfErrorLayer`]; [`build`](Self::build) validates them.
#[derive(Debug, Clone)]
pub struct StaleIfErrorBuilder {
    name: Arc<str>,
    max_bytes: u64,
    max_entry_bytes: usize,
    default_window: Duration,
    max_window: Duration,
    refresh_after: Duration,
}

impl Default for StaleIfErrorBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from(DEFAULT_NAME),
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
            default_window: Duration::from_secs(300),
            max_window: Duration::from_secs(86_400),
            refresh_after: Duration::from_secs(1),
        }
    }
}

impl StaleIfErrorBuilder {
    /// Names the layer: the `layer` label of its `rampart_fallback_stale_*` series (default
    /// `stale`), so that several caches in one process write distinct series.
    ///
    /// ```
    /// use rampart_fallback::StaleIfErrorLayer;
    ///
    /// let layer = StaleIfErrorLayer::builder().name("pages").build()?;
    /// assert_eq!(layer.name(), "pages");
    /// # Ok::<(), rampart_health::ConfigError>(())
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The bound on everything stored, in bytes of memory (default 64 MiB): bodies, headers
    /// and keys with their allocations and the cache's bookkeeping per entry, so the process
    /// holds about this much for its copies, not a multiple of it.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The largest body kept (default 1 MiB). Larger responses stream through uncached.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// How long past its freshness a copy may serve on error when the response has no
    /// `stale-if-error` directive (default 5 minutes; zero keeps only responses that say
    /// `stale-if-error` or have a freshness lifetime).
    pub fn default_window(mut self, window: Duration) -> Self {
        self.default_window = window;
        self
    }

    /// The largest `stale-if-error` honoured (default 1 day).
    pub fn max_window(mut self, window: Duration) -> Self {
        self.max_window = window;
        self
    }

    /// How old a stored copy must be before a newer successful response replaces it
    /// (default 1 s; zero replaces it on every success).
    ///
    /// While the stored copy of a request is younger than this, a successful response streams
    /// through without being recorded again: a popular page costs one store per interval
    /// instead of one per request. The copy served on error may then be up to this much older
    /// than the last success (its `Age` says so).
    pub fn refresh_after(mut self, interval: Duration) -> Self {
        self.refresh_after = interval;
        self
    }

    fn config(&self) -> Config {
        Config {
            max_bytes: self.max_bytes,
            max_entry_bytes: self.max_entry_bytes,
            default_window: self.default_window,
            max_window: self.max_window,
            refresh_after: self.refresh_after,
        }
    }

    /// Validates and builds the layer (with its empty cache).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when `max_bytes` or `max_entry_bytes` is zero, `max_entry_bytes`
    /// exceeds `max_bytes` or 4 GiB, or `default_window` exceeds `max_window`.
    pub fn build(self) -> Result<StaleIfErrorLayer, ConfigError> {
        if self.max_bytes == 0 {
            return Err(ConfigError::new(
                "max_bytes",
                self.max_bytes,
                "must be at least 1",
            ));
        }
        if self.max_entry_bytes == 0 {
            return Err(ConfigError::new(
                "max_entry_bytes",
                self.max_entry_bytes,
                "must be at least 1",
            ));
        }
        if self.max_entry_bytes as u64 > self.max_bytes {
            return Err(ConfigError::new(
                "max_entry_bytes",
                self.max_entry_bytes,
                "must not exceed max_bytes",
            ));
        }
        if self.max_entry_bytes as u64 >= u64::from(u32::MAX) {
            return Err(ConfigError::new(
                "max_entry_bytes",
                self.max_entry_bytes,
                "must be below 4 GiB",
            ));
        }
        if self.default_window > self.max_window {
            return Err(ConfigError::new(
                "default_window",
                self.default_window,
                "must not exceed max_window",
            ));
        }
        Ok(StaleIfErrorLayer {
            cache: Arc::new(StaleShared::new(self.config(), self.name)),
            classify: FailureStatuses::default(),
            key: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let b = StaleIfErrorLayer::builder;
        assert_eq!(b().max_bytes(0).build().unwrap_err().field(), "max_bytes");
        assert_eq!(
            b().max_entry_bytes(0).build().unwrap_err().field(),
            "max_entry_bytes"
        );
        let e = b().max_bytes(10).max_entry_bytes(11).build().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid `max_entry_bytes` = 11: must not exceed max_bytes"
        );
        assert_eq!(
            b().default_window(Duration::from_secs(10))
                .max_window(Duration::from_secs(5))
                .build()
                .unwrap_err()
                .field(),
            "default_window"
        );
        assert!(b().build().is_ok());
    }
}
