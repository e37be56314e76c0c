//! The lean gateway that `bench/run.sh` measures next to `rampart-gateway` (the crate's
//! binary, run from a generated configuration file), nginx and HAProxy.
//!
//! ```text
//! client ── rampart-gateway's server: HTTP/1.1, one current-thread runtime per core
//!             └── lean: round robin + checks + ejection + retry + static apology
//!                   └── rampart_gateway::proxy::Upstream: per-worker pooled hyper::client::conn::http1
//! ```
//!
//! - [`lean`]: the lean handler (no Rampart middleware on the request path), to see what the
//!   middleware of the real gateway costs;
//! - [`apology`]: the lean handler's static 503.
//!
//! The full gateway is `rampart_gateway::proxy::Proxy`; the `gateway` binary's
//! `--stack rampart` builds it from its flags, and `bench/run.sh` runs the `rampart-gateway`
//! binary itself.

pub mod apology;
pub mod lean;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A gateway response body: the upstream's body streamed through, or a static page.
#[derive(Debug)]
pub enum GatewayBody {
    /// Streamed from the upstream.
    Upstream {
        /// The body.
        body: Incoming,
    },
    /// A page in memory (the apology), sent in one frame.
    Static {
        /// The page, until it is sent.
        body: Option<Bytes>,
    },
}

impl From<Bytes> for GatewayBody {
    fn from(b: Bytes) -> Self {
        Self::Static { body: Some(b) }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Both variants are `Unpin` (hyper's `Incoming` is), so no pin projection is needed.
        match self.get_mut() {
            Self::Upstream { body } => Pin::new(body).poll_frame(cx),
            Self::Static { body } => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream { body } => body.is_end_stream(),
            Self::Static { body } => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream { body } => body.size_hint(),
            Self::Static { body } => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

pub use rampart_gateway::proxy::strip_hop_by_hop;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http::HeaderMap;
    use http::header::{CONNECTION, TRANSFER_ENCODING};

    #[test]
    fn hop_by_hop_headers_are_removed_and_others_kept() {
        let mut h = HeaderMap::new();
        h.insert("host", "a".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        h.insert(CONNECTION, "keep-alive".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("host"));
    }
}
