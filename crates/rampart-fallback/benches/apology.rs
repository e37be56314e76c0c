//! The apology versus a bare handler returning a static body, and the stale-if-error hit path.
//!
//! Every case builds its request, calls the service, and drains the body. The services answer
//! at once, so futures are polled with a no-op waker (no runtime in the measurement); a
//! current-thread tokio runtime is entered only so `tokio::time::Instant` is available.
//!
//! `cargo bench -p rampart-fallback --bench apology -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use rampart_fallback::{FallbackLayer, StaleIfErrorLayer};
use rampart_health::{BoxError, NeverReached};
use tower::{Layer, Service, service_fn};

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

/// A request whose URI and header values are shared bytes, as hyper's parsed requests are
/// (cloning them bumps a reference count; it does not copy).
fn request(accept: &'static str) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = http::Uri::from_static("/catalog/item-42");
    let h = req.headers_mut();
    h.insert(http::header::ACCEPT, http::HeaderValue::from_static(accept));
    h.insert("x-request-id", http::HeaderValue::from_static("abc"));
    req
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("apology");

    let mut bare = service_fn(|_req: Request<()>| {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"hello, world")));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        std::future::ready(Ok::<_, BoxError>(resp))
    });
    g.bench_function("bare_static_handler", |b| {
        b.iter(|| black_box(call(&mut bare, request("text/html"))));
    });

    let failing = service_fn(|_req: Request<()>| {
        std::future::ready(Err::<Response<Full<Bytes>>, BoxError>(Box::new(
            NeverReached::new(),
        )))
    });
    let mut apology = FallbackLayer::new().layer(failing);
    for (name, accept) in [
        ("apology_html", "text/html"),
        ("apology_problem_json", "application/json"),
        ("apology_text", "text/plain"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(call(&mut apology, request(accept))));
        });
    }

    let mut passthrough = FallbackLayer::new().layer(bare);
    g.bench_function("fallback_passthrough_success", |b| {
        b.iter(|| black_box(call(&mut passthrough, request("text/html"))));
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
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("max-age=60, stale-if-error=600"),
            );
            Ok(resp)
        };
        std::future::ready(r)
    });
    let mut stale = StaleIfErrorLayer::new().layer(upstream);
    assert_eq!(call(&mut stale, request("text/html")), 8 * 1024);
    fail.store(true, Ordering::Relaxed);
    g.bench_function("stale_hit_8k", |b| {
        b.iter(|| black_box(call(&mut stale, request("text/html"))));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
