//! The `metrics` feature: counters and the state gauge reach the installed recorder.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rampart_breaker::{BreakerHandle, Policy, SlidingWindow};
use rampart_health::Outcome;
use rampart_test_support::metrics::Captured;
use rampart_test_support::series;

#[test]
fn calls_rejections_transitions_and_state_are_counted() {
    let captured = Captured::default();
    metrics::with_local_recorder(&captured, || {
        let b = BreakerHandle::new(
            Policy::builder()
                .name("m")
                .sliding_window(SlidingWindow::count(4))
                .minimum_calls(2)
                .slow_call_duration(std::time::Duration::from_millis(10))
                .build()
                .unwrap(),
        );
        b.try_acquire()
            .unwrap()
            .record_with_duration(Outcome::Success, std::time::Duration::from_millis(10));
        b.try_acquire().unwrap().record(Outcome::Ignored);
        b.try_acquire().unwrap().record(Outcome::Failure);
        assert!(b.state().is_open());
        assert!(b.try_acquire().is_err());
        assert!(b.try_acquire().is_err());
        b.force_open();
    });
    assert_eq!(
        series::counter(
            &captured,
            "rampart_breaker_calls_total{breaker=m,outcome=success}"
        ),
        1
    );
    assert_eq!(
        series::counter(
            &captured,
            "rampart_breaker_calls_total{breaker=m,outcome=ignored}"
        ),
        1
    );
    assert_eq!(
        series::counter(
            &captured,
            "rampart_breaker_calls_total{breaker=m,outcome=failure}"
        ),
        1
    );
    assert_eq!(
        series::counter(&captured, "rampart_breaker_rejected_total{breaker=m}"),
        2
    );
    assert_eq!(
        series::counter(
            &captured,
            "rampart_breaker_transitions_total{breaker=m,from=closed,to=open}"
        ),
        1
    );
    assert_eq!(
        series::counter(&captured, "rampart_breaker_slow_calls_total{breaker=m}"),
        1
    );
    assert_eq!(
        series::counter(
            &captured,
            "rampart_breaker_transitions_total{breaker=m,from=open,to=forced_open}"
        ),
        1
    );
    assert_eq!(
        series::gauge(&captured, "rampart_breaker_state{breaker=m}"),
        3.0,
        "3 = forced open"
    );
}

#[test]
fn a_recorder_installed_after_the_breaker_is_built_still_gets_every_series() {
    // Built while no recorder is installed (the facade's no-op recorder)...
    let b = BreakerHandle::new(
        Policy::builder()
            .name("late")
            .sliding_window(SlidingWindow::count(2))
            .minimum_calls(2)
            .build()
            .unwrap(),
    );
    // ...and the recorder arrives before the first call.
    let captured = Captured::default();
    metrics::with_local_recorder(&captured, || {
        b.try_acquire().unwrap().record(Outcome::Success);
        b.try_acquire().unwrap().record(Outcome::Failure);
        assert!(b.try_acquire().is_err());
    });
    assert_eq!(
        series::counter(
            &captured,
            "rampart_breaker_calls_total{breaker=late,outcome=success}"
        ),
        1
    );
    assert_eq!(
        series::counter(
            &captured,
            "rampart_breaker_calls_total{breaker=late,outcome=failure}"
        ),
        1
    );
    assert_eq!(
        series::counter(&captured, "rampart_breaker_rejected_total{breaker=late}"),
        1
    );
    assert_eq!(
        series::gauge(&captured, "rampart_breaker_state{breaker=late}"),
        1.0,
        "1 = open"
    );
    assert!(
        captured.keys().iter().all(|k| k.contains("breaker=late")),
        "every series carries the breaker's name"
    );
}

#[test]
fn a_breaker_built_under_a_recorder_shows_every_series_before_its_first_call() {
    let captured = Captured::default();
    metrics::with_local_recorder(&captured, || {
        let _b = BreakerHandle::new(Policy::builder().name("idle").build().unwrap());
    });
    for key in [
        "rampart_breaker_calls_total{breaker=idle,outcome=success}",
        "rampart_breaker_calls_total{breaker=idle,outcome=failure}",
        "rampart_breaker_calls_total{breaker=idle,outcome=ignored}",
        "rampart_breaker_rejected_total{breaker=idle}",
        "rampart_breaker_slow_calls_total{breaker=idle}",
    ] {
        assert_eq!(series::counter(&captured, key), 0, "{key}");
    }
    assert_eq!(
        series::gauge(&captured, "rampart_breaker_state{breaker=idle}"),
        0.0,
        "0 = closed"
    );
}
