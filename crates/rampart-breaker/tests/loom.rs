//! Model checks of the lock-free state machine with loom.
//!
//! `RUSTFLAGS="--cfg rampart_loom" CARGO_TARGET_DIR=target/loom cargo test -p rampart-breaker --release --test loom`
#![cfg(rampart_loom)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use loom::thread;
use rampart_breaker::{BreakerEvent, BreakerHandle, BreakerState, Policy, SlidingWindow};
use rampart_health::Outcome;

fn policy(window: u32, threshold: f64, permits: u32) -> Policy {
    Policy::builder()
        .sliding_window(SlidingWindow::count(window))
        .minimum_calls(window)
        .failure_rate_threshold(threshold)
        .permitted_calls_in_half_open(permits)
        .open_duration(Duration::from_millis(10))
        .open_jitter(0.0)
        .build()
        .unwrap()
}

/// A breaker that has been open for its whole open duration: the next call is a trial.
fn elapsed_open(permits: u32) -> BreakerHandle {
    let clock = StdArc::new(AtomicU64::new(0));
    let b = BreakerHandle::with_manual_clock(policy(1, 50.0, permits), clock.clone());
    b.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(b.state(), BreakerState::Open);
    clock.store(10, Ordering::SeqCst);
    b
}

#[test]
fn half_open_never_admits_more_than_its_permits() {
    loom::model(|| {
        // Half-open with 2 permits, one taken: two racing calls compete for the last one.
        let b = elapsed_open(2);
        let first = b.try_acquire().unwrap();
        let t = {
            let b = b.clone();
            thread::spawn(move || b.try_acquire().ok())
        };
        let mine = b.try_acquire().ok();
        let theirs = t.join().unwrap();
        let admitted = usize::from(mine.is_some()) + usize::from(theirs.is_some());
        assert_eq!(
            admitted, 1,
            "exactly one of two racing calls gets the last permit"
        );
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.snapshot().half_open_in_flight, 2);
        drop(first);
    });
}

#[test]
fn a_trip_is_never_lost() {
    loom::model(|| {
        // Two failures in a window of two at 100 %: whoever records last must see both.
        let clock = StdArc::new(AtomicU64::new(0));
        let b = BreakerHandle::with_manual_clock(policy(2, 100.0, 1), clock);
        let mut events = b.subscribe();
        let t = {
            let b = b.clone();
            thread::spawn(move || {
                if let Ok(p) = b.try_acquire() {
                    p.record(Outcome::Failure);
                }
            })
        };
        if let Ok(p) = b.try_acquire() {
            p.record(Outcome::Failure);
        }
        t.join().unwrap();
        assert_eq!(b.state(), BreakerState::Open);
        let opened = std::iter::from_fn(|| events.try_recv().ok())
            .filter(|e| {
                matches!(
                    e,
                    BreakerEvent::Transition {
                        to: BreakerState::Open,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(opened, 1, "exactly one thread performs the transition");
    });
}

#[test]
fn permits_are_never_leaked() {
    loom::model(|| {
        let b = elapsed_open(2);
        let first = b.try_acquire().unwrap(); // moves the breaker to half-open
        let t = {
            let b = b.clone();
            thread::spawn(move || {
                // A cancelled trial: taken and dropped without a verdict.
                drop(b.try_acquire());
            })
        };
        first.record(Outcome::Ignored); // an ignored outcome returns its permit
        t.join().unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.snapshot().half_open_in_flight, 0);
        let again: Vec<_> = (0..2).map(|_| b.try_acquire()).collect();
        assert!(
            again.iter().all(Result::is_ok),
            "both permits are available again"
        );
    });
}

#[test]
fn the_half_open_verdict_is_reached_exactly_once() {
    loom::model(|| {
        let b = elapsed_open(2);
        let mut events = b.subscribe();
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        let t = thread::spawn(move || p1.record(Outcome::Success));
        p2.record(Outcome::Success);
        t.join().unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
        let closed = std::iter::from_fn(|| events.try_recv().ok())
            .filter(|e| {
                matches!(
                    e,
                    BreakerEvent::Transition {
                        to: BreakerState::Closed,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(closed, 1);
    });
}

#[test]
fn a_verdict_racing_the_half_open_timeout_leaves_exactly_one_transition() {
    loom::model(|| {
        let clock = StdArc::new(AtomicU64::new(0));
        let b = BreakerHandle::with_manual_clock(policy(1, 50.0, 1), clock.clone());
        b.try_acquire().unwrap().record(Outcome::Failure);
        clock.store(10, Ordering::SeqCst);
        let trial = b.try_acquire().unwrap();
        // The trial completes just as max_wait_in_half_open (30 s by default) runs out.
        clock.store(10 + 30_000, Ordering::SeqCst);
        let mut events = b.subscribe();
        let t = thread::spawn(move || trial.record(Outcome::Success));
        let admitted = b.try_acquire().is_ok();
        t.join().unwrap();
        let left_half_open: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
            .filter_map(|e| match e {
                BreakerEvent::Transition {
                    from: BreakerState::HalfOpen,
                    to,
                    ..
                } => Some(to),
                _ => None,
            })
            .collect();
        assert_eq!(left_half_open.len(), 1, "{left_half_open:?}");
        // Either the verdict closed it (and the call was admitted), or the timeout re-opened
        // it (the call was rejected and the late verdict was stale).
        assert_eq!(b.state(), left_half_open[0]);
        assert_eq!(admitted, b.state() == BreakerState::Closed);
    });
}

#[test]
fn a_time_window_trip_is_never_lost() {
    loom::model(|| {
        let clock = StdArc::new(AtomicU64::new(0));
        let policy = Policy::builder()
            .sliding_window(SlidingWindow::time_with_buckets(Duration::from_secs(1), 1))
            .minimum_calls(2)
            .failure_rate_threshold(100.0)
            .build()
            .unwrap();
        let b = BreakerHandle::with_manual_clock(policy, clock);
        let t = {
            let b = b.clone();
            thread::spawn(move || b.try_acquire().unwrap().record(Outcome::Failure))
        };
        b.try_acquire().unwrap().record(Outcome::Failure);
        t.join().unwrap();
        assert_eq!(b.state(), BreakerState::Open);
    });
}
