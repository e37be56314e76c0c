//! The latency tail with one slow replica, side by side in one run: three HTTP/1.1 replicas on
//! loopback, two answering after 2 ms, and one that is either 50× slower (100 ms on every
//! request) or has a slow tail (100 ms on one request in ten, 2 ms otherwise), driven by the
//! same closed-loop load (16 callers) through
//!
//! - Rampart: `Balance` (P2C over peak EWMA) of `HttpEndpoint`s with hedging after the p90 of
//!   the observed latencies (floor 5 ms, cap 20 ms);
//! - tower: `Hedge` (p90 of its own histogram, 10 data points minimum) over a `Buffer` over
//!   `p2c::Balance` of the same `HttpEndpoint`s wrapped in `PeakEwma` (tower's balancer is not
//!   `Clone`, so the buffer shares it between callers as tower's documentation suggests);
//! - Rampart's `Balance` without hedging, for reference.
//!
//! Each stack is warmed up, then measured; the rounds are interleaved so that every stack sees
//! the same machine. Prints p50, p90, p99 and max per stack and the ratio of the p99s.
//!
//! `cargo bench -p rampart-balance --bench hedge_p99`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use rampart_balance::{Balance, Hedge, HttpEndpoint, HttpPolicy, clone_http_request};
use rampart_health::BoxError;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

type Body = Full<Bytes>;
type Req = http::Request<Body>;

const CALLERS: usize = 16;
const PER_CALLER: usize = 60;
const ROUNDS: usize = 3;
const FAST: Duration = Duration::from_millis(2);
const SLOW: Duration = Duration::from_millis(100);

/// A replica answering after `FAST`, except every `slow_every`-th request (1: all of them;
/// 0: none) after `SLOW`.
#[derive(Clone)]
struct Replica {
    slow_every: usize,
    hits: Arc<AtomicUsize>,
}

async fn handler(State(r): State<Replica>) -> &'static str {
    let n = r.hits.fetch_add(1, Ordering::Relaxed);
    let slow = r.slow_every > 0 && n % r.slow_every == 0;
    tokio::time::sleep(if slow { SLOW } else { FAST }).await;
    "answer"
}

async fn start(slow_every: usize) -> (http::Uri, Replica) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let replica = Replica {
        slow_every,
        hits: Arc::default(),
    };
    let app = Router::new().fallback(handler).with_state(replica.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}").parse().unwrap(), replica)
}

fn endpoint(uri: &http::Uri) -> HttpEndpoint<Body> {
    HttpEndpoint::builder(uri.clone())
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn request() -> Req {
    http::Request::get("/item").body(Body::default()).unwrap()
}

/// tower's hedge policy: every GET may be hedged (the same rule as Rampart's `HttpPolicy`).
#[derive(Clone)]
struct TowerPolicy;

impl tower::hedge::Policy<Req> for TowerPolicy {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        clone_http_request(req)
    }
    fn can_retry(&self, _req: &Req) -> bool {
        true
    }
}

