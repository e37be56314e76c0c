//! The apology through an axum `Router`: every trigger × every `Accept` variant × HEAD.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use rampart_fallback::{
    ApologyBody, ApologyPage, ApologyRequest, FailureStatuses, Fallback, FallbackLayer, Trigger,
};
use rampart_health::{BoxError, NeverReached, RetryAfter};
use tower::{Layer, ServiceExt, service_fn};
use tower_http::catch_panic::CatchPanicLayer;

const PATH: &str = "/catalog/item-42";
const SECRET: &str = "backend 10.1.2.3:8080 refused: secret-token";
const DETAIL: &str = "The service is temporarily unavailable. Please try again shortly.";

/// An error that wraps another, as buffers and retries do.
#[derive(Debug)]
struct Wrapped(BoxError);
impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wrapped: {SECRET}")
    }
}
impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Breaker open with 7.2 s to its next probe (a NeverReached carrying a hint).
    BreakerOpen,
    /// A `RetryAfter` link deep in a wrapped chain.
    RetryAfterInChain,
    /// No healthy endpoint or site: a never-reached marker without a hint, wrapped.
    NoHealthyEndpoint,
    /// tower's `Timeout` error.
    TimeoutError,
    /// A plain connection error.
    ConnectionError,
    /// A handler answering 502.
    Status502,
    /// A handler answering 503 with its own Retry-After.
    Status503WithRetryAfter,
    /// A panicking handler behind CatchPanicLayer.
    Panic,
}

const KINDS: [Kind; 8] = [
    Kind::BreakerOpen,
    Kind::RetryAfterInChain,
    Kind::NoHealthyEndpoint,
    Kind::TimeoutError,
    Kind::ConnectionError,
    Kind::Status502,
    Kind::Status503WithRetryAfter,
    Kind::Panic,
];

fn failing_service(
    kind: Kind,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Body>,
    Error = BoxError,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |_req: Request<Body>| async move {
        let err: BoxError = match kind {
            Kind::BreakerOpen => Box::new(Wrapped(Box::new(
                NeverReached::new().with_retry_after(Duration::from_millis(7200)),
            ))),
            Kind::RetryAfterInChain => Box::new(Wrapped(Box::new(Wrapped(Box::new(
                RetryAfter::new(Duration::from_millis(7200)),
            ))))),
            Kind::NoHealthyEndpoint => Box::new(Wrapped(Box::new(
                NeverReached::new().with_source(std::io::Error::other(SECRET)),
            ))),
            Kind::TimeoutError => Box::new(tower::timeout::error::Elapsed::new()),
            _ => Box::new(std::io::Error::other(SECRET)),
        };
        Err::<Response<Body>, BoxError>(err)
    })
}

fn app(kind: Kind, layer: FallbackLayer) -> Router {
    match kind {
        Kind::BreakerOpen
        | Kind::RetryAfterInChain
        | Kind::NoHealthyEndpoint
        | Kind::TimeoutError
        | Kind::ConnectionError => {
            Router::new().route_service(PATH, tower::Layer::layer(&layer, failing_service(kind)))
        }
        Kind::Status502 => Router::new()
            .route(PATH, get(|| async { (StatusCode::BAD_GATEWAY, SECRET) }))
            .layer(layer),
        Kind::Status503WithRetryAfter => Router::new()
            .route(
                PATH,
                get(|| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "42")],
                        SECRET,
                    )
                }),
            )
            .layer(layer),
        Kind::Panic => Router::new()
            .route(
                PATH,
                get(|| async {
                    if PATH.len() < 1000 {
                        panic!("{SECRET}");
                    }
                    "unreachable"
                }),
            )
            .layer(CatchPanicLayer::new())
            .layer(layer),
    }
}

fn expected_retry_after(kind: Kind) -> &'static str {
    match kind {
        Kind::BreakerOpen | Kind::RetryAfterInChain => "8",
        Kind::Status503WithRetryAfter => "42",
        _ => "5",
    }
}

