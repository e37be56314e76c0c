//! The HTTP/2 connections of one endpoint: multiplexed, opened as the server's stream limit
//! requires, drained on `GOAWAY`, refused streams sent again on another connection.
//!
//! - Every request is a stream on the oldest open connection that has a free stream slot. A
//!   connection's slots are the server's `SETTINGS_MAX_CONCURRENT_STREAMS` (as hyper reports it
//!   once the server's SETTINGS arrived; before that, the last limit this endpoint learned from
//!   its server, else RFC 9113's recommended minimum of 100), capped by the client's own
//!   [`max_streams_per_connection`](super::HttpEndpointBuilder::http2_max_streams_per_connection).
//!   When every connection is full, another one is opened: concurrent requests share the
//!   connection being opened while it has slots.
//! - A stream occupies its slot from the moment it is assigned until its response head arrives
//!   (hyper does not say when a response body ends). A stream beyond the server's limit never
//!   goes out: hyper holds it until a slot frees on that connection.
//! - A `GOAWAY` retires the connection: its streams the server accepted finish normally, no new
//!   stream goes to it, and it is dropped once hyper closes it.
//! - A stream that never reached the server's application is sent again on another connection
//!   of the same endpoint (a brand-new one if no other has room), up to
//!   [`MAX_ATTEMPTS`] times: a request the connection had closed before taking, a
//!   `REFUSED_STREAM` (a burst that outran the server's SETTINGS), a stream above the
//!   last-stream-id of a `GOAWAY`. Its body is replayed from a [`Tape`] (bodies up to 64 KiB;
//!   a larger one is not sent again). When it cannot be sent again, the error is
//!   [`NeverReached`] and the balancer may try another endpoint.
//! - A stream that hyper still held for a free slot when the connection shut down after a
//!   `GOAWAY` may have been processed (h2 may have opened it just before): it is sent again
//!   on another connection only when it is idempotent (or carries an `Idempotency-Key`), and
//!   otherwise fails with an ordinary error, not [`NeverReached`].
//! - A failed connection attempt (refused, unreachable, connect timeout, TLS handshake) is
//!   [`NeverReached`] at once, for the balancer to try elsewhere.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use http::Uri;
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rampart_health::transport::{Connector, is_refused_stream, is_tls_handshake_failure};
use rampart_health::{BoxError, NeverReached};
use tower_service::Service;

use super::tape::{Tape, TapeBody};

/// The most attempts one request makes on this endpoint's connections.
pub(crate) const MAX_ATTEMPTS: usize = 4;

/// The stream limit assumed for a connection before its server's SETTINGS arrive, when the
/// endpoint has learned none yet (RFC 9113 §6.5.2 recommends no less than 100).
pub(crate) const DEFAULT_ASSUMED_STREAMS: usize = 100;

type Sender<B> = http2::SendRequest<TapeBody<B>>;
/// Reads the server's stream limit from the connection's driver, unless it is busy.
type LimitProbe = Arc<OnceLock<Box<dyn Fn() -> Option<usize> + Send + Sync>>>;

/// A failed connection attempt, shared by every request that waited for it.
#[derive(Clone)]
struct ConnectFailed(Arc<BoxError>);

impl fmt::Debug for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectFailed").field(&self.0).finish()
    }
}

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http/2 connection failed: {}", self.0)
    }
}

impl std::error::Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.0)
    }
}

/// What a connection's driver and its requests share.
#[derive(Debug)]
struct ConnState {
    /// Streams assigned to it whose response head has not arrived.
    in_flight: AtomicUsize,
    /// The server's stream limit as last read (the assumed one until its SETTINGS arrive).
    server_limit: AtomicUsize,
    /// No new stream goes to it (GOAWAY, closed, failed).
    retired: AtomicBool,
    /// The limit assumed when it opened (hyper's initial one until the SETTINGS arrive).
    assumed: usize,
}

