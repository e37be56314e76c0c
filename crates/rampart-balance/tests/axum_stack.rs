//! The README's stacking example, compiled and run: an axum app forwards `/api/*` through
//! `ReplayBodyLayer` → `Balance` → `HttpEndpoint` to two loopback backends, and turns balancer
//! errors into 502/503 responses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http_body_util::BodyExt;
use rampart_balance::{
    Balance, HttpEndpoint, HttpPolicy, NoHealthyEndpoints, ReplayBody, ReplayBodyLayer, ServedBy,
};
use rampart_health::{CheckerConfig, OutlierConfig};
use rampart_test_support::loopback;
use tower::{Layer, Service, ServiceExt};

async fn backend(name: &'static str) -> loopback::Server {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(move |req: Request| async move { format!("{name} {}", req.uri()) });
    loopback::serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_app_forwards_through_the_balancer() {
    let backends = [backend("a").await, backend("b").await];
    let bases = backends.each_ref().map(loopback::Server::base_url);

    // --- README example starts ---
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .connect_timeout(Duration::from_millis(250))
        .request_timeout(Duration::from_secs(2));
    let balance: Balance<HttpEndpoint<ReplayBody<Body>>, HttpPolicy> = Balance::builder()
        .http_endpoints(bases.iter().map(|b| b.parse().unwrap()), &template)
        .unwrap()
        .http_health_checks("/healthz")
        .health_checks(CheckerConfig::default())
        .outlier_detection(OutlierConfig::default())
        .build()
        .unwrap();
    let upstream = ReplayBodyLayer::new().layer(balance);

    let app = Router::new().route(
        "/api/{*rest}",
        any(move |req: Request| {
            let mut upstream = upstream.clone();
            async move {
                match upstream.ready().await.unwrap().call(req).await {
                    Ok(res) => res.map(Body::new).into_response(),
                    Err(e) if e.is::<NoHealthyEndpoints>() => {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    }
                    Err(_) => StatusCode::BAD_GATEWAY.into_response(),
                }
            }
        }),
    );
    // --- README example ends ---

    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let req = Request::get(format!("/api/items/{i}"))
            .body(Body::empty())
            .unwrap();
        let res: Response = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let served = res.extensions().get::<ServedBy>().cloned().unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.ends_with(&format!("/api/items/{i}")), "{body}");
        assert!(bases.iter().any(|b| b == served.endpoint()));
        seen.insert(body[..1].to_string());
    }
    assert!(!seen.is_empty());
}
