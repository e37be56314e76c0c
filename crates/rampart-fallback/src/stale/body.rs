//! [`StaleBody`]: passes a body through, records a copy of a cacheable one, or replays a
//! stored copy.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::Pending;

/// Collects a copy of a cacheable body, up to a limit.
struct Recorder {
    pending: Pending,
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
}

impl Recorder {
    /// Keeps a reference to `chunk`; gives up (and reports) past the limit.
    fn push(slot: &mut Option<Box<Recorder>>, chunk: &Bytes) {
        let Some(rec) = slot.as_mut() else { return };
        if rec.len + chunk.len() > rec.limit {
            if let Some(rec) = slot.take() {
                rec.pending.too_large();
            }
            return;
        }
        rec.len += chunk.len();
        if !chunk.is_empty() {
            rec.chunks.push(chunk.clone());
        }
    }

    /// The body ended cleanly: store the copy.
    fn finish(slot: &mut Option<Box<Recorder>>) {
        let Some(rec) = slot.take() else { return };
        let body = match rec.chunks.len() {
            0 => Bytes::new(),
            // A copy of its own, sized exactly: the chunk may be a slice of a larger buffer
            // (an upstream's read buffer, a string's spare capacity), all of which it would
            // keep alive.
            1 => rec
                .chunks
                .first()
                .map(|c| Bytes::copy_from_slice(c))
                .unwrap_or_default(),
            _ => {
                let mut buf = BytesMut::with_capacity(rec.len);
                for c in &rec.chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        };
        rec.pending.finish(body);
    }
}

pin_project! {
    /// The body of a [`StaleIfError`](super::StaleIfError) response.
    ///
    /// Either the inner body streamed through (while a copy is recorded, for cacheable
    /// responses, up to the per-entry limit), or a stored copy served on error.
    pub struct StaleBody<B> {
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
            // Boxed: a body that is not recording stays small (it is moved with every
            // response), and only a recording one pays for the allocation.
            recorder: Option<Box<Recorder>>,
        },
        Stored {
            data: Bytes,
        },
    }
}

impl<B> fmt::Debug for StaleBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { recorder, .. } => f
                .debug_struct("StaleBody::Inner")
                .field("recording", &recorder.is_some())
                .finish_non_exhaustive(),
            Kind::Stored { data } => f
                .debug_struct("StaleBody::Stored")
                .field("len", &data.len())
                .finish(),
        }
    }
}

impl<B> StaleBody<B> {
    pub(crate) fn passthrough(body: B) -> Self {
        Self {
            kind: Kind::Inner {
                body,
                recorder: None,
            },
        }
    }

    pub(crate) fn stored(data: Bytes) -> Self {
        Self {
            kind: Kind::Stored { data },
        }
    }

    /// `true` when this replays a stored copy.
    pub fn is_stale(&self) -> bool {
        matches!(self.kind, Kind::Stored { .. })
    }
}

impl<B: Body<Data = Bytes>> StaleBody<B> {
    pub(crate) fn recording(body: B, pending: Pending, limit: usize) -> Self {
        let mut recorder = Some(Box::new(Recorder {
            pending,
            chunks: Vec::new(),
            len: 0,
            limit,
        }));
        // hyper stops polling a body that says it has ended; an empty body is complete now.
        if body.is_end_stream() {
            Recorder::finish(&mut recorder);
        }
        Self {
            kind: Kind::Inner { body, recorder },
        }
    }
}

impl<B> Body for StaleBody<B>
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
            KindProj::Stored { data } => {
                if data.is_empty() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(Frame::data(std::mem::take(data)))))
                }
            }
            KindProj::Inner { mut body, recorder } => {
                let polled = body.as_mut().poll_frame(cx);
                if recorder.is_some() {
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            match frame.data_ref() {
                                Some(chunk) => Recorder::push(recorder, chunk),
                                // Trailers: not stored (a replay could not reproduce them).
                                None => *recorder = None,
                            }
                            if body.is_end_stream() {
                                Recorder::finish(recorder);
                            }
                        }
                        Poll::Ready(None) => Recorder::finish(recorder),
                        // A broken body is never stored.
                        Poll::Ready(Some(Err(_))) => *recorder = None,
                        Poll::Pending => {}
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, .. } => body.is_end_stream(),
            Kind::Stored { data } => data.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Stored { data } => SizeHint::with_exact(data.len() as u64),
        }
    }
}
