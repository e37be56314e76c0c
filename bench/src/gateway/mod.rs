//! The Rampart gateway that `bench/run.sh` measures against nginx and HAProxy.
//!
//! ```text
//! client ── rampart-gateway's server: HTTP/1.1, one current-thread runtime per core,
//!            header-read / keep-alive / body timeouts, connection cap, graceful shutdown
//!             └── handler (static dispatch, no per-request boxing)
//!                   ├── lean:    round robin + checks + ejection + retry + static apology
//!                   └── rampart: FallbackLayer → CircuitBreaker → Balance (active checks)
//!                         └── endpoint: per-worker pooled hyper::client::conn::http1
//! ```
//!
//! - [`upstream`]: per-worker, lock-free pools of upstream HTTP/1 connections;
//! - [`lean`]: the lean handler (no Rampart middleware on the request path);
//! - [`apology`]: the lean handler's static 503.
//!
//! [`stack::shared_parts`] builds the balancer (with its checkers, on the runtime it is called
//! in) and the breaker once; [`stack::worker_stack`] wraps them in a fallback layer per worker;
//! `rampart_gateway::server::spawn_workers` runs the workers (per-core `SO_REUSEPORT`
//! listeners, the handler dispatched statically). The whole gateway:
//!
//! ```no_run
//! use std::time::Duration;
//! use rampart::health::CheckerConfig;
//! use rampart_gateway::server::{ServerConfig, spawn_workers};
//! use rampart_bench::gateway::stack::{StackConfig, Stacked, shared_parts, worker_stack};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = StackConfig {
//!     upstreams: vec!["127.0.0.1:8081".parse()?, "127.0.0.1:8082".parse()?],
//!     checks: CheckerConfig::builder().interval(Duration::from_secs(1)).fall(2).rise(2).build()?,
//!     connect_timeout: Duration::from_secs(1),
//!     max_retries: 2,
//!     retry_after: Duration::from_secs(5),
//!     open_duration: Duration::from_secs(2),
//! };
//! // The checkers run on their own small runtime, off the request path.
//! let checks = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let (balance, breaker) = {
//!     let _in_checks = checks.enter();
//!     shared_parts(&config)?
//! };
//! std::thread::spawn(move || checks.block_on(std::future::pending::<()>()));
//! let server = ServerConfig::builder().name("gateway").workers(2).build()?;
//! let workers = spawn_workers("127.0.0.1:8080".parse()?, &server, move |_worker| {
//!     Stacked::new(worker_stack(balance.clone(), &breaker, config.retry_after))
//! })?;
//! println!("{}", workers.local_addr());
//! workers.run_until_signal()?;
//! # Ok(()) }
//! ```

pub mod apology;
pub mod lean;
pub mod stack;
pub mod upstream;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
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

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 (hyper manages the connection itself).
///
/// One pass over the (usually few) header names, comparing each with the hop-by-hop set;
/// the map is only searched again when one is present (seven `contains_key` hash lookups per
/// message showed up in the profile, about 0.5 % of the gateway's CPU).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    let hop = |name: &HeaderName| {
        name == CONNECTION
            || name == TE
            || name == TRAILER
            || name == TRANSFER_ENCODING
            || name == UPGRADE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
    };
    if !headers.keys().any(hop) {
        return;
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
