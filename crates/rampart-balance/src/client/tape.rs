//! A request body that remembers what it sent, so that a stream the server refused can be sent
//! again on another connection.
//!
//! An HTTP/2 stream refused by the server (`REFUSED_STREAM`, or a stream above the
//! last-stream-id of a `GOAWAY`) was never processed, but hyper has consumed its body by then.
//! [`Tape`] keeps the frames it handed to hyper (up to [`REPLAY_LIMIT`] bytes of data) next to
//! the rest of the body; [`Tape::rewind`] starts a new [`TapeBody`] that plays them back and
//! then continues with the rest. A body larger than the limit is sent once and never replayed.
//! A rewind supersedes every earlier `TapeBody` of the same tape: it fails its next poll, so two
//! attempts never share the rest of the body.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use rampart_health::BoxError;

/// The most body bytes kept for a replay (64 KiB, as for `ReplayBody`).
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

struct State<B> {
    /// The data frames handed out so far (while `recording`).
    sent: Vec<Bytes>,
    sent_len: usize,
    /// The trailers, once the body yielded them.
    trailers: Option<HeaderMap>,
    /// The part of the body not read yet (`None` once it ended).
    rest: Option<B>,
    /// `false` once the body outgrew the limit: nothing more is recorded, no replay.
    recording: bool,
    /// Bumped by each rewind: bodies of an older generation are superseded.
    generation: u64,
}

/// The shared record of one request's body (see the [module docs](self)).
pub(crate) struct Tape<B> {
    state: Arc<Mutex<State<B>>>,
}

impl<B> Tape<B> {
    /// A tape over `body`, and the body of the first attempt.
    pub(crate) fn new(body: B) -> (Self, TapeBody<B>) {
        let state = Arc::new(Mutex::new(State {
            sent: Vec::new(),
            sent_len: 0,
            trailers: None,
            rest: Some(body),
            recording: true,
            generation: 0,
        }));
        let first = TapeBody {
            state: state.clone(),
            generation: 0,
            pos: 0,
            trailers_sent: false,
        };
        (Self { state }, first)
    }

    /// The body of a new attempt, replaying what was sent; `None` when the body outgrew the
    /// limit (it cannot be sent again).
    pub(crate) fn rewind(&self) -> Option<TapeBody<B>> {
        let mut state = lock(&self.state);
        if !state.recording {
            return None;
        }
        state.generation += 1;
        Some(TapeBody {
            state: self.state.clone(),
            generation: state.generation,
            pos: 0,
            trailers_sent: false,
        })
    }
}

fn lock<B>(state: &Mutex<State<B>>) -> MutexGuard<'_, State<B>> {
    // A panic while holding the lock cannot leave the record half-updated in a way that
    // matters more than the panic itself: keep going with what is there.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One attempt's view of a [`Tape`]: the recorded frames first, then the rest of the body.
pub(crate) struct TapeBody<B> {
    state: Arc<Mutex<State<B>>>,
    generation: u64,
    pos: usize,
    trailers_sent: bool,
}

impl<B> fmt::Debug for TapeBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapeBody")
            .field("generation", &self.generation)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

/// The error of a body superseded by a newer attempt.
#[derive(Debug)]
struct Superseded;

impl fmt::Display for Superseded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body taken over by another attempt")
    }
}

impl std::error::Error for Superseded {}

impl<B> Body for TapeBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut state = lock(&this.state);
        if state.generation != this.generation {
            return Poll::Ready(Some(Err(Box::new(Superseded))));
        }
        if let Some(chunk) = state.sent.get(this.pos) {
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        let Some(rest) = state.rest.as_mut() else {
            // The body ended: its trailers, if it had any and this attempt has not sent them.
            if !this.trailers_sent
                && let Some(trailers) = state.trailers.clone()
            {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                state.rest = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // A failed body is not sent again.
                state.rest = None;
                state.recording = false;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    if state.recording {
                        state.sent_len += chunk.len();
                        if state.sent_len > REPLAY_LIMIT {
                            state.recording = false;
                            state.sent = Vec::new();
                        } else {
                            state.sent.push(chunk.clone());
                            this.pos += 1;
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        if state.recording {
                            state.trailers = Some(trailers.clone());
                        }
                        this.trailers_sent = true;
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    // Neither data nor trailers (an extension frame type): skip it.
                    Err(_) => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.state);
        if state.generation != self.generation {
            return false;
        }
        self.pos >= state.sent.len()
            && (self.trailers_sent || state.trailers.is_none())
            && state.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let state = lock(&self.state);
        let recorded: usize = state.sent.iter().skip(self.pos).map(Bytes::len).sum();
        let recorded = recorded as u64;
        match &state.rest {
            None => SizeHint::with_exact(recorded),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower().saturating_add(recorded));
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper.saturating_add(recorded));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn a_rewound_tape_replays_what_was_sent_then_the_rest() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let (tape, mut first) = Tape::new(body);
        let one = first.frame().await.unwrap().unwrap();
        assert_eq!(one.into_data().unwrap(), Bytes::from_static(b"ab"));

        let second = tape.rewind().expect("small bodies replay");
        // The first attempt is superseded.
        assert!(first.frame().await.unwrap().is_err());
        let all = second.collect().await.unwrap().to_bytes();
        assert_eq!(all, Bytes::from_static(b"abcd"));
    }

    #[tokio::test]
    async fn a_body_above_the_limit_is_not_replayed() {
        let big = Full::new(Bytes::from(vec![7u8; REPLAY_LIMIT + 1]));
        let (tape, first) = Tape::new(big);
        assert_eq!(first.size_hint().exact(), Some(REPLAY_LIMIT as u64 + 1));
        let all = first.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), REPLAY_LIMIT + 1);
        assert!(tape.rewind().is_none());
    }

    #[tokio::test]
    async fn an_empty_body_is_at_its_end_before_and_after_a_rewind() {
        let (tape, first) = Tape::new(http_body_util::Empty::<Bytes>::new());
        assert!(first.is_end_stream());
        let second = tape.rewind().unwrap();
        assert!(second.is_end_stream());
        assert_eq!(second.size_hint().exact(), Some(0));
    }
}
