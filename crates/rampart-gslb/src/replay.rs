//! Request replay: whether a request can be sent again to the next site.
//!
//! When a site fails a request *before it reached any backend* (its balancer had no healthy
//! endpoint, the connection was refused: a [`NeverReached`](rampart_health::NeverReached) in the
//! error chain), the selector retries it on the next site in the failover order. The inner
//! service consumes the request, so a copy must be taken before the first attempt; a
//! [`CloneRequest`] strategy decides whether that is possible.
//!
//! - [`NoReplay`] (the default): never; failures are returned as they are.
//! - [`CloneReplay`]: any `Req: Clone` (gRPC-free RPC types, test requests, ...).
//! - [`HttpReplay`]: an `http::Request<B>` whose body is already buffered (`B: Clone`, such as
//!   `Full<Bytes>`, `String` or `Empty`) and of known length within a limit. Streaming bodies
//!   (no exact size hint) are never replayed.
//! - Any `Fn(&Req) -> Option<Req>` closure.
//!
//! Taking the copy costs one clone per request (for HTTP, the header map), so only configure a
//! strategy where the retry is worth it.
//!
//! # Example
//!
//! ```
//! use rampart_gslb::replay::{CloneRequest, HttpReplay};
//!
//! let replay = HttpReplay::new(16 * 1024);
//! let small = http::Request::new(String::from("{\"sku\":42}"));
//! assert!(replay.clone_request(&small).is_some());
//! let big = http::Request::new("x".repeat(20_000));
//! assert!(replay.clone_request(&big).is_none());
//! ```

/// Makes a copy of a request for a retry on another site, or says it cannot.
pub trait CloneRequest<Req>: Send + Sync + 'static {
    /// A copy of `req` to send to another site, or `None` if it cannot be replayed.
    fn clone_request(&self, req: &Req) -> Option<Req>;
}

impl<Req, F> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req> + Send + Sync + 'static,
{
    fn clone_request(&self, req: &Req) -> Option<Req> {
        self(req)
    }
}

/// Never replays: no retry on another site.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

impl<Req> CloneRequest<Req> for NoReplay {
    fn clone_request(&self, _req: &Req) -> Option<Req> {
        None
    }
}

/// Replays any `Clone` request.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneReplay;

impl<Req: Clone> CloneRequest<Req> for CloneReplay {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Replays HTTP requests whose body is buffered (`B: Clone`) and of known length up to a limit.
///
/// The length is the body's exact [`size_hint`](http_body::Body::size_hint); a body that
/// cannot say its exact length is treated as streaming and not replayed. Method and
/// idempotency do not matter here: a request is only replayed when it never reached a
/// backend.
#[derive(Debug, Clone, Copy)]
pub struct HttpReplay {
    max_body_bytes: u64,
}

impl HttpReplay {
    /// Replays bodies of at most `max_body_bytes`.
    pub const fn new(max_body_bytes: u64) -> Self {
        Self { max_body_bytes }
    }

    /// The body size limit.
    pub const fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }
}

impl Default for HttpReplay {
    /// 64 KiB.
    fn default() -> Self {
        Self::new(64 * 1024)
    }
}

impl<B> CloneRequest<http::Request<B>> for HttpReplay
where
    B: http_body::Body + Clone,
{
    fn clone_request(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
        let len = http_body::Body::size_hint(req.body()).exact()?;
        if len > self.max_body_bytes {
            return None;
        }
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    #[test]
    fn http_replay_needs_known_length_within_limit() {
        let r = HttpReplay::new(4);
        let ok = http::Request::builder()
            .header("x-a", "1")
            .body(Full::new(Bytes::from_static(b"abcd")))
            .unwrap();
        let copy = r.clone_request(&ok).unwrap();
        assert_eq!(copy.headers()["x-a"], "1");
        let too_big = http::Request::new(Full::new(Bytes::from_static(b"abcde")));
        assert!(r.clone_request(&too_big).is_none());
    }

    #[test]
    fn streaming_bodies_are_not_replayed() {
        #[derive(Clone)]
        struct Streamy;
        impl http_body::Body for Streamy {
            type Data = Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
                std::task::Poll::Ready(None)
            }
        }
        // Default size hint: unknown length.
        assert!(
            HttpReplay::default()
                .clone_request(&http::Request::new(Streamy))
                .is_none()
        );
    }

    #[test]
    fn no_replay_and_clone_replay() {
        assert_eq!(CloneRequest::<u8>::clone_request(&NoReplay, &1), None);
        assert_eq!(CloneReplay.clone_request(&7u8), Some(7));
        let f = |r: &u8| (*r < 10).then_some(*r);
        assert_eq!(f.clone_request(&3), Some(3));
        assert_eq!(f.clone_request(&30), None);
    }
}
