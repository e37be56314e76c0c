//! A flood of one-hit keys against the stale-if-error cache: the pages read often survive it,
//! and the memory the cache really holds stays close to its byte bound.
//!
//! Requests are built as hyper builds them: the URI and `Host` are slices of a connection's
//! read buffer, the response body a slice of the client's read buffer. Bytes are counted with
//! `stats_alloc`'s instrumented system allocator; this file holds a single test so that no
//! other test thread allocates while it measures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body as _;
use http_body_util::Full;
use rampart_fallback::{STALE_HEADER, StaleIfErrorLayer};
use rampart_health::BoxError;
use rampart_test_support::poll::poll_ready;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const MAX_BYTES: u64 = 4 << 20;
const POPULAR: usize = 20;
const FLOOD: usize = 60_000;
/// hyper's initial read buffer.
const READ_BUFFER: usize = 8 * 1024;

/// Polls a future that completes without waiting (everything here is immediate).
fn now<F: Future>(f: F) -> F::Output {
    poll_ready(f, 1).expect("an immediate result")
}

/// A request whose URI and `Host` are slices of a fresh connection read buffer.
fn request(path_and_query: &str) -> Request<()> {
    let n = path_and_query.len();
    let mut buf = vec![0u8; READ_BUFFER];
    buf[..n].copy_from_slice(path_and_query.as_bytes());
    buf[n..n + 12].copy_from_slice(b"shop.example");
    let buf = Bytes::from(buf);
    let mut req = Request::new(());
    *req.uri_mut() = Uri::from_maybe_shared(buf.slice(..n)).unwrap();
    req.headers_mut().insert(
        http::header::HOST,
        HeaderValue::from_maybe_shared(buf.slice(n..n + 12)).unwrap(),
    );
    req.headers_mut()
        .insert(http::header::ACCEPT, HeaderValue::from_static("text/html"));
    req
}

/// A cacheable page of about 1 KiB, its body a slice of a 16 KiB client read buffer.
fn page(path: &str) -> Response<Full<Bytes>> {
    let mut buf = vec![0u8; 16 * 1024];
    buf[..path.len()].copy_from_slice(path.as_bytes());
    let body = Bytes::from(buf).slice(..1024);
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "public, max-age=30, stale-if-error=86400")
        .header("etag", "\"v1\"")
        .header("x-served-by", "catalog-us-east-2")
        .body(Full::new(body))
        .unwrap()
}

/// Sends one GET and reads the body to its end (as a server does); returns whether it was
/// served from the stale cache.
fn get<S>(svc: &mut S, path: &str) -> bool
where
    S: Service<Request<()>, Response = Response<rampart_fallback::StaleBody<Full<Bytes>>>>,
    S::Error: std::fmt::Debug,
{
    now(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap();
    let resp = now(svc.call(request(path))).unwrap();
    let stale = resp.headers().contains_key(STALE_HEADER);
    assert_eq!(resp.status(), 200, "{path}");
    let mut body = pin!(resp.into_body());
    while let Poll::Ready(Some(frame)) = body
        .as_mut()
        .poll_frame(&mut Context::from_waker(Waker::noop()))
    {
        frame.unwrap();
    }
    stale
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_one_hit_keys_keeps_the_popular_pages_and_the_byte_bound() {
    // Warm up lazily initialised statics (tracing call sites, moka's clock) outside the count.
    {
        let warm = StaleIfErrorLayer::builder().build().unwrap();
        let mut svc = warm.layer(service_fn(|req: Request<()>| {
            std::future::ready(Ok::<_, BoxError>(page(req.uri().path())))
        }));
        for i in 0..100 {
            get(&mut svc, &format!("/warm/{i}"));
        }
        let _ = warm.snapshot();
    }

    let region = Region::new(GLOBAL);
    let failing = Arc::new(AtomicBool::new(false));
    let stale = StaleIfErrorLayer::builder()
        .max_bytes(MAX_BYTES)
        .max_entry_bytes(64 * 1024)
        .build()
        .unwrap();
    let backend = {
        let failing = Arc::clone(&failing);
        service_fn(move |req: Request<()>| {
            let resp = if failing.load(Ordering::Relaxed) {
                Response::builder()
                    .status(503)
                    .body(Full::new(Bytes::from_static(b"down")))
                    .unwrap()
            } else {
                page(req.uri().path())
            };
            std::future::ready(Ok::<_, BoxError>(resp))
        })
    };
    let mut svc = stale.layer(backend);

    // The popular pages, read a few times over a few seconds.
    for _ in 0..5 {
        for i in 0..POPULAR {
            get(&mut svc, &format!("/products/{i}"));
        }
        tokio::time::advance(Duration::from_millis(1100)).await;
    }
    let warmed = stale.snapshot();
    assert_eq!(warmed.entries, POPULAR as u64, "{warmed:?}");

    // The flood: every request a key of its own, each read once.
    for n in 0..FLOOD {
        get(&mut svc, &format!("/search?q=x{n}"));
        if n % 10_000 == 0 {
            assert!(stale.snapshot().bytes <= MAX_BYTES);
        }
    }
    let flooded = stale.snapshot();
    let held = region.change();
    let net = held.bytes_allocated as i64 - held.bytes_deallocated as i64;
    eprintln!(
        "after {FLOOD} one-hit requests: {} entries, weighted {} B of a {MAX_BYTES} B bound; \
         heap held {net} B ({:.2}x the bound, {:.2}x the weighted size)",
        flooded.entries,
        flooded.bytes,
        net as f64 / MAX_BYTES as f64,
        net as f64 / flooded.bytes as f64,
    );
    assert!(flooded.bytes <= MAX_BYTES, "{flooded:?}");
    // Honest weights: the cache holds no more than it says it holds (but for its fixed
    // tables, 72 KiB), and so stays within 1.5x of the bound. The counter sees the sizes
    // asked for; the weights also count the allocator's rounding, so they sit a little above.
    assert!(
        net as f64 <= 1.5 * MAX_BYTES as f64,
        "the cache holds {net} B for a bound of {MAX_BYTES} B"
    );
    assert!(
        net <= flooded.bytes as i64 + 128 * 1024,
        "the cache holds {net} B but weighs {} B",
        flooded.bytes
    );
    // ... and not far above: the bound is not spent on imagined costs.
    assert!(
        net as f64 >= 0.7 * flooded.bytes as f64,
        "the cache holds {net} B but weighs {} B",
        flooded.bytes
    );

    // The catalog goes down: every popular page is still answered, from its stale copy.
    failing.store(true, Ordering::Relaxed);
    let survived = (0..POPULAR)
        .filter(|i| get(&mut svc, &format!("/products/{i}")))
        .count();
    assert_eq!(
        survived, POPULAR,
        "{survived} of {POPULAR} popular pages survived the flood"
    );
}
