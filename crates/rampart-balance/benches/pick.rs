//! Per-request cost of picking an endpoint: tower's `p2c::Balance` (with
//! `PendingRequestsDiscover`) against rampart's `Balance` (peak-EWMA P2C, passive outlier
//! tracking on, retry copies on), over 3, 100, 1 000 and 10 000 always-ready endpoints.
//!
//! Each iteration is one whole request through the balancer: `poll_ready`, `call`, and polling
//! the response future to completion (the endpoint answers at once), so the figure is the
//! balancer's own overhead. After criterion's groups, a summary prints both figures per size,
//! the ratio, and the growth from 3 to 10 000 endpoints.
//!
//! `cargo bench -p rampart-balance --bench pick -- --warm-up-time 1 --measurement-time 3`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use rampart_balance::{Balance, ServicePolicy};
use rampart_health::OutlierConfig;
use tower::Service;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};

const SIZES: [usize; 4] = [3, 100, 1_000, 10_000];

/// An endpoint that is always ready and answers at once.
#[derive(Clone, Copy)]
struct Instant200;

impl Service<u32> for Instant200 {
    type Response = u32;
    type Error = std::io::Error;
    type Future = Ready<Result<u32, std::io::Error>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u32) -> Self::Future {
        ready(Ok(req))
    }
}

/// One request through `svc`, driven with a no-op waker.
#[inline]
fn one<S: Service<u32, Response = u32>>(svc: &mut S, cx: &mut Context<'_>) -> u32
where
    S::Error: std::fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("balancer not ready"),
    }
    let fut = pin!(svc.call(black_box(7)));
    match fut.poll(cx) {
        Poll::Ready(Ok(v)) => v,
        _ => panic!("endpoint did not answer at once"),
    }
}

type Tower = tower::balance::p2c::Balance<
    PendingRequestsDiscover<tower::discover::ServiceList<Vec<Instant200>>, CompleteOnResponse>,
    u32,
>;

fn tower_balance(n: usize) -> Tower {
    let list = tower::discover::ServiceList::new(vec![Instant200; n]);
    let mut b = tower::balance::p2c::Balance::new(PendingRequestsDiscover::new(
        list,
        CompleteOnResponse::default(),
    ));
    let mut cx = Context::from_waker(Waker::noop());
    // The first poll_ready discovers every endpoint.
    for _ in 0..4 {
        one(&mut b, &mut cx);
    }
    b
}

fn rampart_balance(n: usize) -> Balance<Instant200, ServicePolicy> {
    let balance = Balance::builder()
        .policy(ServicePolicy::new())
        .outlier_detection(OutlierConfig::default())
        .endpoints((0..n).map(|i| (format!("10.0.{}.{}:80", i / 256, i % 256), Instant200)))
        .build()
        .unwrap();
    let mut b = balance;
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..4 {
        one(&mut b, &mut cx);
    }
    b
}

/// Best-of-`rounds` nanoseconds per request.
fn per_request<S: Service<u32, Response = u32>>(svc: &mut S, iters: u32, rounds: u32) -> f64
where
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(one(svc, &mut cx));
        }
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    best
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut group = criterion.benchmark_group("pick");
        for n in SIZES {
            let mut t = tower_balance(n);
            group.bench_with_input(
                BenchmarkId::new("tower_p2c_pending_requests", n),
                &n,
                |b, _| {
                    let mut cx = Context::from_waker(Waker::noop());
                    b.iter(|| one(&mut t, &mut cx));
                },
            );
            let mut r = rampart_balance(n);
            group.bench_with_input(BenchmarkId::new("rampart_peak_ewma", n), &n, |b, _| {
                let mut cx = Context::from_waker(Waker::noop());
                b.iter(|| one(&mut r, &mut cx));
            });
        }
        group.finish();
    }
    criterion.final_summary();

    // Same-run summary: interleaved best-of-7 rounds, so both see the same machine state.
    // `PICK_SIZES=3,10000` limits the sizes (for profiling one size).
    let sizes: Vec<usize> = std::env::var("PICK_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| SIZES.to_vec());
    println!("\nsummary (best of 7 rounds of 200 000 requests, ns per request):");
    println!(
        "{:>8} {:>10} {:>10} {:>8}",
        "size", "tower", "rampart", "ratio"
    );
    let mut first = None;
    let mut last = 0.0;
    for &n in &sizes {
        let mut t = tower_balance(n);
        let mut r = rampart_balance(n);
        let (mut tn, mut rn) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..7 {
            tn = tn.min(per_request(&mut t, 200_000, 1));
            rn = rn.min(per_request(&mut r, 200_000, 1));
        }
        println!("{n:>8} {tn:>10.1} {rn:>10.1} {:>8.2}", rn / tn);
        first.get_or_insert(rn);
        last = rn;
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(first) = first {
        println!(
            "rampart growth {} -> {} endpoints: {:.2}x",
            sizes.first().copied().unwrap_or(0),
            sizes.last().copied().unwrap_or(0),
            last / first
        );
    }
}
