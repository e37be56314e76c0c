//! The balancer's own error.

use std::error::Error;
use std::fmt;

use rampart_health::NeverReached;

/// No endpoint could take the request: none is routable and panic mode does not apply (its
/// threshold is 0, or the pool is empty).
///
/// Its [`source`](Error::source) is a [`NeverReached`] marker, so outer layers (a GSLB
/// selector retrying on the next site, a fallback) recognise it with
/// [`rampart_health::is_never_reached`] without depending on this crate.
///
/// ```
/// use rampart_balance::NoHealthyEndpoints;
/// let e = NoHealthyEndpoints::new(0, 3);
/// assert_eq!(e.to_string(), "no healthy endpoints (0 of 3 routable)");
/// assert!(rampart_health::is_never_reached(&e));
/// ```
#[derive(Debug)]
pub struct NoHealthyEndpoints {
    routable: usize,
    total: usize,
    marker: NeverReached,
}

impl NoHealthyEndpoints {
    /// `routable` of `total` endpoints could take traffic (normally 0).
    pub fn new(routable: usize, total: usize) -> Self {
        Self {
            routable,
            total,
            marker: NeverReached::new(),
        }
    }

    /// Endpoints in the pool when the request failed.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Routable endpoints when the request failed.
    pub fn routable(&self) -> usize {
        self.routable
    }
}

impl fmt::Display for NoHealthyEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no healthy endpoints ({} of {} routable)",
            self.routable, self.total
        )
    }
}

impl Error for NoHealthyEndpoints {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.marker)
    }
}
