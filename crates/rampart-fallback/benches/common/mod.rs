//! Shared by the benchmarks: immediate polling, requests shaped like hyper's, handlers and
//! the service stacks measured.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, header};
use http_body::Body;
use http_body_util::Full;
use rampart_health::BoxError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rampart_fallback::{FallbackLayer, StaleIfErrorLayer};
use rampart_health::NeverReached;
use tower::{Layer, Service, ServiceBuilder, service_fn};

pub(crate) fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("expected an immediate result"),
    }
}

pub(crate) fn drain<B: Body<Data = Bytes>>(body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut body = pin!(body);
    let mut n = 0;
    while let Poll::Ready(Some(frame)) = body
        .as_mut()
        .poll_frame(&mut Context::from_waker(Waker::noop()))
    {
        n += frame.unwrap().into_data().map_or(0, |d| d.len());
    }
    n
}

pub(crate) fn call<S, B>(svc: &mut S, req: Request<()>) -> usize
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    now(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap();
    let resp = now(svc.call(req)).unwrap();
    drain(resp.into_body())
}

/// A request as hyper hands it over: the URI and header values are slices of one shared
/// read buffer (cloning them bumps a reference count; it neither copies nor allocates), the
/// names are standard or pre-parsed.
pub(crate) fn request(method: Method, accept: &'static str) -> Request<()> {
    static REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
    let parts: [&str; 5] = [
        "/catalog/item-42",
        "shop.example",
        accept,
        "bench/1.0",
        "abc",
    ];
    let mut buf = BytesMut::with_capacity(128);
    for p in parts {
        buf.extend_from_slice(p.as_bytes());
    }
    let buf = buf.split().freeze();
    let mut at = 0;
    let mut next = |p: &str| {
        let b = buf.slice(at..at + p.len());
        at += p.len();
        b
    };
    let value = |b: Bytes| HeaderValue::from_maybe_shared(b).unwrap();
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = http::Uri::from_maybe_shared(next(parts[0])).unwrap();
    let h = req.headers_mut();
    h.insert(header::HOST, value(next(parts[1])));
    h.insert(header::ACCEPT, value(next(parts[2])));
    h.insert(header::USER_AGENT, value(next(parts[3])));
    h.insert(REQUEST_ID.clone(), value(next(parts[4])));
    req
}

pub(crate) fn get(accept: &'static str) -> impl FnMut() -> Request<()> {
    move || request(Method::GET, accept)
}

pub(crate) const PAGE: &[u8] =
    b"<!doctype html><title>Sturdy Oak Lantern</title><h1>Sturdy Oak Lantern</h1>";

/// The handler's response: a static body, optionally with caching headers.
pub(crate) fn page(cache_control: Option<&'static str>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(PAGE)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Some(cc) = cache_control {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
    resp
}

pub(crate) type Handler = tower::util::ServiceFn<
    fn(Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, BoxError>>,
>;

pub(crate) fn handler_plain() -> Handler {
    service_fn(|_req| std::future::ready(Ok(page(None))))
}

pub(crate) fn handler_cacheable() -> Handler {
    service_fn(|_req| {
        std::future::ready(Ok(page(Some("public, max-age=30, stale-if-error=86400"))))
    })
}

pub(crate) fn handler_no_store() -> Handler {
    service_fn(|_req| std::future::ready(Ok(page(Some("no-store")))))
}

/// One measured case: builds a request, calls its service, drains the body.
pub(crate) struct Case {
    pub(crate) group: &'static str,
    pub(crate) name: &'static str,
    /// A subscriber to install while measuring (`None`: no subscriber, logging off).
    pub(crate) dispatch: Option<tracing::Dispatch>,
    pub(crate) run: Box<dyn FnMut() -> usize>,
}

fn case(group: &'static str, name: &'static str, run: impl FnMut() -> usize + 'static) -> Case {
    Case {
        group,
        name,
        dispatch: None,
        run: Box::new(run),
    }
}

fn svc_case<S, B>(
    group: &'static str,
    name: &'static str,
    mut svc: S,
    mut req: impl FnMut() -> Request<()> + 'static,
) -> Case
where
    S: Service<Request<()>, Response = Response<B>> + 'static,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    case(group, name, move || call(&mut svc, req()))
}

