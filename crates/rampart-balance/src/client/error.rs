//! Errors of [`HttpEndpoint`](super::HttpEndpoint).

use std::fmt;
use std::time::Duration;

/// The endpoint did not answer (response head) within the request timeout.
///
/// The request may have been processed: [`HttpPolicy`](crate::HttpPolicy) retries it
/// elsewhere only when it is idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeout {
    after: Duration,
}

impl RequestTimeout {
    pub(crate) fn new(after: Duration) -> Self {
        Self { after }
    }

    /// The timeout that elapsed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for RequestTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint did not answer within {:?}", self.after)
    }
}

impl std::error::Error for RequestTimeout {}
