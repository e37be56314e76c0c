//! Response bodies: the apology's shared chunks, and the either-or body of the fallback layer.
//!
//! [`ApologyBody`] is at most three [`Bytes`] chunks. The built-in page serves the HTML and
//! text pages as one shared chunk (cloning a `Bytes` bumps a reference count, it does not copy
//! the page) and the problem document as prebuilt prefix, the escaped request path, and
//! prebuilt suffix.
//!
//! ```
//! use bytes::Bytes;
//! use http_body::Body;
//! use rampart_fallback::ApologyBody;
//!
//! let body = ApologyBody::from_chunks(Bytes::from_static(b"{\"a\":\""), Bytes::from("x"), Bytes::from_static(b"\"}"));
//! assert_eq!(body.size_hint().exact(), Some(9));
//! assert!(ApologyBody::empty().is_end_stream());
//! ```

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The body of an apology: up to three shared chunks, sent in order.
#[derive(Debug, Clone, Default)]
pub struct ApologyBody {
    chunks: [Bytes; 3],
    next: usize,
}

impl ApologyBody {
    /// No body (what HEAD gets).
    pub const fn empty() -> Self {
        Self {
            chunks: [Bytes::new(), Bytes::new(), Bytes::new()],
            next: 3,
        }
    }

    /// One chunk.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self::from_chunks(bytes.into(), Bytes::new(), Bytes::new())
    }

    /// Three chunks, sent in order (empty ones are skipped).
    pub fn from_chunks(a: Bytes, b: Bytes, c: Bytes) -> Self {
        Self {
            chunks: [a, b, c],
            next: 0,
        }
    }

    /// Bytes left to send.
    pub fn len(&self) -> usize {
        self.chunks
            .iter()
            .skip(self.next)
            .map(Bytes::len)
            .sum::<usize>()
    }

    /// `true` when nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for ApologyBody {
    fn from(b: Bytes) -> Self {
        Self::new(b)
    }
}

impl From<&'static str> for ApologyBody {
    fn from(s: &'static str) -> Self {
        Self::new(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for ApologyBody {
    fn from(s: String) -> Self {
        Self::new(Bytes::from(s))
    }
}

impl Body for ApologyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let me = self.get_mut();
        while me.next < me.chunks.len() {
            let chunk = std::mem::take(&mut me.chunks[me.next]);
            me.next += 1;
            if !chunk.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len() as u64)
    }
}

pin_project! {
    /// The body of a [`Fallback`](crate::Fallback) response: the inner service's own body, or
    /// an apology.
    pub struct FallbackBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner {
            #[pin]
            body: B,
        },
        Apology {
            body: ApologyBody,
        },
    }
}

impl<B> fmt::Debug for FallbackBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("FallbackBody::Inner"),
            Kind::Apology { body } => f.debug_tuple("FallbackBody::Apology").field(body).finish(),
        }
    }
}

impl<B> FallbackBody<B> {
    /// The inner service's body, passed through.
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// An apology's body.
    pub fn apology(body: ApologyBody) -> Self {
        Self {
            kind: Kind::Apology { body },
        }
    }

    /// `true` when this is the apology.
    pub fn is_apology(&self) -> bool {
        matches!(self.kind, Kind::Apology { .. })
    }
}

impl<B> Body for FallbackBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Apology { body } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Apology { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Apology { body } => Body::size_hint(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn collect(mut b: ApologyBody) -> Vec<u8> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(f))) = Pin::new(&mut b).poll_frame(&mut cx) {
            out.extend_from_slice(f.data_ref().unwrap());
        }
        out
    }

    #[test]
    fn chunks_in_order_skipping_empty() {
        let b = ApologyBody::from_chunks(Bytes::from("ab"), Bytes::new(), Bytes::from("c"));
        assert_eq!(b.len(), 3);
        assert_eq!(collect(b), b"abc");
        assert!(collect(ApologyBody::empty()).is_empty());
        assert_eq!(collect(ApologyBody::from("x")), b"x");
    }
}
