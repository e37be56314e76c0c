//! One HTTP/2 connection (h2c with prior knowledge, or `h2` negotiated by ALPN): hyper's h2
//! server under a watchdog that keeps the server's limits.
//!
//! - The connection preface must arrive within the header-read timeout (read by the caller,
//!   as for an HTTP/1 head), and the first request within it too: a connection that opens
//!   and sends nothing usable is closed.
//! - Keep-alive idle timeout: a connection with no stream open for that long is sent a
//!   `GOAWAY` and closed (given one second to flush it).
//! - Send timeout: while the socket refuses writes, the connection must make progress within
//!   the send timeout, else it is closed (as for HTTP/1). And per stream: a response waiting
//!   for the client to open its flow-control window (hyper holds a frame of it and does not
//!   ask the body for the next) for a send timeout or more (checked every send timeout, so
//!   detected within two) is reset, like nginx's `send_timeout` on HTTP/2.
//! - h2's own limits: `SETTINGS_MAX_CONCURRENT_STREAMS` from the configuration, the header
//!   list size bounded by the maximum header size, keep-alive pings (a peer that does not
//!   answer one within its timeout is gone), hyper's defaults against reset floods.
//! - Graceful shutdown: `GOAWAY`, the streams in flight finish within the grace period.
//!
//! Each stream's handler runs in its own task (hyper's h2 server spawns them through its
//! executor); those tasks end with the connection: the executor ties them to a token the
//! connection cancels when it ends.
//!
//! Not covered per stream: the body-read timeout (a stalled request body holds its stream,
//! bounded by flow control and the concurrent-stream cap, and ends with the connection).

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::Counter;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::add_connection_info;
use super::io::{ConnIo, ConnState, Phase};
use super::shared::Shared;
use super::{ConnectionInfo, Handler, ServerConfig};

/// The client connection preface of HTTP/2 (RFC 9113 §3.4), up to the blank line that makes
/// it look like an HTTP/1 head to the head reader.
pub(crate) const PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// Does this head start an HTTP/2 connection?
pub(crate) fn is_preface(head: &[u8]) -> bool {
    head.starts_with(PREFACE_HEAD)
}

/// Time given to a `GOAWAY` after the idle timeout before the connection is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// hyper's h2 settings for this server, with `exec` for the connection's streams.
fn builder(config: &ServerConfig, exec: StreamExec) -> http2::Builder<StreamExec> {
    let mut b = http2::Builder::new(exec);
    b.timer(TokioTimer::new())
        .max_concurrent_streams(config.max_concurrent_streams())
        .max_header_list_size(u32::try_from(config.max_header_size()).unwrap_or(u32::MAX))
        // Pings while a stream waits on a long response (an idle connection is closed by the
        // watchdog instead): a peer that does not answer within the send timeout is gone.
        .keep_alive_interval(Some(
            config.keep_alive_timeout().min(Duration::from_secs(30)),
        ))
        .keep_alive_timeout(config.send_timeout().min(Duration::from_secs(20)))
        // What one stream may queue for a slow reader (hyper's default is 400 KiB).
        .max_send_buf_size(64 * 1024);
    b
}

/// Spawns the streams of one connection on the current runtime; every task ends when the
/// connection's token is cancelled, or when its response waits on the client for the send
/// timeout.
#[derive(Clone)]
struct StreamExec {
    stop: CancellationToken,
    send_timeout: Duration,
    send_timeouts: Counter,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let stop = self.stop.clone();
        let send_timeout = self.send_timeout;
        let send_timeouts = self.send_timeouts.clone();
        let progress = Arc::new(SendProgress::default());
        // Detached, but bounded by the connection: cancelled when it ends.
        drop(tokio::spawn(async move {
            let stream = PROGRESS.scope(progress.clone(), fut);
            tokio::select! {
                biased;
                () = stream => {}
                () = stop.cancelled() => {}
                () = stalled(&progress, send_timeout) => {
                    // Dropping the stream's task resets the stream (RST_STREAM CANCEL).
                    send_timeouts.increment(1);
                    tracing::debug!("h2 stream: the client took none of its response past the send timeout: reset");
                }
            }
        }));
    }
}

tokio::task_local! {
    /// The send progress of the stream whose task is running (read by [`StreamBody`]).
    static PROGRESS: Arc<SendProgress>;
}

