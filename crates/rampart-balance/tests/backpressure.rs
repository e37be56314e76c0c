//! Backpressure and deadlines against real axum backends on loopback: a replica answering
//! `429` with `Retry-After` is left alone while every request still succeeds, and a request
//! whose deadline is shorter than its backend's latency makes exactly one attempt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rampart_balance::{Balance, HttpEndpoint, HttpPolicy, RequestTimeout, ServedBy};
use rampart_health::{Deadline, find_in_chain};
use rampart_test_support::loopback;
use tower::{Service, ServiceExt};

#[derive(Clone, Default)]
struct Backend {
    hits: Arc<AtomicUsize>,
    limited: Arc<AtomicBool>,
    delay: Arc<std::sync::Mutex<Duration>>,
    deadline_header: Arc<std::sync::Mutex<Option<String>>>,
}

async fn handler(State(b): State<Backend>, headers: HeaderMap) -> axum::response::Response {
    b.hits.fetch_add(1, Ordering::SeqCst);
    *b.deadline_header.lock().unwrap() = headers
        .get("x-rampart-deadline-ms")
        .map(|v| v.to_str().unwrap().to_owned());
    let delay = *b.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if b.limited.load(Ordering::SeqCst) {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "2")],
            "slow down",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

async fn start(b: &Backend) -> loopback::Server {
    loopback::serve(Router::new().fallback(handler).with_state(b.clone())).await
}

type Pool = Balance<HttpEndpoint<Full<Bytes>>, HttpPolicy>;

/// A pool over `backends`, and their servers (stopped when dropped).
async fn pool(backends: &[&Backend]) -> (Pool, Vec<loopback::Server>) {
    pool_with(backends, rampart_balance::Picker::PeakEwma).await
}

async fn pool_with(
    backends: &[&Backend],
    picker: rampart_balance::Picker,
) -> (Pool, Vec<loopback::Server>) {
    let mut servers = Vec::new();
    for b in backends {
        servers.push(start(b).await);
    }
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .request_timeout(Duration::from_secs(1));
    let pool = Balance::builder()
        .picker(picker)
        .http_endpoints(
            servers.iter().map(|s| s.base_url().parse().unwrap()),
            &template,
        )
        .unwrap()
        .build()
        .unwrap();
    (pool, servers)
}

fn get() -> http::Request<Full<Bytes>> {
    http::Request::get("/item").body(Full::default()).unwrap()
}

#[tokio::test]
async fn a_replica_answering_429_with_retry_after_is_not_picked_and_no_request_fails() {
    let limited = Backend::default();
    limited.limited.store(true, Ordering::SeqCst);
    let (b, c) = (Backend::default(), Backend::default());
    // Round robin, so the limited replica is surely tried (P2C over peak-EWMA may never try an
    // endpoint whose default estimate is higher than its siblings' measured latency).
    let (mut pool, _servers) =
        pool_with(&[&limited, &b, &c], rampart_balance::Picker::RoundRobin).await;
    let mut served = std::collections::HashMap::<String, usize>::new();
    // Until the limited replica has been tried once.
    for _ in 0..200 {
        let res = pool.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), 200, "the 429 was retried on another replica");
        let by = res
            .extensions()
            .get::<ServedBy>()
            .unwrap()
            .endpoint()
            .to_owned();
        *served.entry(by).or_default() += 1;
        let _ = res.into_body().collect().await.unwrap();
        if limited.hits.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    assert_eq!(limited.hits.load(Ordering::SeqCst), 1);
    let snap = pool.snapshot();
    let backing_off: Vec<_> = snap
        .endpoints
        .iter()
        .filter(|e| e.backing_off_until.is_some())
        .collect();
    assert_eq!(backing_off.len(), 1);
    assert_eq!(backing_off[0].health, rampart_health::Health::Healthy);
    // The next 100 requests (well within its 2 s) all go to the other two.
    for _ in 0..100 {
        let res = pool.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), 200);
        let _ = res.into_body().collect().await.unwrap();
    }
    assert_eq!(limited.hits.load(Ordering::SeqCst), 1);
    // All of them were served by the other two (which of the two is P2C's business: with
    // sequential requests peak-EWMA may well keep choosing the same one).
    assert!(b.hits.load(Ordering::SeqCst) + c.hits.load(Ordering::SeqCst) >= 100);
}

#[tokio::test]
async fn a_deadline_shorter_than_the_backend_makes_one_attempt_and_no_retry() {
    let slow = Backend::default();
    *slow.delay.lock().unwrap() = Duration::from_secs(1);
    let other = Backend::default();
    *other.delay.lock().unwrap() = Duration::from_secs(1);
    let (mut pool, _servers) = pool(&[&slow, &other]).await;
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(300)));
    let start = tokio::time::Instant::now();
    let err = pool.ready().await.unwrap().call(req).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        find_in_chain::<RequestTimeout>(&*err).is_some(),
        "timed out at the deadline: {err}"
    );
    // Answered before the endpoint's own 1 s request timeout could fire.
    assert!(took < Duration::from_secs(1), "{took:?}");
    let hits = slow.hits.load(Ordering::SeqCst) + other.hits.load(Ordering::SeqCst);
    assert_eq!(hits, 1, "one attempt, no retry past the deadline");
    // The attempt told the backend what was left of the 300 ms.
    let sent: u64 = [&slow, &other]
        .iter()
        .find_map(|b| b.deadline_header.lock().unwrap().clone())
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent > 0 && sent <= 300, "{sent}");
}
