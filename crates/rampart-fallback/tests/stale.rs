//! Stale-if-error through an axum `Router`, on paused time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use rampart_fallback::stale::path_with_params;
use rampart_fallback::{FallbackLayer, STALE_HEADER, StaleIfError, StaleIfErrorLayer};
use rampart_health::BoxError;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const OK: u8 = 0;
const STATUS_503: u8 = 1;
const ERROR: u8 = 2;

/// A body sent in several chunks, with no known length (as a chunked upstream response).
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

#[derive(Clone, Default)]
struct Backend {
    mode: Arc<AtomicU8>,
    version: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Backend {
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn respond(&self, req: &Request<Body>) -> Result<Response<Body>, BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode.load(Ordering::SeqCst) {
            STATUS_503 => {
                return Ok(Response::builder()
                    .status(503)
                    .body(Body::from("upstream overloaded"))
                    .unwrap());
            }
            ERROR => return Err("connection reset by 10.0.0.9".into()),
            _ => {}
        }
        let path = req.uri().path().to_owned();
        let v = self.version.load(Ordering::SeqCst);
        let mut b = Response::builder().header("etag", format!("\"{v}\""));
        let body = match path.as_str() {
            "/fresh" => {
                b = b.header("cache-control", "max-age=10, stale-if-error=60");
                Body::from(format!("fresh v{v}"))
            }
            "/no-store" => {
                b = b.header("cache-control", "no-store");
                Body::from(format!("no-store v{v}"))
            }
            "/private" => {
                b = b.header("cache-control", "private, max-age=60");
                Body::from(format!("private v{v}"))
            }
            "/cookie" => {
                b = b.header("set-cookie", "session=abc");
                Body::from(format!("cookie v{v}"))
            }
            "/vary" => {
                let lang = req
                    .headers()
                    .get("accept-language")
                    .map(|h| h.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                b = b.header("vary", "Accept-Language");
                Body::from(format!("vary {lang} v{v}"))
            }
            "/aged" => {
                b = b
                    .header("age", "100")
                    .header("cache-control", "stale-if-error=600");
                Body::from(format!("aged v{v}"))
            }
            "/big" => Body::new(Chunks(
                (0..8u8)
                    .map(|i| Bytes::from(vec![b'a' + i; 1024]))
                    .collect(),
            )),
            "/chunked" => Body::new(Chunks(
                [&b"one "[..], &b"two "[..], &b"three"[..]]
                    .into_iter()
                    .map(Bytes::from_static)
                    .collect(),
            )),
            p if p.starts_with("/n/") => Body::from(vec![b'x'; 2048]),
            "/empty" => {
                b = b.status(204);
                Body::empty()
            }
            "/vary-star" => {
                b = b.header("vary", "*");
                Body::from(format!("vary-star v{v}"))
            }
            "/missing" => {
                b = b.status(404);
                Body::from("not here")
            }
            _ => Body::from(format!("plain v{v}")),
        };
        Ok(b.body(body).unwrap())
    }
}

fn app(backend: &Backend, stale: StaleIfErrorLayer) -> Router {
    let backend = backend.clone();
    let svc = service_fn(move |req: Request<Body>| {
        let r = backend.respond(&req);
        async move { r }
    });
    Router::new().route_service(
        "/{*path}",
        ServiceBuilder::new()
            .layer(FallbackLayer::new())
            .layer(stale)
            .service(svc),
    )
}

fn layer(default_window: Duration) -> StaleIfErrorLayer {
    StaleIfErrorLayer::builder()
        .default_window(default_window)
        .max_entry_bytes(4096)
        .max_bytes(1 << 20)
        .build()
        .unwrap()
}

async fn get(app: &Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test(start_paused = true)]
async fn within_window_served_stale_with_age_then_the_apology() {
    let backend = Backend::default();
    let stale = layer(Duration::from_secs(300));
    let app = app(&backend, stale.clone());

    let (status, _, body) = get(&app, "/fresh", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"fresh v0");
    backend.version.store(1, Ordering::SeqCst);

    backend.set(ERROR);
    tokio::time::advance(Duration::from_secs(30)).await;
    let (status, headers, body) = get(&app, "/fresh", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"fresh v0", "the stored copy");
    assert_eq!(headers["age"], "30");
    assert_eq!(headers[STALE_HEADER], "1");
    assert_eq!(headers["etag"], "\"0\"");
    assert_eq!(headers["content-length"], "8");

    backend.set(STATUS_503);
    tokio::time::advance(Duration::from_secs(40)).await; // age 70 = max-age 10 + stale-if-error 60
    let (status, headers, body) = get(&app, "/fresh", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"fresh v0");
    assert_eq!(headers["age"], "70");

    tokio::time::advance(Duration::from_secs(1)).await; // past the window
    let (status, headers, body) = get(&app, "/fresh", &[("accept", "text/plain")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!headers.contains_key(STALE_HEADER));
    assert_eq!(headers["cache-control"], "no-store");
    assert!(!String::from_utf8_lossy(&body).contains("upstream"));

    let snap = stale.snapshot();
    assert_eq!(snap.stored, 1);
    assert_eq!(snap.served, 2);
    assert_eq!(snap.too_old, 1);

    // Recovery: fresh answers go through (and replace the copy).
    backend.set(OK);
    let (_, headers, body) = get(&app, "/fresh", &[]).await;
    assert_eq!(&body[..], b"fresh v1");
    assert!(!headers.contains_key(STALE_HEADER));
}

#[tokio::test(start_paused = true)]
async fn default_window_applies_without_a_directive() {
    let backend = Backend::default();
    let app = app(&backend, layer(Duration::from_secs(20)));
    get(&app, "/plain", &[]).await;
    backend.set(STATUS_503);
    tokio::time::advance(Duration::from_secs(20)).await;
    let (status, headers, _) = get(&app, "/plain", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["age"], "20");
    tokio::time::advance(Duration::from_millis(1)).await;
    let (status, _, _) = get(&app, "/plain", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn upstream_age_counts() {
    let backend = Backend::default();
    let app = app(&backend, layer(Duration::from_secs(20)));
    get(&app, "/aged", &[]).await;
    backend.set(ERROR);
    tokio::time::advance(Duration::from_secs(5)).await;
    let (status, headers, _) = get(&app, "/aged", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["age"], "105");
}

#[tokio::test(start_paused = true)]
async fn no_store_private_and_set_cookie_are_never_kept() {
    let backend = Backend::default();
    let stale = layer(Duration::from_secs(300));
    let app = app(&backend, stale.clone());
    for path in ["/no-store", "/private", "/cookie"] {
        let (status, _, _) = get(&app, path, &[]).await;
        assert_eq!(status, 200);
    }
    // A request that says no-store is not kept either.
    get(&app, "/plain", &[("cache-control", "no-store")]).await;
    backend.set(ERROR);
    for path in ["/no-store", "/private", "/cookie", "/plain"] {
        let (status, headers, _) = get(&app, path, &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(!headers.contains_key(STALE_HEADER));
    }
    let snap = stale.snapshot();
    assert_eq!(snap.stored, 0);
    assert_eq!(snap.not_stored, 4);
    assert_eq!(snap.entries, 0);
}

#[tokio::test(start_paused = true)]
async fn vary_selects_the_variant() {
    let backend = Backend::default();
    let stale = layer(Duration::from_secs(300));
    let app = app(&backend, stale.clone());
    // The first response naming `Accept-Language` in `Vary` teaches the cache to capture that
    // header; it is not stored itself (its request's value was not kept).
    get(&app, "/vary", &[("accept-language", "en")]).await;
    assert_eq!(stale.snapshot().stored, 0);
    assert_eq!(stale.snapshot().not_stored, 1);
    get(&app, "/vary", &[("accept-language", "de")]).await;
    get(&app, "/vary", &[("accept-language", "fr")]).await;
    assert_eq!(stale.snapshot().stored, 2);
    backend.set(ERROR);
    let (_, _, body) = get(&app, "/vary", &[("accept-language", "de")]).await;
    assert_eq!(&body[..], b"vary de v0");
    let (_, _, body) = get(&app, "/vary", &[("accept-language", "fr")]).await;
    assert_eq!(&body[..], b"vary fr v0");
    let (status, _, _) = get(&app, "/vary", &[("accept-language", "it")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = get(&app, "/vary", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn streamed_bodies_pass_whole_and_only_small_ones_are_kept() {
    let backend = Backend::default();
    let stale = layer(Duration::from_secs(300));
    let app = app(&backend, stale.clone());

    // 8 KiB in 1 KiB chunks, no Content-Length, limit 4 KiB: every byte reaches the client.
    let (status, _, body) = get(&app, "/big", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 8192);
    for (i, chunk) in body.chunks(1024).enumerate() {
        assert!(
            chunk.iter().all(|b| *b == b'a' + i as u8),
            "chunk {i} intact"
        );
    }
    // A small chunked body is kept whole.
    let (_, _, body) = get(&app, "/chunked", &[]).await;
    assert_eq!(&body[..], b"one two three");
    let snap = stale.snapshot();
    assert_eq!(snap.too_large, 1);
    assert_eq!(snap.stored, 1);

    backend.set(ERROR);
    let (status, _, _) = get(&app, "/big", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, headers, body) = get(&app, "/chunked", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"one two three");
    assert_eq!(headers["content-length"], "13");
}

#[tokio::test(start_paused = true)]
async fn byte_bound_holds_under_many_distinct_urls() {
    let backend = Backend::default();
    let max_bytes = 64 * 1024;
    let stale = StaleIfErrorLayer::builder()
        .max_bytes(max_bytes)
        .max_entry_bytes(4096)
        .build()
        .unwrap();
    let app = app(&backend, stale.clone());
    for i in 0..2000 {
        let (status, _, body) = get(&app, &format!("/n/{i}"), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), 2048);
        if i % 250 == 0 {
            assert!(stale.snapshot().bytes <= max_bytes);
        }
    }
    let snap = stale.snapshot();
    // Each URL was requested once: once the cache was nearly full, new ones were refused
    // admission rather than evicting the copies already held.
    assert_eq!(snap.stored + snap.not_admitted, 2000, "{snap:?}");
    assert!(snap.not_admitted > 1000, "{snap:?}");
    assert!(snap.bytes <= max_bytes, "{snap:?}");
    assert!(snap.bytes > 0, "{snap:?}");
    // 2000 × 2 KiB bodies were offered; at most ~64 KiB / 2 KiB of them can be held.
    assert!(snap.entries <= max_bytes / 2048, "{snap:?}");
}

#[tokio::test(start_paused = true)]
async fn only_get_and_only_successes_are_kept() {
    let backend = Backend::default();
    let stale = layer(Duration::from_secs(300));
    let app = app(&backend, stale.clone());
    let resp = app
        .clone()
        .oneshot(Request::post("/plain").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, _, _) = get(&app, "/missing", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(stale.snapshot().stored, 0);

    backend.set(ERROR);
    let resp = app
        .clone()
        .oneshot(Request::post("/plain").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = get(&app, "/missing", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let snap = stale.snapshot();
    assert_eq!(snap.missed, 1, "the GET looked, the POST did not");
    assert_eq!(snap.served, 0);
}

#[tokio::test(start_paused = true)]
async fn clear_drops_every_copy() {
    let backend = Backend::default();
    let stale = layer(Duration::from_secs(300));
    let app = app(&backend, stale.clone());
    get(&app, "/plain", &[]).await;
    assert_eq!(stale.snapshot().entries, 1);
    stale.clear();
    backend.set(ERROR);
    let (status, _, _) = get(&app, "/plain", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_the_get_copy() {
    let backend = Backend::default();
    let stale = layer(Duration::from_secs(300));
    let app = app(&backend, stale.clone());
    let head = |app: Router| async move {
        let resp = app
            .oneshot(Request::head("/plain").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    };
    // A HEAD alone stores nothing.
    head(app.clone()).await;
    assert_eq!(stale.snapshot().stored, 0);
    get(&app, "/plain", &[]).await;
    backend.set(ERROR);
    tokio::time::advance(Duration::from_secs(3)).await;
    let (parts, body) = head(app.clone()).await;
    assert_eq!(parts.status, 200);
    assert!(body.is_empty());
    assert_eq!(
        parts.headers["content-length"], "8",
        "the GET body's length"
    );
    assert_eq!(parts.headers["age"], "3");
    assert_eq!(parts.headers[STALE_HEADER], "1");
}

#[tokio::test(start_paused = true)]
async fn an_empty_204_is_kept_and_replayed_without_content_length() {
    let backend = Backend::default();
    let stale = layer(Duration::from_secs(300));
    let app = app(&backend, stale.clone());
    let (status, _, _) = get(&app, "/empty", &[]).await;
    assert_eq!(status, 204);
    assert_eq!(
        stale.snapshot().stored,
        1,
        "an empty body is complete at once"
    );
    backend.set(STATUS_503);
    let (status, headers, body) = get(&app, "/empty", &[]).await;
    assert_eq!(status, 204);
    assert!(body.is_empty());
    assert!(!headers.contains_key("content-length"));
    assert_eq!(headers[STALE_HEADER], "1");
}

#[tokio::test(start_paused = true)]
async fn vary_star_is_never_kept() {
    let backend = Backend::default();
    let stale = layer(Duration::from_secs(300));
    let app = app(&backend, stale.clone());
    for _ in 0..3 {
        let (status, _, _) = get(&app, "/vary-star", &[]).await;
        assert_eq!(status, 200);
    }
    assert_eq!(stale.snapshot().stored, 0);
    assert_eq!(stale.snapshot().not_stored, 3);
    backend.set(ERROR);
    let (status, headers, _) = get(&app, "/vary-star", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!headers.contains_key(STALE_HEADER));
}

#[tokio::test(start_paused = true)]
async fn a_recent_copy_is_refreshed_only_after_refresh_after() {
    let backend = Backend::default();
    let stale = StaleIfErrorLayer::builder()
        .refresh_after(Duration::from_secs(2))
        .build()
        .unwrap();
    let app = app(&backend, stale.clone());
    get(&app, "/plain", &[]).await;
    backend.version.store(1, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    // The copy is 1 s old: this success streams through without replacing it.
    let (_, _, body) = get(&app, "/plain", &[]).await;
    assert_eq!(&body[..], b"plain v1");
    assert_eq!(stale.snapshot().stored, 1);
    assert_eq!(stale.snapshot().recent, 1);
    backend.set(ERROR);
    let (_, headers, body) = get(&app, "/plain", &[]).await;
    assert_eq!(&body[..], b"plain v0", "the copy stored first");
    assert_eq!(headers["age"], "1");

    backend.set(OK);
    tokio::time::advance(Duration::from_secs(1)).await;
    // Now 2 s old: replaced.
    get(&app, "/plain", &[]).await;
    assert_eq!(stale.snapshot().stored, 2);
    backend.set(ERROR);
    let (_, headers, body) = get(&app, "/plain", &[]).await;
    assert_eq!(&body[..], b"plain v1");
    assert_eq!(headers["age"], "0");
}

/// A body fed through a channel: each chunk is available only once the test sends it.
struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// A route whose body the test streams by hand, with the given `Cache-Control`.
fn streaming_app(
    stale: StaleIfErrorLayer,
    cache_control: &'static str,
) -> (
    Router,
    Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Bytes>>>>,
) {
    let slot: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Bytes>>>> = Arc::default();
    let rx = Arc::clone(&slot);
    let svc = service_fn(move |_req: Request<Body>| {
        let r = match rx.lock().unwrap().take() {
            Some(rx) => Ok(Response::builder()
                .header("cache-control", cache_control)
                .body(Body::new(Channel(rx)))
                .unwrap()),
            None => Err::<_, BoxError>("upstream gone".into()),
        };
        async move { r }
    });
    let app = Router::new().route_service(
        "/stream",
        ServiceBuilder::new()
            .layer(FallbackLayer::new())
            .layer(stale)
            .service(svc),
    );
    (app, slot)
}

/// Sends two chunks; the first must reach the client while the body is still open.
async fn first_chunk_before_the_end(
    app: &Router,
    slot: &std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Bytes>>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    *slot.lock().unwrap() = Some(rx);
    // Time is paused: a wait that could only end by the body ending fails at once through
    // these timeouts instead of hanging.
    let limit = Duration::from_secs(5);
    let resp = tokio::time::timeout(
        limit,
        app.clone()
            .oneshot(Request::get("/stream").body(Body::empty()).unwrap()),
    )
    .await
    .expect("the response head comes before the body")
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    tx.send(Bytes::from_static(b"first ")).await.unwrap();
    let frame = tokio::time::timeout(limit, body.frame())
        .await
        .expect("the first chunk is not held back until the body ends")
        .unwrap()
        .unwrap();
    assert_eq!(
        frame.data_ref().map(|b| &b[..]),
        Some(&b"first "[..]),
        "the first chunk arrives while the body is still open"
    );
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"second");
}

#[tokio::test(start_paused = true)]
async fn bodies_stream_through_unbuffered() {
    // Not cacheable: streamed straight through, nothing kept.
    let stale = layer(Duration::from_secs(300));
    let (app, slot) = streaming_app(stale.clone(), "no-store");
    first_chunk_before_the_end(&app, &slot).await;
    assert_eq!(stale.snapshot().stored, 0);
    let (status, _, _) = get(&app, "/stream", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Cacheable: still streamed chunk by chunk (a copy is kept on the side), stored at the end.
    let stale = layer(Duration::from_secs(300));
    let (app, slot) = streaming_app(stale.clone(), "max-age=60");
    first_chunk_before_the_end(&app, &slot).await;
    assert_eq!(stale.snapshot().stored, 1);
    let (status, headers, body) = get(&app, "/stream", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"first second");
    assert_eq!(headers[STALE_HEADER], "1");
}

#[tokio::test(start_paused = true)]
async fn a_key_function_shares_one_copy_across_other_query_parameters() {
    let backend = Backend::default();
    let stale = layer(Duration::from_secs(300)).key(path_with_params(["page"]));
    let app = app(&backend, stale.clone());
    let (_, _, body) = get(&app, "/list?utm_source=mail&page=2", &[]).await;
    assert_eq!(&body[..], b"plain v0");
    // Made-up parameters do not make keys of their own.
    for junk in 0..50 {
        get(&app, &format!("/list?page=2&junk={junk}"), &[]).await;
        get(&app, &format!("/list?junk={junk}"), &[]).await;
    }
    assert_eq!(stale.snapshot().entries, 2, "/list?page=2 and /list");
    backend.version.store(1, Ordering::SeqCst);
    backend.set(ERROR);
    let (status, headers, body) = get(&app, "/list?page=2&cachebuster=991", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers[STALE_HEADER], "1");
    assert_eq!(&body[..], b"plain v0");
    // Another page number is another key, never stored.
    let (status, _, _) = get(&app, "/list?page=3", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn a_key_function_returning_none_leaves_the_request_alone() {
    let backend = Backend::default();
    let backend2 = backend.clone();
    let stale = layer(Duration::from_secs(300));
    // The service-level setter, as for a `StaleIfError` built without the layer.
    let svc: StaleIfError<_> = tower::Layer::layer(
        &stale,
        service_fn(move |req: Request<Body>| {
            let r = backend2.respond(&req);
            async move { r }
        }),
    );
    let svc = svc
        .key(|uri: &http::Uri| (!uri.path().starts_with("/live")).then(|| uri.path().to_owned()));
    let app = Router::new().route_service(
        "/{*path}",
        ServiceBuilder::new()
            .layer(FallbackLayer::new())
            .service(svc),
    );
    get(&app, "/live/score", &[]).await;
    get(&app, "/plain?x=1", &[]).await;
    assert_eq!(stale.snapshot().entries, 1);
    backend.set(ERROR);
    let (status, _, _) = get(&app, "/live/score", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, _) = get(&app, "/plain?x=2", &[]).await;
    assert_eq!(status, 200, "keyed by the path alone");
}

#[tokio::test(start_paused = true)]
async fn when_nearly_full_a_new_key_is_admitted_on_its_second_request() {
    let backend = Backend::default();
    let max_bytes = 64 * 1024;
    let stale = StaleIfErrorLayer::builder()
        .max_bytes(max_bytes)
        .max_entry_bytes(4096)
        .build()
        .unwrap();
    let app = app(&backend, stale.clone());
    // Fill the cache with pages read once until it refuses new ones.
    let mut i = 0;
    while stale.snapshot().not_admitted == 0 {
        get(&app, &format!("/n/{i}"), &[]).await;
        i += 1;
        assert!(i < 1000, "never refused: {:?}", stale.snapshot());
    }
    let held = stale.snapshot().entries;
    // A new page: refused on its first request, admitted on its second.
    get(&app, "/plain", &[]).await;
    assert_eq!(stale.snapshot().not_admitted, 2);
    backend.set(ERROR);
    let (status, _, _) = get(&app, "/plain", &[]).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not stored on the first hit"
    );
    backend.set(OK);
    get(&app, "/plain", &[]).await;
    backend.set(ERROR);
    let (status, headers, _) = get(&app, "/plain", &[]).await;
    assert_eq!(status, 200, "stored on the second hit");
    assert_eq!(headers[STALE_HEADER], "1");
    // The copies held before are still held (give or take the one it displaced).
    let mut served = 0;
    for n in 0..i - 1 {
        if get(&app, &format!("/n/{n}"), &[]).await.0 == StatusCode::OK {
            served += 1;
        }
    }
    assert!(served + 2 >= held, "{served} of {held} kept");
}

#[tokio::test(start_paused = true)]
async fn pages_read_often_survive_a_flood_of_keys_each_requested_twice() {
    let backend = Backend::default();
    let max_bytes = 256 * 1024;
    let stale = StaleIfErrorLayer::builder()
        .max_bytes(max_bytes)
        .max_entry_bytes(4096)
        .build()
        .unwrap();
    let app = app(&backend, stale.clone());
    let read_popular = |app: Router| async move {
        for i in 0..10 {
            get(&app, &format!("/n/popular-{i}"), &[]).await;
        }
    };
    for _ in 0..10 {
        read_popular(app.clone()).await;
        tokio::time::advance(Duration::from_millis(1100)).await;
    }
    // Made-up keys, each requested twice (past the doorkeeper), while the popular pages are
    // still read every second.
    for n in 0..3000 {
        let path = format!("/n/junk-{n}");
        get(&app, &path, &[]).await;
        get(&app, &path, &[]).await;
        if n % 100 == 99 {
            tokio::time::advance(Duration::from_millis(1100)).await;
            read_popular(app.clone()).await;
        }
    }
    let snap = stale.snapshot();
    assert!(snap.bytes <= max_bytes, "{snap:?}");
    backend.set(ERROR);
    let mut survived = 0;
    for i in 0..10 {
        let (status, headers, _) = get(&app, &format!("/n/popular-{i}"), &[]).await;
        if status == StatusCode::OK && headers.contains_key(STALE_HEADER) {
            survived += 1;
        }
    }
    assert_eq!(
        survived, 10,
        "{survived} of 10 popular pages survived; {snap:?}"
    );
}
