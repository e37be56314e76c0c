//! Which responses count as failures for the fallback layers.
//!
//! [`FailureStatuses`] is the default [`Classify`] of [`FallbackLayer`](crate::FallbackLayer)
//! and [`StaleIfErrorLayer`](crate::StaleIfErrorLayer): `500`, `502`, `503` and `504` are
//! failures, everything else (including `501 Not Implemented` and every 4xx) is not. Any other
//! [`Classify`] over `http::Response<B>` can replace it, for example
//! [`rampart_health::HttpClassifier`] to treat every 5xx as a failure.
//!
//! ```
//! use http::StatusCode;
//! use rampart_fallback::FailureStatuses;
//! use rampart_health::{Classify, Outcome};
//!
//! let c = FailureStatuses::default();
//! let r = http::Response::builder().status(502).body(()).unwrap();
//! assert_eq!(c.classify(Ok::<_, &std::io::Error>(&r)), Outcome::Failure);
//! let c = FailureStatuses::new([StatusCode::INTERNAL_SERVER_ERROR]);
//! assert_eq!(c.classify(Ok::<_, &std::io::Error>(&r)), Outcome::Success);
//! ```

use http::StatusCode;
use rampart_health::{Classify, Outcome};

/// A [`Classify`] that fails a fixed set of status codes (and every `Err`).
///
/// Default: `500`, `502`, `503`, `504`. Holds the set as a bitmap over `100..=999` (every code `http::StatusCode` can hold), so
/// classifying is two instructions and cloning is a copy.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FailureStatuses {
    bits: [u64; 15],
}

impl Default for FailureStatuses {
    fn default() -> Self {
        Self::new([
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT,
        ])
    }
}

impl FailureStatuses {
    /// Exactly `statuses` are failures.
    pub fn new(statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        let mut me = Self { bits: [0; 15] };
        for s in statuses {
            me = me.with(s);
        }
        me
    }

    /// No status is a failure (only `Err`s are).
    pub const fn none() -> Self {
        Self { bits: [0; 15] }
    }

    /// Adds `status` to the set.
    pub fn with(mut self, status: StatusCode) -> Self {
        let i = usize::from(status.as_u16()) - 100;
        self.bits[i / 64] |= 1 << (i % 64);
        self
    }

    /// Removes `status` from the set.
    pub fn without(mut self, status: StatusCode) -> Self {
        let i = usize::from(status.as_u16()) - 100;
        self.bits[i / 64] &= !(1 << (i % 64));
        self
    }

    /// Whether `status` is in the set.
    #[inline]
    pub fn contains(&self, status: StatusCode) -> bool {
        let i = usize::from(status.as_u16()) - 100;
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }
}

impl std::fmt::Debug for FailureStatuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codes = (100u16..1000)
            .filter_map(|c| StatusCode::from_u16(c).ok())
            .filter(|s| self.contains(*s))
            .map(|s| s.as_u16());
        f.debug_set().entries(codes).finish()
    }
}

impl<B, E> Classify<http::Response<B>, E> for FailureStatuses {
    #[inline]
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            Ok(r) if self.contains(r.status()) => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set() {
        let c = FailureStatuses::default();
        for (code, fail) in [
            (200, false),
            (404, false),
            (429, false),
            (500, true),
            (501, false),
            (502, true),
            (503, true),
            (504, true),
            (505, false),
            (599, false),
            (100, false),
        ] {
            let s = StatusCode::from_u16(code).unwrap();
            assert_eq!(c.contains(s), fail, "{code}");
        }
        assert_eq!(format!("{c:?}"), "{500, 502, 503, 504}");
    }

    #[test]
    fn edit_set() {
        let c = FailureStatuses::none()
            .with(StatusCode::TOO_MANY_REQUESTS)
            .with(StatusCode::from_u16(599).unwrap())
            .without(StatusCode::TOO_MANY_REQUESTS);
        assert!(!c.contains(StatusCode::TOO_MANY_REQUESTS));
        assert!(c.contains(StatusCode::from_u16(599).unwrap()));
    }
}
