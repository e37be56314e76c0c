//! Resilience4j's state-machine scenarios, on the paused tokio clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rampart_breaker::{
    BreakerEvent, BreakerHandle, BreakerOpen, BreakerState, Policy, PolicyBuilder, SlidingWindow,
    TransitionReason,
};
use rampart_health::{BoxError, Outcome, is_never_reached, retry_after};
use tokio::time::advance;

fn policy() -> PolicyBuilder {
    Policy::builder()
        .sliding_window(SlidingWindow::count(10))
        .minimum_calls(5)
        .failure_rate_threshold(50.0)
        .open_duration(Duration::from_secs(1))
        .max_open_duration(Duration::from_secs(4))
        .open_jitter(0.0)
        .permitted_calls_in_half_open(2)
        .max_wait_in_half_open(Duration::from_secs(10))
}

fn call(b: &BreakerHandle, outcome: Outcome) {
    b.try_acquire().expect("admitted").record(outcome);
}

fn calls(b: &BreakerHandle, outcomes: &[Outcome]) {
    for o in outcomes {
        call(b, *o);
    }
}

use Outcome::{Failure as F, Ignored as I, Success as S};

/// Drives a breaker from closed to open.
fn trip(b: &BreakerHandle) {
    calls(b, &[F, F, F, F, F]);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn nine_failures_never_open_with_minimum_ten() {
    let b = BreakerHandle::new(policy().minimum_calls(10).build().unwrap());
    calls(&b, &[F; 9]);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(
        b.snapshot().failure_rate,
        None,
        "below the minimum there is no rate"
    );
    call(&b, F);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn three_failures_and_one_success_stay_closed_the_fifth_call_opens() {
    let b = BreakerHandle::new(policy().build().unwrap());
    calls(&b, &[F, F, F, S]);
    assert_eq!(b.state(), BreakerState::Closed);
    // The fifth call, a success, makes it 3 of 5 = 60 % >= 50 %.
    call(&b, S);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_rate_exactly_at_the_threshold_opens() {
    let b = BreakerHandle::new(policy().minimum_calls(10).build().unwrap());
    calls(&b, &[S, F, S, F, S, F, S, F, S]);
    assert_eq!(b.state(), BreakerState::Closed);
    call(&b, F); // 5 of 10 = 50 %
    assert_eq!(b.state(), BreakerState::Open);

    let below = BreakerHandle::new(policy().minimum_calls(10).build().unwrap());
    calls(&below, &[S, F, S, F, S, F, S, F, S, S]); // 40 %
    assert_eq!(below.state(), BreakerState::Closed);
    assert_eq!(below.snapshot().failure_rate, Some(40.0));
}

#[tokio::test(start_paused = true)]
async fn the_window_forgets_calls_older_than_its_size() {
    let b = BreakerHandle::new(
        policy()
            .sliding_window(SlidingWindow::count(5))
            .build()
            .unwrap(),
    );
    calls(&b, &[F, F, S, S, S]); // 40 %
    calls(&b, &[S, S, F]); // the last five: S S S S F
    let snap = b.snapshot();
    assert_eq!((snap.calls, snap.failures), (5, 1));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_successes_count_toward_the_slow_call_rate() {
    let b = BreakerHandle::new(
        policy()
            .minimum_calls(4)
            .slow_call_duration(Duration::from_millis(500))
            .slow_call_rate_threshold(50.0)
            .build()
            .unwrap(),
    );
    let mut events = b.subscribe();
    for slow in [false, true, false] {
        let permit = b.try_acquire().unwrap();
        advance(Duration::from_millis(if slow { 600 } else { 10 })).await;
        permit.record(S);
    }
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "1 slow of 3 is below the minimum"
    );
    let permit = b.try_acquire().unwrap();
    advance(Duration::from_millis(500)).await; // exactly the slow-call duration: slow
    permit.record(S);
    assert_eq!(b.state(), BreakerState::Open, "2 slow of 4 = 50 %");
    let mut slow_events = 0;
    let mut reason = None;
    while let Ok(e) = events.try_recv() {
        match e {
            BreakerEvent::SlowCall { outcome, .. } => {
                assert_eq!(outcome, S);
                slow_events += 1;
            }
            BreakerEvent::Transition { reason: r, .. } => reason = Some(r),
            _ => {}
        }
    }
    assert_eq!(slow_events, 2);
    assert_eq!(reason, Some(TransitionReason::SlowCallRate(50.0)));
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_it_regardless_of_the_window() {
    let b = BreakerHandle::new(
        policy()
            .minimum_calls(10)
            .consecutive_failures(3)
            .build()
            .unwrap(),
    );
    calls(&b, &[F, F, S, F, F]);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "a success resets the count"
    );
    assert_eq!(b.snapshot().consecutive_failures, 2);
    call(&b, F);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn open_fails_fast_with_a_findable_error_carrying_the_markers() {
    #[derive(Debug)]
    struct Wrapped(BoxError);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("buffer error")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    let b = BreakerHandle::new(policy().build().unwrap());
    trip(&b);
    advance(Duration::from_millis(300)).await;
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state(), BreakerState::Open);
    assert_eq!(err.retry_after(), Some(Duration::from_millis(700)));
    let boxed: BoxError = Box::new(Wrapped(Box::new(err)));
    assert!(is_never_reached(&*boxed));
    assert_eq!(retry_after(&*boxed), Some(Duration::from_millis(700)));
    assert_eq!(
        BreakerOpen::find(&*boxed).unwrap().retry_after(),
        Some(Duration::from_millis(700))
    );
    assert_eq!(b.snapshot().retry_after, Some(Duration::from_millis(700)));
}

#[tokio::test(start_paused = true)]
async fn after_the_open_duration_the_next_call_is_a_trial() {
    let b = BreakerHandle::new(policy().build().unwrap());
    trip(&b);
    advance(Duration::from_millis(999)).await;
    assert!(b.try_acquire().is_err());
    advance(Duration::from_millis(1)).await;
    // Lazily (no timer task), but reported as what the next call will see.
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.snapshot().recorded_state, BreakerState::Open);
    let permit = b.try_acquire().unwrap();
    assert!(permit.is_trial());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.snapshot().recorded_state, BreakerState::HalfOpen);
    drop(permit);
}

#[tokio::test(start_paused = true)]
async fn an_idle_breaker_past_its_open_duration_reads_half_open_awaiting_a_trial() {
    let b = BreakerHandle::new(policy().build().unwrap());
    trip(&b);
    let mut events = b.subscribe();
    advance(Duration::from_millis(400)).await;
    let snap = b.snapshot();
    assert_eq!(snap.state, BreakerState::Open);
    assert_eq!(snap.retry_after, Some(Duration::from_millis(600)));
    assert!(!snap.awaiting_trial());
    // The outage healed and no traffic comes for a minute.
    advance(Duration::from_secs(60)).await;
    let snap = b.snapshot();
    assert_eq!(
        snap.state,
        BreakerState::HalfOpen,
        "not \"open, next probe in 0 s\""
    );
    assert_eq!(snap.recorded_state, BreakerState::Open);
    assert!(snap.awaiting_trial());
    assert_eq!(snap.retry_after, None);
    assert_eq!(snap.half_open_in_flight, 0);
    assert_eq!(snap.half_open_permits, 2);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(
        events.try_recv().is_err(),
        "reading performs no transition and emits no event"
    );
    // The next call is indeed the trial, and the half-open period starts with it.
    let permit = b.try_acquire().unwrap();
    assert!(permit.is_trial());
    let snap = b.snapshot();
    assert!(!snap.awaiting_trial());
    assert_eq!(snap.half_open_in_flight, 1);
    assert_eq!(snap.half_open_time_left, Some(Duration::from_secs(10)));
    permit.record(S);
}

#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_past_its_max_wait_reads_open() {
    let b = BreakerHandle::new(policy().permitted_calls_in_half_open(1).build().unwrap());
    trip(&b);
    advance(Duration::from_secs(1)).await;
    let hung = b.try_acquire().unwrap(); // a trial that never completes
    advance(Duration::from_secs(4)).await;
    let snap = b.snapshot();
    assert_eq!(snap.state, BreakerState::HalfOpen);
    assert_eq!(snap.half_open_time_left, Some(Duration::from_secs(6)));
    assert_eq!(snap.half_open_in_flight, 1);
    advance(Duration::from_secs(6)).await;
    // max_wait_in_half_open has passed: the next call re-opens it, and state() says so.
    assert_eq!(b.state(), BreakerState::Open);
    let snap = b.snapshot();
    assert_eq!(snap.state, BreakerState::Open);
    assert_eq!(snap.recorded_state, BreakerState::HalfOpen);
    assert_eq!(snap.half_open_time_left, None);
    assert_eq!(
        snap.half_open_in_flight, 0,
        "the hung trial's verdict no longer counts"
    );
    assert_eq!(
        snap.retry_after, None,
        "the open duration starts with the next call"
    );
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state(), BreakerState::Open);
    let snap = b.snapshot();
    assert_eq!(
        (snap.state, snap.recorded_state),
        (BreakerState::Open, BreakerState::Open)
    );
    assert_eq!(snap.retry_after, Some(Duration::from_secs(2)));
    hung.record(S);
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_tells_when_the_window_is_below_its_minimum() {
    let b = BreakerHandle::new(
        policy()
            .sliding_window(SlidingWindow::count(100))
            .minimum_calls(20)
            .build()
            .unwrap(),
    );
    calls(&b, &[F, F, S, F]);
    let snap = b.snapshot();
    assert_eq!(
        snap.state,
        BreakerState::Closed,
        "3 of 4 failed, but below the minimum"
    );
    assert_eq!((snap.calls, snap.failures, snap.minimum_calls), (4, 3, 20));
    assert!(snap.below_minimum());
    assert_eq!(snap.failure_rate, None);
    calls(&b, &[S; 16]);
    let snap = b.snapshot();
    assert!(!snap.below_minimum());
    assert_eq!(snap.failure_rate, Some(15.0));
    // A count window caps the minimum at its size.
    let small = BreakerHandle::new(
        policy()
            .sliding_window(SlidingWindow::count(10))
            .minimum_calls(10)
            .build()
            .unwrap(),
    );
    assert_eq!(small.snapshot().minimum_calls, 10);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_its_permits() {
    let b = BreakerHandle::new(policy().permitted_calls_in_half_open(3).build().unwrap());
    trip(&b);
    advance(Duration::from_secs(1)).await;
    let permits: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state(), BreakerState::HalfOpen);
    assert_eq!(err.retry_after(), None);
    assert_eq!(b.snapshot().half_open_in_flight, 3);
    drop(permits);
}

