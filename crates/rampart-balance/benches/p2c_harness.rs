//! The balancer against tower's `p2c::Balance` in the harness an application is: a tokio
//! runtime driving `svc.ready().await?.call(x).await` in a loop, side by side with the
//! harness of `benches/pick.rs` (`poll_ready` + `call` polled by hand with a no-op waker), in
//! one run, at 3, 100 and 1 000 always-ready endpoints.
//!
//! `cargo bench -p rampart-balance --bench p2c_harness` (`P2C_SIZES=3,1000` limits the sizes,
//! `P2C_ROUNDS` sets the rounds, default 9).
//!
//! Each round builds both balancers afresh and times 2 000 000 requests through each in each
//! harness, interleaved, on the measuring thread's on-CPU time (`rampart_test_support::bench`;
//! the kernel accounts it in scheduler ticks, 4 ms on a 250 Hz kernel, so a stretch must be
//! long: at 2 000 000 requests of 80 ns, 40 ticks, a tick is 2.5 %);
//! the table shows the median over the rounds, and for the polled harness also the best round
//! (what `pick.rs` reports), with the ratios rampart / tower. A bare endpoint (no balancer) in
//! each harness gives that harness's own floor.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;

use rampart_balance::{Balance, ServicePolicy};
use rampart_health::OutlierConfig;
use rampart_test_support::bench::{self, median};
use tower::Service;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};

const SIZES: [usize; 3] = [3, 100, 1_000];
const REQUESTS: u64 = 2_000_000;

/// An endpoint that is always ready and answers at once.
#[derive(Clone, Copy)]
struct Instant200;

impl Service<u64> for Instant200 {
    type Response = u64;
    type Error = std::io::Error;
    type Future = Ready<Result<u64, std::io::Error>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

type Tower = tower::balance::p2c::Balance<
    PendingRequestsDiscover<tower::discover::ServiceList<Vec<Instant200>>, CompleteOnResponse>,
    u64,
>;

fn tower_balance(n: usize) -> Tower {
    let list = tower::discover::ServiceList::new(vec![Instant200; n]);
    tower::balance::p2c::Balance::new(PendingRequestsDiscover::new(
        list,
        CompleteOnResponse::default(),
    ))
}

/// The same configuration as `pick.rs`: peak-EWMA P2C, passive outlier tracking on.
fn rampart_balance(n: usize) -> Balance<Instant200, ServicePolicy> {
    Balance::builder()
        .policy(ServicePolicy::new())
        .outlier_detection(OutlierConfig::default())
        .endpoints((0..n).map(|i| (format!("10.0.{}.{}:80", i / 256, i % 256), Instant200)))
        .build()
        .unwrap()
}

/// ns per request through `svc` in the tokio harness (inside `rt`).
fn on_tokio<S: Service<u64>>(rt: &tokio::runtime::Runtime, svc: &mut S) -> f64
where
    S::Error: std::fmt::Debug,
{
    // Warm up (the first `poll_ready` discovers every endpoint).
    rt.block_on(async {
        for i in 0..1_000 {
            assert!(bench::ready_call(svc, i).await);
        }
    });
    let t = bench::timed(|| {
        rt.block_on(async {
            for i in 0..REQUESTS {
                black_box(bench::ready_call(svc, black_box(i)).await);
            }
        });
    });
    t.as_nanos() as f64 / REQUESTS as f64
}

/// ns per request through `svc` polled with a no-op waker (inside `rt`'s context, as
/// `pick.rs`).
fn polled<S: Service<u64>>(rt: &tokio::runtime::Runtime, svc: &mut S) -> f64 {
    let _guard = rt.enter();
    for i in 0..1_000 {
        assert!(bench::drive(svc, i));
    }
    let t = bench::timed(|| {
        for i in 0..REQUESTS {
            black_box(bench::drive(svc, black_box(i)));
        }
    });
    t.as_nanos() as f64 / REQUESTS as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let sizes: Vec<usize> = std::env::var("P2C_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| SIZES.to_vec());
    let rounds: usize = std::env::var("P2C_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);

    // (harness floor) bare endpoint in each harness.
    let (mut bare_tokio, mut bare_polled) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        bare_tokio.push(on_tokio(&rt, &mut Instant200));
        bare_polled.push(polled(&rt, &mut Instant200));
    }
    println!(
        "\nharness floor (bare endpoint, median ns/request): tokio {:.1}, polled {:.1}",
        median(&bare_tokio),
        median(&bare_polled)
    );
    println!(
        "\n{:>6} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6}",
        "size",
        "tower",
        "rampart",
        "ratio",
        "tower",
        "rampart",
        "ratio",
        "tower",
        "rampart",
        "ratio"
    );
    println!(
        "{:>6} | {:^26} | {:^26} | {:^26}",
        "", "tokio ready().await, median", "polled, median", "polled, best round"
    );
    for &n in &sizes {
        let (mut tt, mut rt_, mut tp, mut rp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let _guard = rt.enter();
            let (mut t, mut r) = (tower_balance(n), rampart_balance(n));
            drop(_guard);
            tt.push(on_tokio(&rt, &mut t));
            rt_.push(on_tokio(&rt, &mut r));
            tp.push(polled(&rt, &mut t));
            rp.push(polled(&rt, &mut r));
            std::thread::sleep(Duration::from_millis(5));
        }
        let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let (a, b) = (median(&tt), median(&rt_));
        let (c, d) = (median(&tp), median(&rp));
        let (e, f) = (best(&tp), best(&rp));
        println!(
            "{n:>6} | {a:>9.1} {b:>9.1} {:>6.2} | {c:>9.1} {d:>9.1} {:>6.2} | {e:>9.1} {f:>9.1} {:>6.2}",
            b / a,
            d / c,
            f / e
        );
    }
}
