//! One replica: a real HTTP server on loopback that obeys its injected fault.
//!
//! The accept loop is hand-written (hyper's HTTP/1 connection driver under an axum router, or
//! its HTTP/2 driver, over TLS or not: see [`super::protocol`]) so
//! that `down` can be real: the listener is closed and every open connection is dropped, and
//! the port is kept by a bound socket that does not listen (so connections are *refused*, and
//! nothing else can take the port). Restoring the replica listens on that same socket again:
//! the replica comes back on the same address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::fault::{Fault, FaultSpec, ReplicaId};
use super::protocol::Wire;
use crate::AbortOnDrop;

/// Counters of one replica, readable while it runs.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Requests that reached the replica's handlers (health checks included).
    pub requests: AtomicU64,
    /// Requests answered with an injected 500.
    pub injected_errors: AtomicU64,
}

/// A running replica. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct ReplicaServer {
    id: ReplicaId,
    addr: SocketAddr,
    stats: Arc<ReplicaStats>,
    _task: AbortOnDrop,
}

impl ReplicaServer {
    /// Binds `addr` (port 0 for any) and serves `app` over HTTP/1.1 with the fault from
    /// `faults`.
    pub async fn start(
        id: ReplicaId,
        addr: SocketAddr,
        app: Router,
        faults: watch::Receiver<FaultSpec>,
    ) -> std::io::Result<Self> {
        Self::start_on(id, addr, app, faults, Wire::Http1).await
    }

    /// Like [`ReplicaServer::start`], serving each connection as `wire` says (HTTP/1.1, h2c
    /// or TLS).
    pub(crate) async fn start_on(
        id: ReplicaId,
        addr: SocketAddr,
        app: Router,
        faults: watch::Receiver<FaultSpec>,
        wire: Wire,
    ) -> std::io::Result<Self> {
        let socket = reserve(addr)?;
        let addr = socket.local_addr()?;
        let listener = if faults.borrow().fault == Fault::Down {
            Bound::Reserved(socket)
        } else {
            Bound::Listening(socket.listen(1024)?)
        };
        let stats = Arc::new(ReplicaStats::default());
        let served_by = HeaderValue::from_str(&id.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("replica"));
        let app = app.layer(axum::middleware::from_fn_with_state(
            FaultState {
                faults: faults.clone(),
                stats: stats.clone(),
                served_by,
            },
            obey_fault,
        ));
        let task = tokio::spawn(accept_loop(id, addr, listener, app, faults, wire));
        Ok(Self {
            id,
            addr,
            stats,
            _task: AbortOnDrop(task),
        })
    }

    /// Which replica this is.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The address it serves on (stable across `down` and back).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<ReplicaStats> {
        &self.stats
    }
}

/// A bound socket with `SO_REUSEADDR`, not yet listening.
fn reserve(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

enum Bound {
    Listening(TcpListener),
    /// Bound but not listening: connections are refused and the port stays ours.
    Reserved(TcpSocket),
    /// Lost the port (could not re-bind); retried.
    Lost,
}

async fn accept_loop(
    id: ReplicaId,
    addr: SocketAddr,
    mut bound: Bound,
    app: Router,
    mut faults: watch::Receiver<FaultSpec>,
    wire: Wire,
) {
    let mut connections = JoinSet::new();
    loop {
        let down = faults.borrow_and_update().fault == Fault::Down;
        bound = match (down, bound) {
            (true, Bound::Listening(listener)) => {
                drop(listener);
                // Dropping the tasks drops their sockets: open keep-alive connections die too.
                connections.abort_all();
                tracing::info!(replica = %id, %addr, "replica down: listener closed");
                match reserve(addr) {
                    Ok(s) => Bound::Reserved(s),
                    Err(e) => {
                        tracing::warn!(replica = %id, %addr, error = %e, "could not keep the port");
                        Bound::Lost
                    }
                }
            }
            (false, Bound::Reserved(socket)) => match socket.listen(1024) {
                Ok(l) => {
                    tracing::info!(replica = %id, %addr, "replica up: listening again");
                    Bound::Listening(l)
                }
                Err(e) => {
                    tracing::warn!(replica = %id, %addr, error = %e, "could not listen again");
                    Bound::Lost
                }
            },
            (false, Bound::Lost) => match reserve(addr).and_then(|s| s.listen(1024)) {
                Ok(l) => {
                    tracing::info!(replica = %id, %addr, "replica up: listening again");
                    Bound::Listening(l)
                }
                Err(_) => Bound::Lost,
            },
            (_, b) => b,
        };
        let retry_bind = matches!(bound, Bound::Lost) && !down;
        tokio::select! {
            changed = faults.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            accepted = accept(&bound) => {
                if let Ok((stream, _peer)) = accepted {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(wire.clone().serve(stream, app.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = tokio::time::sleep(Duration::from_millis(100)), if retry_bind => {}
        }
    }
}

async fn accept(bound: &Bound) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match bound {
        Bound::Listening(l) => l.accept().await,
        _ => std::future::pending().await,
    }
}

#[derive(Clone)]
struct FaultState {
    faults: watch::Receiver<FaultSpec>,
    stats: Arc<ReplicaStats>,
    served_by: HeaderValue,
}

async fn obey_fault(State(state): State<FaultState>, req: Request, next: Next) -> Response {
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let spec = *state.faults.borrow();
    let mut response = match spec.fault {
        Fault::None | Fault::Down => next.run(req).await,
        Fault::Hang => {
            // Never answer while the fault holds; once it is lifted, release the request.
            let mut faults = state.faults.clone();
            while faults.borrow_and_update().fault == Fault::Hang {
                if faults.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            (StatusCode::SERVICE_UNAVAILABLE, "released from hang\n").into_response()
        }
        Fault::Slow => {
            tokio::time::sleep(spec.latency).await;
            next.run(req).await
        }
        Fault::Error => {
            state.stats.injected_errors.fetch_add(1, Ordering::Relaxed);
            (StatusCode::INTERNAL_SERVER_ERROR, "injected error\n").into_response()
        }
        Fault::Flaky => {
            if fastrand::f64() < spec.error_rate {
                state.stats.injected_errors.fetch_add(1, Ordering::Relaxed);
                (StatusCode::INTERNAL_SERVER_ERROR, "injected flaky error\n").into_response()
            } else {
                next.run(req).await
            }
        }
        // Health checks pass: the replica is up, it only asks its callers to slow down.
        Fault::RateLimited | Fault::Hold if req.uri().path() == "/healthz" => next.run(req).await,
        Fault::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            [(
                http::header::RETRY_AFTER,
                spec.retry_after.as_secs().max(1).to_string(),
            )],
            "injected rate limit\n",
        )
            .into_response(),
        Fault::Hold => {
            // Held while the fault holds (health checks pass meanwhile); then released.
            let mut faults = state.faults.clone();
            while faults.borrow_and_update().fault == Fault::Hold {
                if faults.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            (StatusCode::SERVICE_UNAVAILABLE, "released from hold\n").into_response()
        }
    };
    response
        .headers_mut()
        .insert("x-served-by", state.served_by.clone());
    response
}
