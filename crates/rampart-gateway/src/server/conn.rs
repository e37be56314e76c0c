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
//! - Send timeout: while the socket refuses writes (the client does not read its response),
//!   the connection must make progress within the send timeout, else it is closed.
//! - HTTP/2: a connection whose first bytes are the h2 preface (prior knowledge, or `h2`
//!   negotiated by ALPN) is served by hyper's h2 server under its own watchdog (`h2`).
//!   A TLS stream is just another `I`.

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

use super::h2;
use super::io::{ConnIo, ConnState, Phase};
use super::shared::Shared;
use super::{ConnectionInfo, Handler, ServerConfig};

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

/// Terminates TLS on an accepted connection, then serves it (see [`serve_connection`]). The
/// handshake and the first request head must both be done by `deadline`.
pub(crate) async fn serve_tls<H: Handler>(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: H,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    info: ConnectionInfo,
    deadline: Instant,
) {
    let handshake = tokio::select! {
        r = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => r,
        () = shutdown.cancelled() => return,
    };
    match handshake {
        Ok(Ok(tls)) => {
            serve_connection(
                tls,
                handler,
                shared,
                shutdown,
                info.with_tls(true),
                deadline,
            )
            .await;
        }
        Ok(Err(e)) => {
            tracing::debug!(server = shared.config.name(), error = %e, "TLS handshake failed");
        }
        Err(_) => {
            shared.metrics.header_timeouts.increment(1);
            tracing::debug!(
                server = shared.config.name(),
                "TLS handshake not done within the header-read timeout: closed"
            );
        }
    }
}

/// Serves one accepted connection until it ends, times out, or the server shuts down (then
/// the request in flight finishes and the connection closes). The first request head must
/// arrive by `deadline`.
pub(crate) async fn serve_connection<I, H>(
    mut io: I,
    handler: H,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    info: ConnectionInfo,
    deadline: Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let config = &shared.config;
    let mut wait = Wait::First { deadline };
    let mut carried = Vec::new();
    loop {
        let first = matches!(wait, Wait::First { .. });
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
        if first && h2::is_preface(&head) {
            Box::pin(h2::serve_h2(
                io,
                head,
                handler,
                &shared,
                &shutdown,
                info,
                header_deadline,
            ))
            .await;
            return;
        }
        // Boxed: a connection waiting for a head keeps only the small state above (under
        // 0.5 KiB), not hyper's connection (1.4 KiB more, and its buffers).
        match Box::pin(serve_http1(
            io,
            head,
            handler.clone(),
            &shared,
            &shutdown,
            header_deadline,
            info,
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
    info: ConnectionInfo,
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
        info,
    };
    let mut conn = shared.http1.serve_connection(io, service);
    let park = config.keep_alive_timeout() > PARK_AFTER;

    let mut seen = state.word();
    let mut deadline = Some(header_deadline);
    let mut idle_deadline = header_deadline;
    let mut body_reads = 0;
    // While the socket refuses writes: when the send timeout expires, and the count of
    // accepted writes when it was set (progress since then re-arms it).
    let mut send: Option<(Instant, u32)> = None;
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
            return Poll::Ready(Watch::Done);
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
        if state.write_blocked() {
            if send.is_none() {
                let d = Instant::now() + config.send_timeout();
                send = Some((d, state.writes()));
                if !armed || d < sleep.deadline() {
                    sleep.as_mut().reset(d);
                    armed = true;
                }
            }
        } else {
            send = None;
        }
        loop {
            let Some(next) = earliest(deadline, send.map(|(d, _)| d)) else {
                return Poll::Pending;
            };
            if !armed {
                sleep.as_mut().reset(next);
                armed = true;
            }
            ready!(sleep.as_mut().poll(cx));
            armed = false;
            let now = Instant::now();
            if let Some((at, writes)) = send
                && now >= at
            {
                let w = state.writes();
                if w != writes {
                    // Some of the response was taken since: a new period starts now.
                    send = Some((now + config.send_timeout(), w));
                } else if state.write_blocked() {
                    return Poll::Ready(Watch::SendTimeout);
                } else {
                    send = None;
                }
                continue;
            }
            let Some(d) = deadline else {
                continue;
            };
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
                        return Poll::Ready(Watch::Park);
                    }
                    // A response is still unsent: stay with hyper until the idle deadline
                    // (the send timeout closes it sooner if the client takes nothing).
                    deadline = Some(idle_deadline);
                    continue;
                }
                return Poll::Ready(Watch::TimedOut(phase));
            }
        }
    })
    .await;

    let phase = match end {
        Watch::Done => return Http1End::Closed,
        Watch::Park => {
            // Idle, every response flushed (hyper writes until the socket refuses; the last
            // write was accepted): hyper holds nothing still to send.
            let parts = conn.into_parts();
            return Http1End::Parked {
                io: parts.io.into_inner().into_inner(),
                read_buf: parts.read_buf,
                idle_deadline,
            };
        }
        Watch::SendTimeout => {
            shared.metrics.send_timeouts.increment(1);
            tracing::debug!(
                server = config.name(),
                "client stopped reading its response past the send timeout: closed"
            );
            return Http1End::Closed;
        }
        Watch::TimedOut(phase) => phase,
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

/// How the watchdog of an HTTP/1 connection ended.
enum Watch {
    /// hyper's connection finished.
    Done,
    /// Idle past [`PARK_AFTER`] with nothing unsent: hand the socket back.
    Park,
    /// The deadline of this phase passed.
    TimedOut(Phase),
    /// The client took nothing of its response for the send timeout.
    SendTimeout,
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// hyper's view of the handler: records the phase, wraps the response body.
struct HyperService<F> {
    call: F,
    state: Arc<ConnState>,
    info: ConnectionInfo,
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

    fn call(&self, mut req: Request<Incoming>) -> Dispatch<Fut> {
        add_connection_info(&mut req, self.info);
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

/// The request extensions that tell the handler where the request came from: a
/// [`ConnectionInfo`] and axum's `ConnectInfo<SocketAddr>` (the client's address).
pub(crate) fn add_connection_info(req: &mut Request<Incoming>, info: ConnectionInfo) {
    let ext = req.extensions_mut();
    ext.insert(info);
    ext.insert(axum::extract::ConnectInfo(info.peer()));
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
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let info = ConnectionInfo::new(addr, addr, false);
        let fut = serve_connection(
            io,
            TowerHandler::new(app),
            shared,
            CancellationToken::new(),
            info,
            Instant::now(),
        );
        // hyper's connection (about 1 KiB more) is boxed only once a head has arrived.
        assert!(
            std::mem::size_of_val(&fut) < 1024,
            "{}",
            std::mem::size_of_val(&fut)
        );
    }
}
