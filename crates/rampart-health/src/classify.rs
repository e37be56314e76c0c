//! Outcome classification: separate from reaction.
//!
//! A [`Classify`] turns a call's result into an [`Outcome`]. Every layer that reacts to
//! failures (breaker, outlier detector, fallback) takes one, so "what counts as a failure" is
//! decided once, in one place.
//!
//! - Any `Fn(Result<&T, &E>) -> Outcome` is a classifier (blanket impl).
//! - [`HttpClassifier`] is the HTTP default: transport errors and 5xx are failures, 4xx are
//!   not (caller mistakes), and 429 is configurable.
//! - `TowerHttpClassify` (feature `http`) adapts tower-http's `ClassifyResponse`
//!   classifiers.
//!
//! Slow calls are not a classification: whoever records an outcome compares the call's
//! latency with its own threshold.
//!
//! # Example
//!
//! ```
//! use rampart_health::{Classify, Outcome};
//!
//! // Any closure over `Result<&T, &E>` is a classifier.
//! let classify = |r: Result<&u32, &String>| match r {
//!     Ok(n) if *n >= 500 => Outcome::Failure,
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure,
//! };
//! assert_eq!(classify.classify(Ok(&200)), Outcome::Success);
//! assert_eq!(classify.classify(Err(&"boom".to_string())), Outcome::Failure);
//! ```

use std::fmt;

use http::StatusCode;
#[cfg(feature = "http")]
use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

/// What a call's result means for the health of whatever served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded (including caller mistakes such as a 404).
    Success,
    /// The call failed in a way that says something about the callee's health.
    Failure,
    /// The call says nothing about health (for example it was cancelled, or the error is the
    /// caller's own); it is not recorded.
    Ignored,
}

impl Outcome {
    /// `true` for [`Outcome::Failure`].
    #[inline]
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure)
    }

    /// `true` for [`Outcome::Success`].
    #[inline]
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }
}

/// Turns a call's result into an [`Outcome`].
///
/// Implemented for every `Fn(Result<&T, &E>) -> Outcome`, and by [`HttpClassifier`] for HTTP
/// responses.
pub trait Classify<T, E> {
    /// Classifies one result.
    fn classify(&self, result: Result<&T, &E>) -> Outcome;
}

impl<F, T, E> Classify<T, E> for F
where
    F: Fn(Result<&T, &E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        self(result)
    }
}

/// A classifier for any result type: every `Ok` is a success, every `Err` a failure.
///
/// The default for services that are not HTTP.
///
/// ```
/// use rampart_health::{Classify, FnClassify, Outcome};
/// let c = FnClassify::errors_are_failures();
/// assert_eq!(Classify::<u8, ()>::classify(&c, Ok(&1)), Outcome::Success);
/// assert_eq!(Classify::<u8, ()>::classify(&c, Err(&())), Outcome::Failure);
/// ```
#[derive(Clone, Copy, Default)]
pub struct FnClassify<F = ()> {
    f: F,
}

impl FnClassify<()> {
    /// `Ok` → success, `Err` → failure.
    pub fn errors_are_failures() -> Self {
        Self { f: () }
    }
}

impl<F> FnClassify<F> {
    /// Wraps a closure as a named classifier type.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> fmt::Debug for FnClassify<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnClassify").finish_non_exhaustive()
    }
}

impl<T, E> Classify<T, E> for FnClassify<()> {
    #[inline]
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

impl<F, T, E> Classify<T, E> for FnClassify<F>
where
    F: Fn(Result<&T, &E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        (self.f)(result)
    }
}

/// The default HTTP classifier.
///
/// Transport errors (`Err`) and 5xx responses are failures; everything else, 4xx included, is
/// a success. `429 Too Many Requests` is a success unless [`HttpClassifier::rate_limit_is_failure`]
/// says otherwise (an upstream shedding load is arguably sick).
///
/// ```
/// use rampart_health::{Classify, HttpClassifier, Outcome};
/// let c = HttpClassifier::default().rate_limit_is_failure(true);
/// let r = http::Response::builder().status(429).body(()).unwrap();
/// assert_eq!(c.classify(Ok::<_, &std::io::Error>(&r)), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpClassifier {
    rate_limit_is_failure: bool,
}

impl HttpClassifier {
    /// The default: 5xx and transport errors fail, 4xx (429 included) succeed.
    pub const fn new() -> Self {
        Self {
            rate_limit_is_failure: false,
        }
    }

