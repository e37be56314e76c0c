//! The apology: what a customer gets when a page cannot be served at all.
//!
//! 503, `Retry-After`, `Cache-Control: no-store`, and a body chosen by `Accept`: the HTML page,
//! RFC 9457 `application/problem+json`, or plain text. The bodies are rendered once at start-up.

use std::time::Duration;

use askama::Template;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::views::ApologyPage;

/// A `Retry-After` hint a handler attaches to a failing response (an extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryHint(pub(crate) Duration);

/// The rendered apology page.
pub(crate) fn apology_html() -> Bytes {
    Bytes::from(ApologyPage.render().unwrap_or_else(|_| {
        "<!doctype html><title>Sorry</title><p>Please try again shortly.</p>".into()
    }))
}

/// The apology as RFC 9457 problem details.
pub(crate) const PROBLEM_JSON: &str = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"Part of the shop is temporarily unavailable. Please try again shortly."}"#;

fn wants_problem_json(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.contains("application/problem+json")
                || (a.contains("application/json") && !a.contains("text/html"))
        })
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|a| a.contains("text/html") || a.contains("*/*") || a.is_empty())
}

/// Builds the apology for a request with `headers`.
pub(crate) fn apology(
    html: &Bytes,
    method: &Method,
    headers: &HeaderMap,
    retry_after: Option<Duration>,
) -> Response {
    let (ctype, body) = if wants_problem_json(headers) {
        (
            "application/problem+json",
            Bytes::from_static(PROBLEM_JSON.as_bytes()),
        )
    } else if wants_html(headers) {
        ("text/html; charset=utf-8", html.clone())
    } else {
        (
            "text/plain; charset=utf-8",
            Bytes::from_static(b"Service temporarily unavailable. Please try again shortly.\n"),
        )
    };
    let secs = retry_after.map_or(5, |d| d.as_secs().max(1));
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// Interim stand-in for the fallback layer: every 5xx becomes the apology.
pub(crate) async fn apology_on_failure(
    axum::extract::State(html): axum::extract::State<Bytes>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let headers = req.headers().clone();
    let resp = next.run(req).await;
    if resp.status().is_server_error() {
        let hint = resp.extensions().get::<RetryHint>().map(|h| h.0);
        apology(&html, &method, &headers, hint)
    } else {
        resp
    }
}
