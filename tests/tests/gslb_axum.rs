//! The layer story for axum users, over a real loopback server: a `GslbLayer` is the
//! innermost layer of a `ServiceBuilder` stack over a `Sites` set (here two axum `Router`s,
//! one per region), an error-handling layer outside it makes the stack `Infallible`, and the
//! finished stack is mounted with `Router::fallback_service`. Geo steering reads a header;
//! an operator drains a region through the handle; with every site drained the selector's
//! `NoHealthySite` becomes a 503.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::routing::get;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart::gslb::extract::Header;
use rampart::gslb::{Gslb, GslbConfig, GslbLayer, Site, Sites};
use rampart::health::BoxError;
use rampart_tests::TestServer;
use tower::ServiceBuilder;

fn region(name: &'static str) -> Router {
    Router::new().route("/catalog", get(move || async move { name }))
}

#[tokio::test]
async fn gslb_layer_in_an_axum_app_over_loopback() {
    let sites = Sites::builder()
        .site(Site::new("eu-west", region("eu-west")).region("eu"))
        .site(Site::new("us-east", region("us-east")).region("us"))
        .build()
        .unwrap();
    let config = GslbConfig::<Request>::builder()
        .name("catalog")
        .geo(Header::new("x-client-region"))
        .build()
        .unwrap();
    // The selector is the innermost layer, over the set of sites; take its operator handle
    // before wrapping it further.
    let selector: Gslb<Router, Request> = ServiceBuilder::new()
        .layer(GslbLayer::new(config))
        .service(sites);
    let handle = selector.handle();
    let api = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|e: BoxError| async move {
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }))
        .service(selector);
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback_service(api);
    let server = TestServer::start(app).await.unwrap();

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |region: &'static str| {
        let client = client.clone();
        let uri = format!("http://{}/catalog", server.addr());
        async move {
            let req = http::Request::get(uri)
                .header("x-client-region", region)
                .body(Empty::new())
                .unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                .await
                .unwrap()
                .unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };

    assert_eq!(get("eu").await, (StatusCode::OK, "eu-west".into()));
    assert_eq!(get("us").await, (StatusCode::OK, "us-east".into()));

    handle.drain("eu-west").unwrap();
    assert_eq!(get("eu").await, (StatusCode::OK, "us-east".into()));

    handle.drain("us-east").unwrap();
    let (status, body) = get("eu").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "no healthy site in gslb `catalog`");

    handle.restore("eu-west").unwrap();
    assert_eq!(get("eu").await, (StatusCode::OK, "eu-west".into()));
}
