//! The error of a shed request.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rampart_health::{NeverReached, find_in_chain};

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShedReason {
    /// The concurrency limit (or the partition's room under it) was reached.
    Limit,
    /// The queue was full.
    QueueFull,
    /// The request waited in the queue longer than the queue allows.
    QueueTimeout,
    /// The client-side adaptive throttle rejected it locally.
    Throttled,
}

impl ShedReason {
    /// A short label (`"limit"`, `"queue_full"`, `"queue_timeout"`, `"throttled"`), as used in
    /// metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Limit => "limit",
            ShedReason::QueueFull => "queue_full",
            ShedReason::QueueTimeout => "queue_timeout",
            ShedReason::Throttled => "throttled",
        }
    }
}

impl fmt::Display for ShedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShedReason::Limit => "concurrency limit reached",
            ShedReason::QueueFull => "queue full",
            ShedReason::QueueTimeout => "waited too long in the queue",
            ShedReason::Throttled => "throttled locally",
        })
    }
}

/// A request was shed: it never reached the service behind the limiter (or throttle).
///
/// Its [`source`](Error::source) is rampart-health's [`NeverReached`] marker carrying the
/// retry-after hint, so a fallback layer answers `503` with `Retry-After` and a retrying
/// client knows the request is safe to send elsewhere, without depending on this crate:
///
/// ```
/// use rampart_health::{BoxError, is_never_reached, retry_after};
/// use rampart_limit::{Class, Limiter, Overloaded, ShedReason, algorithm::Fixed};
///
/// let limiter = Limiter::builder().name("api").algorithm(Fixed::new(1)?).build()?;
/// let _held = limiter.try_acquire(Class::Partition(0)).unwrap();
/// let err: BoxError = limiter.try_acquire(Class::Partition(0)).unwrap_err().into();
/// assert!(is_never_reached(&*err));
/// assert_eq!(retry_after(&*err), Some(std::time::Duration::from_secs(1)));
/// let shed = Overloaded::find(&*err).unwrap();
/// assert_eq!(shed.reason(), ShedReason::Limit);
/// assert_eq!(err.to_string(), "limiter `api` shed the request (partition `default`): concurrency limit reached");
/// # Ok::<(), rampart_health::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct Overloaded {
    limiter: Arc<str>,
    partition: Option<Arc<str>>,
    reason: ShedReason,
    marker: NeverReached,
}

impl Overloaded {
    pub(crate) fn new(
        limiter: Arc<str>,
        partition: Option<Arc<str>>,
        reason: ShedReason,
        retry_after: Duration,
    ) -> Self {
        Self {
            limiter,
            partition,
            reason,
            marker: NeverReached::new().with_retry_after(retry_after),
        }
    }

    /// Why the request was shed.
    pub fn reason(&self) -> ShedReason {
        self.reason
    }

    /// The name of the limiter (or throttle) that shed it.
    pub fn limiter(&self) -> &str {
        &self.limiter
    }

    /// The partition the request belonged to (`None` for a throttle).
    pub fn partition(&self) -> Option<&str> {
        self.partition.as_deref()
    }

    /// When trying again makes sense.
    pub fn retry_after(&self) -> Option<Duration> {
        self.marker.retry_after()
    }

    /// Finds an `Overloaded` anywhere in `err`'s source chain.
    pub fn find<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a Overloaded> {
        find_in_chain::<Overloaded>(err)
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.partition, self.reason) {
            (_, ShedReason::Throttled) => write!(
                f,
                "throttle `{}` rejected the request locally",
                self.limiter
            ),
            (Some(p), reason) => write!(
                f,
                "limiter `{}` shed the request (partition `{p}`): {reason}",
                self.limiter
            ),
            (None, reason) => write!(f, "limiter `{}` shed the request: {reason}", self.limiter),
        }
    }
}

impl Error for Overloaded {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.marker)
    }
}
