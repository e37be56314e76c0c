//! What the shop's page stack costs per request in the healthy state, against the bare
//! handler: the whole stack as the shop builds it (`PageLayers::apply`: request metrics and
//! trace, apology, stale copies, page guard, in one layer of the router), its parts alone, and
//! the tower-http layers the shop used before (`TraceLayer`, `CatchPanicLayer`,
//! `TimeoutLayer`) for comparison. The target: the whole stack adds ≤ 1 µs per request over the
//! bare handler.
//!
//! Every router is finalized with `with_state` before it is measured, as `axum::serve` does
//! (and as the shop's page router is, with its state, before its layers): an unfinalized
//! `Router<()>` would build its handlers' services, and apply every layer, per request.
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
use storefront::shop::{PageGuardLayer, PageLayers};
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

const PAGE: &str = "<!doctype html><title>Sturdy Oak Lantern</title><h1>Sturdy Oak Lantern</h1>";

fn routes() -> Router {
    let routes = Router::new().route(
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
    );
    routes.with_state(())
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
        // The shop's page stack, as `Shop::start` builds it (no limiter: the default).
        ("whole_stack", layers.apply(routes())),
        // Its parts alone.
        (
            "observe_only",
            routes().layer(storefront::shop::ObserveLayer::new(
                &storefront::shop::ROUTES,
            )),
        ),
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
            "page_guard_only",
            routes().layer(PageGuardLayer::new(layers.deadline)),
        ),
        // The tower-http layers the page guard and `ObserveLayer` replace, alone.
        ("trace_only", routes().layer(TraceLayer::new_for_http())),
        (
            "timeout_only",
            routes().layer(TimeoutLayer::with_status_code(
                http::StatusCode::SERVICE_UNAVAILABLE,
                layers.deadline,
            )),
        ),
        ("catch_panic_only", routes().layer(CatchPanicLayer::new())),
    ];
    let mut group = c.benchmark_group("product_page");
    for (name, app) in variants {
        group.bench_function(name, |b| {
            let app = app.clone().with_state(());
            b.iter(|| rt.block_on(serve(app.clone())));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
