//! The server's limits over real loopback sockets, with short configured timeouts. Each test
//! waits for an event (an answer, the server closing the connection) with a generous bound,
//! never for a wall-clock duration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use rampart_gateway::server::{self, Runtime, ServerConfig, Serving, TowerHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

/// Upper bound of every wait: far above the configured timeouts, so a pass never depends on
/// timing, and a regression fails instead of hanging.
const BOUND: Duration = Duration::from_secs(5);

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

fn app(started: mpsc::UnboundedSender<()>, release: Arc<Notify>) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow",
            get(move || {
                let started = started.clone();
                let release = release.clone();
                async move {
                    let _ = started.send(());
                    release.notified().await;
                    "done"
                }
            }),
        )
        .route("/echo", post(|body: String| async move { body }))
}

struct Fixture {
    serving: Serving,
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
}

impl Fixture {
    fn addr(&self) -> SocketAddr {
        self.serving.local_addr()
    }
}

fn start(config: &ServerConfig) -> Fixture {
    let (tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let serving = server::spawn(
        listener,
        config,
        TowerHandler::new(app(tx, release.clone())),
    )
    .unwrap();
    Fixture {
        serving,
        started,
        release,
    }
}

/// Reads until the peer closes (or the bound passes: then the test fails).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server did not close the connection; got {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one response that ends with `tail` (a keep-alive connection stays open).
async fn read_response(stream: &mut TcpStream, tail: &str) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        while !out.ends_with(tail.as_bytes()) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no response in time");
    String::from_utf8_lossy(&out).into_owned()
}

fn short(header: Duration, idle: Duration) -> ServerConfig {
    ServerConfig::builder()
        .name("test")
        .header_read_timeout(header)
        .keep_alive_timeout(idle)
        .body_read_timeout(Duration::from_millis(300))
        .shutdown_grace(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_head_is_answered_408_and_closed() {
    let f = start(&short(Duration::from_millis(300), Duration::from_secs(30)));
    let mut c = TcpStream::connect(f.addr()).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: te").await.unwrap();
    let got = read_until_closed(&mut c).await;
    assert!(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_without_an_answer() {
    let f = start(&short(Duration::from_millis(300), Duration::from_secs(30)));
    let mut c = TcpStream::connect(f.addr()).await.unwrap();
    assert_eq!(read_until_closed(&mut c).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_second_request_on_a_keep_alive_connection_is_answered_408() {
    let f = start(&short(Duration::from_millis(300), Duration::from_secs(30)));
    let mut c = TcpStream::connect(f.addr()).await.unwrap();
    c.write_all(GET).await.unwrap();
    let first = read_response(&mut c, "ok").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    c.write_all(b"GET / HTTP/1.1\r\nho").await.unwrap();
    let got = read_until_closed(&mut c).await;
    assert!(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    // The header-read timeout is long: only the keep-alive timeout can close it.
    let f = start(&short(Duration::from_secs(30), Duration::from_millis(300)));
    let mut c = TcpStream::connect(f.addr()).await.unwrap();
    for _ in 0..2 {
        c.write_all(GET).await.unwrap();
        let r = read_response(&mut c, "ok").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    assert_eq!(read_until_closed(&mut c).await, "");
}

/// Past a second of idleness a keep-alive connection gives hyper's buffers back and waits on
/// the bare socket: it still serves its next request, still answers a stalled head with a
/// `408`, and is still closed at the keep-alive timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_idle_past_a_second_keeps_every_limit() {
    let f = start(&short(
        Duration::from_millis(300),
        Duration::from_millis(1500),
    ));
    let mut c = TcpStream::connect(f.addr()).await.unwrap();
    c.write_all(GET).await.unwrap();
    read_response(&mut c, "ok").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.write_all(GET).await.unwrap();
    let r = read_response(&mut c, "ok").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // Idle again, then closed at the keep-alive timeout.
    assert_eq!(read_until_closed(&mut c).await, "");

    let mut c = TcpStream::connect(f.addr()).await.unwrap();
    c.write_all(GET).await.unwrap();
    read_response(&mut c, "ok").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.write_all(b"GET / HTTP/1.1\r\nho").await.unwrap();
    let got = read_until_closed(&mut c).await;
    assert!(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_closes_the_connection() {
    let f = start(&short(Duration::from_secs(30), Duration::from_secs(30)));
    let mut c = TcpStream::connect(f.addr()).await.unwrap();
    c.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let got = read_until_closed(&mut c).await;
    assert!(!got.contains("0123456789"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_the_next_connection_waits_until_one_closes() {
    let config = short(Duration::from_secs(30), Duration::from_secs(30))
        .to_builder()
        .max_connections(2)
        .build()
        .unwrap();
    let f = start(&config);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(f.addr()).await.unwrap();
        c.write_all(GET).await.unwrap();
        read_response(&mut c, "ok").await;
        held.push(c);
    }
    // The third connection completes in the kernel's backlog but is not served...
    let mut third = TcpStream::connect(f.addr()).await.unwrap();
    third.write_all(GET).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served above the cap: {early:?}");
    // ...until one of the others closes.
    drop(held.pop());
    let r = read_response(&mut third, "ok").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_request_in_flight_and_refuses_new_connections() {
    let mut f = start(&short(Duration::from_secs(30), Duration::from_secs(30)));
    let addr = f.addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(GET).await.unwrap();
    read_response(&mut idle, "ok").await;
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(BOUND, f.started.recv())
        .await
        .unwrap()
        .unwrap();

    f.serving.shutdown();
    // The idle keep-alive connection is closed at once.
    assert_eq!(read_until_closed(&mut idle).await, "");
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting after shutdown");
    // The request in flight finishes, then its connection closes.
    f.release.notify_one();
    let got = read_until_closed(&mut busy).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("done"), "{got}");
    tokio::time::timeout(BOUND, f.serving.stopped())
        .await
        .expect("the server did not stop");
}

#[test]
fn per_core_workers_serve_and_stop() {
    let config = ServerConfig::builder()
        .name("workers")
        .workers(2)
        .runtime(Runtime::PerCore)
        .build()
        .unwrap();
    let workers = server::spawn_workers("127.0.0.1:0".parse().unwrap(), &config, |_| {
        TowerHandler::new(Router::new().route("/", get(|| async { "ok" })))
    })
    .unwrap();
    let addr = workers.local_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..4 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let r = read_until_closed(&mut c).await;
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        }
    });
    workers.shutdown();
    workers.join();
}

#[test]
fn configuration_errors_name_the_field_and_value() {
    let b = ServerConfig::builder;
    for (result, field, value) in [
        (
            b().header_read_timeout(Duration::ZERO).build(),
            "header_read_timeout",
            "0ns",
        ),
        (
            b().keep_alive_timeout(Duration::from_secs(100_000)).build(),
            "keep_alive_timeout",
            "100000s",
        ),
        (b().max_connections(0).build(), "max_connections", "0"),
        (b().max_header_size(100).build(), "max_header_size", "100"),
        (b().max_headers(0).build(), "max_headers", "0"),
        (b().backlog(0).build(), "backlog", "0"),
        (b().workers(5000).build(), "workers", "5000"),
        (b().name("").build(), "name", "\"\""),
    ] {
        let e = result.unwrap_err();
        assert_eq!(e.field(), field);
        assert_eq!(e.value(), value);
        assert!(e.to_string().contains(field), "{e}");
    }
}