    /// Whether `429 Too Many Requests` counts as a failure (default `false`).
    pub const fn rate_limit_is_failure(mut self, yes: bool) -> Self {
        self.rate_limit_is_failure = yes;
        self
    }

    /// Classifies a status code alone.
    #[inline]
    pub fn classify_status(&self, status: StatusCode) -> Outcome {
        if status.is_server_error()
            || (self.rate_limit_is_failure && status == StatusCode::TOO_MANY_REQUESTS)
        {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

impl<B, E> Classify<http::Response<B>, E> for HttpClassifier {
    #[inline]
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(response) => self.classify_status(response.status()),
            Err(_) => Outcome::Failure,
        }
    }
}

/// Adapts a tower-http [`ClassifyResponse`] (such as `ServerErrorsAsFailures` or
/// `GrpcErrorsAsFailures`) to [`Classify`].
///
/// A response that tower-http can only judge at end of stream (gRPC trailers) counts as a
/// success here: the layers that use a `Classify` decide when the response head arrives.
///
/// ```
/// use rampart_health::{Classify, Outcome, TowerHttpClassify};
/// use tower_http::classify::ServerErrorsAsFailures;
///
/// let c = TowerHttpClassify::new(ServerErrorsAsFailures::new());
/// let r = http::Response::builder().status(500).body(()).unwrap();
/// assert_eq!(c.classify(Ok::<_, &std::io::Error>(&r)), Outcome::Failure);
/// ```
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone, Copy)]
pub struct TowerHttpClassify<C> {
    inner: C,
}

#[cfg(feature = "http")]
impl<C> TowerHttpClassify<C> {
    /// Wraps a tower-http classifier.
    pub fn new(inner: C) -> Self {
        Self { inner }
    }

    /// The wrapped classifier.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }
}

#[cfg(feature = "http")]
impl<C, B, E> Classify<http::Response<B>, E> for TowerHttpClassify<C>
where
    C: ClassifyResponse + Clone,
{
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(response) => match self.inner.clone().classify_response(response) {
                ClassifiedResponse::Ready(Ok(())) => Outcome::Success,
                ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
                ClassifiedResponse::RequiresEos(_) => Outcome::Success,
            },
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> http::Response<()> {
        http::Response::builder().status(status).body(()).unwrap()
    }

    #[test]
    fn http_default_fails_5xx_and_errors_only() {
        let c = HttpClassifier::default();
        for (s, o) in [
            (200, Outcome::Success),
            (302, Outcome::Success),
            (400, Outcome::Success),
            (404, Outcome::Success),
            (429, Outcome::Success),
            (500, Outcome::Failure),
            (503, Outcome::Failure),
            (599, Outcome::Failure),
        ] {
            assert_eq!(c.classify(Ok::<_, &()>(&resp(s))), o, "status {s}");
        }
        assert_eq!(
            Classify::<http::Response<()>, ()>::classify(&c, Err(&())),
            Outcome::Failure
        );
    }

    #[test]
    fn rate_limit_is_configurable() {
        let c = HttpClassifier::new().rate_limit_is_failure(true);
        assert_eq!(c.classify(Ok::<_, &()>(&resp(429))), Outcome::Failure);
        assert_eq!(c.classify(Ok::<_, &()>(&resp(404))), Outcome::Success);
    }

    #[test]
    fn closure_classifier() {
        let c = |r: Result<&i32, &()>| {
            if r.is_err() {
                Outcome::Ignored
            } else {
                Outcome::Success
            }
        };
        assert_eq!(c.classify(Err(&())), Outcome::Ignored);
        assert_eq!(c.classify(Ok(&1)), Outcome::Success);
    }

    #[cfg(feature = "http")]
    #[test]
    fn tower_http_adapter() {
        use tower_http::classify::ServerErrorsAsFailures;
        let c = TowerHttpClassify::new(ServerErrorsAsFailures::new());
        assert_eq!(c.classify(Ok::<_, &String>(&resp(502))), Outcome::Failure);
        assert_eq!(c.classify(Ok::<_, &String>(&resp(404))), Outcome::Success);
        assert_eq!(
            Classify::<http::Response<()>, String>::classify(&c, Err(&"x".to_string())),
            Outcome::Failure
        );
    }
}
