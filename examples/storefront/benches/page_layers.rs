//! What the shop's page layers (FallbackLayer → StaleIfError → CatchPanic → Timeout) cost per
//! request in the healthy state, against the bare handler (DESIGN.md §4: the whole storefront
//! stack in the healthy state adds ≤ 1 µs per request over the bare handler).
//!
//! `cargo bench -p storefront --bench page_layers -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, header};
use http_body_util::BodyExt;
use storefront::config::ShopConfig;
use storefront::shop::PageLayers;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

const PAGE: &str = "<!doctype html><title>Sturdy Oak Lantern</title><h1>Sturdy Oak Lantern</h1>";

fn routes() -> Router {
    Router::new().route(
        "/products/{id}",
        get(|| async {
            (
                [(
                    header::CACHE_CONTROL,
                    "public, max-age=30, stale-if-error=86400",
                )],
                axum::response::Html(PAGE),
            )
        }),
    )
}

fn request() -> Request<Body> {
    Request::get("/products/7")
        .header(header::HOST, "shop.example")
        .header(header::ACCEPT, "text/html")
        .body(Body::empty())
        .unwrap()
}

/// One request through `app`, body read to the end (as a server would).
async fn serve(app: Router) -> usize {
    let resp = app.oneshot(request()).await.unwrap();
    resp.into_body().collect().await.unwrap().to_bytes().len()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let layers = PageLayers::new(&ShopConfig::default()).unwrap();
    let variants: Vec<(&str, Router)> = vec![
        ("bare_handler", routes()),
        ("fallback", routes().layer(layers.fallback.clone())),
        (
            "fallback_stale",
            routes().layer(
                ServiceBuilder::new()
                    .layer(layers.fallback.clone())
                    .layer(layers.stale.clone()),
            ),
        ),
        (
            "fallback_stale_catch_panic",
            routes().layer(
                ServiceBuilder::new()
                    .layer(layers.fallback.clone())
                    .layer(layers.stale.clone())
                    .layer(CatchPanicLayer::new()),
            ),
        ),
        (
            "all_page_layers",
            routes().layer(
                ServiceBuilder::new()
                    .layer(layers.fallback.clone())
                    .layer(layers.stale.clone())
                    .layer(CatchPanicLayer::new())
                    .layer(TimeoutLayer::with_status_code(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        layers.deadline,
                    )),
            ),
        ),
        ("page_layers_apply", layers.apply(routes())),
    ];
    let mut group = c.benchmark_group("product_page");
    for (name, app) in variants {
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(serve(app.clone())));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
