//! [`KeyedBreaker`]: one breaker per key (per host, per route), with bounded memory; and
//! [`KeyedCircuitBreaker`], the middleware that picks the breaker from each request.
//!
//! The breakers live in a [`moka`] cache: at most `max_keys` of them (the least recently used
//! key is evicted first), and a key idle for `idle_timeout` is evicted (its breaker forgets its window; an evicted *open* breaker would
//! simply start closed again, which is why the idle timeout should exceed the longest open
//! duration). moka runs its maintenance on the callers' threads: no background task.
//!
//! ```
//! use std::time::Duration;
//! use rampart_breaker::{KeyedBreaker, Policy};
//!
//! let breakers = KeyedBreaker::<String>::new(Policy::default(), 1_000, Duration::from_secs(600));
//! let a = breakers.breaker(&"api.example.com".to_string());
//! let again = breakers.breaker(&"api.example.com".to_string());
//! assert!(a.same_breaker(&again));
//! assert_eq!(a.name(), "breaker[api.example.com]");
//! ```

mod layer;

use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};
use std::time::Duration;

use rampart_health::{BoxError, Classify, FnClassify};
use tower_service::Service;

pub use layer::KeyedCircuitBreakerLayer;

use crate::{BreakerHandle, Policy, ResponseFuture};

/// The longest idle timeout a [`KeyedBreaker`] accepts (moka's limit of 1000 years); longer
/// ones are capped to it.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

/// One breaker per key, created on first use from a shared [`Policy`], bounded in number and
/// evicted when idle. A cheap clone sharing the same breakers.
pub struct KeyedBreaker<K> {
    cache: moka::sync::Cache<K, BreakerHandle>,
    policy: Policy,
}

impl<K> Clone for KeyedBreaker<K> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedBreaker<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreaker")
            .field("policy", &self.policy)
            .field("keys", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl<K> KeyedBreaker<K>
where
    K: Hash + Eq + Send + Sync + Clone + fmt::Display + 'static,
{
    /// Breakers built from `policy` (each named `"{policy name}[{key}]"`), at most `max_keys`
    /// of them, each evicted after `idle_timeout` without a call.
    ///
    /// Never panics: `max_keys` is raised to at least 1 (a cache of no breakers would hand
    /// every call a fresh, closed breaker that could never trip), and `idle_timeout` is capped
    /// at [`MAX_IDLE_TIMEOUT`] (moka's limit; in effect "never").
    pub fn new(policy: Policy, max_keys: u64, idle_timeout: Duration) -> Self {
        let cache = moka::sync::Cache::builder()
            // LRU, not moka's default TinyLFU: TinyLFU may refuse a new key while the cache is
            // full of frequently used ones, and a refused key's breaker would be rebuilt
            // (closed, empty) on every call, so it could never trip. The key in use is kept.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(max_keys.max(1))
            .time_to_idle(idle_timeout.min(MAX_IDLE_TIMEOUT))
            .build();
        Self { cache, policy }
    }

    /// The cap on the number of breakers, as configured in the cache.
    pub fn max_keys(&self) -> Option<u64> {
        self.cache.policy().max_capacity()
    }

    /// How long a key may go without a call before its breaker is evicted, as configured in
    /// the cache (an idle timeout: every call through [`breaker`](Self::breaker) restarts it).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.cache.policy().time_to_idle()
    }

    /// The breaker for `key`, created if needed.
    pub fn breaker(&self, key: &K) -> BreakerHandle {
        self.cache.get_with_by_ref(key, || {
            let mut policy = self.policy.clone();
            policy.name = format!("{}[{}]", self.policy.name, key).into();
            BreakerHandle::new(policy)
        })
    }

    /// The breaker for `key`, if it exists.
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        self.cache.get(key)
    }

    /// Forgets the breaker for `key`.
    pub fn remove(&self, key: &K) {
        self.cache.invalidate(key);
    }

    /// How many breakers are kept (approximate until
    /// [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    /// `true` when no breaker is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs the cache's pending evictions now (they otherwise run along with calls).
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    /// Every kept key and its breaker (for an operator endpoint).
    pub fn iter(&self) -> impl Iterator<Item = (K, BreakerHandle)> + '_ {
        self.cache.iter().map(|(k, v)| ((*k).clone(), v))
    }

    /// The policy new breakers are built from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// A circuit breaker per key: each request's key (from `key_fn`) picks its breaker from a
/// [`KeyedBreaker`]. Otherwise like [`CircuitBreaker`](crate::CircuitBreaker) in fail-fast
/// mode: `poll_ready` follows the inner service, an open key fails in `call`.
pub struct KeyedCircuitBreaker<S, K, F, C = FnClassify> {
    inner: S,
    breakers: KeyedBreaker<K>,
    key_fn: F,
    classify: C,
}

impl<S, K, F> KeyedCircuitBreaker<S, K, F> {
    /// Wraps `inner`; every `Err` is a failure.
    pub fn new(inner: S, breakers: KeyedBreaker<K>, key_fn: F) -> Self {
        Self::with_classifier(inner, breakers, key_fn, FnClassify::errors_are_failures())
    }
}

impl<S, K, F, C> KeyedCircuitBreaker<S, K, F, C> {
    /// Wraps `inner`, classifying results with `classify`.
    pub fn with_classifier(inner: S, breakers: KeyedBreaker<K>, key_fn: F, classify: C) -> Self {
        Self {
            inner,
            breakers,
            key_fn,
            classify,
        }
    }

    /// The breakers.
    pub fn breakers(&self) -> &KeyedBreaker<K> {
        &self.breakers
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

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breakers: self.breakers.clone(),
            key_fn: self.key_fn.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C: fmt::Debug> fmt::Debug for KeyedCircuitBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("breakers", &self.breakers)
            .field("classify", &self.classify)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Send + Sync + Clone + fmt::Display + 'static,
    F: Fn(&Req) -> K,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.key_fn)(&req);
        match self.breakers.breaker(&key).try_acquire() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(req), permit, self.classify.clone())
            }
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