/// How a stream's response body is being taken: frames handed to hyper, and whether hyper
/// holds the last one without asking for the next (so it waits on the client's window).
/// Only the stream's own task writes it.
#[derive(Debug, Default)]
struct SendProgress {
    frames: AtomicU64,
    waiting: AtomicBool,
}

/// Completes when the stream has been waiting on the client, with no frame taken, for a
/// whole period of `timeout`.
async fn stalled(progress: &SendProgress, timeout: Duration) {
    let mut last = progress.frames.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(timeout).await;
        let frames = progress.frames.load(Ordering::Relaxed);
        if frames == last && progress.waiting.load(Ordering::Relaxed) {
            return;
        }
        last = frames;
    }
}

/// The streams of one connection: how many are open, how many ever started, and a wake-up
/// when the last one ends (the handler tasks run apart from the connection's task).
#[derive(Debug, Default)]
struct Streams {
    open: AtomicUsize,
    started: AtomicU64,
    idle: Notify,
}

/// One open stream; dropping it (with the response body, or with the handler's future if
/// the stream is reset first) closes it.
struct StreamGuard(Arc<Streams>);

impl StreamGuard {
    fn open(streams: &Arc<Streams>) -> Self {
        streams.started.fetch_add(1, Ordering::Relaxed);
        streams.open.fetch_add(1, Ordering::AcqRel);
        Self(streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_one();
        }
    }
}

/// Why the watchdog ended the connection.
enum End {
    /// hyper's connection finished (closed by the client, `GOAWAY` done, or an error).
    Done,
    /// No stream came before the first deadline.
    NoRequest,
    /// No stream open for the keep-alive timeout; the `GOAWAY` did not finish in time.
    Idle,
    /// Writes blocked without progress for the send timeout.
    Send,
}

/// Serves an HTTP/2 connection whose first bytes (`prefix`, starting with the preface) were
/// read by the caller. `first_deadline`: the first request must start by then.
pub(crate) async fn serve_h2<I, H>(
    io: I,
    prefix: Bytes,
    handler: H,
    shared: &Shared,
    shutdown: &CancellationToken,
    info: ConnectionInfo,
    first_deadline: Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let config = &shared.config;
    // Reads are not request heads here: the phase stays `Busy` and only writes are tracked.
    let state = Arc::new(ConnState::new(Phase::Busy));
    let streams = Arc::new(Streams::default());
    let stop = CancellationToken::new();
    let _stop_streams = stop.clone().drop_guard();
    let io = TokioIo::new(ConnIo::new(io, prefix, state.clone()));
    let service = H2Service {
        call: move |req| handler.handle(req),
        streams: streams.clone(),
        info,
    };
    let exec = StreamExec {
        stop,
        send_timeout: config.send_timeout(),
        send_timeouts: shared.metrics.send_timeouts.clone(),
    };
    let conn = builder(config, exec).serve_connection(io, service);
    tokio::pin!(conn);

    // The idle deadline: the first request by `first_deadline`, later ones within the
    // keep-alive timeout of the last stream's end; `None` while streams are open.
    let mut idle_deadline = Some(first_deadline);
    let mut seen_started = 0;
    let mut send: Option<(Instant, u32)> = None;
    let mut closing: Option<Instant> = None;
    let mut draining = false;
    let sleep = tokio::time::sleep_until(first_deadline);
    let cancelled = shutdown.cancelled();
    let notified = streams.idle.notified();
    tokio::pin!(sleep, cancelled, notified);
    let end = poll_fn(|cx| {
        if !draining && cancelled.as_mut().poll(cx).is_ready() {
            // `GOAWAY`: the streams in flight finish, then hyper ends the connection.
            conn.as_mut().graceful_shutdown();
            draining = true;
        }
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            if let Err(e) = result {
                tracing::debug!(server = config.name(), error = %e, "h2 connection ended with an error");
            }
            return Poll::Ready(End::Done);
        }
        if notified.as_mut().poll(cx).is_ready() {
            notified.set(streams.idle.notified());
            // Register the new waiter (a permit stored since is seen at once).
            let _ = notified.as_mut().poll(cx);
        }
        let now = Instant::now();
        let started = streams.started.load(Ordering::Relaxed);
        if streams.open.load(Ordering::Acquire) > 0 {
            idle_deadline = None;
        } else if started != seen_started || idle_deadline.is_none() {
            idle_deadline = Some(now + config.keep_alive_timeout());
        }
        seen_started = started;
        if state.write_blocked() {
            if send.is_none() {
                send = Some((now + config.send_timeout(), state.writes()));
            }
        } else {
            send = None;
        }
        loop {
            let next = [idle_deadline, send.map(|s| s.0), closing]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else {
                return Poll::Pending;
            };
            if sleep.deadline() != next {
                sleep.as_mut().reset(next);
            }
            ready!(sleep.as_mut().poll(cx));
            let now = Instant::now();
            if closing.is_some_and(|c| now >= c) {
                return Poll::Ready(End::Idle);
            }
            if let Some((at, writes)) = send
                && now >= at
            {
                let w = state.writes();
                if w != writes {
                    send = Some((now + config.send_timeout(), w));
                } else if state.write_blocked() {
                    return Poll::Ready(End::Send);
                } else {
                    send = None;
                }
                continue;
            }
            if let Some(idle) = idle_deadline
                && now >= idle
            {
                idle_deadline = None;
                if seen_started == 0 {
                    return Poll::Ready(End::NoRequest);
                }
                if !draining {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                    // hyper's connection must be polled to send the `GOAWAY`.
                    cx.waker().wake_by_ref();
                }
                closing = Some(now + GOAWAY_GRACE);
            }
        }
    })
    .await;
    match end {
        End::Done => {}
        End::NoRequest => {
            shared.metrics.header_timeouts.increment(1);
            tracing::debug!(
                server = config.name(),
                "h2 connection sent no request before the header-read timeout: closed"
            );
        }
        End::Idle => {
            shared.metrics.idle_timeouts.increment(1);
            tracing::debug!(
                server = config.name(),
                "idle h2 connection timed out: closed"
            );
        }
        End::Send => {
            shared.metrics.send_timeouts.increment(1);
            tracing::debug!(
                server = config.name(),
                "client stopped reading past the send timeout: h2 connection closed"
            );
        }
    }
}

