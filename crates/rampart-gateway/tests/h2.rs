//! HTTP/2 downstream over real loopback sockets: h2c with prior knowledge on the same port
//! as HTTP/1, and the server's limits on h2 connections (first request within the
//! header-read timeout, idle connections closed with a `GOAWAY`, the concurrent-stream cap,
//! graceful shutdown). Short configured timeouts, every wait bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_gateway::server::{self, ServerConfig, Serving, TowerHandler};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

const BOUND: Duration = Duration::from_secs(5);

struct Fixture {
    serving: Serving,
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Semaphore>,
    in_flight_max: Arc<AtomicUsize>,
}

fn start(config: &ServerConfig) -> Fixture {
    let (tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let in_flight_max = Arc::new(AtomicUsize::new(0));
    let app = {
        let release = release.clone();
        let in_flight_max = in_flight_max.clone();
        Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
            )
            .route(
                "/slow",
                get(move || {
                    let started = tx.clone();
                    let release = release.clone();
                    let in_flight = in_flight.clone();
                    let in_flight_max = in_flight_max.clone();
                    async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        in_flight_max.fetch_max(now, Ordering::SeqCst);
                        let _ = started.send(());
                        release.acquire().await.unwrap().forget();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        "done"
                    }
                }),
            )
    };
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
    let serving = server::spawn(listener, config, TowerHandler::new(app)).unwrap();
    Fixture {
        serving,
        started,
        release,
        in_flight_max,
    }
}

fn config() -> ServerConfig {
    ServerConfig::builder()
        .name("h2-test")
        .header_read_timeout(Duration::from_millis(300))
        .keep_alive_timeout(Duration::from_millis(400))
        .shutdown_grace(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// An h2c client with prior knowledge; the handle resolves when the connection ends.
async fn h2_client(addr: SocketAddr) -> (SendRequest<Empty<Bytes>>, JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, conn)
}

async fn fetch(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, String) {
    let req = http::Request::get(format!("http://test{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(BOUND, sender.send_request(req))
        .await
        .expect("answered within the bound")
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_and_http1_are_served_on_the_same_port() {
    let f = start(&config());
    let (mut h2, _conn) = h2_client(f.serving.local_addr()).await;
    assert_eq!(fetch(&mut h2, "/").await, (200, "ok".to_owned()));
    assert_eq!(fetch(&mut h2, "/peer").await, (200, "127.0.0.1".to_owned()));

    let mut h1 = TcpStream::connect(f.serving.local_addr()).await.unwrap();
    h1.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(BOUND, h1.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_that_sends_no_request_is_closed_after_the_header_read_timeout() {
    let f = start(&config());
    let mut stream = TcpStream::connect(f.serving.local_addr()).await.unwrap();
    // The preface and an empty SETTINGS frame, then nothing.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let closed = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept a connection with no request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_is_closed_after_the_keep_alive_timeout() {
    let f = start(&config());
    let (mut h2, conn) = h2_client(f.serving.local_addr()).await;
    assert_eq!(fetch(&mut h2, "/").await.0, 200);
    // Nothing more: the server sends GOAWAY and closes; the client's connection ends.
    tokio::time::timeout(BOUND, conn)
        .await
        .expect("the idle h2 connection was closed")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_with_a_stream_open_is_not_idle() {
    let mut f = start(&config());
    let (mut h2, conn) = h2_client(f.serving.local_addr()).await;
    let mut sender = h2.clone();
    let slow = tokio::spawn(async move { fetch(&mut sender, "/slow").await });
    tokio::time::timeout(BOUND, f.started.recv())
        .await
        .unwrap()
        .unwrap();
    // Well past the keep-alive timeout while the stream is open (an event, not a bound).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!conn.is_finished(), "closed with a stream open");
    f.release.add_permits(1);
    assert_eq!(slow.await.unwrap(), (200, "done".to_owned()));
    assert_eq!(fetch(&mut h2, "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_beyond_max_concurrent_streams_wait_for_a_free_one() {
    let config = config()
        .to_builder()
        .max_concurrent_streams(2)
        .keep_alive_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut f = start(&config);
    let (mut h2, _conn) = h2_client(f.serving.local_addr()).await;
    // One request first: the client has the server's SETTINGS (and its limit) before it
    // opens more streams.
    assert_eq!(fetch(&mut h2, "/").await.0, 200);
    let mut calls = Vec::new();
    for _ in 0..10 {
        let mut sender = h2.clone();
        calls.push(tokio::spawn(
            async move { fetch(&mut sender, "/slow").await },
        ));
    }
    // Two streams start; the others wait for one of them to end.
    for _ in 0..2 {
        tokio::time::timeout(BOUND, f.started.recv())
            .await
            .expect("a stream started")
            .unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), f.started.recv())
            .await
            .is_err(),
        "a third stream started while two were open"
    );
    // Each one that ends lets the next one start.
    for _ in 2..10 {
        f.release.add_permits(1);
        tokio::time::timeout(BOUND, f.started.recv())
            .await
            .expect("a stream started")
            .unwrap();
    }
    f.release.add_permits(2);
    for call in calls {
        assert_eq!(call.await.unwrap(), (200, "done".to_owned()));
    }
    assert_eq!(f.in_flight_max.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_h2_stream_in_flight_then_closes() {
    let config = config()
        .to_builder()
        .keep_alive_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut f = start(&config);
    let addr = f.serving.local_addr();
    let (h2, conn) = h2_client(addr).await;
    let mut sender = h2.clone();
    let slow = tokio::spawn(async move { fetch(&mut sender, "/slow").await });
    tokio::time::timeout(BOUND, f.started.recv())
        .await
        .unwrap()
        .unwrap();
    f.serving.shutdown();
    f.release.add_permits(1);
    assert_eq!(slow.await.unwrap(), (200, "done".to_owned()));
    tokio::time::timeout(BOUND, conn)
        .await
        .expect("the connection closed after its stream")
        .unwrap();
    tokio::time::timeout(BOUND, f.serving.stopped())
        .await
        .expect("the server stopped");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_request_with_headers_above_the_maximum_size_is_refused() {
    let config = config()
        .to_builder()
        .max_header_size(2048)
        .keep_alive_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let f = start(&config);
    let (mut h2, _conn) = h2_client(f.serving.local_addr()).await;
    let req = http::Request::get("http://test/")
        .header("x-big", "a".repeat(4096))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = tokio::time::timeout(BOUND, h2.send_request(req))
        .await
        .expect("answered within the bound");
    match answer {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(!e.is_canceled(), "{e}"),
    }
}
