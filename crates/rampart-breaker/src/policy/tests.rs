use super::*;

#[test]
fn defaults_are_valid() {
    let p = Policy::builder().build().unwrap();
    assert_eq!(p.sliding_window(), SlidingWindow::Count(100));
    assert_eq!(p.minimum_calls(), 20);
    assert_eq!(p.permitted_calls_in_half_open(), 5);
}

#[test]
fn bad_configuration_is_rejected_naming_the_field_and_value() {
    let cases: Vec<(PolicyBuilder, &str, &str)> = vec![
        (
            Policy::builder().failure_rate_threshold(0.0),
            "failure_rate_threshold",
            "0.0",
        ),
        (
            Policy::builder().failure_rate_threshold(100.5),
            "failure_rate_threshold",
            "100.5",
        ),
        (
            Policy::builder().failure_rate_threshold(f64::NAN),
            "failure_rate_threshold",
            "NaN",
        ),
        (
            Policy::builder().slow_call_rate_threshold(0.0),
            "slow_call_rate_threshold",
            "0.0",
        ),
        (
            Policy::builder().slow_call_rate_threshold(101.0),
            "slow_call_rate_threshold",
            "101.0",
        ),
        (
            Policy::builder().sliding_window(SlidingWindow::count(0)),
            "sliding_window",
            "Count(0)",
        ),
        (
            Policy::builder().sliding_window(SlidingWindow::time(Duration::ZERO)),
            "sliding_window",
            "Time { size: 0ns, buckets: 10 }",
        ),
        (
            Policy::builder()
                .sliding_window(SlidingWindow::time_with_buckets(Duration::from_secs(1), 0)),
            "sliding_window",
            "Time { size: 1s, buckets: 0 }",
        ),
        (
            Policy::builder()
                .sliding_window(SlidingWindow::count(10))
                .minimum_calls(11),
            "minimum_calls",
            "11",
        ),
        (Policy::builder().minimum_calls(0), "minimum_calls", "0"),
        (
            Policy::builder().permitted_calls_in_half_open(0),
            "permitted_calls_in_half_open",
            "0",
        ),
        (
            Policy::builder().permitted_calls_in_half_open(1024),
            "permitted_calls_in_half_open",
            "1024",
        ),
        (
            Policy::builder().consecutive_failures(0),
            "consecutive_failures",
            "0",
        ),
        (
            Policy::builder().slow_call_duration(Duration::ZERO),
            "slow_call_duration",
            "0ns",
        ),
        (
            Policy::builder().open_duration(Duration::ZERO),
            "open_duration",
            "0ns",
        ),
        (
            Policy::builder().max_open_duration(Duration::from_secs(1)),
            "max_open_duration",
            "1s",
        ),
        (Policy::builder().open_backoff(0.5), "open_backoff", "0.5"),
        (Policy::builder().open_jitter(1.0), "open_jitter", "1.0"),
        (
            Policy::builder().max_wait_in_half_open(Duration::ZERO),
            "max_wait_in_half_open",
            "0ns",
        ),
    ];
    for (builder, field, value) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains(field), "{err}");
        assert_eq!(err.value(), value, "{err}");
        assert!(err.to_string().contains(value), "{err}: value {value:?}");
    }
}

#[test]
fn minimum_may_exceed_nothing_in_a_time_window() {
    Policy::builder()
        .sliding_window(SlidingWindow::time(Duration::from_secs(10)))
        .minimum_calls(1000)
        .build()
        .unwrap();
}

#[test]
fn backoff_is_exponential_and_capped() {
    let p = Policy::builder().build().unwrap();
    let secs: Vec<u64> = (0..7)
        .map(|n| p.backed_off_open_duration(n).as_secs())
        .collect();
    assert_eq!(secs, [5, 10, 20, 40, 60, 60, 60]);
    assert_eq!(
        p.backed_off_open_duration(u32::MAX),
        Duration::from_secs(60)
    );
}

#[test]
fn jitter_only_shortens_within_its_share() {
    let p = Policy::builder().build().unwrap();
    for _ in 0..1000 {
        let d = p.jittered_open_duration(0);
        assert!(
            d <= Duration::from_secs(5) && d >= Duration::from_secs(4),
            "{d:?}"
        );
    }
    let exact = Policy::builder().open_jitter(0.0).build().unwrap();
    assert_eq!(exact.jittered_open_duration(1), Duration::from_secs(10));
}
