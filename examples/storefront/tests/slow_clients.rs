//! Slow clients against the shop and the edge: 2,000 connections that each sent half a
//! request head are held open while a normal request is served; the server answers each of
//! them `408` and closes it after the (here short) header-read timeout; what a held
//! connection costs is bounded, and three waves leave the process the same size.
//!
//! Everything runs in this process over loopback (the client sockets too), so the figures
//! are upper bounds of the server's cost. The two tests take turns: they read the process's
//! resident size.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use storefront::edge::{Edge, EdgeConfig};
use storefront::{AbortOnDrop, Demo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

/// Held connections per wave.
const HELD: usize = 2000;
/// Waves per target.
const WAVES: usize = 3;
/// The servers' header-read timeout in these tests.
const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(1500);
/// A generous bound for the server to close every held connection.
const CLOSE_BOUND: Duration = Duration::from_secs(15);
/// Largest acceptable cost of one held connection, client and server sides together.
const MAX_KIB_PER_CONNECTION: f64 = 8.0;

/// The tests read the process's RSS: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Opens a connection and sends the first half of a request head.
async fn half_sent(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /products HTTP/1.1\r\nhost: shop\r\nuser-agent: slow")
        .await
        .unwrap();
    s
}

/// A normal request with the client's own 1 s timeout; returns the status line.
async fn normal_request(addr: SocketAddr) -> String {
    let answer = tokio::time::timeout(Duration::from_secs(1), async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("a normal request was not answered within 1 s while slow clients were held");
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Reads until the server closes; returns what it sent.
async fn until_closed(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
struct Wave {
    held_kib_per_connection: f64,
    rss_after_kib: u64,
}

async fn wave(addr: SocketAddr) -> Wave {
    let before = rss_kib();
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD / 250 {
        let mut batch = JoinSet::new();
        for _ in 0..250 {
            batch.spawn(half_sent(addr));
        }
        while let Some(s) = batch.join_next().await {
            held.push(s.unwrap());
        }
    }
    let status = normal_request(addr).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let during = rss_kib();

    let mut closing = JoinSet::new();
    for s in held {
        closing.spawn(until_closed(s));
    }
    let answers = tokio::time::timeout(CLOSE_BOUND, async {
        let mut answers = Vec::with_capacity(HELD);
        while let Some(a) = closing.join_next().await {
            answers.push(a.unwrap());
        }
        answers
    })
    .await
    .expect("the server did not close the held connections");
    let timed_out = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 408 Request Timeout"))
        .count();
    assert_eq!(
        timed_out,
        HELD,
        "every held connection is answered 408 and closed; first other answer: {:?}",
        answers.iter().find(|a| !a.starts_with("HTTP/1.1 408"))
    );
    // The server's connection tasks end right after their last write.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Wave {
        held_kib_per_connection: during.saturating_sub(before) as f64 / HELD as f64,
        rss_after_kib: rss_kib(),
    }
}

fn check(target: &str, waves: &[Wave]) {
    eprintln!("{target}: {waves:?}");
    for w in waves {
        assert!(
            w.held_kib_per_connection <= MAX_KIB_PER_CONNECTION,
            "{target}: {:.1} KiB per held connection",
            w.held_kib_per_connection
        );
    }
    let max = waves.iter().map(|w| w.rss_after_kib).max().unwrap() as f64;
    let min = waves.iter().map(|w| w.rss_after_kib).min().unwrap() as f64;
    assert!(
        max <= min * 1.10,
        "{target}: the process grew from wave to wave: {waves:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_half_sent_requests_do_not_take_the_shop_down() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cfg = support::test_config("slow-clients");
    cfg.server.header_read_timeout = HEADER_READ_TIMEOUT;
    let demo = Demo::start(cfg).await.unwrap();
    let mut waves = Vec::new();
    for _ in 0..WAVES {
        waves.push(wave(demo.addr()).await);
    }
    check("shop", &waves);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_half_sent_requests_do_not_take_the_edge_down() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let app = Router::new().route("/healthz", get(|| async { "ok" }));
    let _upstream = AbortOnDrop(tokio::spawn(async move {
        let _ = axum::serve(upstream, app).await;
    }));
    let mut cfg = EdgeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: vec![format!("http://{upstream_addr}")],
        workers: 2,
        ..EdgeConfig::default()
    };
    cfg.server.header_read_timeout = HEADER_READ_TIMEOUT;
    let edge = Edge::start(cfg).await.unwrap();
    let mut waves = Vec::new();
    for _ in 0..WAVES {
        waves.push(wave(edge.addr()).await);
    }
    check("edge", &waves);
}
