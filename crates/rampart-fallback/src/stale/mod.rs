//! Stale-if-error: serve a recent good copy instead of failing (RFC 5861, RFC 9111).
//!
//! [`StaleIfError`] keeps successful cacheable responses to `GET` and, when the inner service
//! later fails for the same request, answers with the stored copy instead of the failure.
//!
//! **What is kept.** Responses to `GET` with status 200, 203, 204, 300, 301 or 308 (the
//! successful statuses RFC 9110 §15.1 calls heuristically cacheable), or any other 2xx/3xx
//! except 206 and 304 that is explicitly cacheable (RFC 9111 §3: `max-age`, `s-maxage`,
//! `public`, `stale-if-error` or `Expires`), keyed by method, host, URI (or what the key
//! function makes of it, see below), and the request's values of the headers the response
//! names in `Vary` (RFC 9111 §4.1; a few variants per URI). Never kept, as a shared cache
//! (RFC 9111 §3, §3.5): `no-store` (on the request or the response), `private`,
//! `Set-Cookie`, `Vary: *`, requests with `Authorization` unless the response is
//! `public`/`s-maxage`/`must-revalidate`, responses that forbid serving stale (`no-cache`,
//! `must-revalidate`, `proxy-revalidate`, `s-maxage`) unless they carry an explicit
//! `stale-if-error`, responses with trailers, responses cut short, and responses larger than
//! `max_entry_bytes`.
//!
//! **Keys.** By default every distinct URI is a key of its own, query string included, so a
//! client can make up as many as it likes. [`StaleIfErrorLayer::key`] (or
//! [`StaleIfError::key`]) replaces the URI part of the key with a function of it:
//! [`path_with_params`] keeps the path and only the query parameters the pages read, so
//! `?page=2&utm_source=x` and `?page=2&junk=81723` share one copy. A key function may also
//! return `None` to leave a request alone.
//!
//! **Bounded by bytes, honestly.** Everything is bounded by `max_bytes` (a [`moka`] cache with
//! a byte weigher), and the weight of a copy is what it costs the process: body, header
//! names and values, the header map's tables, the key, the allocator's rounding and the
//! cache's own bookkeeping per entry. Stored parts are copied into allocations of their own,
//! sized exactly, never kept as slices of a larger buffer (hyper parses a request's URI and
//! an upstream's body as slices of its read buffers, which a stored slice would keep alive
//! whole). `tests/stale_flood.rs` measures it with a counting allocator.
//!
//! **Admission.** While the cache is below seven eighths of `max_bytes`, every storable
//! response is kept. Past that, a new copy would displace others, so a key enters only on
//! its second request (a lock-free doorkeeper table remembers the first), or when it is
//! already stored: a flood of one-hit keys is refused ([`StaleSnapshot::not_admitted`])
//! instead of evicting the pages read often. A second-hit candidate then faces moka's TinyLFU
//! policy, which weighs it against the least recently used copies by how often each was
//! stored or looked up.
//!
//! **Streaming.** A response that is not cacheable streams through untouched. A cacheable
//! body streams through too, while a copy is kept (reference-counted chunks, no copying) up
//! to `max_entry_bytes`; if it grows past that, the copy is dropped and the rest streams on —
//! the client gets every byte either way. A copy is stored only once its body has ended.
//!
//! **When it is served.** When the inner service returns an `Err`, or a response its
//! classifier calls a failure (default: 500, 502, 503, 504), and a stored copy matches the
//! request and is still within its window: current age ≤ freshness lifetime (`s-maxage`, else
//! `max-age`, else 0) + the stale window (the response's `stale-if-error=N`, capped by
//! `max_window`, else the configured `default_window`). The copy goes out with its stored
//! headers, a correct `Age` (RFC 9111 §4.2.3: the upstream `Age` plus the response delay,
//! plus the time it has been stored; the `Date` header is not compared with our clock), and
//! the marker header [`STALE_HEADER`] (`x-rampart-stale: 1`). Otherwise the failure is
//! returned unchanged, for an outer [`FallbackLayer`](crate::FallbackLayer) to turn into the
//! apology.
//!
//! A failed `HEAD` is answered from the stored `GET` copy, with its headers and no body; `HEAD`
//! responses are never stored.
//!
//! **Refresh.** While the stored copy for a request is younger than `refresh_after` (default
//! 1 s), a new success streams through without being recorded: a popular page costs one store
//! per interval, not one per request. The copy served on error can then be up to that much
//! older than the last success; its `Age` says so.
//!
//! **Cost on the healthy path.** A request keeps no copy of its header map: only its key (reference-counted
//! clones of the method, host and URI), two facts (`Cache-Control: no-store`, `Authorization`),
//! and the values of the headers that stored responses have named in `Vary` (usually none).
//! A response whose `Vary` names a header for the first time teaches the cache to capture it
//! and is not stored itself (its request's value was not kept); up to 16 distinct names.
//! A successful `GET` whose copy is recent costs a hash of its key and a lookup in a
//! lock-free table (its response headers are not read: while a copy is recent, a response is
//! neither stored nor counted as refused), and allocates nothing (with a key function: the
//! string it returns);
//! other methods pass straight through. Storing a copy costs the copies of its parts (once
//! per `refresh_after` for a popular page).
//!
//! Time is `tokio::time::Instant`, so tests can pause and advance it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use rampart_fallback::{FallbackLayer, StaleIfErrorLayer};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), rampart_health::ConfigError> {
//! let stale = StaleIfErrorLayer::builder()
//!     .max_bytes(32 << 20)
//!     .max_entry_bytes(512 << 10)
//!     .default_window(Duration::from_secs(120))
//!     .build()?;
//! let handle = stale.clone(); // shares the cache: snapshot() from anywhere
//! let svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::new())
//!     .layer(stale)
//!     .service(axum::Router::<()>::new());
//! assert_eq!(handle.snapshot().entries, 0);
//! # let _ = svc;
//! # Ok(()) }
//! ```

