//! Property tests: whatever the sequence of calls, completions and drops, the limiter never
//! has more calls in flight than its limit and never leaks a slot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proptest::prelude::*;
use rampart_health::{BoxError, Outcome};
use rampart_limit::algorithm::{Aimd, Fixed};
use rampart_limit::{Class, CoDelQueue, LimitLayer, Limiter, Permit};
use tokio::sync::oneshot;
use tower::{Layer, Service, service_fn};

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize),
    Finish(usize, u8),
    Advance(u16),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0usize..4).prop_map(Op::Acquire),
            3 => (any::<usize>(), 0u8..4).prop_map(|(i, o)| Op::Finish(i, o)),
            1 => (0u16..500).prop_map(Op::Advance),
        ],
        1..300,
    )
}

fn build(adaptive: bool, limit: usize, partitioned: bool, clock: quanta::Clock) -> Limiter {
    let mut b = Limiter::builder()
        .window_samples(2)
        .min_window(Duration::ZERO)
        .clock(clock);
    b = if adaptive {
        b.algorithm(
            Aimd::builder()
                .min_limit(1)
                .initial_limit(limit)
                .max_limit(limit * 2)
                .backoff(0.5)
                .build()
                .unwrap(),
        )
    } else {
        b.algorithm(Fixed::new(limit).unwrap())
    };
    if partitioned {
        b = b
            .partition("a", 0.5)
            .partition("b", 0.3)
            .partition("c", 0.2);
    }
    b.build().unwrap()
}

fn outcome(o: u8) -> Option<Outcome> {
    match o {
        0 => Some(Outcome::Success),
        1 => Some(Outcome::Failure),
        2 => Some(Outcome::Ignored),
        _ => None, // dropped without a verdict
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn in_flight_never_exceeds_the_limit_and_permits_never_leak(
        ops in ops(),
        limit in 1usize..12,
        adaptive in any::<bool>(),
        partitioned in any::<bool>(),
    ) {
        let (clock, mock) = quanta::Clock::mock();
        let limiter = build(adaptive, limit, partitioned, clock);
        let mut held: Vec<(usize, Permit)> = Vec::new();
        let mut admitted = 0u64;
        for op in ops {
            match op {
                Op::Acquire(class) => {
                    let class = if class == 3 { Class::Bypass } else { Class::Partition(class) };
                    if let Ok(p) = limiter.try_acquire(class)
                        && class != Class::Bypass
                    {
                        held.push((class_index(class, partitioned), p));
                        admitted += 1;
                        // Admitted only below the limit. (The limit moves only when calls
                        // finish, so this is exact; calls in flight when it falls may exceed
                        // the new limit until they finish.)
                        prop_assert!(limiter.in_flight() <= limiter.limit());
                    }
                }
                Op::Finish(i, o) => {
                    if !held.is_empty() {
                        let (_, p) = held.swap_remove(i % held.len());
                        match outcome(o) {
                            Some(o) => p.record(o),
                            None => drop(p),
                        }
                    }
                }
                Op::Advance(ms) => mock.increment(Duration::from_millis(u64::from(ms))),
            }
            let snap = limiter.snapshot();
            prop_assert_eq!(snap.in_flight, held.len());
            for (i, p) in snap.partitions.iter().enumerate() {
                prop_assert_eq!(p.in_flight, held.iter().filter(|(c, _)| *c == i).count());
            }
        }
        drop(held);
        let snap = limiter.snapshot();
        prop_assert_eq!(snap.in_flight, 0);
        prop_assert!(snap.partitions.iter().all(|p| p.in_flight == 0));
        prop_assert_eq!(snap.partitions.iter().map(|p| p.admitted).sum::<u64>(), admitted);
    }
}

fn class_index(class: Class, partitioned: bool) -> usize {
    match class {
        Class::Partition(i) if partitioned => i.min(2),
        _ => 0,
    }
}

/// A call through the service: the inner future finishes when its sender fires.
type Req = (usize, oneshot::Receiver<()>);

#[derive(Debug, Clone)]
enum CallOp {
    Call(usize),
    Poll(usize),
    Complete(usize),
    Drop(usize),
    Advance(u8),
}

fn call_ops() -> impl Strategy<Value = Vec<CallOp>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0usize..3).prop_map(CallOp::Call),
            2 => any::<usize>().prop_map(CallOp::Poll),
            2 => any::<usize>().prop_map(CallOp::Complete),
            2 => any::<usize>().prop_map(CallOp::Drop),
            1 => (0u8..50).prop_map(CallOp::Advance),
        ],
        1..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn dropped_response_futures_return_their_slots_with_or_without_a_queue(
        ops in call_ops(),
        limit in 1usize..6,
        queued in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut b = Limiter::builder()
                .algorithm(Fixed::new(limit).unwrap())
                .partition("a", 0.6)
                .partition("b", 0.4);
            if queued {
                b = b.queue(CoDelQueue::new(4).interval(Duration::from_millis(20)).target(Duration::from_millis(5)));
            }
            let limiter = b.build().unwrap();
            let mut svc = LimitLayer::new(limiter.clone())
                .partition_by(|r: &Req| Class::Partition(r.0))
                .layer(service_fn(|(_, rx): Req| async move {
                    let _ = rx.await;
                    Ok::<_, BoxError>(())
                }));
            let mut calls = Vec::new();
            // Polls a call unless it already finished.
            fn poll<F: std::future::Future>(f: &mut Option<tokio_test::task::Spawn<F>>) {
                if f.as_mut().is_some_and(|f| f.poll().is_ready()) {
                    *f = None;
                }
            }
            for op in ops {
                match op {
                    CallOp::Call(class) => {
                        let (tx, rx) = oneshot::channel();
                        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
                        let mut f = Some(tokio_test::task::spawn(svc.call((class, rx))));
                        poll(&mut f);
                        calls.push((Some(tx), f));
                    }
                    CallOp::Poll(i) if !calls.is_empty() => {
                        let n = calls.len();
                        poll(&mut calls[i % n].1);
                    }
                    CallOp::Complete(i) if !calls.is_empty() => {
                        let n = calls.len();
                        if let Some(tx) = calls[i % n].0.take() {
                            let _ = tx.send(());
                        }
                        poll(&mut calls[i % n].1);
                    }
                    CallOp::Drop(i) if !calls.is_empty() => {
                        let n = calls.len();
                        drop(calls.swap_remove(i % n));
                    }
                    CallOp::Advance(ms) => {
                        tokio::time::advance(Duration::from_millis(u64::from(ms))).await;
                        for c in &mut calls {
                            poll(&mut c.1);
                        }
                    }
                    _ => {}
                }
                prop_assert!(limiter.in_flight() <= limit);
            }
            drop(calls);
            let snap = limiter.snapshot();
            prop_assert_eq!(snap.in_flight, 0);
            prop_assert_eq!(snap.queued, 0);
            prop_assert!(snap.partitions.iter().all(|p| p.in_flight == 0));
            Ok(())
        })?;
    }
}
