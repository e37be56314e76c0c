//! Upstream connections: per-worker pools of `hyper::client::conn::http1` connections.
//!
//! Each worker thread keeps, per upstream, a plain `Vec` of HTTP/1 connections in a
//! thread-local (no mutex, no channel hop beyond hyper's own request hand-off to the
//! connection task, no boxing). A request takes a connection that is ready for a new request,
//! or opens one; the connection goes back to the pool as soon as the response head arrives
//! (it becomes ready again when the response body has been read). With one current-thread
//! runtime per core the connection task runs on the same thread as the requests that use it:
//! nginx's shared-nothing shape.
//!
//! hyper-util's legacy pooled client measured about 3 µs per request more than one
//! connection per client connection; the pool here is per worker, lock-free, on
//! `hyper::client::conn`. The transport is plain TCP and HTTP/1.1 today; a TLS or HTTP/2
//! transport is another `Sender` kind behind the same [`Upstream::send`].
//!
//! Errors say whether the request reached the upstream: a refused connection, or a request
//! hyper handed back unsent, carries [`NeverReached`] in its chain, so a balancer retries it
//! elsewhere and a fallback treats it as unavailability.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rampart_balance::{ReplayBody, ReplayableBody as _};
use rampart_health::NeverReached;

/// The body of a request sent upstream: the client's body, streamed through, or bytes in
/// memory (no body, or a small body buffered by `rampart_balance::ReplayBodyLayer`), which can
/// be copied for a retry on another upstream.
pub type UpBody = ReplayBody<Incoming>;

/// Wraps a client body: empty (replayable) when it is already at its end, as a bodiless GET
/// is; streamed otherwise.
pub fn up_body(body: Incoming) -> UpBody {
    if body.is_end_stream() {
        UpBody::empty()
    } else {
        UpBody::streaming(body)
    }
}

/// Copies a request whose body is in memory (method, URI, version, headers; not the
/// extensions), for a retry elsewhere; `None` for a streamed body.
pub fn clone_request(req: &Request<UpBody>) -> Option<Request<UpBody>> {
    let body = req.body().try_clone_body()?;
    let mut out = Request::new(body);
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    Some(out)
}

/// Why an upstream request failed.
#[derive(Debug)]
pub struct UpstreamError {
    kind: ErrorKind,
    addr: SocketAddr,
}

#[derive(Debug)]
enum ErrorKind {
    /// The request never left: connect failed, or hyper handed it back unsent.
    NeverReached(NeverReached),
    /// The request was sent (maybe processed); the exchange failed.
    Exchange(hyper::Error),
    /// No response head within the attempt's timeout.
    TimedOut(tokio::time::error::Elapsed),
}

impl UpstreamError {
    fn never_reached(addr: SocketAddr, source: impl Into<rampart_health::BoxError>) -> Self {
        Self {
            kind: ErrorKind::NeverReached(NeverReached::new().with_source(source)),
            addr,
        }
    }

    pub(crate) fn timed_out(addr: SocketAddr, e: tokio::time::error::Elapsed) -> Self {
        Self {
            kind: ErrorKind::TimedOut(e),
            addr,
        }
    }

    /// Whether the attempt ran out of time before the response head arrived.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::TimedOut(_))
    }

    /// Whether the request never reached the upstream (safe to retry anywhere).
    pub fn is_never_reached(&self) -> bool {
        matches!(self.kind, ErrorKind::NeverReached(_))
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
            ErrorKind::TimedOut(_) => write!(f, "upstream {} timed out", self.addr),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::NeverReached(n) => Some(n),
            ErrorKind::Exchange(e) => Some(e),
            ErrorKind::TimedOut(e) => Some(e),
        }
    }
}

type Sender = SendRequest<UpBody>;

thread_local! {
    /// This worker's idle-or-busy connections, indexed by upstream slot.
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

/// At most this many connections per upstream are kept per worker; past it, a connection is
/// closed once its response is read.
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

/// One upstream server, reached over per-worker pooled HTTP/1 connections.
///
/// `Copy`: a handle is a few words (no reference count to bounce between cores when a
/// balancer clones its endpoint service for every request).
#[derive(Clone, Copy)]
pub struct Upstream {
    inner: Inner,
}

#[derive(Clone, Copy)]
struct Inner {
    addr: SocketAddr,
    slot: usize,
    connect_timeout: Duration,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// An upstream at `addr`; connecting gives up after `connect_timeout`.
    pub fn new(addr: SocketAddr, connect_timeout: Duration) -> Self {
        Self {
            inner: Inner {
                addr,
                slot: NEXT_SLOT.fetch_add(1, Ordering::Relaxed),
                connect_timeout,
            },
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
    pub async fn send(self, req: Request<UpBody>) -> Result<Response<Incoming>, UpstreamError> {
        let slot = self.inner.slot;
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
                            addr: self.inner.addr,
                        });
                    }
                },
            },
            None => req,
        };
        // Connecting is rare (once per pooled connection): its futures (TCP connect, the HTTP/1
        // handshake) are boxed so they do not inflate every request's future, which hyper
        // moves around by value (the profile showed those copies as the top user-space cost).
        let mut sender = Box::pin(self.connect()).await?;
        match sender.try_send_request(req).await {
            Ok(resp) => {
                put_back(slot, sender);
                Ok(resp)
            }
            Err(mut e) => {
                let unsent = e.take_message().is_some();
                let err = e.into_error();
                Err(if unsent {
                    Self::never(self.inner.addr, err)
                } else {
                    UpstreamError {
                        kind: ErrorKind::Exchange(err),
                        addr: self.inner.addr,
                    }
                })
            }
        }
    }

    fn never(addr: SocketAddr, e: impl Into<rampart_health::BoxError>) -> UpstreamError {
        UpstreamError::never_reached(addr, e)
    }

    /// Opens a connection and spawns its task on the current runtime (this worker).
    async fn connect(&self) -> Result<Sender, UpstreamError> {
        let addr = self.inner.addr;
        let stream = tokio::time::timeout(
            self.inner.connect_timeout,
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|e| Self::never(addr, e))?
        .map_err(|e| Self::never(addr, e))?;
        stream.set_nodelay(true).map_err(|e| Self::never(addr, e))?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Self::never(addr, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn a_refused_connection_never_reached_the_upstream() {
        let addr = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let up = Upstream::new(addr, Duration::from_secs(1));
        let req = Request::get("/").body(UpBody::empty()).unwrap();
        let err = up.send(req).await.unwrap_err();
        assert!(err.is_never_reached());
        assert!(rampart_health::is_never_reached(&err));
        assert_eq!(err.addr(), addr);
    }

    #[test]
    fn a_bodiless_request_is_replayable() {
        let req = Request::get("/")
            .header("x-test", "1")
            .body(UpBody::empty())
            .unwrap();
        let copy = clone_request(&req).unwrap();
        assert_eq!(copy.headers()["x-test"], "1");
        assert_eq!(copy.uri(), "/");
    }
}
