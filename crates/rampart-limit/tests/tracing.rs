//! Limit changes and sheds are `tracing` events, rate-limited so a surge does not flood the
//! log. (One test in this binary: tracing caches per-callsite interest process-wide.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use rampart_health::Outcome;
use rampart_limit::algorithm::Aimd;
use rampart_limit::{Class, Limiter};
use rampart_test_support::tracing::Capture;
use tracing::Level;

#[test]
fn limit_changes_and_sheds_are_logged_at_most_once_a_second_each() {
    let capture = Arc::new(Capture::default());
    let (clock, mock) = quanta::Clock::mock();
    tracing::subscriber::with_default(capture.clone(), || {
        let limiter = Limiter::builder()
            .name("logged")
            .algorithm(
                Aimd::builder()
                    .initial_limit(20)
                    .min_limit(1)
                    .backoff(0.9)
                    .build()
                    .unwrap(),
            )
            .window_samples(1)
            .min_window(Duration::ZERO)
            .clock(clock)
            .build()
            .unwrap();
        // Ten limit changes within the same second: one info event, nine trace events.
        for _ in 0..10 {
            mock.increment(Duration::from_millis(1));
            limiter
                .try_acquire(Class::Partition(0))
                .unwrap()
                .record(Outcome::Failure);
        }
        let held: Vec<_> = (0..limiter.limit())
            .map(|_| limiter.try_acquire(Class::Partition(0)).unwrap())
            .collect();
        for _ in 0..5 {
            assert!(limiter.try_acquire(Class::Partition(0)).is_err());
        }
        mock.increment(Duration::from_secs(2));
        assert!(limiter.try_acquire(Class::Partition(0)).is_err());
        drop(held);
    });
    let events = capture.events();
    let count = |level: Level, msg: &str| {
        events
            .iter()
            .filter(|e| e.level == level && e.message == msg)
            .count()
    };
    assert_eq!(count(Level::INFO, "concurrency limit changed"), 1);
    assert_eq!(count(Level::TRACE, "concurrency limit changed"), 9);
    let first = events
        .iter()
        .find(|e| e.level == Level::INFO && e.message == "concurrency limit changed")
        .unwrap();
    assert_eq!(
        first.fields.get("to").map(String::as_str),
        Some("18"),
        "20 × 0.9 = 18"
    );
    assert_eq!(
        count(Level::WARN, "request shed"),
        2,
        "first shed, then 2 s later"
    );
    assert_eq!(count(Level::TRACE, "request shed"), 4);
}
