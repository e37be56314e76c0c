//! An axum route whose upstream (a real axum server on 127.0.0.1:0, reached over HTTP with
//! hyper-util's client through the breaker) starts failing: the breaker trips, clients get
//! fast 503s with `Retry-After` while no request reaches the upstream, and the route recovers
//! once the upstream heals and the open duration is over.
//!
//! The upstream runs on its own real-time runtime thread; the route and the breaker run on the
//! test's paused clock (no timers are pending there, so tokio never auto-advances it: time
//! moves only by `advance`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart_breaker::{
    BreakerOpen, BreakerState, CircuitBreaker, CircuitBreakerLayer, Policy, SlidingWindow,
};
use rampart_health::HttpClassifier;
use rampart_test_support::loopback;
use tower::{Layer, ServiceExt};

/// The upstream: counts every request it receives; answers 200 while healthy, 503 otherwise.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Self {
        let hits = Arc::new(AtomicU64::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let state = (hits.clone(), healthy.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app =
                    Router::new()
                        .route(
                            "/item",
                            get(
                                |State((hits, healthy)): State<(
                                    Arc<AtomicU64>,
                                    Arc<AtomicBool>,
                                )>| async move {
                                    hits.fetch_add(1, Ordering::SeqCst);
                                    if healthy.load(Ordering::SeqCst) {
                                        (StatusCode::OK, "item")
                                    } else {
                                        (StatusCode::SERVICE_UNAVAILABLE, "sick")
                                    }
                                },
                            ),
                        )
                        .with_state(state);
                let server = loopback::serve(app).await;
                addr_tx.send(server.addr()).unwrap();
                let _ = stopped.await;
            });
            // Dropping the runtime aborts the connection tasks.
        });
        Self {
            addr: addr_rx.recv().unwrap(),
            hits,
            healthy,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Upstreams = CircuitBreaker<Client<HttpConnector, Empty<Bytes>>, HttpClassifier>;

/// The route under test: proxies to the upstream through the breaker.
async fn item(State((client, addr)): State<(Upstreams, SocketAddr)>) -> Response {
    let req = http::Request::get(format!("http://{addr}/item"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    match client.oneshot(req).await {
        Ok(resp) => resp.status().into_response(),
        Err(err) => match BreakerOpen::find(&*err) {
            Some(open) => {
                let mut resp = (StatusCode::SERVICE_UNAVAILABLE, "breaker open").into_response();
                if let Some(after) = open.retry_after() {
                    let secs = after.as_secs_f64().ceil() as u64;
                    resp.headers_mut()
                        .insert("retry-after", HeaderValue::from(secs));
                }
                resp.headers_mut()
                    .insert("x-breaker", HeaderValue::from_static("open"));
                resp
            }
            None => StatusCode::BAD_GATEWAY.into_response(),
        },
    }
}

async fn get_item(app: &Router) -> Response {
    app.clone()
        .oneshot(
            http::Request::get("/item")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_route_trips_fails_fast_without_reaching_the_upstream_and_recovers() {
    let upstream = Upstream::start();
    let layer = CircuitBreakerLayer::http(
        Policy::builder()
            .name("upstream")
            .sliding_window(SlidingWindow::count(10))
            .minimum_calls(4)
            .failure_rate_threshold(50.0)
            .open_duration(Duration::from_secs(30))
            .open_jitter(0.0)
            .permitted_calls_in_half_open(2)
            .build()
            .unwrap(),
    );
    let breaker = layer.handle().clone();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let app = Router::new()
        .route("/item", get(item))
        .with_state((layer.layer(client), upstream.addr));

    // Healthy.
    for _ in 0..5 {
        assert_eq!(get_item(&app).await.status(), StatusCode::OK);
    }
    assert_eq!(upstream.hits(), 5);

    // The upstream starts failing: its 503s pass through until the breaker trips.
    upstream.healthy.store(false, Ordering::SeqCst);
    let mut upstream_errors = 0;
    while breaker.state() == BreakerState::Closed {
        let resp = get_item(&app).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().get("x-breaker").is_none());
        upstream_errors += 1;
        assert!(
            upstream_errors <= 5,
            "5 failures after 5 successes reach 50 %"
        );
    }
    assert_eq!(upstream_errors, 5);
    assert_eq!(breaker.state(), BreakerState::Open);

    // Open: fast errors, and nothing reaches the upstream.
    let hits_when_opened = upstream.hits();
    for _ in 0..20 {
        let resp = get_item(&app).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["x-breaker"], "open");
        assert_eq!(resp.headers()["retry-after"], "30");
    }
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(get_item(&app).await.headers()["retry-after"], "1");
    assert_eq!(
        upstream.hits(),
        hits_when_opened,
        "no call reached the upstream while open"
    );

    // The upstream heals; after the open duration the trial calls close the breaker.
    upstream.healthy.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..2 {
        assert_eq!(get_item(&app).await.status(), StatusCode::OK);
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    for _ in 0..10 {
        assert_eq!(get_item(&app).await.status(), StatusCode::OK);
    }
    assert_eq!(upstream.hits(), hits_when_opened + 12);
}