mod admission;
mod body;
mod cost;
mod future;
mod key;
mod layer;
mod policy;
mod record;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::AGE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use tokio::time::Instant;
use tower_service::Service;

pub use self::body::StaleBody;
pub use self::future::ResponseFuture;
pub use self::key::path_with_params;
pub use self::layer::{StaleIfErrorBuilder, StaleIfErrorLayer};

use self::admission::{Doorkeeper, RecentStores};
pub(crate) use self::key::{Key, KeyFn};
pub(crate) use self::record::{Pending, record};

/// The header that marks a response served from the stale-if-error cache: `x-rampart-stale`,
/// with the value `1`.
pub const STALE_HEADER: HeaderName = HeaderName::from_static("x-rampart-stale");

/// Stored variants of one URI at most (older ones are replaced).
const MAX_VARIANTS: usize = 4;

/// One stored response.
#[derive(Debug)]
pub(crate) struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    vary: policy::VarySelection,
    /// When the response head arrived.
    stored_at: Instant,
    /// RFC 9111 §4.2.3 corrected initial age (upstream `Age` + response delay).
    initial_age: Duration,
    /// The largest current age it may be served at.
    usable_for: Duration,
    /// What it costs in memory (see `cost`).
    weight: usize,
}

impl Stored {
    fn current_age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }
}

/// The stored variants of one key.
#[derive(Debug, Default)]
pub(crate) struct Variants {
    items: Vec<Arc<Stored>>,
}

impl Variants {
    fn weight(&self) -> usize {
        self.items.iter().map(|s| s.weight).sum()
    }
}

/// The cost of one `Stored` (in its `Arc`), a variant list's allocation aside.
const STORED_SIZE: usize = cost::heap(16 + std::mem::size_of::<Stored>());

/// Settings (validated by the builder).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) max_bytes: u64,
    pub(crate) max_entry_bytes: usize,
    pub(crate) default_window: Duration,
    pub(crate) max_window: Duration,
    pub(crate) refresh_after: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    recent: AtomicU64,
    stored: AtomicU64,
    not_stored: AtomicU64,
    too_large: AtomicU64,
    not_admitted: AtomicU64,
    served: AtomicU64,
    too_old: AtomicU64,
    missed: AtomicU64,
}

/// The cache and counters shared by a layer, its services, their futures and bodies.
pub(crate) struct StaleShared {
    cache: moka::sync::Cache<Key, Arc<Variants>>,
    vary_names: policy::VaryNames,
    recent: RecentStores,
    doorkeeper: Doorkeeper,
    config: Config,
    counters: Counters,
    /// The layer's name: the `layer` label of its metric series.
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    handles: std::sync::OnceLock<Handles>,
}

