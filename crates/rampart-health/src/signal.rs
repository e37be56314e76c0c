//! The facts that cross crate lines through the error chain.
//!
//! Rampart's middleware crates never depend on each other, yet an outer layer must know two
//! things about an inner layer's failure:
//!
//! - [`NeverReached`]: the request never reached a backend (no healthy endpoint, connection
//!   refused, breaker open). It is safe to retry elsewhere, and it is an availability problem
//!   rather than a bug.
//! - [`RetryAfter`]: the failing layer knows when trying again makes sense (a breaker's time
//!   to its next probe); a fallback layer turns it into a `Retry-After` header.
//!
//! Layers attach these as a link in their error's [`source`](std::error::Error::source) chain
//! (or return them directly); [`find_in_chain`], [`is_never_reached`] and [`retry_after`]
//! find them however deeply buffers, retries and timeouts have wrapped the error.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use rampart_health::{BoxError, NeverReached, is_never_reached, retry_after};
//!
//! // A layer's own error that carries the marker as its source.
//! #[derive(Debug)]
//! struct PoolEmpty(NeverReached);
//! impl std::fmt::Display for PoolEmpty {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str("pool empty")
//!     }
//! }
//! impl std::error::Error for PoolEmpty {
//!     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
//!         Some(&self.0)
//!     }
//! }
//!
//! let err: BoxError =
//!     Box::new(PoolEmpty(NeverReached::new().with_retry_after(Duration::from_secs(3))));
//! assert!(is_never_reached(&*err));
//! assert_eq!(retry_after(&*err), Some(Duration::from_secs(3)));
//! ```

use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::BoxError;

/// Marker error: this request never reached a backend, so retrying it elsewhere is safe.
///
/// May carry a [`RetryAfter`] hint and a source (the transport error that proves it).
#[derive(Debug, Default)]
pub struct NeverReached {
    retry_after: Option<Duration>,
    source: Option<BoxError>,
}

impl NeverReached {
    /// A bare marker.
    pub const fn new() -> Self {
        Self {
            retry_after: None,
            source: None,
        }
    }

    /// Adds a "try again after" hint.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Wraps the error that shows the request never left (for example a refused connection).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The "try again after" hint, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for NeverReached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request never reached a backend")
    }
}

impl Error for NeverReached {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// Hint: trying again makes sense after this long.
///
/// ```
/// use std::time::Duration;
/// use rampart_health::{RetryAfter, retry_after};
/// let e = RetryAfter::new(Duration::from_millis(7200));
/// assert_eq!(e.after(), Duration::from_millis(7200));
/// assert_eq!(retry_after(&e), Some(Duration::from_millis(7200)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    after: Duration,
}

impl RetryAfter {
    /// A hint of `after`.
    pub const fn new(after: Duration) -> Self {
        Self { after }
    }

    /// How long to wait.
    pub const fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "try again after {:?}", self.after)
    }
}

impl Error for RetryAfter {}

/// Finds the first error of type `T` in `err`'s chain (`err` itself included).
///
/// ```
/// use rampart_health::{BoxError, NeverReached, find_in_chain};
/// let wrapped: BoxError = Box::new(NeverReached::new().with_source(std::io::Error::other("refused")));
/// assert!(find_in_chain::<std::io::Error>(&*wrapped).is_some());
/// ```
pub fn find_in_chain<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut current: Option<&'a (dyn Error + 'static)> = Some(err);
    // Bounded walk: a pathological cyclic chain must not hang us.
    let mut depth = 0;
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        depth += 1;
        if depth > 64 {
            return None;
        }
        current = e.source();
    }
    None
}

/// `true` when `err`'s chain holds a [`NeverReached`] marker.
pub fn is_never_reached(err: &(dyn Error + 'static)) -> bool {
    find_in_chain::<NeverReached>(err).is_some()
}

/// The first "try again after" hint in `err`'s chain: a [`RetryAfter`] link, or the hint of a
/// [`NeverReached`] marker.
pub fn retry_after(err: &(dyn Error + 'static)) -> Option<Duration> {
    let mut current: Option<&(dyn Error + 'static)> = Some(err);
    let mut depth = 0;
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<RetryAfter>() {
            return Some(r.after());
        }
        if let Some(Some(after)) = e
            .downcast_ref::<NeverReached>()
            .map(NeverReached::retry_after)
        {
            return Some(after);
        }
        depth += 1;
        if depth > 64 {
            return None;
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn found_deep_in_a_chain() {
        let inner = NeverReached::new().with_retry_after(Duration::from_secs(2));
        let err: BoxError = Box::new(Wrapper(Box::new(Wrapper(Box::new(inner)))));
        assert!(is_never_reached(&*err));
        assert_eq!(retry_after(&*err), Some(Duration::from_secs(2)));
    }

    #[test]
    fn absent_when_not_there() {
        let err: BoxError = Box::new(Wrapper(Box::new(std::io::Error::other("x"))));
        assert!(!is_never_reached(&*err));
        assert_eq!(retry_after(&*err), None);
    }

    #[test]
    fn standalone_retry_after() {
        let err: BoxError = Box::new(Wrapper(Box::new(RetryAfter::new(Duration::from_secs(9)))));
        assert_eq!(retry_after(&*err), Some(Duration::from_secs(9)));
        assert!(!is_never_reached(&*err));
    }

    #[test]
    fn source_of_never_reached_is_reachable() {
        let err = NeverReached::new().with_source(std::io::Error::other("refused"));
        let io = find_in_chain::<std::io::Error>(&err).unwrap();
        assert_eq!(io.to_string(), "refused");
    }
}
