//! [`Throttle`]: client-side adaptive throttling, from Google's *Site Reliability
//! Engineering* book (chapter 21, "Handling Overload").
//!
//! A client in front of a dependency that rejects requests (503, 429, [`Overloaded`]) keeps
//! two counts over a sliding [`window`](AdaptiveThrottleBuilder::window): *requests* (every
//! request the application attempted, including the ones rejected here) and *accepts* (the
//! ones the dependency accepted, per a [`Classify`]: a success is an accept). Each new
//! request is rejected locally, without being sent, with probability
//!
//! ```text
//! p = max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! While the dependency accepts everything, `p` is 0. When it rejects more than `1 − 1/K` of
//! the traffic, the client stops sending the excess at once, saving both sides the work of
//! a rejection; a few requests still pass and probe for recovery. `K` (default 2) trades
//! wasted rejections (higher) against throttling too eagerly (lower, down to 1).
//!
//! A local rejection is an [`Overloaded`] error with reason
//! [`Throttled`](crate::ShedReason::Throttled), carrying the "never reached" marker and a
//! retry-after hint. A call whose future is dropped before it completes counts as a request
//! without an accept.
//!
//! ```
//! use rampart_limit::{AdaptiveThrottle, AdaptiveThrottleLayer};
//! use rampart_health::Outcome;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let throttle = AdaptiveThrottle::builder().name("pricing").k(2.0).build()?;
//! let mut client = ServiceBuilder::new()
//!     .layer(AdaptiveThrottleLayer::new(throttle.clone()))
//!     .service(service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("503")) }));
//! for _ in 0..50 {
//!     let _ = client.ready().await?.call(()).await;
//! }
//! // Nothing was accepted: most requests are now rejected locally.
//! assert!(throttle.rejection_probability() > 0.9);
//! assert!(throttle.snapshot().throttled > 0);
//! # Ok(()) }
//! ```

mod future;
mod layer;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use rampart_health::{BoxError, Classify, ConfigError, FnClassify, Outcome};
use tower_service::Service;

pub use future::ThrottleFuture;
pub use layer::AdaptiveThrottleLayer;

use crate::{Overloaded, ShedReason};

