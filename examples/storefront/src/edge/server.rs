//! The edge's HTTP/1 server: listeners, workers, connections.
//!
//! Connections are served by hyper 1's HTTP/1 server with keep-alive. The request handler is
//! any `Clone` tower service, adapted by hyper-util's `TowerToHyperService` (a clone and a
//! `Oneshot` per request: static dispatch, nothing boxed). Two shapes:
//!
//! - per-core workers (the default): one thread per worker, each with its own current-thread
//!   runtime and its own listening socket bound with `SO_REUSEPORT` to the same address, so
//!   the kernel spreads connections over workers and a connection, its requests and its
//!   upstream connections stay on one thread (nginx's shared-nothing shape);
//! - in place (`workers = 0` internally): the accept loop runs on the caller's runtime (used
//!   by the tests).
//!
//! Every connection task belongs to its accept loop's `JoinSet`, so stopping the loop stops
//! its connections.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rampart::health::BoxError;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::Service;

/// Binds `addr` (inside a runtime), optionally with `SO_REUSEPORT`.
pub(crate) fn bind(addr: SocketAddr, reuseport: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts connections until `shutdown` turns true (or its sender is gone), serving each with
/// a clone of `svc`.
pub(crate) async fn accept_loop<S, B>(
    listener: TcpListener,
    svc: S,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "edge accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(svc.clone());
                conns.spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "client connection ended with an error");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    conns.shutdown().await;
}

/// Per-core workers; dropping this stops them (each worker's runtime, its connections and its
/// upstream connection tasks end with it).
#[derive(Debug)]
pub(crate) struct Workers {
    shutdown: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        // The threads end on their own once their accept loops see the signal; they are
        // not joined here so that dropping from async code never blocks an executor thread.
        self.threads.clear();
    }
}

/// Binds `n` listening sockets to `listen` with `SO_REUSEPORT` (the first picks the port when
/// `listen` has port 0, the others bind the same one); returns the bound address and the
/// sockets, detached from the current runtime so that each worker can adopt one.
pub(crate) fn bind_all(
    listen: SocketAddr,
    n: usize,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let mut addr = listen;
    let mut out = Vec::new();
    for _ in 0..n.max(1) {
        let listener = bind(addr, true)?;
        addr = listener.local_addr()?;
        out.push(listener.into_std()?);
    }
    Ok((addr, out))
}

/// Starts one worker thread per listener, each with its own current-thread runtime.
pub(crate) fn spawn_workers<S, B>(
    listeners: Vec<std::net::TcpListener>,
    svc: &S,
) -> io::Result<Workers>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (shutdown, rx) = watch::channel(false);
    let mut workers = Workers {
        shutdown,
        threads: Vec::new(),
    };
    for (i, std_listener) in listeners.into_iter().enumerate() {
        let svc = svc.clone();
        let rx = rx.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("edge-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => accept_loop(listener, svc, rx).await,
                        Err(e) => tracing::error!(error = %e, "edge worker cannot listen"),
                    }
                });
            })?;
        workers.threads.push(thread);
    }
    Ok(workers)
}
