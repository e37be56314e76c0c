//! Real sockets: a backend whose latency grows with its concurrency (a queue in front of a
//! fixed number of workers) behind the client-side limiter. The limit converges near the
//! backend's knee, the concurrency at which it starts queueing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::{Router, routing::get};
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart_limit::algorithm::{Gradient2, LimitAlgorithm, Vegas};
use rampart_limit::{LimitLayer, Limiter, Overloaded};
use rampart_test_support::loopback;
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt};

/// Workers in the backend: its knee.
const WORKERS: usize = 8;
const SERVICE_TIME: Duration = Duration::from_millis(5);

async fn backend() -> loopback::Server {
    let workers = Arc::new(Semaphore::new(WORKERS));
    let app = Router::new().route(
        "/",
        get(move || {
            let workers = Arc::clone(&workers);
            async move {
                // Requests beyond the workers wait in line: latency = wait + service time.
                let _worker = workers.acquire().await.unwrap();
                tokio::time::sleep(SERVICE_TIME).await;
                "ok"
            }
        }),
    );
    loopback::serve(app).await
}

/// Drives 48 closed-loop callers through the limiter for `requests` completed requests (or
/// 20 s at most); returns the average limit over the last third of the run.
async fn converge(algorithm: impl LimitAlgorithm, requests: usize) -> (f64, usize) {
    // One run at a time: two load tests sharing two cores would measure each other.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _serial = SERIAL.lock().await;
    let server = backend().await;
    let limiter = Limiter::builder()
        .name("backend")
        .algorithm(algorithm)
        .window_samples(10)
        .min_window(Duration::from_millis(10))
        .max_window(Duration::from_millis(100))
        .build()
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let svc = LimitLayer::http(limiter.clone()).layer(client);
    let done = Arc::new(AtomicUsize::new(0));
    let shed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let uri: http::Uri = format!("{}/", server.base_url()).parse().unwrap();
    let mut callers = Vec::new();
    for _ in 0..48 {
        let (svc, done, shed, stop, uri) = (
            svc.clone(),
            Arc::clone(&done),
            Arc::clone(&shed),
            Arc::clone(&stop),
            uri.clone(),
        );
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get(uri.clone()).body(Empty::new()).unwrap();
                match svc.clone().oneshot(req).await {
                    Ok(resp) => {
                        assert!(resp.status().is_success());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        assert!(Overloaded::find(&*e).is_some(), "unexpected error: {e}");
                        shed.fetch_add(1, Ordering::Relaxed);
                        // A shed request costs nothing; back off a little before the next.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
        }));
    }
    let mut samples = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::Relaxed) < requests && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        samples.push(limiter.limit());
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    drop(server);
    assert_eq!(limiter.in_flight(), 0, "every slot returned");
    let tail = &samples[samples.len() * 2 / 3..];
    let avg = tail.iter().sum::<usize>() as f64 / tail.len() as f64;
    eprintln!(
        "{}: {} done, {} shed, limit over the last third {avg:.1} (min {}, max {}), knee {WORKERS}",
        limiter.snapshot().algorithm,
        done.load(Ordering::Relaxed),
        shed.load(Ordering::Relaxed),
        tail.iter().min().unwrap(),
        tail.iter().max().unwrap(),
    );
    (avg, done.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradient2_client_limit_converges_near_the_backends_knee() {
    // Windows here last ~10 ms instead of the usual ~1 s: scale the baseline's memory
    // (600 windows by default) to a comparable time, 30 s. Gradient2 then settles where
    // latency is `rtt_tolerance` (1.5) × the baseline, plus its queue allowance (4):
    // about 1.5 × 8 + 4 = 16.
    let alg = Gradient2::builder()
        .initial_limit(2)
        .min_limit(1)
        .max_limit(200)
        .long_window(3000)
        .build()
        .unwrap();
    let (avg, done) = converge(alg, 3000).await;
    assert!(done > 500, "the backend kept serving: {done}");
    let knee = WORKERS as f64;
    // Looser than Vegas: the baseline is an average that drifts up under sustained queueing
    // (by design: it must not ratchet down), and client-side overhead on a busy machine adds
    // to it. Far from the maximum of 200 all the same.
    assert!(
        (knee * 0.5..=knee * 4.0).contains(&avg),
        "limit {avg:.1} is not near the knee {knee}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vegas_client_limit_converges_near_the_backends_knee() {
    // Vegas settles where its queue estimate lies between 3 and 6: about 8 + 5 = 13.
    let alg = Vegas::builder()
        .initial_limit(2)
        .min_limit(1)
        .max_limit(200)
        .build()
        .unwrap();
    let (avg, done) = converge(alg, 3000).await;
    assert!(done > 500, "the backend kept serving: {done}");
    let knee = WORKERS as f64;
    assert!(
        (knee * 0.5..=knee * 2.5).contains(&avg),
        "limit {avg:.1} is not near the knee {knee}"
    );
}
