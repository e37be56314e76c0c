//! The checker against real loopback servers, with short real intervals.
//!
//! These tests assert on eventual state only: they wait for the health watch to reach a value,
//! with a generous safety net (`SAFETY_NET`) so a bug fails the test instead of hanging it.
//! The safety net is not a timing assertion.

#![cfg(feature = "http")] // the HTTP probe
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use rampart_health::{Checker, CheckerConfig, Health, HealthWatch, HttpProbe, TcpProbe};
use tokio::net::TcpListener;

const SAFETY_NET: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Backend {
    status: Arc<AtomicU16>,
    /// Requests received.
    hits: Arc<AtomicU32>,
    /// Responses served with 200 and with something else.
    ok: Arc<AtomicU32>,
    bad: Arc<AtomicU32>,
}

async fn backend() -> (SocketAddr, Backend) {
    async fn healthz(State(b): State<Backend>) -> StatusCode {
        b.hits.fetch_add(1, Ordering::SeqCst);
        let code = b.status.load(Ordering::SeqCst);
        if code == 200 { &b.ok } else { &b.bad }.fetch_add(1, Ordering::SeqCst);
        StatusCode::from_u16(code).unwrap()
    }
    let state = Backend {
        status: Arc::new(AtomicU16::new(200)),
        hits: Arc::new(AtomicU32::new(0)),
        ok: Arc::new(AtomicU32::new(0)),
        bad: Arc::new(AtomicU32::new(0)),
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(state.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

fn fast_config(rise: u32, fall: u32) -> CheckerConfig {
    CheckerConfig::builder()
        .interval(Duration::from_millis(100))
        .unhealthy_interval(Duration::from_millis(60))
        .timeout(Duration::from_millis(60))
        .jitter(0.1)
        .rise(rise)
        .fall(fall)
        .build()
        .unwrap()
}

/// Waits until `watch` reads `want`, failing after the safety net.
async fn wait_for(watch: &mut HealthWatch, want: Health) {
    let reached = tokio::time::timeout(SAFETY_NET, async {
        loop {
            if watch.get() == want {
                return;
            }
            if watch.changed().await.is_none() {
                panic!("checker stopped before reaching {want}");
            }
        }
    })
    .await;
    assert!(reached.is_ok(), "health never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checker_follows_a_toggled_healthz() {
    let (addr, backend) = backend().await;
    let probe = HttpProbe::builder(format!("http://{addr}").parse().unwrap())
        .timeout(Duration::from_millis(60))
        .build()
        .unwrap();
    let handle = Checker::spawn("backend", probe, fast_config(2, 3));
    let mut watch = handle.watch();
    let mut events = handle.subscribe();

    wait_for(&mut watch, Health::Healthy).await;

    backend.status.store(500, Ordering::SeqCst);
    wait_for(&mut watch, Health::Unhealthy).await;
    // It took at least `fall` (3) failed probes to get there.
    assert!(backend.bad.load(Ordering::SeqCst) >= 3);

    // Probes are sequential and the last ones failed, so no 200 is in flight now.
    let ok_before = backend.ok.load(Ordering::SeqCst);
    backend.status.store(200, Ordering::SeqCst);
    wait_for(&mut watch, Health::Healthy).await;
    // It took at least `rise` (2) passing probes to get back.
    assert!(backend.ok.load(Ordering::SeqCst) - ok_before >= 2);

    // The broadcast saw the same story: a chain of transitions starting from Unknown, with a
    // fall to Unhealthy and a rise back to Healthy at the end. (On a heavily loaded machine a
    // probe may exceed its timeout once, adding a flap, so the exact count is not asserted.)
    let mut seen = Vec::new();
    while let Ok(t) = events.try_recv() {
        assert_eq!(&*t.name, "backend");
        seen.push((t.from, t.to));
    }
    assert_eq!(seen.first().map(|t| t.0), Some(Health::Unknown), "{seen:?}");
    for pair in seen.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "broken chain {seen:?}");
    }
    assert!(
        seen.contains(&(Health::Healthy, Health::Unhealthy)),
        "{seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&(Health::Unhealthy, Health::Healthy)),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checker_marks_a_silent_server_unhealthy() {
    // Accepts connections and never answers: every probe times out.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let probe = HttpProbe::builder(format!("http://{addr}").parse().unwrap())
        .timeout(Duration::from_millis(60))
        .build()
        .unwrap();
    let handle = Checker::spawn("silent", probe, fast_config(2, 3));
    let mut watch = handle.watch();
    wait_for(&mut watch, Health::Unhealthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_checker_sees_a_listener_come_and_go() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Checker::spawn(
        "tcp",
        TcpProbe::builder(addr)
            .timeout(Duration::from_millis(60))
            .build()
            .unwrap(),
        fast_config(2, 2),
    );
    let mut watch = handle.watch();
    wait_for(&mut watch, Health::Healthy).await;

    drop(listener);
    wait_for(&mut watch, Health::Unhealthy).await;

    // Rebind the same port (it was just ours, so it is very likely free).
    let Ok(_listener) = TcpListener::bind(addr).await else {
        return; // someone else took the port: nothing more to check here
    };
    wait_for(&mut watch, Health::Healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_probing_a_real_server() {
    let (addr, backend) = backend().await;
    let probe = HttpProbe::builder(format!("http://{addr}").parse().unwrap())
        .timeout(Duration::from_millis(60))
        .build()
        .unwrap();
    let handle = Checker::spawn("dropped", probe, fast_config(1, 1));
    let mut watch = handle.watch();
    wait_for(&mut watch, Health::Healthy).await;
    drop(handle);
    // The watch ends once the task is gone (the task holds the last publisher).
    let ended = tokio::time::timeout(SAFETY_NET, async {
        while watch.changed().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "checker task still running after drop");
    // The aborted task makes no further requests. Probes never overlap, so at most one
    // request (in flight at the abort) may still land, however late; a checker still running
    // at a 100 ms interval would make about five in this half second.
    let hits = backend.hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = backend.hits.load(Ordering::SeqCst);
    assert!(
        after <= hits + 1,
        "{} requests after the handle was dropped",
        after - hits
    );
}
