//! The `metrics` feature: the limiter's and the throttle's series reach the recorder,
//! labelled with their names.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rampart_health::Outcome;
use rampart_limit::algorithm::Aimd;
use rampart_limit::{AdaptiveThrottle, Class, Limiter};
use rampart_test_support::metrics::Captured;
use rampart_test_support::series;

#[test]
fn limit_admissions_sheds_and_throttling_are_counted_per_name() {
    let captured = Captured::default();
    let (clock, mock) = quanta::Clock::mock();
    metrics::with_local_recorder(&captured, || {
        let limiter = Limiter::builder()
            .name("m")
            .algorithm(
                Aimd::builder()
                    .initial_limit(4)
                    .min_limit(1)
                    .backoff(0.5)
                    .build()
                    .unwrap(),
            )
            .partition("checkout", 0.5)
            .partition("recommendations", 0.5)
            .window_samples(1)
            .min_window(Duration::ZERO)
            .clock(clock.clone())
            .build()
            .unwrap();
        let held: Vec<_> = (0..4)
            .map(|_| limiter.try_acquire(Class::Partition(1)).unwrap())
            .collect();
        assert!(limiter.try_acquire(Class::Partition(1)).is_err());
        drop(limiter.try_acquire(Class::Bypass).unwrap());
        mock.increment(Duration::from_millis(250));
        let mut held = held.into_iter();
        held.next().unwrap().record(Outcome::Failure); // 4 → 2
        drop(held);

        let t = AdaptiveThrottle::builder()
            .name("t")
            .seed(1)
            .clock(clock)
            .build()
            .unwrap();
        t.try_admit().unwrap().record(Outcome::Success);
        for _ in 0..20 {
            if let Ok(g) = t.try_admit() {
                g.record(Outcome::Failure);
            }
        }
    });
    let counter = |key: &str| series::counter(&captured, key);
    let gauge = |key: &str| series::gauge(&captured, key);
    assert_eq!(gauge("rampart_limit_limit{limiter=m}"), 2.0);
    assert_eq!(counter("rampart_limit_limit_changes_total{limiter=m}"), 1);
    assert_eq!(
        gauge("rampart_limit_rtt_seconds{limiter=m}"),
        0.0,
        "all dropped"
    );
    assert_eq!(
        counter("rampart_limit_admitted_total{limiter=m,partition=recommendations}"),
        4
    );
    assert_eq!(
        counter("rampart_limit_admitted_total{limiter=m,partition=checkout}"),
        0
    );
    assert_eq!(
        counter("rampart_limit_shed_total{limiter=m,partition=recommendations,reason=limit}"),
        1
    );
    assert_eq!(counter("rampart_limit_bypassed_total{limiter=m}"), 1);
    assert_eq!(
        counter("rampart_limit_throttle_requests_total{throttle=t,outcome=accepted}"),
        1
    );
    let rejected =
        counter("rampart_limit_throttle_requests_total{throttle=t,outcome=rejected_upstream}");
    let throttled = counter("rampart_limit_throttle_requests_total{throttle=t,outcome=throttled}");
    assert_eq!(rejected + throttled, 20);
    assert!(throttled > 0);
    assert!(gauge("rampart_limit_throttle_probability{throttle=t}") > 0.0);
}
