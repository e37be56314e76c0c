//! The cost of hedging and deadline support when nothing is slow: one request through
//! `Balance` (peak-EWMA P2C over 3 always-ready endpoints that answer at once) with a policy
//! that neither hedges nor knows deadlines, against the same balancer with hedging on
//! (`Hedge::fixed(10 ms)`, every request hedgeable) and a deadline on every request (checked
//! before the attempt, written into the request).
//!
//! `cargo bench -p rampart-balance --bench hedge`
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

use rampart_balance::{Balance, BalancePolicy, Hedge};
use rampart_health::{BoxError, Deadline, Outcome};
use tower::Service;

/// A request that may carry a deadline.
#[derive(Clone, Copy)]
struct Req {
    deadline: Option<Deadline>,
    /// Where `write_deadline` leaves its mark.
    written: u64,
}

#[derive(Clone, Copy)]
struct Instant200;

impl Service<Req> for Instant200 {
    type Response = u64;
    type Error = std::io::Error;
    type Future = Ready<Result<u64, std::io::Error>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Req) -> Self::Future {
        ready(Ok(req.written))
    }
}

/// Replays every request; hedges and reads deadlines only when `features` is on.
struct Policy {
    features: bool,
}

impl BalancePolicy<Req, u64> for Policy {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(*req)
    }
    fn classify(&self, result: Result<&u64, &BoxError>) -> Outcome {
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
    fn hedgeable(&self, _: &Req) -> bool {
        self.features
    }
    fn deadline(&self, req: &Req) -> Option<Deadline> {
        if self.features { req.deadline } else { None }
    }
    fn write_deadline(&self, req: &mut Req, remaining: Duration) {
        req.written = remaining.as_millis() as u64;
    }
}

fn balance(features: bool) -> Balance<Instant200, Policy> {
    let mut b = Balance::builder()
        .policy(Policy { features })
        .endpoints((0..3).map(|i| (format!("10.0.0.{i}:80"), Instant200)));
    if features {
        b = b.hedge(Hedge::fixed(Duration::from_millis(10)));
    }
    b.build().unwrap()
}

fn one(svc: &mut Balance<Instant200, Policy>, req: Req, cx: &mut Context<'_>) -> u64 {
    match Service::<Req>::poll_ready(svc, cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("balancer not ready"),
    }
    let fut = pin!(svc.call(black_box(req)));
    match fut.poll(cx) {
        Poll::Ready(Ok(v)) => v,
        _ => panic!("endpoint did not answer at once"),
    }
}

fn per_request(svc: &mut Balance<Instant200, Policy>, req: Req, iters: u32) -> f64 {
    let mut cx = Context::from_waker(Waker::noop());
    let start = Instant::now();
    for _ in 0..iters {
        black_box(one(svc, req, &mut cx));
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let plain_req = Req {
        deadline: None,
        written: 0,
    };
    let deadline_req = Req {
        deadline: Some(Deadline::after(Duration::from_secs(3600))),
        written: 0,
    };
    let mut off = balance(false);
    let mut on = balance(true);
    // Warm up, then interleaved best-of-9 rounds so both see the same machine state.
    per_request(&mut off, plain_req, 100_000);
    per_request(&mut on, deadline_req, 100_000);
    let (mut a, mut b, mut c) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..9 {
        a = a.min(per_request(&mut off, plain_req, 200_000));
        b = b.min(per_request(&mut on, plain_req, 200_000));
        c = c.min(per_request(&mut on, deadline_req, 200_000));
    }
    println!("ns per request (best of 9 rounds of 200 000), 3 endpoints answering at once:");
    println!("  without hedging and deadlines: {a:.1}");
    println!("  hedging on, no deadline:       {b:.1} ({:+.1})", b - a);
    println!("  hedging on + a deadline:       {c:.1} ({:+.1})", c - a);
    println!(
        "  (tokio's test-util feature, on in benches, makes each clock read of a deadline cost \
         more than in a release build without it)"
    );
}