/// Builds an [`AdaptiveThrottle`]; [`build`](Self::build) validates.
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"throttle"` |
/// | [`k`](Self::k) | 2.0 |
/// | [`window`](Self::window) | 2 minutes (the book's), in [`buckets`](Self::buckets) 12 buckets |
/// | [`retry_after`](Self::retry_after) | 1 s |
pub struct AdaptiveThrottleBuilder {
    name: String,
    k: f64,
    window: Duration,
    buckets: usize,
    retry_after: Duration,
    seed: Option<u64>,
    clock: Option<quanta::Clock>,
}

impl fmt::Debug for AdaptiveThrottleBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottleBuilder")
            .field("name", &self.name)
            .field("k", &self.k)
            .field("window", &self.window)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

impl Default for AdaptiveThrottleBuilder {
    fn default() -> Self {
        Self {
            name: "throttle".to_owned(),
            k: 2.0,
            window: Duration::from_secs(120),
            buckets: 12,
            retry_after: Duration::from_secs(1),
            seed: None,
            clock: None,
        }
    }
}

impl AdaptiveThrottleBuilder {
    /// The throttle's name, the `throttle` label of its metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// The multiplier `K`, at least 1.0 (default 2.0).
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }
    /// How far back requests and accepts count (default 2 minutes).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }
    /// The window slides in this many steps (default 12).
    pub fn buckets(mut self, buckets: usize) -> Self {
        self.buckets = buckets;
        self
    }
    /// The hint a local rejection carries (default 1 s).
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = d;
        self
    }
    /// Seeds the random draws (tests; default random).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// The clock of the window (tests pass [`quanta::Clock::mock`]).
    pub fn clock(mut self, clock: quanta::Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<AdaptiveThrottle, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", &self.name, "must not be empty"));
        }
        if !(self.k >= 1.0 && self.k.is_finite()) {
            return Err(ConfigError::new(
                "k",
                self.k,
                "must be a finite number of at least 1.0",
            ));
        }
        if self.buckets == 0 || self.buckets > 3600 {
            return Err(ConfigError::new(
                "buckets",
                self.buckets,
                "must lie in 1..=3600",
            ));
        }
        let bucket_ns =
            u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX) / self.buckets as u64;
        if bucket_ns == 0 {
            return Err(ConfigError::new(
                "window",
                self.window,
                "too short for its buckets",
            ));
        }
        let clock = self.clock.unwrap_or_default();
        let name: Arc<str> = self.name.into();
        Ok(AdaptiveThrottle {
            shared: Arc::new(ThrottleShared {
                k: self.k,
                retry_after: self.retry_after,
                bucket_ns,
                epoch: clock.raw(),
                clock,
                state: Mutex::new(Ring {
                    buckets: vec![(0, 0); self.buckets],
                    current: 0,
                    requests: 0,
                    accepts: 0,
                    throttled: 0,
                    rng: match self.seed {
                        Some(s) => fastrand::Rng::with_seed(s),
                        None => fastrand::Rng::new(),
                    },
                }),
                #[cfg(feature = "metrics")]
                metrics: crate::event::ThrottleMetrics::new(&name),
                name,
            }),
        })
    }
}

/// A client-side adaptive throttle, shared by every service of its layer. See the
/// [module docs](self).
#[derive(Clone)]
pub struct AdaptiveThrottle {
    shared: Arc<ThrottleShared>,
}

impl fmt::Debug for AdaptiveThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottle")
            .field("name", &self.shared.name)
            .field("k", &self.shared.k)
            .finish_non_exhaustive()
    }
}

struct ThrottleShared {
    name: Arc<str>,
    k: f64,
    retry_after: Duration,
    bucket_ns: u64,
    clock: quanta::Clock,
    epoch: u64,
    state: Mutex<Ring>,
    #[cfg(feature = "metrics")]
    metrics: crate::event::ThrottleMetrics,
}

struct Ring {
    buckets: Vec<(u64, u64)>,
    current: u64,
    requests: u64,
    accepts: u64,
    throttled: u64,
    rng: fastrand::Rng,
}

impl Ring {
    fn advance(&mut self, bucket: u64) {
        if bucket <= self.current {
            return;
        }
        let n = self.buckets.len() as u64;
        let steps = (bucket - self.current).min(n);
        for s in 1..=steps {
            let idx = ((self.current + s) % n) as usize;
            let (r, a) = std::mem::take(&mut self.buckets[idx]);
            self.requests -= r;
            self.accepts -= a;
        }
        self.current = bucket;
    }

    fn slot(&mut self) -> &mut (u64, u64) {
        let n = self.buckets.len() as u64;
        &mut self.buckets[(self.current % n) as usize]
    }

    fn probability(&self, k: f64) -> f64 {
        probability(self.requests, self.accepts, k)
    }
}

/// Google SRE's client-side throttling formula.
fn probability(requests: u64, accepts: u64, k: f64) -> f64 {
    let r = requests as f64;
    ((r - k * accepts as f64) / (r + 1.0)).max(0.0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AdaptiveThrottle {
    /// The settings, with their defaults.
    pub fn builder() -> AdaptiveThrottleBuilder {
        AdaptiveThrottleBuilder::default()
    }

    /// The throttle's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    fn bucket(&self) -> u64 {
        let s = &self.shared;
        s.clock.delta_as_nanos(s.epoch, s.clock.raw()) / s.bucket_ns
    }

    /// The probability that the next request is rejected locally.
    pub fn rejection_probability(&self) -> f64 {
        let bucket = self.bucket();
        let mut ring = lock(&self.shared.state);
        ring.advance(bucket);
        ring.probability(self.shared.k)
    }

    /// Decides one request: counts it, and rejects it locally with the throttle's
    /// probability. An admitted request's [`ThrottleGuard`] records whether the dependency
    /// accepted it.
    pub fn try_admit(&self) -> Result<ThrottleGuard, Overloaded> {
        let bucket = self.bucket();
        let s = &self.shared;
        let mut ring = lock(&s.state);
        ring.advance(bucket);
        let p = ring.probability(s.k);
        ring.requests += 1;
        ring.slot().0 += 1;
        let reject = p > 0.0 && ring.rng.f64() < p;
        if reject {
            ring.throttled += 1;
        }
        drop(ring);
        #[cfg(feature = "metrics")]
        s.metrics.probability.set(p);
        if reject {
            #[cfg(feature = "metrics")]
            s.metrics.throttled.increment(1);
            tracing::trace!(target: "rampart_limit", throttle = %s.name, probability = p, "request throttled locally");
            return Err(Overloaded::new(
                Arc::clone(&s.name),
                None,
                ShedReason::Throttled,
                s.retry_after,
            ));
        }
        Ok(ThrottleGuard {
            throttle: Some(self.clone()),
        })
    }

    fn accept(&self, accepted: bool) {
        let s = &self.shared;
        #[cfg(feature = "metrics")]
        if accepted {
            s.metrics.accepted.increment(1);
        } else {
            s.metrics.rejected_upstream.increment(1);
        }
        if !accepted {
            return;
        }
        let bucket = self.bucket();
        let mut ring = lock(&s.state);
        ring.advance(bucket);
        ring.accepts += 1;
        ring.slot().1 += 1;
    }

    /// Requests, accepts and the rejection probability over the current window.
    pub fn snapshot(&self) -> ThrottleSnapshot {
        let bucket = self.bucket();
        let mut ring = lock(&self.shared.state);
        ring.advance(bucket);
        ThrottleSnapshot {
            name: self.shared.name.to_string(),
            requests: ring.requests,
            accepts: ring.accepts,
            probability: ring.probability(self.shared.k),
            throttled: ring.throttled,
        }
    }
}

/// An admitted request's ticket: [`record`](Self::record) its outcome. Dropped without one,
/// the request counts as not accepted.
#[derive(Debug)]
pub struct ThrottleGuard {
    throttle: Option<AdaptiveThrottle>,
}

impl ThrottleGuard {
    /// A [`Success`](Outcome::Success) or [`Ignored`](Outcome::Ignored) outcome is an
    /// accept; a [`Failure`](Outcome::Failure) (the dependency rejected or failed) is not.
    pub fn record(mut self, outcome: Outcome) {
        if let Some(t) = self.throttle.take() {
            t.accept(!outcome.is_failure());
        }
    }
}

impl Drop for ThrottleGuard {
    fn drop(&mut self) {
        if let Some(t) = self.throttle.take() {
            t.accept(false);
        }
    }
}

/// A throttle's state.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ThrottleSnapshot {
    /// The throttle's name.
    pub name: String,
    /// Requests attempted in the window (locally rejected ones included).
    pub requests: u64,
    /// Requests the dependency accepted in the window.
    pub accepts: u64,
    /// The probability that the next request is rejected locally.
    pub probability: f64,
    /// Requests rejected locally since the throttle was built.
    pub throttled: u64,
}

/// Client-side adaptive throttling around a service. See the [module docs](self).
pub struct Throttle<S, C = FnClassify> {
    inner: S,
    throttle: AdaptiveThrottle,
    classify: C,
}

impl<S> Throttle<S> {
    /// Wraps `inner`; every `Ok` is an accept.
    pub fn new(inner: S, throttle: AdaptiveThrottle) -> Self {
        Self::with_classifier(inner, throttle, FnClassify::errors_are_failures())
    }
}

impl<S, C> Throttle<S, C> {
    /// Wraps `inner`; `classify` says which results are accepts (successes).
    pub fn with_classifier(inner: S, throttle: AdaptiveThrottle, classify: C) -> Self {
        Self {
            inner,
            throttle,
            classify,
        }
    }

    /// The throttle.
    pub fn throttle(&self) -> &AdaptiveThrottle {
        &self.throttle
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

impl<S: Clone, C: Clone> Clone for Throttle<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            throttle: self.throttle.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Throttle<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("throttle", &self.throttle)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for Throttle<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ThrottleFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The decision needs no reservation: it is made in `call`.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.throttle.try_admit() {
            Ok(guard) => ThrottleFuture::called(self.inner.call(req), guard, self.classify.clone()),
            Err(e) => ThrottleFuture::rejected(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::probability;

    #[test]
    fn formula_matches_the_book() {
        assert_eq!(probability(0, 0, 2.0), 0.0);
        assert_eq!(probability(100, 50, 2.0), 0.0);
        assert!((probability(100, 20, 2.0) - 60.0 / 101.0).abs() < 1e-12);
        assert!((probability(100, 0, 2.0) - 100.0 / 101.0).abs() < 1e-12);
        assert!((probability(10, 4, 1.1) - (10.0 - 4.4) / 11.0).abs() < 1e-12);
    }
}
