//! HTTP/2 over cleartext with prior knowledge (h2c) on loopback (feature `h2c`): [`H2cServer`],
//! a hyper server that limits each connection to a set number of concurrent streams, holds
//! every request for a set delay and echoes its body, counts what reached it ([`Counters`]),
//! and sends a graceful GOAWAY on demand, either to the connections open at that moment
//! ([`H2cServer::drain_open_connections`]) or to all of them as it stops accepting
//! ([`H2cServer::drain`]).
//!
//! ```
//! use std::time::Duration;
//!
//! use rampart_test_support::h2c::H2cServer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let server = H2cServer::start(2, Duration::from_millis(10)).await;
//! assert!(server.uri().to_string().starts_with("http://127.0.0.1:"));
//! assert_eq!((server.conns(), server.started(), server.handled()), (0, 0, 0));
//! server.drain();
//! # }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

/// What a loopback HTTP/2 server counted; every field starts at zero.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests that reached the handler, counted on arrival.
    pub started: AtomicUsize,
    /// Requests that arrived as HTTP/2.
    pub h2: AtomicUsize,
    /// Requests answered, counted once the handler's delay is over.
    pub handled: AtomicUsize,
    /// Connections accepted.
    pub conns: AtomicUsize,
    /// The most streams ever in flight on one connection.
    pub max_in_flight: AtomicUsize,
    /// The path of every request that reached the handler, in arrival order.
    pub paths: Mutex<Vec<String>>,
}

/// The GOAWAY orders sent so far.
#[derive(Clone, Copy, Debug, Default)]
struct Drains {
    /// Orders to drain the connections open at that moment.
    open: u64,
    /// Stop accepting and drain every connection.
    all: bool,
}

/// An h2c server on `127.0.0.1:0`: each connection allows `max_streams` concurrent streams,
/// and the handler answers `200` with the request body after `delay`. It and its connections
/// stop when this is dropped.
#[derive(Debug)]
pub struct H2cServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    drains: watch::Sender<Drains>,
    _task: AbortOnDropHandle<()>,
}

impl H2cServer {
    /// Binds `127.0.0.1:0` and serves on the current runtime.
    pub async fn start(max_streams: u32, delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let (drains, mut orders) = watch::channel(Drains::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let tcp = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                    _ = orders.wait_for(|d| d.all) => break,
                };
                while conns.try_join_next().is_some() {}
                c.conns.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                let mut orders = orders.clone();
                // Only an order given after this connection was accepted drains it.
                let open_at_accept = orders.borrow_and_update().open;
                conns.spawn(async move {
                    let in_flight = Arc::new(AtomicUsize::new(0));
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let c = c.clone();
                        let in_flight = in_flight.clone();
                        async move {
                            c.started.fetch_add(1, Ordering::SeqCst);
                            c.paths.lock().unwrap().push(req.uri().path().to_owned());
                            if req.version() == http::Version::HTTP_2 {
                                c.h2.fetch_add(1, Ordering::SeqCst);
                            }
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            c.max_in_flight.fetch_max(now, Ordering::SeqCst);
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            tokio::time::sleep(delay).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            c.handled.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(http::Response::new(Full::new(
                                body.unwrap_or_default(),
                            )))
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .timer(TokioTimer::new())
                        .max_concurrent_streams(max_streams)
                        .serve_connection(TokioIo::new(tcp), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = orders.wait_for(|d| d.all || d.open != open_at_accept) => {}
                    }
                    // GOAWAY: streams already accepted finish, new ones are refused.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                });
            }
            // Keep the drained connections alive until they finish; the listening socket
            // closes with them.
            while conns.join_next().await.is_some() {}
        });
        Self {
            addr,
            counters,
            drains,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// Everything counted so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Requests that reached the handler.
    pub fn started(&self) -> usize {
        self.counters.started.load(Ordering::SeqCst)
    }

    /// Requests that arrived as HTTP/2.
    pub fn h2_requests(&self) -> usize {
        self.counters.h2.load(Ordering::SeqCst)
    }

    /// Requests answered.
    pub fn handled(&self) -> usize {
        self.counters.handled.load(Ordering::SeqCst)
    }

    /// Connections accepted.
    pub fn conns(&self) -> usize {
        self.counters.conns.load(Ordering::SeqCst)
    }

    /// The most streams ever in flight on one connection.
    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// The path of every request that reached the handler, in arrival order.
    pub fn paths(&self) -> Vec<String> {
        self.counters.paths.lock().unwrap().clone()
    }

    /// Sends every connection open now a graceful GOAWAY (streams already accepted finish,
    /// new ones are refused). The server keeps accepting, and later connections serve as
    /// usual until the next call.
    pub fn drain_open_connections(&self) {
        self.drains.send_modify(|d| d.open += 1);
    }

    /// Stops accepting and sends every connection a graceful GOAWAY; the listening socket
    /// closes once the last of them has finished.
    pub fn drain(&self) {
        self.drains.send_modify(|d| d.all = true);
    }
}
