//! The README's 30-second tour pattern: a handler that returns the upstream's error whole
//! (`UpstreamError`) lets the apology carry the breaker's `Retry-After`; mapping every error
//! to a bare 502 falls back to the layer's default.

#![cfg(all(feature = "breaker", feature = "fallback"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::Full;
use rampart::breaker::{CircuitBreakerLayer, Policy};
use rampart::fallback::FallbackLayer;
use rampart::health::BoxError;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type Upstream =
    BoxCloneSyncService<http::Request<Full<Bytes>>, http::Response<Full<Bytes>>, BoxError>;

/// As in the README.
struct UpstreamError(BoxError);

impl<E: Into<BoxError>> From<E> for UpstreamError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl axum::response::IntoResponse for UpstreamError {
    fn into_response(self) -> axum::response::Response {
        let mut response = http::StatusCode::BAD_GATEWAY.into_response();
        if let Some(after) = rampart::health::retry_after(&*self.0) {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0); // rounded up
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

async fn products(State(mut catalog): State<Upstream>) -> Result<String, UpstreamError> {
    let request = http::Request::get("/products").body(Full::default())?;
    let response = catalog.ready().await?.call(request).await?;
    Ok(format!("catalog answered {}", response.status()))
}

/// The pattern the tour used to show.
async fn products_mapped(State(mut catalog): State<Upstream>) -> Result<String, http::StatusCode> {
    let request = http::Request::get("/products")
        .body(Full::default())
        .unwrap();
    let ready = catalog
        .ready()
        .await
        .map_err(|_| http::StatusCode::BAD_GATEWAY)?;
    let response = ready
        .call(request)
        .await
        .map_err(|_| http::StatusCode::BAD_GATEWAY)?;
    Ok(format!("catalog answered {}", response.status()))
}

/// A catalog that refuses every connection, behind a breaker that opens for 30 s after three
/// failures in a row.
fn catalog() -> Upstream {
    let policy = Policy::builder()
        .name("catalog")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .open_jitter(0.0)
        .build()
        .unwrap();
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(CircuitBreakerLayer::http(policy))
            .service(service_fn(|_req: http::Request<Full<Bytes>>| async {
                Err::<http::Response<Full<Bytes>>, BoxError>(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                )))
            })),
    )
}

/// `Retry-After` of the apology for each of five requests in a row.
async fn retry_afters(app: Router) -> Vec<u64> {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let resp = app
            .clone()
            .oneshot(http::Request::get("/products").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        let after = resp.headers()["retry-after"].to_str().unwrap();
        seen.push(after.parse().unwrap());
    }
    seen
}

#[tokio::test]
async fn returning_the_upstream_error_keeps_the_breakers_retry_after() {
    let fallback = || FallbackLayer::new().retry_after(Duration::from_secs(5));
    let app = Router::new()
        .route("/products", get(products))
        .with_state(catalog())
        .layer(fallback());
    let seen = retry_afters(app).await;
    // Three refused connections (no hint: the default), then the open breaker's time to its
    // next probe (30 s, less the moments since it opened, rounded up).
    assert_eq!(seen[..3], [5, 5, 5], "{seen:?}");
    assert!(seen[3..].iter().all(|s| (25..=30).contains(s)), "{seen:?}");

    // Mapping every error to a bare 502 loses the hint.
    let app = Router::new()
        .route("/products", get(products_mapped))
        .with_state(catalog())
        .layer(fallback());
    assert_eq!(retry_afters(app).await, [5; 5]);
}
