//! What the shop's layers cost per request in the healthy state, against the bare handler:
//! the page layers (FallbackLayer → StaleIfError → CatchPanic → Timeout) one at a time, the
//! router-wide ones (`shop::observe`: TraceLayer, request metrics), each alone, and the whole
//! stack (the target: the whole storefront stack in the healthy state adds ≤ 1 µs per request
//! over the bare handler).
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
use tower_http::trace::TraceLayer;

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

/// The shop's request metrics as they were recorded before `RequestMetricsLayer`.
async fn record_metrics_before(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("storefront_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("storefront_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

fn bench(c: &mut Criterion) {
    // As in the shop: a Prometheus recorder is installed, so the metrics the layers record
    // (the shop's and the middleware's own) cost what they cost in production.
    let _ = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder();
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
        // The router-wide layers alone, then everything the shop puts around a page.
        ("trace_only", routes().layer(TraceLayer::new_for_http())),
        (
            "timeout_only",
            routes().layer(TimeoutLayer::with_status_code(
                http::StatusCode::SERVICE_UNAVAILABLE,
                layers.deadline,
            )),
        ),
        ("catch_panic_only", routes().layer(CatchPanicLayer::new())),
        ("observe_only", storefront::shop::observe(routes())),
        // What `observe` was before: the same metrics from an axum `from_fn` middleware
        // (boxed future, label strings and a registry lookup per request).
        (
            "observe_from_fn_before",
            routes()
                .layer(axum::middleware::from_fn(record_metrics_before))
                .layer(TraceLayer::new_for_http()),
        ),
        (
            "metrics_layer_only",
            routes().layer(storefront::shop::RequestMetricsLayer::new(
                &storefront::shop::ROUTES,
            )),
        ),
        (
            "whole_stack",
            storefront::shop::observe(layers.apply(routes())),
        ),
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
