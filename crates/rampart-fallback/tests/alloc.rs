//! The apology allocates no page per request: bytes allocated per apology are a small
//! constant, far below the page size, and the same for a 16 KiB and a 1 MiB page.
//!
//! Counted with `stats_alloc`'s instrumented system allocator. This file holds a single test
//! so that no other test thread allocates while it measures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::Empty;
use rampart_fallback::{ApologyPage, FallbackLayer, StaleIfErrorLayer};
use rampart_health::{BoxError, NeverReached};
use rampart_test_support::poll::poll_ready;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CALLS: usize = 200;

/// Polls a future that completes without waiting (everything here is immediate).
fn now<F: Future>(f: F) -> F::Output {
    poll_ready(f, 1).expect("an immediate result")
}

/// Bytes allocated per apology (request built beforehand; body drained frame by frame).
fn bytes_per_apology(page_bytes: usize, accept: &'static str) -> (usize, usize, usize) {
    let page = ApologyPage::builder()
        .html(Bytes::from(vec![b'x'; page_bytes]))
        .text(Bytes::from(vec![b'y'; page_bytes]))
        .build()
        .unwrap();
    let mut svc = FallbackLayer::with_page(page).layer(service_fn(|_req: Request<()>| {
        std::future::ready(Err::<Response<Empty<Bytes>>, BoxError>(Box::new(
            NeverReached::new(),
        )))
    }));
    let requests: Vec<Request<()>> = (0..CALLS + 1)
        // URI and header values as shared bytes, as hyper parses them: cloning them bumps a
        // reference count rather than allocating.
        .map(|_| shared_request(accept))
        .collect();
    let mut requests = requests.into_iter();
    let mut run = |req: Request<()>| -> usize {
        now(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap();
        let resp = now(svc.call(req)).unwrap();
        assert_eq!(resp.status(), 503);
        let mut body = pin!(resp.into_body());
        let mut n = 0;
        while let Poll::Ready(Some(frame)) = body
            .as_mut()
            .poll_frame(&mut Context::from_waker(Waker::noop()))
        {
            n += frame.unwrap().into_data().map_or(0, |d| d.len());
        }
        n
    };
    // Warm up (lazily initialised statics, tracing's callsite registration).
    let sent = run(requests.next().unwrap());
    let region = Region::new(GLOBAL);
    for req in requests {
        assert_eq!(run(req), sent);
    }
    let stats = region.change();
    (
        stats.bytes_allocated / CALLS,
        stats.allocations / CALLS,
        sent,
    )
}

fn shared_request(accept: &'static str) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = http::Uri::from_static("/catalog/item-42");
    let h = req.headers_mut();
    h.insert(http::header::ACCEPT, http::HeaderValue::from_static(accept));
    h.insert("x-request-id", http::HeaderValue::from_static("abc"));
    req
}

/// Allocations per call of `svc` on a succeeding inner service.
fn allocations_per_success<S, B>(mut svc: S) -> usize
where
    S: tower::Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let requests: Vec<_> = (0..CALLS + 1)
        .map(|_| shared_request("text/html"))
        .collect();
    let mut requests = requests.into_iter();
    let mut run = |req| {
        now(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap();
        let resp = now(svc.call(req)).unwrap();
        assert_eq!(resp.status(), 200);
        // Read to the end, as a server does (a recorded body is stored when it ends).
        let mut body = pin!(resp.into_body());
        while let Poll::Ready(Some(frame)) = body
            .as_mut()
            .poll_frame(&mut Context::from_waker(Waker::noop()))
        {
            frame.unwrap();
        }
    };
    run(requests.next().unwrap());
    let region = Region::new(GLOBAL);
    for req in requests {
        run(req);
    }
    region.change().allocations / CALLS
}

type OkResponse = Response<http_body_util::Full<Bytes>>;

fn ok_service() -> impl tower::Service<
    Request<()>,
    Response = OkResponse,
    Error = BoxError,
    Future = std::future::Ready<Result<OkResponse, BoxError>>,
> {
    service_fn(|_req: Request<()>| {
        std::future::ready(Ok::<_, BoxError>(Response::new(http_body_util::Full::new(
            Bytes::from_static(b"hello"),
        ))))
    })
}

#[test]
fn apology_allocates_no_page_per_request() {
    // The success path: the layer adds no allocation to a call that succeeds.
    let bare = allocations_per_success(ok_service());
    let wrapped = allocations_per_success(FallbackLayer::new().layer(ok_service()));
    eprintln!("success path: {bare} allocations bare, {wrapped} through Fallback");
    assert_eq!(bare, wrapped, "Fallback allocates on the success path");

    // The stale-if-error layer on a cacheable GET whose copy is recent (the steady state of a
    // popular page), and the storefront's stack of both: no allocation either.
    let stale = || {
        StaleIfErrorLayer::builder()
            .refresh_after(std::time::Duration::from_secs(3600))
            .build()
            .unwrap()
    };
    let with_stale = allocations_per_success(stale().layer(ok_service()));
    let stack = allocations_per_success(
        tower::ServiceBuilder::new()
            .layer(FallbackLayer::new())
            .layer(stale())
            .service(ok_service()),
    );
    eprintln!("success path: {with_stale} through StaleIfError, {stack} through both");
    assert_eq!(
        bare, with_stale,
        "StaleIfError allocates on the success path"
    );
    assert_eq!(bare, stack, "the stack allocates on the success path");

    for accept in ["text/html", "text/plain", "application/problem+json"] {
        // The allocation counter is process-wide: a stray allocation of another thread of the
        // test harness can land in a window, so each figure is the quietest of three windows.
        let quietest = |page_bytes| {
            (0..3)
                .map(|_| bytes_per_apology(page_bytes, accept))
                .min()
                .unwrap()
        };
        let (small, allocs, sent_small) = quietest(16 * 1024);
        let (large, _, sent_large) = quietest(1024 * 1024);
        eprintln!(
            "{accept}: {small} B in {allocs} allocations per apology for a {sent_small} B body, \
             {large} B for a {sent_large} B body"
        );
        // About 1 KiB: the response's header map (six fields), its extensions (the
        // `Apologized` marker), the inner service's boxed error, and for problem+json the
        // escaped path and its length. None of it depends on the page.
        assert!(
            small < 2048,
            "{accept}: {small} bytes allocated per apology (page is 16 KiB)"
        );
        assert_eq!(
            small, large,
            "{accept}: allocation grows with the page ({small} vs {large})"
        );
    }
}
