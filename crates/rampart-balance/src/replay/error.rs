//! The error of a streamed request whose connection closed before an answer.

use std::fmt;

use rampart_health::BoxError;

/// The endpoint closed the connection (end of stream or reset) before any response head
/// arrived, and the request's body was streamed (larger than the replay limit, or of unknown
/// length), so it could not be sent again: the balancer did not retry it.
///
/// The usual cause is a race every pooled HTTP/1 client meets: the request went out on a
/// kept-alive connection that the backend was closing at that moment, for instance after it
/// answered an earlier request early without reading that request's body. Whether the backend
/// saw any of this request is unknown. A response the backend did send (a `503` before it read
/// the body) is never turned into this error: the caller gets the response.
///
/// The transport error is the [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct ClosedBeforeResponse {
    source: BoxError,
}

impl ClosedBeforeResponse {
    pub(crate) fn new(source: BoxError) -> Self {
        Self { source }
    }
}

impl fmt::Display for ClosedBeforeResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "endpoint closed the connection before answering; the streamed request body could not be replayed",
        )
    }
}

impl std::error::Error for ClosedBeforeResponse {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Whether `e` says the connection ended (end of stream, reset, broken pipe) before a response
/// head arrived, anywhere in its chain. A failed connection attempt is not such an error (the
/// request never left; the endpoint marks it `NeverReached`), nor is a timeout.
pub(crate) fn closed_before_response(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<rampart_health::NeverReached>() {
            return false;
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled())
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        cur = err.source();
    }
    false
}
