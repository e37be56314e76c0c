//! One HTTP/1 connection: the first request head read ahead, hyper's connection, and the
//! watchdog that enforces the header-read, keep-alive and body-read timeouts.
//!
//! Why not hyper's own `header_read_timeout`: in hyper 1.x its timer starts whenever the
//! connection begins waiting for a request head, that is also while a keep-alive connection
//! is idle (`proto/h1/conn.rs`, `poll_read_head`), so it cannot tell "idle for 60 s" from
//! "stalled in the middle of a head for 10 s"; and on expiry it closes without an answer.
//! hyper still gets a timer (`TokioTimer`), and its header timeout is explicitly off.
//!
//! - The first head is read here, into a buffer the size of what arrived (tens of bytes for a
//!   stalled client, not hyper's 8 KiB read buffer), until the blank line that ends it: a
//!   client that stalls is answered `408` and closed without hyper ever being involved.
//! - Then hyper serves the connection. [`ConnIo`] and the service wrapper record the
//!   connection's [`Phase`]; after each poll of the connection the watchdog looks at it and
//!   keeps one timer per connection, moved only when a deadline comes earlier than the one it
//!   is armed for (a request's usual path, idle → head → busy → idle within a few polls,
//!   costs one clock read and no timer operation).
//! - HTTP/2 and TLS fit at this point: a TLS stream is another `I`, and an h2 connection
//!   (found by its preface in the read-ahead bytes) would be served by hyper's h2 server with
//!   its own keep-alive pings instead of this HTTP/1 watchdog.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::io::{ConnIo, ConnState, Phase};
use super::shared::Shared;
use super::{Handler, ServerConfig};

/// The answer to a client that sent part of a request head and then stalled.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 16\r\n\
connection: close\r\n\
\r\n\
request timeout\n";

/// Bytes read per poll while waiting for the first head (on the stack, only during a poll).
const READ_AHEAD: usize = 4096;

/// A keep-alive connection idle this long gives hyper's connection (its read and write
/// buffers, about 10 KiB) back and waits on the bare socket, like a new one.
const PARK_AFTER: Duration = Duration::from_secs(1);

enum ReadHead {
    /// A complete head (or more than the largest allowed, for hyper to refuse), and the
    /// deadline of the header-read timeout for it.
    Head(Bytes, Instant),
    /// The client closed, or the socket failed.
    Closed,
    /// The deadline passed; `partial`: part of a head had arrived.
    TimedOut { partial: bool },
    /// The server is shutting down.
    Shutdown,
}

/// How long [`read_head`] waits.
#[derive(Clone, Copy)]
enum Wait {
    /// A new connection: the whole head by `deadline` (the accept plus the header-read
    /// timeout).
    First { deadline: Instant },
    /// A parked keep-alive connection: the first byte by `idle_deadline`, then the whole head
    /// within the header-read timeout of that byte.
    Idle { idle_deadline: Instant },
}

/// Does `tail` (the new bytes plus the three before them) hold the blank line ending a head?
fn head_complete(tail: &[u8]) -> bool {
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Reads a request head into `head` (which may hold bytes already read).
async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    mut head: Vec<u8>,
    wait: Wait,
    config: &ServerConfig,
    shutdown: &CancellationToken,
) -> ReadHead {
    let max = config.max_header_size();
    let mut deadline = match wait {
        Wait::First { deadline } => deadline,
        Wait::Idle { idle_deadline } if head.is_empty() => idle_deadline,
        Wait::Idle { .. } => Instant::now() + config.header_read_timeout(),
    };
    let mut header_deadline = deadline;
    let sleep = tokio::time::sleep_until(deadline);
    let cancelled = shutdown.cancelled();
    tokio::pin!(sleep, cancelled);
    poll_fn(|cx| {
        if cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(ReadHead::Shutdown);
        }
        loop {
            let mut buf = [0u8; READ_AHEAD];
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    if got.is_empty() {
                        return Poll::Ready(ReadHead::Closed);
                    }
                    if head.is_empty() && matches!(wait, Wait::Idle { .. }) {
                        // The next request started: the header-read timeout runs from now.
                        header_deadline = Instant::now() + config.header_read_timeout();
                        deadline = header_deadline;
                        sleep.as_mut().reset(deadline);
                    }
                    let from = head.len().saturating_sub(3);
                    head.extend_from_slice(got);
                    if head_complete(&head[from..]) || head.len() >= max {
                        let head = Bytes::from(std::mem::take(&mut head));
                        return Poll::Ready(ReadHead::Head(head, header_deadline));
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(ReadHead::Closed),
                Poll::Pending => break,
            }
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(ReadHead::TimedOut {
                partial: !head.is_empty(),
            });
        }
        Poll::Pending
    })
    .await
}

/// Writes the `408` and closes, giving a client that does not read one second.
async fn answer_request_timeout<I: AsyncWrite + Unpin>(io: &mut I) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        io.write_all(REQUEST_TIMEOUT).await?;
        io.shutdown().await
    })
    .await;
}