impl ConnState {
    /// Records the limit hyper reports; one that differs from the assumed one came from the
    /// server's SETTINGS, and the endpoint learns it for its next connections.
    fn observe(&self, limit: usize, learned: &AtomicUsize) {
        self.server_limit.store(limit, Ordering::Release);
        if limit != self.assumed {
            learned.store(limit, Ordering::Release);
        }
    }
}

struct Conn<B> {
    id: u64,
    ready: Shared<BoxFuture<'static, Result<Sender<B>, ConnectFailed>>>,
    state: Arc<ConnState>,
    driver: LimitProbe,
}

impl<B> Conn<B> {
    fn is_retired(&self) -> bool {
        if self.state.retired.load(Ordering::Acquire) {
            return true;
        }
        match self.ready.peek() {
            Some(Ok(send)) => send.is_closed(),
            Some(Err(_)) => true,
            None => false,
        }
    }

    fn retire(&self, name: &str, why: &'static str) {
        if !self.state.retired.swap(true, Ordering::AcqRel) {
            tracing::debug!(endpoint = %name, connection = self.id, reason = why, "http/2 connection retired");
        }
    }
}

/// Settings of the connections of one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct H2Settings {
    pub(crate) connect_timeout: Duration,
    pub(crate) keep_alive_interval: Duration,
    pub(crate) keep_alive_timeout: Duration,
    pub(crate) max_streams_per_connection: usize,
}

struct Shared_<B> {
    name: Arc<str>,
    target: Uri,
    connector: Connector,
    settings: H2Settings,
    conns: Mutex<Vec<Arc<Conn<B>>>>,
    /// The last stream limit a server of this endpoint announced (0: none yet).
    learned: Arc<AtomicUsize>,
    next_id: AtomicU64,
}

/// The HTTP/2 connections of one endpoint (see the [module docs](self)).
pub(crate) struct H2Pool<B> {
    shared: Arc<Shared_<B>>,
}

