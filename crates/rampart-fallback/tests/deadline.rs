//! An expired deadline is a timeout (504), not a capacity problem (503 + Retry-After).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use rampart_fallback::FallbackLayer;
use rampart_health::{BoxError, DeadlineExceeded, NeverReached};
use tower::{Layer, ServiceExt, service_fn};

/// An error that wraps another, as a balancer or a buffer does.
#[derive(Debug)]
struct Wrapped(BoxError);
impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wrapped")
    }
}
impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

async fn answer(err: fn() -> BoxError) -> Response<rampart_fallback::FallbackBody<String>> {
    let svc = FallbackLayer::new()
        .retry_after(Duration::from_secs(10))
        .layer(service_fn(move |_: Request<String>| async move {
            Err::<Response<String>, BoxError>(err())
        }));
    svc.oneshot(Request::get("/page").body(String::new()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn deadline_exceeded_in_the_chain_is_a_504_without_retry_after() {
    let resp = answer(|| Box::new(Wrapped(Box::new(DeadlineExceeded::new())))).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(resp.headers().get(http::header::RETRY_AFTER).is_none());
    assert_eq!(resp.headers()[http::header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn capacity_errors_stay_503_with_retry_after() {
    let resp = answer(|| {
        Box::new(Wrapped(Box::new(
            NeverReached::new().with_retry_after(Duration::from_secs(3)),
        )))
    })
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[http::header::RETRY_AFTER], "3");
}
