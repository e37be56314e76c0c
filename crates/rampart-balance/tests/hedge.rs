//! Hedged requests against real axum backends on loopback: a replica 50× slower than its
//! siblings does not answer the requests it is given, a full outage is not hammered beyond the
//! budget, and connections whose attempts lost are not poisoned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rampart_balance::{Balance, Hedge, HttpEndpoint, HttpPolicy, RetryBudget, ServedBy};
use rampart_test_support::loopback;
use tower::{Service, ServiceExt};

#[derive(Clone)]
struct Backend {
    hits: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    status: Arc<AtomicU16>,
}

impl Backend {
    fn new(delay_ms: u64) -> Self {
        Self {
            hits: Arc::default(),
            delay_ms: Arc::new(AtomicU64::new(delay_ms)),
            status: Arc::new(AtomicU16::new(200)),
        }
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn handler(State(b): State<Backend>) -> (StatusCode, &'static str) {
    b.hits.fetch_add(1, Ordering::SeqCst);
    let delay = b.delay_ms.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    (
        StatusCode::from_u16(b.status.load(Ordering::SeqCst)).unwrap(),
        "answer",
    )
}

async fn start(b: &Backend) -> loopback::Server {
    loopback::serve(Router::new().fallback(handler).with_state(b.clone())).await
}

type Pool = Balance<HttpEndpoint<Full<Bytes>>, HttpPolicy>;

/// A pool over `backends`, the endpoints' names, and the servers (stopped when dropped).
async fn pool(
    backends: &[&Backend],
    hedge: Hedge,
    budget: RetryBudget,
) -> (Pool, Vec<String>, Vec<loopback::Server>) {
    let mut servers = Vec::new();
    for b in backends {
        servers.push(start(b).await);
    }
    let names: Vec<String> = servers.iter().map(loopback::Server::base_url).collect();
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .request_timeout(Duration::from_secs(5));
    let pool = Balance::builder()
        .http_endpoints(names.iter().map(|n| n.parse().unwrap()), &template)
        .unwrap()
        .hedge(hedge)
        .retry_budget(budget)
        .build()
        .unwrap();
    (pool, names, servers)
}

async fn get(pool: &mut Pool) -> (u16, String) {
    let req = http::Request::get("/item").body(Full::default()).unwrap();
    let res = pool.ready().await.unwrap().call(req).await.unwrap();
    let by = res
        .extensions()
        .get::<ServedBy>()
        .unwrap()
        .endpoint()
        .to_owned();
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await.unwrap();
    (status, by)
}

#[tokio::test]
async fn a_replica_50x_slower_rarely_answers_and_losers_leave_no_poisoned_connection() {
    slow_replica(Hedge::fixed(Duration::from_millis(40))).await;
}

#[tokio::test]
async fn the_same_with_a_percentile_delay() {
    // No samples in the first second: the cap (60 ms) is the delay; then the p90 of the
    // observed latencies (about 10 ms), never below the 20 ms floor.
    slow_replica(
        Hedge::percentile(0.9)
            .floor(Duration::from_millis(20))
            .cap(Duration::from_millis(60)),
    )
    .await;
}

async fn slow_replica(hedge: Hedge) {
    let slow = Backend::new(500);
    let fast = [Backend::new(10), Backend::new(10)];
    let (mut pool, names, _servers) =
        pool(&[&slow, &fast[0], &fast[1]], hedge, RetryBudget::default()).await;
    let mut by_slow = 0;
    for _ in 0..60 {
        let (status, by) = get(&mut pool).await;
        assert_eq!(status, 200);
        if by == names[0] {
            by_slow += 1;
        }
    }
    // Every request the slow replica got was hedged to a fast one after the delay, which answered
    // long before the slow replica's 500 ms: the slow replica answered none.
    assert!(slow.hits() >= 1, "P2C tried the slow replica");
    assert_eq!(by_slow, 0, "no request waited for the slow replica");
    // The attempts that lost were dropped mid-request, on the slow replica's connections: with
    // the fast replicas drained, every request goes through that replica's pool and succeeds.
    slow.delay_ms.store(0, Ordering::SeqCst);
    let handle = pool.handle();
    assert!(handle.drain(&names[1]) && handle.drain(&names[2]));
    let before = slow.hits();
    for _ in 0..30 {
        let (status, by) = get(&mut pool).await;
        assert_eq!((status, by.as_str()), (200, names[0].as_str()));
    }
    assert_eq!(slow.hits(), before + 30);
}

#[tokio::test]
async fn under_a_full_outage_hedges_and_retries_stay_within_the_budget() {
    let backends = [Backend::new(150), Backend::new(150), Backend::new(150)];
    for b in &backends {
        b.status.store(503, Ordering::SeqCst);
    }
    let budget = RetryBudget::builder()
        .ratio(0.1)
        .min_per_second(1)
        .window(Duration::from_secs(10))
        .build()
        .unwrap();
    let (pool, _, _servers) = pool(
        &[&backends[0], &backends[1], &backends[2]],
        Hedge::fixed(Duration::from_millis(20)),
        budget,
    )
    .await;
    const N: usize = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..N {
        let mut pool = pool.clone();
        tasks.spawn(async move { get(&mut pool).await.0 });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 503);
    }
    let total: usize = backends.iter().map(Backend::hits).sum();
    // Without a budget: up to 3 attempts and a hedge per request (800). With it: N requests
    // plus 10 % of them plus the floor of 1/s over the 10 s window.
    assert!(total >= N, "{total}");
    assert!(
        total <= N + N / 10 + 10,
        "{total} requests reached the backends"
    );
}