/// Serves one accepted connection until it ends, times out, or the server shuts down (then
/// the request in flight finishes and the connection closes).
pub(crate) async fn serve_connection<I, H>(
    mut io: I,
    handler: H,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let config = &shared.config;
    let mut wait = Wait::First {
        deadline: Instant::now() + config.header_read_timeout(),
    };
    let mut carried = Vec::new();
    loop {
        let (head, header_deadline) =
            match read_head(&mut io, carried, wait, config, &shutdown).await {
                ReadHead::Head(head, deadline) => (head, deadline),
                ReadHead::Closed | ReadHead::Shutdown => return,
                ReadHead::TimedOut { partial: true } => {
                    shared.metrics.header_timeouts.increment(1);
                    shared.metrics.answered_408.increment(1);
                    tracing::debug!(server = config.name(), "request head timed out: 408");
                    answer_request_timeout(&mut io).await;
                    return;
                }
                ReadHead::TimedOut { partial: false } => {
                    if matches!(wait, Wait::First { .. }) {
                        shared.metrics.header_timeouts.increment(1);
                        tracing::debug!(
                            server = config.name(),
                            "connection sent nothing before the header-read timeout: closed"
                        );
                    } else {
                        shared.metrics.idle_timeouts.increment(1);
                        tracing::debug!(
                            server = config.name(),
                            "idle keep-alive connection timed out: closed"
                        );
                    }
                    return;
                }
            };
        // Boxed: a connection waiting for a head keeps only the small state above (under
        // 0.5 KiB), not hyper's connection (1.4 KiB more, and its buffers).
        match Box::pin(serve_http1(
            io,
            head,
            handler.clone(),
            &shared,
            &shutdown,
            header_deadline,
        ))
        .await
        {
            Http1End::Closed => return,
            Http1End::Parked {
                io: back,
                read_buf,
                idle_deadline,
            } => {
                io = back;
                carried = read_buf.to_vec();
                wait = Wait::Idle { idle_deadline };
            }
        }
    }
}

/// How hyper's part of a connection ended.
enum Http1End<I> {
    /// The connection is done.
    Closed,
    /// Idle past [`PARK_AFTER`]: hyper's connection is dropped, the socket handed back with
    /// the bytes hyper had read but not parsed.
    Parked {
        io: I,
        read_buf: Bytes,
        idle_deadline: Instant,
    },
}

/// Serves the connection with hyper from a complete head on, under the watchdog.
async fn serve_http1<I, H>(
    io: I,
    head: Bytes,
    handler: H,
    shared: &Shared,
    shutdown: &CancellationToken,
    header_deadline: Instant,
) -> Http1End<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let config = &shared.config;
    let state = Arc::new(ConnState::new(Phase::Head));
    let io = TokioIo::new(ConnIo::new(io, head, state.clone()));
    let service = HyperService {
        call: move |req| handler.handle(req),
        state: state.clone(),
    };
    let mut conn = shared.http1.serve_connection(io, service);
    let park = config.keep_alive_timeout() > PARK_AFTER;

    let mut seen = state.word();
    let mut deadline = Some(header_deadline);
    let mut idle_deadline = header_deadline;
    let mut body_reads = 0;
    let sleep = tokio::time::sleep_until(header_deadline);
    let cancelled = shutdown.cancelled();
    tokio::pin!(sleep, cancelled);
    let mut armed = true;
    let mut draining = false;
    let end = poll_fn(|cx| {
        if !draining && cancelled.as_mut().poll(cx).is_ready() {
            // Idle: closes now; busy: the request in flight finishes, then it closes.
            Pin::new(&mut conn).graceful_shutdown();
            draining = true;
        }
        if let Poll::Ready(result) = Pin::new(&mut conn).poll(cx) {
            if let Err(e) = result {
                tracing::debug!(server = config.name(), error = %e, "client connection ended with an error");
            }
            return Poll::Ready(None);
        }
        let word = state.word();
        if word != seen {
            seen = word;
            let phase = ConnState::phase_of(word);
            deadline = match phase {
                Phase::Busy => None,
                Phase::Idle => {
                    let now = Instant::now();
                    idle_deadline = now + config.keep_alive_timeout();
                    Some(if park { now + PARK_AFTER } else { idle_deadline })
                }
                Phase::Head => Some(Instant::now() + config.header_read_timeout()),
                Phase::BusyBody => {
                    body_reads = state.body_reads();
                    Some(Instant::now() + config.body_read_timeout())
                }
            };
            if let Some(d) = deadline
                && (!armed || d < sleep.deadline())
            {
                sleep.as_mut().reset(d);
                armed = true;
            }
        }
        loop {
            let Some(d) = deadline else {
                return Poll::Pending;
            };
            if !armed {
                sleep.as_mut().reset(d);
                armed = true;
            }
            ready!(sleep.as_mut().poll(cx));
            armed = false;
            let now = Instant::now();
            let phase = ConnState::phase_of(seen);
            if phase == Phase::BusyBody {
                let reads = state.body_reads();
                if reads != body_reads {
                    // Bytes arrived since the deadline was set: a new period starts now.
                    body_reads = reads;
                    deadline = Some(now + config.body_read_timeout());
                    continue;
                }
            }
            if now >= d {
                if phase == Phase::Idle && now < idle_deadline {
                    if !draining && !state.write_blocked() {
                        return Poll::Ready(Some(None));
                    }
                    // A response is still unsent: stay with hyper until the idle deadline.
                    deadline = Some(idle_deadline);
                    continue;
                }
                return Poll::Ready(Some(Some(phase)));
            }
        }
    })
    .await;

    let phase = match end {
        None => return Http1End::Closed,
        Some(None) => {
            // Idle, every response flushed (hyper writes until the socket refuses; the last
            // write was accepted): hyper holds nothing still to send.
            let parts = conn.into_parts();
            return Http1End::Parked {
                io: parts.io.into_inner().into_inner(),
                read_buf: parts.read_buf,
                idle_deadline,
            };
        }
        Some(Some(phase)) => phase,
    };
    match phase {
        Phase::Idle => {
            shared.metrics.idle_timeouts.increment(1);
            tracing::debug!(
                server = config.name(),
                "idle keep-alive connection timed out: closed"
            );
        }
        Phase::Head => {
            shared.metrics.header_timeouts.increment(1);
            let blocked = state.write_blocked();
            let mut io = conn.into_parts().io.into_inner().into_inner();
            if blocked {
                // The previous response is still unsent: no room for an answer.
                tracing::debug!(server = config.name(), "request head timed out: closed");
            } else {
                shared.metrics.answered_408.increment(1);
                tracing::debug!(server = config.name(), "request head timed out: 408");
                answer_request_timeout(&mut io).await;
            }
        }
        Phase::BusyBody | Phase::Busy => {
            shared.metrics.body_timeouts.increment(1);
            tracing::debug!(
                server = config.name(),
                "request body stalled past the body-read timeout: closed"
            );
        }
    }
    Http1End::Closed
}

