//! The admin listener's routes: `/metrics` (Prometheus text), `/healthz`, `/status.json`.
//!
//! ```
//! use rampart_gateway::admin;
//!
//! let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
//! let app = admin::router(recorder.handle(), || serde_json::json!({ "clusters": [] }));
//! # let _ = app;
//! ```

use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// The admin routes. `status` renders `/status.json` (for the gateway: [`Proxy::status`]).
///
/// [`Proxy::status`]: crate::proxy::Proxy::status
pub fn router<F>(metrics: PrometheusHandle, status: F) -> Router
where
    F: Fn() -> serde_json::Value + Send + Sync + 'static,
{
    let status = Arc::new(status);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/status.json",
            get(move || {
                let status = status.clone();
                async move {
                    ([(CONTENT_TYPE, "application/json")], status().to_string()).into_response()
                }
            }),
        )
}
