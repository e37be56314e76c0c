//! The gateway's HTTP/1 server: workers, listeners, connections.
//!
//! Two shapes, chosen by [`Runtime`]:
//! - [`Runtime::PerCore`] (default): one thread per worker, each with its own current-thread
//!   tokio runtime and its own listening socket bound with `SO_REUSEPORT` to the same address,
//!   so the kernel spreads connections over workers and a connection, its requests and its
//!   upstream connections stay on one thread (nginx's shared-nothing shape);
//! - [`Runtime::MultiThread`]: one work-stealing multi-thread runtime with one listener.
//!
//! Connections are served by hyper 1's HTTP/1 server with keep-alive; the request handler is
//! a [`Handler`] whose future is a concrete type (no boxing, static dispatch).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpSocket};

/// Turns a request into a response; errors are already answered (a 502, the apology).
pub trait Handler: Clone + Send + 'static {
    /// The response body.
    type Body: http_body::Body<Data = Bytes, Error: Into<rampart::health::BoxError>>
        + Send
        + 'static;

    /// Answers one request.
    fn handle(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static + use<Self>;
}

/// How the gateway runs its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// One current-thread runtime per worker thread, `SO_REUSEPORT` listeners.
    PerCore,
    /// One current-thread runtime per worker thread, all accepting from one shared listening
    /// socket (nginx's default shape: the kernel hands a new connection to a waiting worker,
    /// so a busy worker accepts less).
    PerCoreShared,
    /// One multi-thread runtime, one listener.
    MultiThread,
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "percore" | "per-core" => Ok(Self::PerCore),
            "percore-shared" | "shared" => Ok(Self::PerCoreShared),
            "multi" | "multi-thread" => Ok(Self::MultiThread),
            other => Err(format!(
                "unknown runtime {other:?} (percore, percore-shared, multi)"
            )),
        }
    }
}

fn bind(addr: SocketAddr, reuseport: bool) -> io::Result<TcpListener> {
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

async fn accept_loop<H: Handler>(listener: TcpListener, handler: H) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| Infallibly {
                fut: handler.handle(req),
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
    }
}

pin_project! {
    /// Wraps a future's output in `Ok` without moving the future into a second state
    /// machine (an `async move { Ok(fut.await) }` block would hold the future twice).
    struct Infallibly<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Infallibly<F> {
    type Output = Result<F::Output, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().fut.poll(cx).map(Ok)
    }
}

/// Binds `listen`, calls `on_bound` with the bound address, then serves forever with
/// `workers` workers; `make_handler` builds one handler per worker (inside that worker's
/// runtime, so background tasks it spawns live there).
pub fn serve<H, F>(
    listen: SocketAddr,
    workers: usize,
    runtime: Runtime,
    make_handler: F,
    on_bound: impl FnOnce(SocketAddr),
) -> io::Result<()>
where
    H: Handler,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let workers = workers.max(1);
    match runtime {
        Runtime::MultiThread => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = bind(listen, false)?;
                on_bound(listener.local_addr()?);
                accept_loop(listener, make_handler(0)).await;
                Ok(())
            })
        }
        Runtime::PerCoreShared => {
            let std_listener = std::net::TcpListener::bind(listen)?;
            std_listener.set_nonblocking(true)?;
            let addr = std_listener.local_addr()?;
            let make_handler = std::sync::Arc::new(make_handler);
            let mut threads = Vec::new();
            for i in 0..workers {
                let make_handler = make_handler.clone();
                let l = std_listener.try_clone()?;
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("gateway-{i}"))
                        .spawn(move || -> io::Result<()> {
                            let rt = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()?;
                            rt.block_on(async move {
                                let listener = TcpListener::from_std(l)?;
                                accept_loop(listener, make_handler(i)).await;
                                Ok(())
                            })
                        })?,
                );
            }
            drop(std_listener);
            on_bound(addr);
            join_all(threads)
        }
        Runtime::PerCore => {
            // Worker 0 binds first (it picks the port when `listen` has port 0), then the others
            // bind the same address; each reports its bind result before anyone is announced.
            let make_handler = std::sync::Arc::new(make_handler);
            let (tx, rx) = std::sync::mpsc::channel::<io::Result<SocketAddr>>();
            let mut threads = Vec::new();
            let mut addr = listen;
            for i in 0..workers {
                let make_handler = make_handler.clone();
                let tx = tx.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("gateway-{i}"))
                        .spawn(move || -> io::Result<()> {
                            let rt = tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()?;
                            rt.block_on(async move {
                                let listener = match bind(addr, true) {
                                    Ok(l) => l,
                                    Err(e) => {
                                        let _ =
                                            tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                                        return Err(e);
                                    }
                                };
                                let _ = tx.send(listener.local_addr());
                                accept_loop(listener, make_handler(i)).await;
                                Ok(())
                            })
                        })?,
                );
                addr = rx
                    .recv()
                    .map_err(|_| io::Error::other("a worker thread ended before binding"))??;
            }
            on_bound(addr);
            join_all(threads)
        }
    }
}

fn join_all(threads: Vec<std::thread::JoinHandle<io::Result<()>>>) -> io::Result<()> {
    for t in threads {
        match t.join() {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::other("a worker thread panicked")),
        }
    }
    Ok(())
}
