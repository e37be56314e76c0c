//! Over real sockets: with `FallbackLayer` outermost, a request the limiter sheds is answered
//! at once with `503` and `Retry-After` from the limiter's hint; bypassed routes still answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::{Router, body::Body, routing::get};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart_fallback::FallbackLayer;
use rampart_limit::algorithm::Fixed;
use rampart_limit::{Class, LimitLayer, Limiter};
use rampart_test_support::loopback;
use tokio::sync::Notify;
use tower::ServiceBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_request_becomes_a_fast_503_with_retry_after() {
    let limiter = Limiter::builder()
        .name("shop")
        .algorithm(Fixed::new(1).unwrap())
        .retry_after(Duration::from_secs(3))
        .build()
        .unwrap();
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let (r, e) = (Arc::clone(&release), Arc::clone(&entered));
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let (r, e) = (Arc::clone(&r), Arc::clone(&e));
                async move {
                    e.notify_one();
                    r.notified().await;
                    "done"
                }
            }),
        )
        .route("/page", get(|| async { "page" }))
        .route("/healthz", get(|| async { "ok" }))
        .layer(ServiceBuilder::new().layer(FallbackLayer::new()).layer(
            LimitLayer::http(limiter.clone()).partition_by(|req: &Request<Body>| {
                if req.uri().path() == "/healthz" {
                    Class::Bypass
                } else {
                    Class::Partition(0)
                }
            }),
        ));
    let server = loopback::serve(app).await;
    let base = server.base_url();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |path: &str| {
        let req = Request::get(format!("{base}{path}"))
            .header(header::ACCEPT, "text/html")
            .body(Empty::new())
            .unwrap();
        client.request(req)
    };

    // The one slot is taken by a slow request.
    let slow = tokio::spawn(get("/slow"));
    entered.notified().await;
    assert_eq!(limiter.in_flight(), 1);

    // The next one is shed, answered at once (well within the client's own 1 s timeout).
    let shed = tokio::time::timeout(Duration::from_secs(1), get("/page"))
        .await
        .expect("the shed request does not wait")
        .unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()[header::RETRY_AFTER], "3");
    assert_eq!(shed.headers()[header::CACHE_CONTROL], "no-store");
    let body = shed.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    assert!(
        !String::from_utf8_lossy(&body).contains("limiter"),
        "no internal error text"
    );

    // Health checks bypass the limiter.
    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    release.notify_one();
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    let page = get("/page").await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let snap = limiter.snapshot();
    assert_eq!((snap.in_flight, snap.shed(), snap.bypassed), (0, 1, 1));
    drop(server);
}