/// The metric handles of one cache, resolved from the recorder on first use (a recorder
/// installed after the layer was built but before traffic still receives every series).
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Handles {
    served: metrics::Counter,
    stored: metrics::Counter,
    bytes: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl Handles {
    fn register(name: &Arc<str>) -> Self {
        Self {
            served: metrics::counter!("rampart_fallback_stale_served_total", "layer" => Arc::clone(name)),
            stored: metrics::counter!("rampart_fallback_stale_stored_total", "layer" => Arc::clone(name)),
            bytes: metrics::gauge!("rampart_fallback_stale_bytes", "layer" => Arc::clone(name)),
        }
    }
}

/// What a service shares with its futures: the cache, the classifier and the key function.
pub(crate) struct ServiceShared<C> {
    pub(crate) cache: Arc<StaleShared>,
    pub(crate) classify: C,
    pub(crate) key: Option<KeyFn>,
}

impl<C: fmt::Debug> fmt::Debug for ServiceShared<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceShared")
            .field("cache", &self.cache)
            .field("classify", &self.classify)
            .field("key", &self.key.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl fmt::Debug for StaleShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleShared")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl StaleShared {
    pub(crate) fn new(config: Config, name: Arc<str>) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|k: &Key, v: &Arc<Variants>| {
                let weight = k.weight()
                    + v.weight()
                    + cost::heap(16 + std::mem::size_of::<Variants>())
                    + cost::heap(MAX_VARIANTS * std::mem::size_of::<Arc<Stored>>())
                    + cost::ENTRY_OVERHEAD;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            cache,
            vary_names: policy::VaryNames::default(),
            recent: RecentStores::new(config.refresh_after),
            doorkeeper: Doorkeeper::new(),
            config,
            counters: Counters::default(),
            name,
            #[cfg(feature = "metrics")]
            handles: std::sync::OnceLock::new(),
        }
    }

    /// The layer's name (the `layer` label of its series).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    #[cfg(feature = "metrics")]
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| Handles::register(&self.name))
    }

    /// A stored copy for this request, if one is within its window.
    pub(crate) fn lookup<B>(&self, req: &RequestInfo) -> Option<Response<StaleBody<B>>> {
        let Some(variants) = self.cache.get(&req.key) else {
            self.counters.missed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let Some(stored) = variants
            .items
            .iter()
            .find(|s| policy::vary_matches(&s.vary, &req.vary))
        else {
            self.counters.missed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let age = stored.current_age(Instant::now());
        if age > stored.usable_for {
            self.counters.too_old.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                target: "rampart_fallback",
                path = req.key.path(),
                age_secs = age.as_secs(),
                usable_secs = stored.usable_for.as_secs(),
                "stale copy is past its window"
            );
            return None;
        }
        self.counters.served.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.handles().served.increment(1);
        let body = if req.head {
            Bytes::new()
        } else {
            stored.body.clone()
        };
        let mut resp = Response::new(StaleBody::stored(body));
        *resp.status_mut() = stored.status;
        // The stored map already holds the stale marker and an `Age` to replace: the clone
        // neither grows nor rehashes.
        let mut headers = stored.headers.clone();
        headers.insert(AGE, HeaderValue::from(age.as_secs()));
        *resp.headers_mut() = headers;
        Some(resp)
    }

    /// Whether a new copy of about `weight` bytes for `key` may enter the cache.
    ///
    /// Stores a complete response.
    pub(crate) fn store(&self, key: &Key, stored: Stored, fingerprint: u64) {
        let stored = Arc::new(stored);
        let mut items: Vec<Arc<Stored>> = Vec::with_capacity(MAX_VARIANTS);
        if let Some(v) = self.cache.get(key) {
            items.extend(v.items.iter().filter(|s| s.vary != stored.vary).cloned());
        }
        if items.len() >= MAX_VARIANTS {
            items.remove(0);
        }
        tracing::debug!(
            target: "rampart_fallback",
            path = key.path(),
            bytes = stored.body.len(),
            usable_secs = stored.usable_for.as_secs(),
            "stored a copy for stale-if-error"
        );
        let stored_at = stored.stored_at;
        items.push(stored);
        // A key of its own, not slices of the request's read buffer.
        self.cache
            .insert(key.detached(), Arc::new(Variants { items }));
        self.recent.mark(fingerprint, stored_at);
        self.counters.stored.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        {
            let h = self.handles();
            h.stored.increment(1);
            h.bytes.set(self.cache.weighted_size() as f64);
        }
    }

    fn not_stored(&self, why: policy::NotStored, path: &str) {
        if why == policy::NotStored::TooLarge {
            self.counters.too_large.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.not_stored.fetch_add(1, Ordering::Relaxed);
        }
        tracing::trace!(target: "rampart_fallback", path, reason = why.as_str(), "response not stored");
    }

    pub(crate) fn snapshot(&self) -> StaleSnapshot {
        self.cache.run_pending_tasks();
        let c = &self.counters;
        StaleSnapshot {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            max_bytes: self.config.max_bytes,
            recent: c.recent.load(Ordering::Relaxed),
            stored: c.stored.load(Ordering::Relaxed),
            not_stored: c.not_stored.load(Ordering::Relaxed),
            too_large: c.too_large.load(Ordering::Relaxed),
            not_admitted: c.not_admitted.load(Ordering::Relaxed),
            served: c.served.load(Ordering::Relaxed),
            too_old: c.too_old.load(Ordering::Relaxed),
            missed: c.missed.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time view of a stale-if-error cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaleSnapshot {
    /// Keys held (each holds up to a few `Vary` variants).
    pub entries: u64,
    /// Weighted size in bytes, after pending evictions ran: what the stored copies cost in
    /// memory (bodies, headers, keys, their allocations and the cache's bookkeeping).
    pub bytes: u64,
    /// The configured bound on `bytes`.
    pub max_bytes: u64,
    /// Successful responses streamed through without being examined or recorded because the
    /// stored copy was younger than `refresh_after`.
    pub recent: u64,
    /// Responses stored (or replaced).
    pub stored: u64,
    /// Cacheable-looking `GET` responses refused by policy (`no-store`, `private`, ...).
    pub not_stored: u64,
    /// Responses too large to keep (by `Content-Length` or while streaming).
    pub too_large: u64,
    /// Storable responses refused on their key's first request because the cache was nearly
    /// full (frequency-aware admission: a second request is admitted).
    pub not_admitted: u64,
    /// Failures answered with a stored copy.
    pub served: u64,
    /// Failures whose stored copy was past its window.
    pub too_old: u64,
    /// Failures with no stored copy for the request.
    pub missed: u64,
}

/// What a `GET` keeps of its request: enough to key, match `Vary`, and age the response.
/// No copy of the header map: only the values of the headers some stored response named in
/// `Vary` (usually none), and two facts.
#[derive(Debug)]
pub(crate) struct RequestInfo {
    key: Key,
    vary: policy::Captured,
    facts: policy::RequestFacts,
    sent_at: Instant,
    /// A HEAD: may be answered from a stored GET (without its body), never stored.
    head: bool,
}

/// Serves a stored copy when the inner service fails (see the [module docs](self)).
pub struct StaleIfError<S, C = crate::FailureStatuses> {
    inner: S,
    shared: Arc<ServiceShared<C>>,
}

impl<S: Clone, C> Clone for StaleIfError<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for StaleIfError<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleIfError")
            .field("inner", &self.inner)
            .field("cache", &self.shared)
            .finish()
    }
}

impl<S> StaleIfError<S> {
    /// Wraps `inner` with a default cache (64 MiB, 1 MiB per entry, 5 minute default window).
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&StaleIfErrorLayer::new(), inner)
    }
}

