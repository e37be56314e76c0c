//! The hardened HTTP/1.1 server: any [`Handler`] (or tower service, through
//! [`TowerHandler`]) behind the limits of a [`ServerConfig`].
//!
//! - **Header-read timeout** (default 10 s): a client that sent part of a request head and
//!   stalled is answered `408 Request Timeout` and closed; one that sent nothing is closed.
//! - **Keep-alive idle timeout** (default 60 s): a connection idle between requests is closed.
//! - **Body-read timeout** (default 60 s): a request body that stops arriving closes the
//!   connection.
//! - **Connection cap** (default 10,000 over all workers): at the cap the server stops
//!   calling `accept`, so new connections wait in the kernel's listen backlog; accept errors
//!   such as `EMFILE` back off (10 ms doubling to 1 s) and are logged at most once a second
//!   with a count.
//! - **Header limits**: size (16 KiB) and count (100), answered `431`.
//! - **Graceful shutdown**: stop accepting, let requests in flight finish within the grace
//!   period (30 s), then close the rest; [`shutdown_signal`] waits for SIGTERM or Ctrl-C.
//!
//! Two ways to run it: on the caller's runtime ([`spawn`], [`serve`]), or on worker threads
//! with their own runtimes ([`spawn_workers`], per-core `SO_REUSEPORT` listeners by default).
//!
//! ```
//! use std::time::Duration;
//! use rampart_gateway::server::{self, ServerConfig, TowerHandler};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
//! let config = ServerConfig::builder()
//!     .name("shop")
//!     .header_read_timeout(Duration::from_secs(5))
//!     .build()?;
//! let listener = server::bind("127.0.0.1:0".parse()?, &config)?;
//! let running = server::spawn(listener, &config, TowerHandler::new(app))?;
//! println!("serving on http://{}", running.local_addr());
//! running.shutdown();
//! running.stopped().await;
//! # Ok(()) }
//! ```
//!
//! # Metrics
//!
//! Through the `metrics` facade, each labelled `server` with [`ServerConfig::name`]:
//! `rampart_gateway_connections_open` (gauge), `rampart_gateway_connections_accepted_total`,
//! `rampart_gateway_connections_timed_out_total` (label `timeout`: `header_read`,
//! `keep_alive`, `body_read`), `rampart_gateway_request_timeout_responses_total` (408s sent),
//! `rampart_gateway_connection_limit_reached_total`, `rampart_gateway_accept_errors_total`.

mod accept;
mod config;
mod conn;
mod h2;
mod handler;
mod info;
mod io;
pub mod metrics;
mod shared;
mod tls;
mod workers;

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use config::{Runtime, ServerConfig, ServerConfigBuilder};
pub use handler::{Handler, TowerHandler};
pub use info::ConnectionInfo;
pub use tls::ServerTls;
pub use workers::{WorkerListeners, Workers, bind_workers, spawn_workers};

use accept::accept_loop;
use shared::Shared;

/// Binds a listening socket (`SO_REUSEADDR`, optionally `SO_REUSEPORT`) with `backlog`,
/// non-blocking, outside any runtime.
fn bind_std(
    addr: SocketAddr,
    backlog: u32,
    reuseport: bool,
) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds `addr` with [`ServerConfig::backlog`] (inside a tokio runtime).
pub fn bind(addr: SocketAddr, config: &ServerConfig) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr, config.backlog(), false)?)
}

/// A server running on the caller's runtime (see [`spawn`]). Dropping it closes the listener
/// and every connection at once; [`shutdown`](Self::shutdown) then
/// [`stopped`](Self::stopped) stop it gracefully.
#[derive(Debug)]
pub struct Serving {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: AbortOnDropHandle<()>,
}

impl Serving {
    /// The listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; requests in flight finish within the grace period, then the
    /// connections close.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the server has stopped (after [`shutdown`](Self::shutdown)).
    pub async fn stopped(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Serves `handler` on `listener` in a task of the current runtime.
pub fn spawn<H: Handler>(
    listener: TcpListener,
    config: &ServerConfig,
    handler: H,
) -> std::io::Result<Serving> {
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let shared = Shared::new(config);
    tracing::info!(server = config.name(), %addr, "listening");
    let task = AbortOnDropHandle::new(tokio::spawn(accept_loop(
        listener,
        handler,
        shared,
        shutdown.clone(),
    )));
    Ok(Serving {
        addr,
        shutdown,
        task,
    })
}

/// Serves `handler` on `listener` until `signal` completes (for example
/// [`shutdown_signal`]), then shuts down gracefully and returns.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    config: &ServerConfig,
    handler: H,
    signal: impl Future<Output = ()>,
) {
    let shutdown = CancellationToken::new();
    let shared = Shared::new(config);
    let stop = async {
        tokio::select! {
            () = signal => shutdown.cancel(),
            () = shutdown.cancelled() => {}
        }
    };
    tokio::join!(
        accept_loop(listener, handler, shared, shutdown.clone()),
        stop
    );
}

/// Completes on SIGTERM or Ctrl-C (SIGINT): the shutdown signal of a server binary.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    r = tokio::signal::ctrl_c() => {
                        if r.is_err() {
                            term.recv().await;
                        }
                    }
                }
            }
            Err(_) => {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
