//! The value strategies a degraded call answers with: [`FallbackValue`] and its kinds
//! ([`OrDefault`], [`OrValue`], [`OrElse`], [`OrWith`]).

use std::future::{Future, Ready, ready};
use std::marker::PhantomData;

use super::DegradeReason;

/// Where a degraded call's value comes from.
pub trait FallbackValue {
    /// The value.
    type Output;
    /// The future that produces it.
    type Future: Future<Output = Self::Output>;
    /// Starts producing the fallback for `reason`.
    fn into_future(self, reason: DegradeReason) -> Self::Future;
}

/// Falls back to `T::default()`.
#[derive(Debug)]
pub struct OrDefault<T>(PhantomData<fn() -> T>);

impl<T> OrDefault<T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: Default> FallbackValue for OrDefault<T> {
    type Output = T;
    type Future = Ready<T>;
    fn into_future(self, _reason: DegradeReason) -> Ready<T> {
        ready(T::default())
    }
}

/// Falls back to a given value.
#[derive(Debug)]
pub struct OrValue<T>(T);

impl<T> OrValue<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(value)
    }
}

impl<T> FallbackValue for OrValue<T> {
    type Output = T;
    type Future = Ready<T>;
    fn into_future(self, _reason: DegradeReason) -> Ready<T> {
        ready(self.0)
    }
}

/// Falls back to the output of a future made from the reason.
pub struct OrElse<G, Fut> {
    f: G,
    _fut: PhantomData<fn() -> Fut>,
}

impl<G, Fut> std::fmt::Debug for OrElse<G, Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrElse").finish_non_exhaustive()
    }
}

impl<G, Fut> OrElse<G, Fut> {
    pub(crate) fn new(f: G) -> Self {
        Self {
            f,
            _fut: PhantomData,
        }
    }
}

impl<G, Fut> FallbackValue for OrElse<G, Fut>
where
    G: FnOnce(DegradeReason) -> Fut,
    Fut: Future,
{
    type Output = Fut::Output;
    type Future = Fut;
    fn into_future(self, reason: DegradeReason) -> Fut {
        (self.f)(reason)
    }
}

/// Falls back to the value of a function of the reason (what [`DegradeLayer`](super::DegradeLayer) uses).
pub struct OrWith<G, T> {
    f: G,
    _t: PhantomData<fn() -> T>,
}

impl<G, T> std::fmt::Debug for OrWith<G, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrWith").finish_non_exhaustive()
    }
}

impl<G, T> OrWith<G, T> {
    pub(crate) fn new(f: G) -> Self {
        Self { f, _t: PhantomData }
    }
}

impl<G, T> FallbackValue for OrWith<G, T>
where
    G: FnOnce(DegradeReason) -> T,
{
    type Output = T;
    type Future = Ready<T>;
    fn into_future(self, reason: DegradeReason) -> Ready<T> {
        ready((self.f)(reason))
    }
}