async fn send(app: Router, method: &str, accept: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(PATH)
        .header("x-request-id", "req-7");
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

const ACCEPTS: [(Option<&str>, &str); 6] = [
    (Some("text/html"), "text/html; charset=utf-8"),
    (Some("application/json"), "application/problem+json"),
    (Some("application/problem+json"), "application/problem+json"),
    (Some("*/*"), "text/html; charset=utf-8"),
    (None, "text/html; charset=utf-8"),
    (Some("text/plain"), "text/plain; charset=utf-8"),
];

fn check_body(content_type: &str, body: &[u8]) {
    let text = std::str::from_utf8(body).unwrap();
    assert!(
        !text.contains("secret"),
        "internal error text leaked: {text}"
    );
    assert!(!text.contains("10.1.2.3"), "backend address leaked: {text}");
    match content_type {
        "text/html; charset=utf-8" => {
            assert!(text.starts_with("<!doctype html>"), "{text}");
            assert!(text.contains("<title>Service Unavailable</title>"));
            assert!(text.contains(DETAIL));
        }
        "application/problem+json" => {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["type"], "about:blank");
            assert_eq!(v["title"], "Service Unavailable");
            assert_eq!(v["status"], 503);
            assert_eq!(v["detail"], DETAIL);
            assert_eq!(v["instance"], PATH);
            assert_eq!(v.as_object().unwrap().len(), 5);
        }
        "text/plain; charset=utf-8" => assert_eq!(text, format!("{DETAIL}\n")),
        other => panic!("unexpected content type {other}"),
    }
}

#[tokio::test]
async fn every_trigger_every_accept_gets_the_apology() {
    for kind in KINDS {
        for (accept, content_type) in ACCEPTS {
            let layer = FallbackLayer::new();
            let stats = layer.stats().clone();
            let (status, headers, body) = send(app(kind, layer), "GET", accept).await;
            let ctx = format!("{kind:?} accept={accept:?}");
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ctx}");
            assert_eq!(headers["cache-control"], "no-store", "{ctx}");
            assert_eq!(headers["retry-after"], expected_retry_after(kind), "{ctx}");
            assert_eq!(headers["x-request-id"], "req-7", "{ctx}");
            assert_eq!(headers["content-type"], content_type, "{ctx}");
            assert_eq!(
                headers["content-length"],
                body.len().to_string().as_str(),
                "{ctx}"
            );
            check_body(content_type, &body);
            let snap = stats.snapshot();
            assert_eq!(snap.total(), 1, "{ctx}");
            match kind {
                Kind::BreakerOpen | Kind::NoHealthyEndpoint => {
                    assert_eq!(snap.never_reached, 1);
                }
                Kind::RetryAfterInChain | Kind::TimeoutError | Kind::ConnectionError => {
                    assert_eq!(snap.errors, 1);
                }
                _ => assert_eq!(snap.statuses, 1),
            }
        }
    }
}

#[tokio::test]
async fn head_gets_headers_only() {
    for kind in KINDS {
        for (accept, content_type) in ACCEPTS {
            let (status, headers, body) =
                send(app(kind, FallbackLayer::new()), "HEAD", accept).await;
            let ctx = format!("{kind:?} accept={accept:?}");
            // A HEAD to a GET route: axum routes it to the GET handler.
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ctx}");
            assert!(body.is_empty(), "{ctx}: HEAD got a body");
            assert_eq!(headers["content-type"], content_type, "{ctx}");
            assert_eq!(headers["cache-control"], "no-store", "{ctx}");
            assert_eq!(headers["retry-after"], expected_retry_after(kind), "{ctx}");
            assert_eq!(headers["x-request-id"], "req-7", "{ctx}");
            let len: usize = headers["content-length"].to_str().unwrap().parse().unwrap();
            assert!(len > 0, "{ctx}: Content-Length is the GET body's");
        }
    }
}

#[tokio::test]
async fn q_values_choose_the_format() {
    let cases = [
        (
            "text/html;q=0.2, application/json;q=0.9",
            "application/problem+json",
        ),
        (
            "text/html;q=0.9, text/plain;q=0.95",
            "text/plain; charset=utf-8",
        ),
        (
            "application/json;q=0, text/*;q=0.5",
            "text/html; charset=utf-8",
        ),
        ("image/png", "text/html; charset=utf-8"),
    ];
    for (accept, content_type) in cases {
        let (_, headers, body) = send(
            app(Kind::ConnectionError, FallbackLayer::new()),
            "GET",
            Some(accept),
        )
        .await;
        assert_eq!(headers["content-type"], content_type, "{accept}");
        check_body(content_type, &body);
    }
}