/// hyper's view of the handler on an h2 connection: counts the streams.
struct H2Service<F> {
    call: F,
    streams: Arc<Streams>,
    info: ConnectionInfo,
}

impl<F, Fut, B> hyper::service::Service<Request<Incoming>> for H2Service<F>
where
    F: Fn(Request<Incoming>) -> Fut,
    Fut: Future<Output = Response<B>>,
{
    type Response = Response<StreamBody<B>>;
    type Error = Infallible;
    type Future = StreamDispatch<Fut>;

    fn call(&self, mut req: Request<Incoming>) -> StreamDispatch<Fut> {
        add_connection_info(&mut req, self.info);
        StreamDispatch {
            guard: Some(StreamGuard::open(&self.streams)),
            fut: (self.call)(req),
        }
    }
}

pin_project! {
    /// The handler's future on a stream; its response body carries the stream's guard.
    struct StreamDispatch<F> {
        #[pin]
        fut: F,
        guard: Option<StreamGuard>,
    }
}

impl<F, B> Future for StreamDispatch<F>
where
    F: Future<Output = Response<B>>,
{
    type Output = Result<Response<StreamBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.fut.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| StreamBody {
            inner,
            _guard: guard,
        })))
    }
}

pin_project! {
    /// A response body that keeps its stream counted open until hyper drops it.
    struct StreamBody<B> {
        #[pin]
        inner: B,
        _guard: Option<StreamGuard>,
    }
}

impl<B: Body> Body for StreamBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = self.project().inner.poll_frame(cx);
        let _ = PROGRESS.try_with(|p| {
            p.frames.store(
                p.frames.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
            // A frame handed over: hyper asks for the next one as soon as the client's
            // window has room for it.
            p.waiting.store(
                matches!(polled, Poll::Ready(Some(Ok(_)))),
                Ordering::Relaxed,
            );
        });
        polled
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
    use super::*;

    #[test]
    fn the_preface_is_recognised_and_an_http1_head_is_not() {
        assert!(is_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(is_preface(PREFACE_HEAD));
        assert!(!is_preface(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"));
        assert!(!is_preface(b"PRI * HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn the_last_stream_closing_wakes_the_connection() {
        let streams = Arc::new(Streams::default());
        let a = StreamGuard::open(&streams);
        let b = StreamGuard::open(&streams);
        drop(a);
        assert_eq!(streams.open.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(streams.open.load(Ordering::Relaxed), 0);
        assert_eq!(streams.started.load(Ordering::Relaxed), 2);
        // The permit is stored: a waiter registered now completes at once.
        let notified = streams.idle.notified();
        tokio::pin!(notified);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(notified.poll(&mut cx).is_ready());
    }
}