impl<B> Clone for H2Pool<B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<B> fmt::Debug for H2Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Pool")
            .field("endpoint", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// Gives a stream slot back when the attempt ends (response head, error or cancellation).
struct Slot(Arc<ConnState>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `true` when hyper dropped the request's callback with its connection's dispatch task. That
/// happens to a stream that waited in hyper for a free stream slot when the connection shut
/// down after a `GOAWAY`; but by then h2 may already have opened it, and the server may have
/// processed it, so the request may or may not have reached the server. hyper has no
/// accessor for this kind: its message is matched.
fn is_dispatch_gone(err: &hyper::Error) -> bool {
    err.is_user() && err.to_string().starts_with("dispatch task is gone")
}

/// `true` when `err`'s chain holds a `GOAWAY` the server sent.
fn is_remote_go_away(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    let mut depth = 0;
    while let Some(e) = current {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote();
        }
        depth += 1;
        if depth > 32 {
            break;
        }
        current = e.source();
    }
    false
}

impl<B> H2Pool<B> {
    pub(crate) fn new(
        name: Arc<str>,
        target: Uri,
        connector: Connector,
        settings: H2Settings,
    ) -> Self {
        Self {
            shared: Arc::new(Shared_ {
                name,
                target,
                connector,
                settings,
                conns: Mutex::new(Vec::new()),
                learned: Arc::new(AtomicUsize::new(0)),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// The stream limit of `conn` now: the server's (read from hyper when the driver is free),
    /// capped by the configured one.
    fn limit(&self, conn: &Conn<B>) -> usize {
        if let Some(limit) = conn.driver.get().and_then(|read| read()) {
            conn.state.observe(limit, &self.shared.learned);
        }
        conn.state
            .server_limit
            .load(Ordering::Acquire)
            .min(self.shared.settings.max_streams_per_connection)
            .max(1)
    }
}

impl<B> H2Pool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A stream slot on a connection not in `excluded`: the oldest with room, else a new one.
    fn checkout(&self, excluded: &[u64]) -> (Arc<Conn<B>>, Slot) {
        let mut conns = lock(&self.shared.conns);
        conns.retain(|c| !c.is_retired());
        for conn in conns.iter() {
            if excluded.contains(&conn.id) {
                continue;
            }
            if conn.state.in_flight.load(Ordering::Acquire) < self.limit(conn) {
                conn.state.in_flight.fetch_add(1, Ordering::AcqRel);
                return (conn.clone(), Slot(conn.state.clone()));
            }
        }
        let conn = Arc::new(self.open());
        conn.state.in_flight.fetch_add(1, Ordering::AcqRel);
        conns.push(conn.clone());
        let slot = Slot(conn.state.clone());
        (conn, slot)
    }

    fn open(&self) -> Conn<B> {
        let s = &self.shared;
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let learned = s.learned.load(Ordering::Acquire);
        let assumed = if learned == 0 {
            DEFAULT_ASSUMED_STREAMS
        } else {
            learned
        }
        .min(s.settings.max_streams_per_connection)
        .max(1);
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            server_limit: AtomicUsize::new(assumed),
            retired: AtomicBool::new(false),
            assumed,
        });
        let driver = Arc::new(OnceLock::new());
        let connect = connect(
            Dial {
                name: s.name.clone(),
                id,
                target: s.target.clone(),
                connector: s.connector.clone(),
                settings: s.settings.clone(),
                assumed,
            },
            state.clone(),
            driver.clone(),
            s.learned.clone(),
        );
        tracing::debug!(endpoint = %s.name, connection = id, "opening an http/2 connection");
        Conn {
            id,
            ready: connect.boxed().shared(),
            state,
            driver,
        }
    }

    /// Sends `req` on this endpoint's connections (see the [module docs](self)).
    pub(crate) fn send(
        &self,
        req: http::Request<B>,
    ) -> impl Future<Output = Result<http::Response<Incoming>, BoxError>> + Send + 'static {
        let pool = self.clone();
        async move { pool.send_inner(req).await }
    }

    async fn send_inner(self, req: http::Request<B>) -> Result<http::Response<Incoming>, BoxError> {
        let (parts, body) = req.into_parts();
        let (tape, mut body) = Tape::new(body);
        let mut excluded: Vec<u64> = Vec::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (conn, _slot) = self.checkout(&excluded);
            let mut send = match conn.ready.clone().await {
                Ok(send) => send,
                Err(e) => {
                    conn.retire(&self.shared.name, "connect failed");
                    return Err(Box::new(NeverReached::new().with_source(Box::new(e))));
                }
            };
            let err = match send
                .try_send_request(http::Request::from_parts(parts.clone(), body))
                .await
            {
                Ok(res) => return Ok(res),
                Err(mut e) => match e.take_message() {
                    // The connection had closed before it took the request: nothing was
                    // sent, so the very same request goes to another connection.
                    Some(req) => {
                        conn.retire(&self.shared.name, "closed");
                        excluded.push(conn.id);
                        body = req.into_body();
                        if attempt < MAX_ATTEMPTS {
                            continue;
                        }
                        return Err(Box::new(
                            NeverReached::new().with_source(Box::new(e.into_error())),
                        ));
                    }
                    None => e.into_error(),
                },
            };
            if is_dispatch_gone(&err) {
                // Perhaps processed (see `is_dispatch_gone`): sent again on another connection
                // only when repeating it is safe (an idempotent method or an
                // `Idempotency-Key`); otherwise the caller gets the error.
                conn.retire(&self.shared.name, "closed");
                excluded.push(conn.id);
                if attempt < MAX_ATTEMPTS
                    && crate::policy::is_idempotent(&parts.method, &parts.headers)
                    && let Some(replay) = tape.rewind()
                {
                    body = replay;
                    continue;
                }
                return Err(Box::new(err));
            }
            let unsent = err.is_canceled();
            if is_refused_stream(&err) || unsent {
                // Never processed by the server: REFUSED_STREAM, above a GOAWAY's
                // last-stream-id, or canceled by hyper before it went out.
                if unsent {
                    conn.retire(&self.shared.name, "closed");
                }
                if is_remote_go_away(&err) {
                    conn.retire(&self.shared.name, "goaway");
                }
                excluded.push(conn.id);
                if attempt < MAX_ATTEMPTS
                    && let Some(replay) = tape.rewind()
                {
                    tracing::debug!(
                        endpoint = %self.shared.name,
                        connection = conn.id,
                        attempt,
                        "http/2 stream refused: sending it on another connection"
                    );
                    body = replay;
                    continue;
                }
                return Err(Box::new(NeverReached::new().with_source(Box::new(err))));
            }
            if is_tls_handshake_failure(&err) {
                conn.retire(&self.shared.name, "tls handshake failed");
                return Err(Box::new(NeverReached::new().with_source(Box::new(err))));
            }
            if send.is_closed() {
                conn.retire(&self.shared.name, "closed");
            }
            return Err(Box::new(err));
        }
    }
}