#[tokio::test]
async fn breaker_open_with_7_2_seconds_left_gives_retry_after_8() {
    let (status, headers, _) = send(
        app(
            Kind::BreakerOpen,
            FallbackLayer::new().retry_after(Duration::from_secs(60)),
        ),
        "GET",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "8");
}

#[tokio::test]
async fn default_retry_after_is_configurable_or_absent() {
    let (_, headers, _) = send(
        app(
            Kind::ConnectionError,
            FallbackLayer::new().retry_after(Duration::from_millis(2500)),
        ),
        "GET",
        None,
    )
    .await;
    assert_eq!(headers["retry-after"], "3");
    let (_, headers, _) = send(
        app(Kind::ConnectionError, FallbackLayer::new().no_retry_after()),
        "GET",
        None,
    )
    .await;
    assert!(!headers.contains_key("retry-after"));
    // The error chain's hint still wins when there is no default.
    let (_, headers, _) = send(
        app(Kind::BreakerOpen, FallbackLayer::new().no_retry_after()),
        "GET",
        None,
    )
    .await;
    assert_eq!(headers["retry-after"], "8");
}

#[tokio::test]
async fn successes_and_caller_mistakes_pass_through() {
    let layer = FallbackLayer::new();
    let stats = layer.stats().clone();
    let app = Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route("/nope", get(|| async { StatusCode::NOT_IMPLEMENTED }))
        .layer(layer);
    for (path, status) in [
        ("/ok", StatusCode::OK),
        ("/missing", StatusCode::NOT_FOUND),
        ("/nope", StatusCode::NOT_IMPLEMENTED),
        ("/unrouted", StatusCode::NOT_FOUND),
    ] {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert!(!resp.headers().contains_key("retry-after"));
    }
    assert_eq!(stats.snapshot().total(), 0);
}

#[tokio::test]
async fn classifier_is_configurable() {
    let app = Router::new()
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route("/bad", get(|| async { StatusCode::BAD_GATEWAY }))
        .layer(FallbackLayer::new().classify(FailureStatuses::none().with(StatusCode::NOT_FOUND)));
    let resp = app
        .clone()
        .oneshot(Request::get("/missing").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = app
        .oneshot(Request::get("/bad").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn custom_handler_and_custom_page() {
    let layer = FallbackLayer::custom(|req: &ApologyRequest| {
        let body = match req.trigger() {
            Trigger::Error {
                never_reached: true,
            } => "unreachable",
            Trigger::Error { .. } => "error",
            Trigger::Status(_) => "status",
            _ => "other",
        };
        Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .body(ApologyBody::from(body))
            .unwrap()
    })
    .request_id_header(http::HeaderName::from_static("x-correlation-id"));
    let app = Router::new().route_service(
        PATH,
        tower::Layer::layer(&layer, failing_service(Kind::BreakerOpen)),
    );
    let resp = app
        .oneshot(
            Request::get(PATH)
                .header("x-correlation-id", "c-1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["x-correlation-id"], "c-1");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["retry-after"], "8");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"unreachable");

    let page = ApologyPage::builder()
        .status(StatusCode::BAD_GATEWAY)
        .html(Bytes::from_static(b"<p>custom</p>"))
        .text("custom text")
        .title("Oops")
        .detail("Back \"soon\"")
        .problem_type("https://shop.example/p/unavailable")
        .build()
        .unwrap();
    let app = app_with(&FallbackLayer::with_page(page));
    let (status, _, body) = send(app.clone(), "GET", Some("text/html")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(&body[..], b"<p>custom</p>");
    let (_, _, body) = send(app.clone(), "GET", Some("text/plain")).await;
    assert_eq!(&body[..], b"custom text");
    let (_, _, body) = send(app, "GET", Some("application/json")).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["title"], "Oops");
    assert_eq!(v["status"], 502);
    assert_eq!(v["detail"], "Back \"soon\"");
    assert_eq!(v["type"], "https://shop.example/p/unavailable");
}

fn app_with(layer: &FallbackLayer) -> Router {
    Router::new().route_service(PATH, layer.layer(failing_service(Kind::ConnectionError)))
}

#[tokio::test]
async fn page_from_file_loads_once_and_missing_file_fails_the_build() {
    let path = std::env::temp_dir().join(format!(
        "rampart-fallback-apology-{}.html",
        std::process::id()
    ));
    std::fs::write(&path, "<h1>from file</h1>").unwrap();
    let page = ApologyPage::builder().html_file(&path).build().unwrap();
    // The file is read at build time: removing it changes nothing.
    std::fs::remove_file(&path).unwrap();
    let (_, _, body) = send(app_with(&FallbackLayer::with_page(page)), "GET", None).await;
    assert_eq!(&body[..], b"<h1>from file</h1>");

    let err = ApologyPage::builder().html_file(&path).build().unwrap_err();
    assert_eq!(err.field(), "html_file");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
}

#[tokio::test]
async fn poll_ready_error_becomes_the_apology() {
    #[derive(Clone)]
    struct NeverReady;
    impl tower::Service<Request<Body>> for NeverReady {
        type Response = Response<Body>;
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<Response<Body>, std::io::Error>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), std::io::Error>> {
            std::task::Poll::Ready(Err(std::io::Error::other(SECRET)))
        }
        fn call(&mut self, _: Request<Body>) -> Self::Future {
            panic!("called although not ready");
        }
    }
    let app = Router::new().route_service(PATH, Fallback::new(NeverReady));
    let (status, headers, body) = send(app, "GET", Some("text/plain")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "5");
    check_body("text/plain; charset=utf-8", &body);
}

#[tokio::test]
async fn service_accessors_and_infallible_error() {
    let svc = Fallback::new(service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("x")))
    }));
    let _: &_ = svc.get_ref();
    let resp: Result<_, Infallible> = svc
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(resp.unwrap().status(), StatusCode::OK);
    let _inner = svc.into_inner();
}

