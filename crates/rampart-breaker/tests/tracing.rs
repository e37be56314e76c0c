//! Every transition, rejection and slow call is a `tracing` event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use rampart_breaker::{BreakerEvent, BreakerHandle, BreakerState, Policy, SlidingWindow};
use rampart_health::Outcome;
use rampart_test_support::tracing::Capture;
use tracing::Level;

/// `(level, message)` of every captured event, in order.
fn messages(capture: &Capture) -> Vec<(Level, String)> {
    capture
        .events()
        .into_iter()
        .map(|e| (e.level, e.message))
        .collect()
}

#[test]
fn transitions_rejections_and_slow_calls_are_traced() {
    let capture = Arc::new(Capture::default());
    tracing::subscriber::with_default(capture.clone(), || {
        let b = BreakerHandle::new(
            Policy::builder()
                .sliding_window(SlidingWindow::count(2))
                .minimum_calls(2)
                .slow_call_duration(Duration::from_millis(10))
                .build()
                .unwrap(),
        );
        b.try_acquire()
            .unwrap()
            .record_with_duration(Outcome::Success, Duration::from_millis(20));
        b.try_acquire().unwrap().record(Outcome::Failure);
        assert!(b.try_acquire().is_err());
        b.reset();
    });
    assert_eq!(
        messages(&capture),
        vec![
            (Level::INFO, "slow call".to_string()),
            (Level::WARN, "circuit breaker opened".to_string()),
            (Level::DEBUG, "call rejected by circuit breaker".to_string()),
            (Level::INFO, "circuit breaker changed state".to_string()),
        ]
    );
}

/// Drives a breaker through every kind of transition: each one is a tracing event and a
/// broadcast `BreakerEvent`, in the same order; so is every rejection.
#[tokio::test(start_paused = true)]
async fn every_transition_and_rejection_is_traced_and_broadcast() {
    use BreakerState::{Closed, Disabled, ForcedOpen, HalfOpen, MetricsOnly, Open};
    use Outcome::{Failure as F, Success as S};
    use tokio::time::advance;

    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    let b = BreakerHandle::new(
        Policy::builder()
            .sliding_window(SlidingWindow::count(2))
            .minimum_calls(2)
            .open_duration(Duration::from_secs(1))
            .open_jitter(0.0)
            .permitted_calls_in_half_open(1)
            .max_wait_in_half_open(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    let mut rx = b.subscribe();
    let call = |o: Outcome| b.try_acquire().unwrap().record(o);
    let mut rejections = 0;

    call(F);
    call(F); // closed -> open (failure rate)
    assert!(b.try_acquire().is_err());
    rejections += 1;
    advance(Duration::from_secs(1)).await;
    call(S); // open -> half-open, then half-open -> closed
    call(F);
    call(F); // closed -> open
    advance(Duration::from_secs(1)).await;
    call(F); // open -> half-open, half-open -> open (verdict); 2 s now
    advance(Duration::from_secs(2)).await;
    let hung = b.try_acquire().unwrap(); // open -> half-open
    assert!(b.try_acquire().is_err(), "the only permit is taken");
    rejections += 1;
    advance(Duration::from_secs(10)).await;
    assert!(b.try_acquire().is_err()); // half-open -> open (timed out), rejected
    rejections += 1;
    drop(hung);
    b.force_open();
    assert!(b.try_acquire().is_err());
    rejections += 1;
    b.disable();
    b.metrics_only();
    b.reset();

    let expected = [
        (Closed, Open),
        (Open, HalfOpen),
        (HalfOpen, Closed),
        (Closed, Open),
        (Open, HalfOpen),
        (HalfOpen, Open),
        (Open, HalfOpen),
        (HalfOpen, Open),
        (Open, ForcedOpen),
        (ForcedOpen, Disabled),
        (Disabled, MetricsOnly),
        (MetricsOnly, Closed),
    ];
    let events: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let broadcast: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            BreakerEvent::Transition { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(broadcast, expected);
    // The `from` and `to` fields of every transition event, in order.
    let traced: Vec<(String, String)> = capture
        .events()
        .into_iter()
        .filter_map(|e| Some((e.fields.get("from")?.clone(), e.fields.get("to")?.clone())))
        .collect();
    let expected_names: Vec<_> = expected
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(traced, expected_names);
    let rejected_broadcast = events
        .iter()
        .filter(|e| matches!(e, BreakerEvent::Rejected { .. }))
        .count();
    let rejected_traced = messages(&capture)
        .iter()
        .filter(|(level, m)| *level == Level::DEBUG && m == "call rejected by circuit breaker")
        .count();
    assert_eq!(
        (rejected_broadcast, rejected_traced),
        (rejections, rejections)
    );
}