#[tokio::test(start_paused = true)]
async fn the_half_open_verdict_closes_or_reopens() {
    let b = BreakerHandle::new(policy().permitted_calls_in_half_open(4).build().unwrap());
    trip(&b);
    advance(Duration::from_secs(1)).await;
    // 1 failure of 4 = 25 % < 50 %: close.
    let permits: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
    for (p, o) in permits.into_iter().zip([S, F, S, S]) {
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "no verdict before all four"
        );
        p.record(o);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(
        b.snapshot().calls,
        0,
        "the closed state starts with an empty window"
    );

    trip(&b);
    advance(Duration::from_secs(1)).await;
    // 2 of 4 = 50 %: re-open.
    let permits: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
    for (p, o) in permits.into_iter().zip([S, F, S, F]) {
        p.record(o);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn the_open_duration_backs_off_on_each_reopen_and_a_close_resets_it() {
    let b = BreakerHandle::new(policy().permitted_calls_in_half_open(1).build().unwrap());
    trip(&b);
    for expected in [1u64, 2, 4, 4] {
        assert_eq!(
            b.snapshot().retry_after,
            Some(Duration::from_secs(expected)),
            "open for {expected} s"
        );
        advance(Duration::from_secs(expected)).await;
        call(&b, F); // the trial fails: re-open
        assert_eq!(b.state(), BreakerState::Open);
    }
    assert_eq!(b.snapshot().reopens, 4);
    advance(Duration::from_secs(4)).await;
    call(&b, S);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().reopens, 0);
    trip(&b);
    assert_eq!(b.snapshot().retry_after, Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn jitter_shortens_the_open_duration_within_its_share() {
    let b = BreakerHandle::new(policy().open_jitter(0.5).build().unwrap());
    trip(&b);
    let left = b.snapshot().retry_after.unwrap();
    assert!(
        left <= Duration::from_secs(1) && left >= Duration::from_millis(500),
        "{left:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trial_releases_its_permit_and_records_nothing() {
    let b = BreakerHandle::new(policy().permitted_calls_in_half_open(1).build().unwrap());
    trip(&b);
    advance(Duration::from_secs(1)).await;
    let permit = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err(), "the only permit is taken");
    drop(permit);
    assert_eq!(b.state(), BreakerState::HalfOpen, "no verdict");
    let snap = b.snapshot();
    assert_eq!(
        (
            snap.half_open_in_flight,
            snap.half_open_failures,
            snap.half_open_successes
        ),
        (0, 0, 0)
    );
    call(&b, S);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_never_waits_forever() {
    let b = BreakerHandle::new(policy().permitted_calls_in_half_open(1).build().unwrap());
    let mut events = b.subscribe();
    trip(&b);
    advance(Duration::from_secs(1)).await;
    let hung = b.try_acquire().unwrap(); // a trial call that never completes
    advance(Duration::from_millis(9_999)).await;
    assert_eq!(b.try_acquire().unwrap_err().state(), BreakerState::HalfOpen);
    advance(Duration::from_millis(1)).await;
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state(), BreakerState::Open);
    assert_eq!(
        err.retry_after(),
        Some(Duration::from_secs(2)),
        "backed off"
    );
    assert_eq!(b.state(), BreakerState::Open);
    let reasons: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|e| match e {
            BreakerEvent::Transition { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.last(), Some(&TransitionReason::HalfOpenTimedOut));
    // The hung call finally completes: it belongs to an old period and changes nothing.
    hung.record(S);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_release_permits_and_are_not_recorded() {
    let b = BreakerHandle::new(policy().permitted_calls_in_half_open(1).build().unwrap());
    calls(&b, &[I, I, I, I, I, I]);
    assert_eq!(b.snapshot().calls, 0);
    calls(&b, &[F, F, F, F, I, F]);
    assert_eq!(b.state(), BreakerState::Open);
    advance(Duration::from_secs(1)).await;
    call(&b, I);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.snapshot().half_open_in_flight, 0, "released");
    call(&b, S);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_permit_from_before_a_transition_records_nothing() {
    let b = BreakerHandle::new(policy().build().unwrap());
    let stale = b.try_acquire().unwrap();
    b.reset();
    stale.record(F);
    assert_eq!(b.snapshot().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn overrides() {
    let b = BreakerHandle::new(policy().build().unwrap());

    b.force_open();
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state(), BreakerState::ForcedOpen);
    assert_eq!(err.retry_after(), None);
    advance(Duration::from_secs(3600)).await;
    assert!(b.try_acquire().is_err(), "forced open does not time out");

    b.disable();
    calls(&b, &[F; 20]);
    assert_eq!(b.state(), BreakerState::Disabled);
    assert_eq!(b.snapshot().calls, 0, "disabled records nothing");

    b.reset();
    calls(&b, &[F, S]);
    b.metrics_only();
    assert_eq!(
        b.snapshot().calls,
        0,
        "entering metrics-only resets the metrics"
    );
    calls(&b, &[F; 20]);
    assert_eq!(b.state(), BreakerState::MetricsOnly, "never trips");
    let snap = b.snapshot();
    assert_eq!(
        (snap.calls, snap.failures, snap.failure_rate),
        (10, 10, Some(100.0))
    );

    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().calls, 0);
    trip(&b);
}

#[tokio::test(start_paused = true)]
async fn a_time_based_window_trips_and_forgets() {
    let b = BreakerHandle::new(
        policy()
            .sliding_window(SlidingWindow::time_with_buckets(
                Duration::from_secs(10),
                10,
            ))
            .minimum_calls(4)
            .build()
            .unwrap(),
    );
    calls(&b, &[F, F, S]);
    advance(Duration::from_secs(10)).await;
    // The three calls above have left the window.
    calls(&b, &[F, S, S]);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().calls, 3);
    advance(Duration::from_secs(5)).await;
    call(&b, F); // 2 of 4 within the last 10 s
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn events_cover_transitions_and_rejections() {
    let b = BreakerHandle::new(policy().name("catalog").build().unwrap());
    let mut rx = b.subscribe();
    trip(&b);
    let _ = b.try_acquire();
    let events: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(
        events,
        vec![
            BreakerEvent::Transition {
                breaker: "catalog".into(),
                from: BreakerState::Closed,
                to: BreakerState::Open,
                reason: TransitionReason::FailureRate(100.0),
            },
            BreakerEvent::Rejected {
                breaker: "catalog".into(),
                state: BreakerState::Open,
                retry_after: Some(Duration::from_secs(1)),
            },
        ]
    );
}