impl<S, C> StaleIfError<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<ServiceShared<C>>) -> Self {
        Self { inner, shared }
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

    /// The cache's counters and size (runs pending evictions first).
    pub fn snapshot(&self) -> StaleSnapshot {
        self.shared.cache.snapshot()
    }

    /// Keys the cache by `key(uri)` instead of the whole URI (the method and host stay in the
    /// key); `None` leaves a request alone (never stored, never answered from the cache). See
    /// [`StaleIfErrorLayer::key`], which sets it for every service the layer builds, and
    /// [`path_with_params`] for the usual choice.
    pub fn key<F>(self, key: F) -> Self
    where
        F: Fn(&Uri) -> Option<String> + Send + Sync + 'static,
        C: Clone,
    {
        Self {
            inner: self.inner,
            shared: Arc::new(ServiceShared {
                cache: Arc::clone(&self.shared.cache),
                classify: self.shared.classify.clone(),
                key: Some(Arc::new(key)),
            }),
        }
    }
}

impl<S, C, ReqB, ResB> Service<Request<ReqB>> for StaleIfError<S, C>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    C: rampart_health::Classify<Response<ResB>, rampart_health::BoxError>,
    ResB: http_body::Body<Data = Bytes>,
{
    type Response = Response<StaleBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let head = req.method() == Method::HEAD;
        let info = if head || req.method() == Method::GET {
            // A HEAD looks up the GET's copy (RFC 9110 §9.3.2).
            Key::new(
                &Method::GET,
                req.uri(),
                req.headers(),
                self.shared.key.as_ref(),
            )
            .map(|key| RequestInfo {
                key,
                vary: self.shared.cache.vary_names.capture(req.headers()),
                facts: policy::RequestFacts::of(req.headers()),
                sent_at: Instant::now(),
                head,
            })
        } else {
            None
        };
        ResponseFuture::new(self.inner.call(req), info, Arc::clone(&self.shared))
    }
}