#[tokio::test(start_paused = true)]
async fn timeouts_give_the_apology() {
    // tower-http's TimeoutLayer answers 504 (configured), which the classifier fails...
    let app = Router::new()
        .route(
            PATH,
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(1),
        ))
        .layer(FallbackLayer::new());
    let (status, headers, body) = send(app, "GET", Some("application/json")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "5");
    check_body("application/problem+json", &body);

    // ...and tower's Timeout fails with an error, which always triggers it.
    let slow = service_fn(|_req: Request<Body>| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, BoxError>(Response::new(Body::from("late")))
    });
    let svc = tower::ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .timeout(Duration::from_secs(1))
        .service(slow);
    let app = Router::new().route_service(PATH, svc);
    let (status, _, body) = send(app, "GET", Some("text/plain")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    check_body("text/plain; charset=utf-8", &body);
}

/// A `MakeWriter` that keeps what is logged.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn the_cause_is_logged_not_sent() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // tracing-core computes a call site's interest from the registering thread's own
    // subscriber while only one subscriber exists ("just one" mode), so the other tests of
    // this binary, which run without one, would cache "never" for our call sites. A second
    // registered subscriber turns that mode off; then re-evaluate what was cached before.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::callsite::rebuild_interest_cache();
    let (status, _, body) = send(
        app(Kind::ConnectionError, FallbackLayer::new()),
        "GET",
        Some("application/json"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    check_body("application/problem+json", &body);
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("WARN"), "{logged}");
    assert!(logged.contains(SECRET), "the cause is in the log: {logged}");
    assert!(logged.contains(PATH), "{logged}");
}

#[tokio::test(start_paused = true)]
async fn one_warning_per_second_the_rest_at_debug() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // tracing-core computes a call site's interest from the registering thread's own
    // subscriber while only one subscriber exists ("just one" mode), so the other tests of
    // this binary, which run without one, would cache "never" for our call sites. A second
    // registered subscriber turns that mode off; then re-evaluate what was cached before.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::callsite::rebuild_interest_cache();
    let app = app(Kind::ConnectionError, FallbackLayer::new());
    for _ in 0..10 {
        let (status, _, _) = send(app.clone(), "GET", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    send(app, "GET", None).await;
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("serving the apology"))
        .collect();
    assert_eq!(lines.len(), 11, "every apology is logged: {logged}");
    let warns: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("WARN"))
        .collect();
    assert_eq!(warns.len(), 2, "{logged}");
    assert!(warns[1].contains("more_since_last_warning=9"), "{logged}");
    assert!(
        lines.iter().all(|l| l.contains(SECRET)),
        "each line has the cause: {logged}"
    );
}