/// hyper's view of the handler: records the phase, wraps the response body.
struct HyperService<F> {
    call: F,
    state: Arc<ConnState>,
}

// The handler is only ever called through `&self`, never pinned: the wrapper may move even
// when the closure may not. (Keeps hyper's `Connection` movable, for `into_parts`.)
impl<F> Unpin for HyperService<F> {}

impl<F, Fut, B> hyper::service::Service<Request<Incoming>> for HyperService<F>
where
    F: Fn(Request<Incoming>) -> Fut,
    Fut: Future<Output = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = Dispatch<Fut>;

    fn call(&self, req: Request<Incoming>) -> Dispatch<Fut> {
        self.state.set(if req.body().is_end_stream() {
            Phase::Busy
        } else {
            Phase::BusyBody
        });
        Dispatch {
            fut: (self.call)(req),
            state: Some(self.state.clone()),
        }
    }
}

pin_project! {
    /// The handler's future; its response gets a [`TrackedBody`].
    struct Dispatch<F> {
        #[pin]
        fut: F,
        state: Option<Arc<ConnState>>,
    }
}

impl<F, B> Future for Dispatch<F>
where
    F: Future<Output = Response<B>>,
{
    type Output = Result<Response<TrackedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.fut.poll(cx));
        let state = this.state.take();
        if let Some(s) = &state {
            // Answered: whatever the body still does, it no longer stalls the handler.
            s.set(Phase::Busy);
        }
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, state })))
    }
}

pin_project! {
    /// A response body that marks the connection idle when hyper is done with it.
    struct TrackedBody<B> {
        #[pin]
        inner: B,
        state: Option<Arc<ConnState>>,
    }

    impl<B> PinnedDrop for TrackedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(state) = this.project().state.take() {
                state.set(Phase::Idle);
            }
        }
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::head_complete;

    #[test]
    fn a_head_ends_at_the_blank_line() {
        assert!(head_complete(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"));
        assert!(head_complete(b"\r\n\r\n"));
        assert!(head_complete(b"\n\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nhost: a\r\n"));
        assert!(!head_complete(b"GET / HT"));
    }
}

#[cfg(test)]
mod size {
    use super::*;
    use crate::server::{ServerConfig, TowerHandler};

    #[tokio::test]
    async fn a_connection_waiting_for_its_first_head_holds_under_a_kib() {
        let shared = Shared::new(&ServerConfig::default());
        let app: axum::Router = axum::Router::new();
        let (io, _peer) = tokio::io::duplex(64);
        let fut = serve_connection(io, TowerHandler::new(app), shared, CancellationToken::new());
        // hyper's connection (about 1 KiB more) is boxed only once a head has arrived.
        assert!(
            std::mem::size_of_val(&fut) < 1024,
            "{}",
            std::mem::size_of_val(&fut)
        );
    }
}
