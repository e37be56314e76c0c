//! The error of a rejected call.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rampart_health::{NeverReached, find_in_chain};

use crate::BreakerState;

/// A call was rejected by an open (or half-open and busy, or forced-open) circuit breaker.
///
/// Its [`source`](Error::source) is rampart-health's [`NeverReached`] marker carrying the
/// "try again after" hint, so outer layers find both without depending on this crate:
///
/// ```
/// use rampart_breaker::{BreakerHandle, BreakerOpen, Policy};
/// use rampart_health::{BoxError, is_never_reached, retry_after};
///
/// let breaker = BreakerHandle::new(Policy::default());
/// breaker.force_open();
/// let err: BoxError = breaker.try_acquire().unwrap_err().into();
/// assert!(is_never_reached(&*err));
/// assert!(BreakerOpen::find(&*err).is_some());
/// assert_eq!(err.to_string(), "circuit breaker `breaker` is open");
/// ```
#[derive(Debug)]
pub struct BreakerOpen {
    breaker: Arc<str>,
    state: BreakerState,
    marker: NeverReached,
}

impl BreakerOpen {
    pub(crate) fn new(
        breaker: Arc<str>,
        state: BreakerState,
        retry_after: Option<Duration>,
    ) -> Self {
        let marker = match retry_after {
            Some(after) => NeverReached::new().with_retry_after(after),
            None => NeverReached::new(),
        };
        Self {
            breaker,
            state,
            marker,
        }
    }

    /// The time left until the breaker admits its next trial call: `Some` when it is open on
    /// a timer, `None` when it is forced open or half-open with every trial permit taken.
    pub fn retry_after(&self) -> Option<Duration> {
        self.marker.retry_after()
    }

    /// The state that rejected the call ([`Open`](BreakerState::Open),
    /// [`HalfOpen`](BreakerState::HalfOpen) or [`ForcedOpen`](BreakerState::ForcedOpen)).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// The name of the breaker that rejected the call.
    pub fn breaker(&self) -> &str {
        &self.breaker
    }

    /// Finds a `BreakerOpen` anywhere in `err`'s source chain (buffers, retries and timeouts
    /// wrap errors).
    pub fn find<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a BreakerOpen> {
        find_in_chain::<BreakerOpen>(err)
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            BreakerState::HalfOpen => write!(
                f,
                "circuit breaker `{}` is half-open and its trial calls are taken",
                self.breaker
            ),
            _ => write!(f, "circuit breaker `{}` is open", self.breaker),
        }
    }
}

impl Error for BreakerOpen {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.marker)
    }
}
