//! The apology versus a bare handler returning a static body, the stale-if-error hit path, and
//! what `FallbackLayer` and `StaleIfErrorLayer` add to a healthy request (the pass-through).
//!
//! Every case calls the service with a request built beforehand (outside the timing, as a
//! server hands over a parsed request) and drains the response body. The services answer at
//! once, so futures are polled with a no-op waker (no runtime in the measurement); a
//! current-thread tokio runtime is entered only so `tokio::time::Instant` is available.
//!
//! Compare each case with its anchor in the same run: `bare_static_handler` for the apology and
//! the plain pass-through, `bare_cacheable_handler` for the cases whose response is cacheable.
//!
//! `cargo bench -p rampart-fallback --all-features --bench apology -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method, Request, Response, header};
use http_body::Body;
use http_body_util::Full;
use rampart_fallback::{FallbackLayer, StaleIfErrorLayer};
use rampart_health::{BoxError, NeverReached};
use tower::{Layer, Service, ServiceBuilder, service_fn};

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("expected an immediate result"),
    }
}

fn drain<B: Body<Data = Bytes>>(body: B) -> usize
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

fn call<S, B>(svc: &mut S, req: Request<()>) -> usize
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

/// A request as hyper hands it over: URI and header values are shared bytes (cloning them
/// bumps a reference count; it does not copy), names are standard or pre-parsed.
fn request(method: Method, accept: &'static str) -> Request<()> {
    static REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() =
        http::Uri::from_maybe_shared(Bytes::copy_from_slice(b"/catalog/item-42")).unwrap();
    let h = req.headers_mut();
    h.insert(header::HOST, shared("shop.example"));
    h.insert(header::ACCEPT, shared(accept));
    h.insert(header::USER_AGENT, shared("bench/1.0"));
    h.insert(REQUEST_ID.clone(), shared("abc"));
    req
}

fn shared(v: &str) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(v.as_bytes())).unwrap()
}

fn get(accept: &'static str) -> impl FnMut() -> Request<()> {
    move || request(Method::GET, accept)
}

const PAGE: &[u8] = b"<!doctype html><title>Sturdy Oak Lantern</title><h1>Sturdy Oak Lantern</h1>";

/// The handler's response: a static body, optionally with caching headers.
fn page(cache_control: Option<&'static str>) -> Response<Full<Bytes>> {
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

type Handler = tower::util::ServiceFn<
    fn(Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, BoxError>>,
>;

fn handler_plain() -> Handler {
    service_fn(|_req| std::future::ready(Ok(page(None))))
}

fn handler_cacheable() -> Handler {
    service_fn(|_req| {
        std::future::ready(Ok(page(Some("public, max-age=30, stale-if-error=86400"))))
    })
}

fn handler_no_store() -> Handler {
    service_fn(|_req| std::future::ready(Ok(page(Some("no-store")))))
}

fn bench_apology(c: &mut Criterion) {
    let mut g = c.benchmark_group("apology");
    let mut bare = handler_plain();
    g.bench_function("bare_static_handler", |b| {
        b.iter_batched(
            get("text/html"),
            |req| black_box(call(&mut bare, req)),
            BatchSize::SmallInput,
        );
    });

    let failing = service_fn(|_req: Request<()>| {
        std::future::ready(Err::<Response<Full<Bytes>>, BoxError>(Box::new(
            NeverReached::new().with_retry_after(Duration::from_millis(7200)),
        )))
    });
    let mut apology = FallbackLayer::new().layer(failing);
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
        g.bench_function(name, |b| {
            b.iter_batched(
                || request(method.clone(), accept),
                |req| black_box(call(&mut apology, req)),
                BatchSize::SmallInput,
            );
        });
    }

    // The same apology with a logging subscriber installed (INFO and above, written to a
    // sink): what the WARN event about the cause costs when logs are on.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        g.bench_function("apology_html_logging_on", |b| {
            b.iter_batched(
                get("text/html"),
                |req| black_box(call(&mut apology, req)),
                BatchSize::SmallInput,
            );
        });
    });

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
    g.bench_function("stale_hit_8k", |b| {
        b.iter_batched(
            get("text/html"),
            |req| black_box(call(&mut stale, req)),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

/// The healthy path: what each layer adds to a request that succeeds.
fn bench_passthrough(c: &mut Criterion) {
    let mut g = c.benchmark_group("healthy");
    let mut bare = handler_plain();
    g.bench_function("bare_static_handler", |b| {
        b.iter_batched(
            get("text/html"),
            |req| black_box(call(&mut bare, req)),
            BatchSize::SmallInput,
        );
    });
    let mut bare_cacheable = handler_cacheable();
    g.bench_function("bare_cacheable_handler", |b| {
        b.iter_batched(
            get("text/html"),
            |req| black_box(call(&mut bare_cacheable, req)),
            BatchSize::SmallInput,
        );
    });

    let mut fallback = FallbackLayer::new().layer(handler_plain());
    g.bench_function("fallback_passthrough", |b| {
        b.iter_batched(
            get("text/html"),
            |req| black_box(call(&mut fallback, req)),
            BatchSize::SmallInput,
        );
    });

    let mut stale_post = StaleIfErrorLayer::new().layer(handler_plain());
    g.bench_function("stale_passthrough_post", |b| {
        b.iter_batched(
            || request(Method::POST, "text/html"),
            |req| black_box(call(&mut stale_post, req)),
            BatchSize::SmallInput,
        );
    });

    let mut stale_plain = StaleIfErrorLayer::new().layer(handler_no_store());
    g.bench_function("stale_passthrough_get_no_store", |b| {
        b.iter_batched(
            get("text/html"),
            |req| black_box(call(&mut stale_plain, req)),
            BatchSize::SmallInput,
        );
    });

    // Every response stored again (no refresh interval): the cost of a cache miss/store.
    let store_always = StaleIfErrorLayer::builder()
        .refresh_after(Duration::ZERO)
        .build()
        .unwrap();
    let mut stale_store = store_always.layer(handler_cacheable());
    g.bench_function("stale_store_cacheable", |b| {
        b.iter_batched(
            get("text/html"),
            |req| black_box(call(&mut stale_store, req)),
            BatchSize::SmallInput,
        );
    });

    // The default settings: a copy stored less than `refresh_after` ago is kept as it is.
    let mut stale_fresh = StaleIfErrorLayer::new().layer(handler_cacheable());
    g.bench_function("stale_cacheable_copy_recent", |b| {
        b.iter_batched(
            get("text/html"),
            |req| black_box(call(&mut stale_fresh, req)),
            BatchSize::SmallInput,
        );
    });

    // The storefront's order: FallbackLayer, then StaleIfErrorLayer, around the handler.
    let mut stack = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .layer(StaleIfErrorLayer::new())
        .service(handler_cacheable());
    g.bench_function("fallback_stale_cacheable", |b| {
        b.iter_batched(
            get("text/html"),
            |req| black_box(call(&mut stack, req)),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, bench_apology, bench_passthrough);
criterion_main!(benches);