/// Where and how to open one connection.
struct Dial {
    name: Arc<str>,
    id: u64,
    target: Uri,
    connector: Connector,
    settings: H2Settings,
    assumed: usize,
}

/// The connector's error, boxed (its type depends on the `tls` feature).
fn boxed<E: Into<BoxError>>(e: E) -> BoxError {
    e.into()
}

/// Dials, handshakes and spawns the connection's driver.
async fn connect<B>(
    dial: Dial,
    state: Arc<ConnState>,
    slot: LimitProbe,
    learned: Arc<AtomicUsize>,
) -> Result<Sender<B>, ConnectFailed>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Dial {
        name,
        id,
        target,
        mut connector,
        settings,
        assumed,
    } = dial;
    let handshake = async {
        futures_util::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(boxed)?;
        let io = connector.call(target).await.map_err(boxed)?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(settings.keep_alive_interval)
            .keep_alive_timeout(settings.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .initial_max_send_streams(assumed);
        let (send, conn) = builder.handshake::<_, TapeBody<B>>(io).await?;
        Ok::<_, BoxError>((send, conn))
    };
    let (send, conn) = match tokio::time::timeout(settings.connect_timeout, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::debug!(endpoint = %name, connection = id, error = %e, "http/2 connection failed");
            return Err(ConnectFailed(Arc::new(e)));
        }
        Err(_elapsed) => {
            let e: BoxError =
                format!("connecting took longer than {:?}", settings.connect_timeout).into();
            tracing::debug!(endpoint = %name, connection = id, "http/2 connect timed out");
            return Err(ConnectFailed(Arc::new(e)));
        }
    };
    let conn = Arc::new(Mutex::new(Some(conn)));
    let reader = conn.clone();
    let _ = slot.set(Box::new(move || {
        reader
            .try_lock()
            .ok()?
            .as_ref()
            .map(|driver| driver.current_max_send_streams())
    }));
    // The driver ends when hyper closes the connection: after a GOAWAY once its streams
    // finished, on a dead peer (keep-alive), or once every sender (the pool's and those of
    // requests in flight) is gone.
    tokio::spawn(async move {
        let result = futures_util::future::poll_fn(|cx| {
            let mut driver = lock(&conn);
            let Some(driver) = driver.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let polled = Pin::new(&mut *driver).poll(cx);
            state.observe(driver.current_max_send_streams(), &learned);
            polled
        })
        .await;
        state.retired.store(true, Ordering::Release);
        // Dropped here, not when the last request holding this connection ends: requests
        // still queued for it get their request back and go to another connection.
        drop(lock(&conn).take());
        match result {
            Ok(()) => {
                tracing::debug!(endpoint = %name, connection = id, "http/2 connection closed");
            }
            Err(e) => {
                tracing::debug!(endpoint = %name, connection = id, error = %e, "http/2 connection failed");
            }
        }
    });
    Ok(send)
}