/// `CALLERS` closed-loop callers, `PER_CALLER` requests each; the latencies in microseconds.
async fn drive<S>(svc: S, hist: &mut Histogram<u64>)
where
    S: Service<Req> + Clone + Send + 'static,
    S::Response: Into<http::Response<hyper::body::Incoming>>,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let mut svc = svc.clone();
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(PER_CALLER);
            for _ in 0..PER_CALLER {
                let start = Instant::now();
                let res = svc
                    .ready()
                    .await
                    .map_err(Into::into)
                    .unwrap()
                    .call(request())
                    .await
                    .map_err(Into::into)
                    .unwrap();
                let res: http::Response<hyper::body::Incoming> = res.into();
                assert_eq!(res.status(), http::StatusCode::OK);
                res.into_body().collect().await.unwrap();
                out.push(start.elapsed().as_micros() as u64);
            }
            out
        });
    }
    while let Some(done) = tasks.join_next().await {
        for us in done.unwrap() {
            hist.record(us.max(1)).unwrap();
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "  {name:<34} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} requests)",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.len()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    scenario("one replica 50x slower", 1).await;
    scenario(
        "one replica with a slow tail (1 request in 10 50x slower)",
        10,
    )
    .await;
}

async fn scenario(title: &str, slow_every: usize) {
    let mut uris = Vec::new();
    let mut replicas = Vec::new();
    for every in [slow_every, 0, 0] {
        let (uri, replica) = start(every).await;
        uris.push(uri);
        replicas.push(replica);
    }

    // Rampart, hedged.
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .request_timeout(Duration::from_secs(5));
    let hedged: Balance<HttpEndpoint<Body>, HttpPolicy> = Balance::builder()
        .http_endpoints(uris.iter().cloned(), &template)
        .unwrap()
        .hedge(
            Hedge::percentile(0.9)
                .floor(Duration::from_millis(5))
                .cap(Duration::from_millis(20)),
        )
        .build()
        .unwrap();
    // Rampart, not hedged.
    let plain: Balance<HttpEndpoint<Body>, HttpPolicy> = Balance::builder()
        .http_endpoints(uris.iter().cloned(), &template)
        .unwrap()
        .build()
        .unwrap();
    // tower: Hedge over Buffer over p2c::Balance over PeakEwma of the same endpoints.
    let list = tower::discover::ServiceList::new(uris.iter().map(endpoint).collect::<Vec<_>>());
    let ewma = tower::load::PeakEwmaDiscover::new(
        list,
        Duration::from_millis(30),
        Duration::from_secs(10),
        tower::load::CompleteOnResponse::default(),
    );
    let p2c = tower::balance::p2c::Balance::new(ewma);
    let buffered = tower::buffer::Buffer::new(p2c, 1024);
    let tower_hedge =
        tower::hedge::Hedge::new(buffered, TowerPolicy, 10, 0.9, Duration::from_secs(1));
    // tower's Hedge is not `Clone` either: it is shared the same way.
    let tower_hedged = tower::buffer::Buffer::new(tower_hedge, 1024);

    let mut h_rampart = Histogram::<u64>::new(3).unwrap();
    let mut h_tower = Histogram::<u64>::new(3).unwrap();
    let mut h_plain = Histogram::<u64>::new(3).unwrap();
    // Warm-up: connections, peak-EWMA estimates and both latency histograms.
    let mut scratch = Histogram::<u64>::new(3).unwrap();
    drive(hedged.clone(), &mut scratch).await;
    drive(tower_hedged.clone(), &mut scratch).await;
    drive(plain.clone(), &mut scratch).await;
    let before: Vec<usize> = replicas
        .iter()
        .map(|r| r.hits.load(Ordering::Relaxed))
        .collect();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        drive(hedged.clone(), &mut h_rampart).await;
        drive(tower_hedged.clone(), &mut h_tower).await;
        drive(plain.clone(), &mut h_plain).await;
    }
    let hits: Vec<usize> = replicas
        .iter()
        .zip(&before)
        .map(|(r, b)| r.hits.load(Ordering::Relaxed) - b)
        .collect();

    println!(
        "{title} ({SLOW:?} vs {FAST:?}), {CALLERS} closed-loop callers, {ROUNDS} interleaved \
         rounds of {} requests per stack ({:.1} s):",
        CALLERS * PER_CALLER,
        started.elapsed().as_secs_f64()
    );
    report("rampart Balance + hedging (p90)", &h_rampart);
    report("tower Hedge (p90) + p2c Balance", &h_tower);
    report("rampart Balance, no hedging", &h_plain);
    println!(
        "  p99 ratio rampart / tower: {:.2} (below 1: rampart's tail is shorter)",
        h_rampart.value_at_quantile(0.99) as f64 / h_tower.value_at_quantile(0.99).max(1) as f64
    );
    println!(
        "  requests at the replicas (slow, fast, fast), all stacks together: {hits:?} for {} \
         requests sent",
        3 * ROUNDS * CALLERS * PER_CALLER
    );
}
