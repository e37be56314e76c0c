//! Upstream connections: per-worker pools of `hyper::client::conn::http1` connections.
//!
//! The same shape as the benchmark gateway's (`bench/src/gateway/upstream.rs`): each worker
//! thread keeps, per upstream, a plain `Vec` of HTTP/1 connections in a thread-local — no
//! mutex, no channel hop beyond hyper's own hand-off to the connection task, no boxing. A
//! request takes a connection that is ready for a new request or opens one; the connection goes
//! back to the pool when the response head arrives and is ready again once the response body
//! has been read. hyper-util's legacy pooled client cost about 3 µs more per request (its
//! pool mutex, boxed futures and channel hop), which is why the edge does not use it.
//!
//! Errors tell whether the request reached the upstream: a refused or timed-out connection, or
//! a request hyper handed back unsent, carries [`NeverReached`] in its chain, so the balancer
//! retries it on another upstream and the fallback knows it is unavailability, not a bug.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rampart::balance::ReplayBody;
use rampart::health::{BoxError, NeverReached};

/// The body the edge sends upstream: the client's body, buffered when it may be replayed.
pub type UpBody = ReplayBody<Incoming>;

/// Why an upstream attempt failed.
#[derive(Debug)]
pub struct UpstreamError {
    kind: ErrorKind,
    addr: SocketAddr,
}

#[derive(Debug)]
enum ErrorKind {
    /// The request never left: connect failed, or hyper handed it back unsent.
    NeverReached(NeverReached),
    /// The request was sent (and may have been processed); the exchange failed.
    Exchange(hyper::Error),
    /// No response head within the attempt timeout.
    Timeout(Duration),
}

impl UpstreamError {
    fn never(addr: SocketAddr, source: impl Into<BoxError>) -> Self {
        Self {
            kind: ErrorKind::NeverReached(NeverReached::new().with_source(source)),
            addr,
        }
    }

    /// Whether the request never reached the upstream (safe to retry anywhere).
    pub fn is_never_reached(&self) -> bool {
        matches!(self.kind, ErrorKind::NeverReached(_))
    }

    /// Whether the attempt timed out waiting for the response head.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout(_))
    }

    /// The upstream's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::NeverReached(_) => write!(f, "upstream {} not reached", self.addr),
            ErrorKind::Exchange(_) => write!(f, "exchange with upstream {} failed", self.addr),
            ErrorKind::Timeout(d) => {
                write!(f, "upstream {} did not answer within {d:?}", self.addr)
            }
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::NeverReached(n) => Some(n),
            ErrorKind::Exchange(e) => Some(e),
            ErrorKind::Timeout(_) => None,
        }
    }
}

type Sender = SendRequest<UpBody>;

thread_local! {
    /// This worker's connections, indexed by upstream slot.
    static POOLS: RefCell<Vec<Vec<Sender>>> = const { RefCell::new(Vec::new()) };
}

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// Takes a connection to `slot` that can take a request now; drops closed ones.
fn take_ready(slot: usize) -> Option<Sender> {
    POOLS.with_borrow_mut(|pools| {
        let conns = pools.get_mut(slot)?;
        let mut i = 0;
        while i < conns.len() {
            if conns[i].is_closed() {
                conns.swap_remove(i);
            } else if conns[i].is_ready() {
                return Some(conns.swap_remove(i));
            } else {
                i += 1;
            }
        }
        None
    })
}

/// Connections kept per upstream and worker; more are closed after use.
const MAX_POOLED: usize = 512;

fn put_back(slot: usize, sender: Sender) {
    POOLS.with_borrow_mut(|pools| {
        if pools.len() <= slot {
            pools.resize_with(slot + 1, Vec::new);
        }
        if pools[slot].len() < MAX_POOLED {
            pools[slot].push(sender);
        }
    });
}

/// One shop instance, reached over per-worker pooled HTTP/1 connections. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    slot: usize,
    connect_timeout: Duration,
    timeout: Duration,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.inner.addr)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// An upstream at `addr`: connecting gives up after `connect_timeout`, waiting for the
    /// response head after `timeout`.
    pub fn new(addr: SocketAddr, connect_timeout: Duration, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                addr,
                slot: NEXT_SLOT.fetch_add(1, Ordering::Relaxed),
                connect_timeout,
                timeout,
            }),
        }
    }

    /// The upstream's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Sends `req` on a ready pooled connection of this worker, or on a new one.
    ///
    /// A pooled connection that turns out to be closed (the upstream went away while it was
    /// idle) hands the request back unsent; it is then tried once on a fresh connection.
    pub async fn send(&self, req: Request<UpBody>) -> Result<Response<Incoming>, UpstreamError> {
        let timeout = self.inner.timeout;
        match tokio::time::timeout(timeout, self.send_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError {
                kind: ErrorKind::Timeout(timeout),
                addr: self.inner.addr,
            }),
        }
    }

    async fn send_inner(&self, req: Request<UpBody>) -> Result<Response<Incoming>, UpstreamError> {
        let slot = self.inner.slot;
        let addr = self.inner.addr;
        let req = match take_ready(slot) {
            Some(mut sender) => match sender.try_send_request(req).await {
                Ok(resp) => {
                    put_back(slot, sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(req) => req,
                    None => {
                        return Err(UpstreamError {
                            kind: ErrorKind::Exchange(e.into_error()),
                            addr,
                        });
                    }
                },
            },
            None => req,
        };
        let mut sender = self.connect().await?;
        match sender.try_send_request(req).await {
            Ok(resp) => {
                put_back(slot, sender);
                Ok(resp)
            }
            Err(mut e) => {
                let unsent = e.take_message().is_some();
                let err = e.into_error();
                Err(if unsent {
                    UpstreamError::never(addr, err)
                } else {
                    UpstreamError {
                        kind: ErrorKind::Exchange(err),
                        addr,
                    }
                })
            }
        }
    }

    /// Opens a connection and spawns its task on the current runtime (this worker's).
    async fn connect(&self) -> Result<Sender, UpstreamError> {
        let addr = self.inner.addr;
        let stream = tokio::time::timeout(
            self.inner.connect_timeout,
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|e| UpstreamError::never(addr, e))?
        .map_err(|e| UpstreamError::never(addr, e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| UpstreamError::never(addr, e))?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::never(addr, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}