fn failing() -> impl Service<
    Request<()>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = std::future::Ready<Result<Response<Full<Bytes>>, BoxError>>,
> + Clone {
    service_fn(|_req: Request<()>| {
        std::future::ready(Err::<Response<Full<Bytes>>, BoxError>(Box::new(
            NeverReached::new().with_retry_after(Duration::from_millis(7200)),
        )))
    })
}

/// Every case, anchors first in each group.
pub(crate) fn cases() -> Vec<Case> {
    let mut v = vec![svc_case(
        "apology",
        "bare_static_handler",
        handler_plain(),
        get("text/html"),
    )];
    let apology = FallbackLayer::new().layer(failing());
    for (name, method, accept) in [
        ("apology_html", Method::GET, "text/html"),
        (
            "apology_html_browser_accept",
            Method::GET,
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("apology_problem_json", Method::GET, "application/json"),
        ("apology_text", Method::GET, "text/plain"),
        ("apology_head", Method::HEAD, "*/*"),
    ] {
        v.push(svc_case("apology", name, apology.clone(), move || {
            request(method.clone(), accept)
        }));
    }
    // With a logging subscriber installed (INFO and above, written to a sink): what the
    // event about the cause costs when logs are on.
    let mut logged = svc_case(
        "apology",
        "apology_html_logging_on",
        FallbackLayer::new().layer(failing()),
        get("text/html"),
    );
    logged.dispatch = Some(tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::INFO)
            .finish(),
    ));
    v.push(logged);

    // Stale hit: prime the cache with one good response, then fail every call.
    let fail = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&fail);
    let upstream = service_fn(move |_req: Request<()>| {
        let r = if f.load(Ordering::Relaxed) {
            Err::<_, BoxError>(Box::new(NeverReached::new()))
        } else {
            let mut resp = Response::new(Full::new(Bytes::from(vec![b'p'; 8 * 1024])));
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=60, stale-if-error=600"),
            );
            Ok(resp)
        };
        std::future::ready(r)
    });
    let mut stale = StaleIfErrorLayer::new().layer(upstream);
    assert_eq!(
        call(&mut stale, request(Method::GET, "text/html")),
        8 * 1024
    );
    fail.store(true, Ordering::Relaxed);
    v.push(svc_case("apology", "stale_hit_8k", stale, get("text/html")));

    // The healthy path: what each layer adds to a request that succeeds.
    v.push(svc_case(
        "healthy",
        "bare_static_handler",
        handler_plain(),
        get("text/html"),
    ));
    v.push(svc_case(
        "healthy",
        "bare_cacheable_handler",
        handler_cacheable(),
        get("text/html"),
    ));
    v.push(svc_case(
        "healthy",
        "fallback_passthrough",
        FallbackLayer::new().layer(handler_plain()),
        get("text/html"),
    ));
    v.push(svc_case(
        "healthy",
        "stale_passthrough_post",
        StaleIfErrorLayer::new().layer(handler_plain()),
        || request(Method::POST, "text/html"),
    ));
    v.push(svc_case(
        "healthy",
        "stale_passthrough_get_no_store",
        StaleIfErrorLayer::new().layer(handler_no_store()),
        get("text/html"),
    ));
    // Every response recorded and stored again (no refresh interval): a cache miss/store.
    let store_always = StaleIfErrorLayer::builder()
        .refresh_after(Duration::ZERO)
        .build()
        .unwrap();
    v.push(svc_case(
        "healthy",
        "stale_store_cacheable",
        store_always.layer(handler_cacheable()),
        get("text/html"),
    ));
    // The defaults: a copy stored less than `refresh_after` (1 s) ago is kept as it is.
    v.push(svc_case(
        "healthy",
        "stale_cacheable_copy_recent",
        StaleIfErrorLayer::new().layer(handler_cacheable()),
        get("text/html"),
    ));
    // The storefront's order: FallbackLayer, then StaleIfErrorLayer, around the handler.
    v.push(svc_case(
        "healthy",
        "fallback_stale_cacheable",
        ServiceBuilder::new()
            .layer(FallbackLayer::new())
            .layer(StaleIfErrorLayer::new())
            .service(handler_cacheable()),
        get("text/html"),
    ));
    v
}
