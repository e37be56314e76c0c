//! The request path allocates nothing: a counting global allocator (stats_alloc) watches
//! 10 000 requests through a 100-endpoint balancer (peak-EWMA P2C, passive outlier tracking
//! and retry copies on). The only test in this binary, so no other test thread allocates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rampart_balance::{Balance, Picker, ServicePolicy};
use rampart_health::OutlierConfig;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::Service;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Clone, Copy)]
struct Answer;

impl Service<u64> for Answer {
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

fn one<S: Service<u64, Response = u64>>(svc: &mut S, cx: &mut Context<'_>, k: u64) {
    assert!(matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))));
    let fut = pin!(svc.call(k));
    match fut.poll(cx) {
        Poll::Ready(Ok(v)) => assert_eq!(v, k),
        _ => panic!("no answer"),
    }
}

#[test]
fn no_allocation_per_request_on_the_picking_path() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let key: fn(&u64) -> Option<u64> = |k| Some(*k);
    for picker in [
        Picker::PeakEwma,
        Picker::LeastRequest,
        Picker::RoundRobin,
        Picker::WeightedRoundRobin,
        Picker::Random,
        Picker::ConsistentHash { virtual_nodes: 100 },
    ] {
        let mut balance = Balance::builder()
            .policy(ServicePolicy::new().hash_key(key))
            .picker(picker)
            .outlier_detection(OutlierConfig::default())
            .endpoints((0..100).map(|i| (format!("e{i}"), Answer)))
            .build()
            .unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        // Warm up (thread-local RNG seeding and the like).
        for k in 0..1_000 {
            one(&mut balance, &mut cx, k);
        }
        // Another thread of the test harness may allocate now and then while we measure, so
        // the proof is: every window of 10 000 requests allocates far less than once per
        // request, and the quietest window allocates nothing at all.
        let mut windows = Vec::new();
        for _ in 0..5 {
            let region = Region::new(GLOBAL);
            for k in 0..10_000 {
                one(&mut balance, &mut cx, k);
            }
            windows.push(region.change());
        }
        assert!(
            windows.iter().all(|c| c.allocations < 100),
            "{picker:?} allocates per request: {windows:?}"
        );
        let quietest = windows
            .iter()
            .map(|c| c.allocations + c.reallocations)
            .min();
        assert_eq!(quietest, Some(0), "{picker:?}: {windows:?}");
    }
}
