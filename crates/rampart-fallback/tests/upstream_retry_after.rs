//! The apology's `Retry-After` taken from a failed upstream response: never 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use rampart_fallback::FallbackLayer;
use tower::ServiceExt;

async fn retry_after_through(layer: FallbackLayer, upstream: &'static str) -> Option<String> {
    let app = Router::new()
        .route(
            "/",
            get(move || async move {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", upstream)],
                    "busy",
                )
            }),
        )
        .layer(layer);
    let resp = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    resp.headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn an_upstream_retry_after_of_zero_becomes_one_second() {
    let layer = || FallbackLayer::new().retry_after(Duration::from_secs(5));
    assert_eq!(
        retry_after_through(layer(), "0").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        retry_after_through(layer(), " 0 ").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        retry_after_through(FallbackLayer::new().no_retry_after(), "0")
            .await
            .as_deref(),
        Some("1")
    );
    // Other values pass as they are.
    assert_eq!(
        retry_after_through(layer(), "42").await.as_deref(),
        Some("42")
    );
    assert_eq!(
        retry_after_through(layer(), "1").await.as_deref(),
        Some("1")
    );
}
