//! Replayable request bodies: buffer a body only when it qualifies for a retry.
//!
//! [`ReplayBodyLayer`] sits in front of a [`Balance`](crate::Balance) of HTTP endpoints. A
//! request whose body has a known length up to the limit (default 64 KiB) is collected into a
//! buffered [`ReplayBody`] that can be cloned for another attempt; any other body
//! (unknown length, or too large) passes through as a streaming [`ReplayBody`] untouched and
//! is never retried. A body that is empty by its size hint is not polled at all.
//!
//! A response always reaches the caller, even one the backend sent before it read the body (a
//! busy backend's early `503`). Such a backend closes the connection after its answer, so a
//! streamed request goes out with `Connection: close` (unless it has a `Connection` header):
//! its connection is never handed to another request while the backend closes it. When a
//! streamed request's connection still ends before any response, the body cannot be sent
//! again, and the caller gets a [`ClosedBeforeResponse`] that says so, with the transport error
//! as its source.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use rampart_balance::{ReplayBody, ReplayableBody};
//!
//! let small: ReplayBody<Full<Bytes>> = ReplayBody::buffered(Bytes::from_static(b"{}"));
//! assert!(small.try_clone_body().is_some());
//! let stream = ReplayBody::streaming(Full::new(Bytes::from_static(b"big")));
//! assert!(stream.try_clone_body().is_none());
//! ```

mod error;
mod future;
mod layer;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use rampart_health::BoxError;
use tower_service::Service;

pub use error::ClosedBeforeResponse;
pub use future::ResponseFuture;
pub use layer::ReplayBodyLayer;

use crate::policy::ReplayableBody;

pin_project! {
    #[project = InnerProj]
    #[derive(Debug)]
    enum Inner<B> {
        Buffered { data: Option<Bytes> },
        Streaming { #[pin] body: B },
    }
}

pin_project! {
    /// A request body that is either buffered (replayable) or streaming (sent once).
    #[derive(Debug)]
    pub struct ReplayBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

impl<B> ReplayBody<B> {
    /// A buffered body.
    pub fn buffered(data: Bytes) -> Self {
        Self {
            inner: Inner::Buffered { data: Some(data) },
        }
    }

    /// An empty (replayable) body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Buffered { data: None },
        }
    }

    /// A streaming body.
    pub fn streaming(body: B) -> Self {
        Self {
            inner: Inner::Streaming { body },
        }
    }

    /// `true` when the body is buffered (and so replayable).
    pub fn is_buffered(&self) -> bool {
        matches!(self.inner, Inner::Buffered { .. })
    }
}

impl<B> ReplayableBody for ReplayBody<B> {
    fn try_clone_body(&self) -> Option<Self> {
        match &self.inner {
            Inner::Buffered { data } => Some(Self {
                inner: Inner::Buffered { data: data.clone() },
            }),
            Inner::Streaming { .. } => None,
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().inner.project() {
            InnerProj::Buffered { data } => Poll::Ready(
                data.take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d))),
            ),
            InnerProj::Streaming { body } => body.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Buffered { data } => data.as_ref().is_none_or(Bytes::is_empty),
            Inner::Streaming { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Buffered { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Inner::Streaming { body } => body.size_hint(),
        }
    }
}

/// The service of [`ReplayBodyLayer`].
#[derive(Debug, Clone)]
pub struct ReplayBodyService<S> {
    inner: S,
    limit: u64,
}

impl<S> ReplayBodyService<S> {
    /// Wraps `inner`, buffering bodies of known length up to `limit`.
    pub fn new(inner: S, limit: u64) -> Self {
        Self { inner, limit }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<http::Request<B>> for ReplayBodyService<S>
where
    S: Service<http::Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        match body.size_hint().exact() {
            Some(0) => {
                let req = http::Request::from_parts(parts, ReplayBody::empty());
                ResponseFuture::calling(self.inner.call(req))
            }
            Some(n) if n <= self.limit => {
                // The ready service goes with the future; this one takes a fresh clone.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::collecting(body.collect(), parts, ready)
            }
            _ => {
                let mut parts = parts;
                // A backend that answers before it has read a body (a busy `503`) closes the
                // connection right after; returned to the pool, that closing connection would
                // take the next request down with it. A streamed request's connection is used
                // once (HTTP/1.1 `Connection: close`; hyper drops the header on HTTP/2), unless
                // the caller chose a `Connection` header itself.
                parts
                    .headers
                    .entry(http::header::CONNECTION)
                    .or_insert(http::HeaderValue::from_static("close"));
                let req = http::Request::from_parts(parts, ReplayBody::streaming(body));
                ResponseFuture::streaming(self.inner.call(req))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::convert::Infallible;

    use http_body_util::{Full, StreamBody};
    use tower::ServiceExt;
    use tower_layer::Layer;

    use super::*;

    /// An inner service that answers whether the body arrived buffered, and its bytes.
    async fn through<B>(limit: u64, body: B) -> (bool, Bytes)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let inner = tower::service_fn(|req: http::Request<ReplayBody<B>>| async move {
            let buffered = req.body().is_buffered();
            let replay = req.body().try_clone_body().is_some();
            assert_eq!(buffered, replay);
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            Ok::<_, Infallible>((buffered, bytes))
        });
        let svc = ReplayBodyLayer::new().limit(limit).layer(inner);
        svc.oneshot(http::Request::post("/").body(body).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn only_known_small_bodies_are_buffered() {
        let small = Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(
            through(64, small).await,
            (true, Bytes::from_static(b"0123456789"))
        );
        let large = Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(
            through(4, large).await,
            (false, Bytes::from_static(b"0123456789"))
        );
        let unknown = StreamBody::new(futures_util::stream::iter(vec![Ok::<_, Infallible>(
            http_body::Frame::data(Bytes::from_static(b"abc")),
        )]));
        assert_eq!(
            through(64, unknown).await,
            (false, Bytes::from_static(b"abc"))
        );
        let empty = http_body_util::Empty::<Bytes>::new();
        assert_eq!(through(64, empty).await, (true, Bytes::new()));
    }
}
