//! Property tests for the outlier detector, driven by tokio's paused clock.
//!
//! - Never more endpoints ejected than `max_ejection_percent` allows (automatic ejections).
//! - An endpoint that only ever succeeds is never ejected.
//! - No ejection lasts longer than `max_ejection_time`.
//! - The success-rate arithmetic (Envoy's mean − stdev × factor): identical rates are never
//!   outliers, every outlier is below the mean, a larger factor never adds an outlier, and at
//!   most 1/factor² of the endpoints are outliers (Chebyshev's bound).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use proptest::prelude::*;
use rampart_health::outlier::stats::{mean_and_stdev, success_rate_outliers};
use rampart_health::{Outcome, OutlierConfig, OutlierDetector, OutlierEvent};

#[derive(Debug, Clone)]
enum Op {
    /// Record an outcome on endpoint `i` (endpoint 0 only ever records successes).
    Record(usize, Outcome),
    /// Advance the paused clock.
    Advance(u64),
    /// Run an evaluation.
    Evaluate,
    /// Ask endpoint `i` whether it is ejected (ends expired ejections lazily).
    Check(usize),
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Failure),
        1 => Just(Outcome::Success),
        1 => Just(Outcome::Ignored),
    ]
}

fn op(endpoints: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..endpoints, outcome()).prop_map(|(i, o)| Op::Record(i, o)),
        2 => (1u64..20_000).prop_map(Op::Advance),
        1 => Just(Op::Evaluate),
        1 => (0..endpoints).prop_map(Op::Check),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, f64, u32, Option<(f64, u32)>, Vec<Op>)> {
    (1usize..8).prop_flat_map(|n| {
        (
            Just(n),
            prop_oneof![
                Just(0.0),
                Just(10.0),
                Just(34.0),
                Just(50.0),
                Just(100.0),
                0.0..=100.0f64
            ],
            0u32..6,
            proptest::option::of((1.0..=100.0f64, 1u32..10)),
            proptest::collection::vec(op(n), 1..300),
        )
    })
}

fn run(
    endpoints: usize,
    cap: f64,
    consecutive: u32,
    failure_percentage: Option<(f64, u32)>,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut builder = OutlierConfig::builder()
            .consecutive_failures(consecutive)
            .interval(Duration::from_secs(10))
            .base_ejection_time(Duration::from_secs(30))
            .max_ejection_time(Duration::from_secs(120))
            .max_ejection_percent(cap);
        if let Some((threshold, minimum)) = failure_percentage {
            builder = builder
                .failure_percentage(threshold, minimum)
                .failure_percentage_minimum_hosts(1);
        }
        if endpoints >= 2 {
            // Success-rate ejection over small volumes, so that it fires in these scenarios.
            builder = builder.success_rate(1.0, 2, 3);
        }
        let config = builder.build().unwrap();
        let detector = OutlierDetector::new(config.clone());
        let mut events = detector.subscribe();
        let trackers: Vec<_> = (0..endpoints)
            .map(|i| detector.track(format!("e{i}")))
            .collect();

        for op in ops {
            match op {
                Op::Record(0, _) => trackers[0].record(Outcome::Success),
                Op::Record(i, o) => trackers[*i].record(*o),
                Op::Advance(ms) => tokio::time::advance(Duration::from_millis(*ms)).await,
                Op::Evaluate => detector.evaluate(),
                Op::Check(i) => {
                    let _ = trackers[*i].is_ejected();
                }
            }

            let ejected = detector.ejected();
            prop_assert!(
                ejected as f64 * 100.0 <= cap * endpoints as f64,
                "{ejected} of {endpoints} ejected with a cap of {cap} %"
            );
            let flagged = trackers.iter().filter(|t| t.is_ejected()).count();
            prop_assert_eq!(flagged, ejected);
            prop_assert!(
                !trackers[0].is_ejected(),
                "the all-success endpoint was ejected"
            );
            prop_assert_eq!(trackers[0].ejection_count(), 0);

            while let Ok(event) = events.try_recv() {
                if let OutlierEvent::Ejected { name, until, .. } = event {
                    prop_assert_ne!(&*name, "e0");
                    let lasts = until - tokio::time::Instant::now();
                    prop_assert!(lasts <= config.max_ejection_time(), "ejected for {lasts:?}");
                }
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ejections_respect_the_cap_and_spare_healthy_endpoints(
        (endpoints, cap, consecutive, failure_percentage, ops) in scenario()
    ) {
        run(endpoints, cap, consecutive, failure_percentage, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn identical_success_rates_are_never_outliers(rate in 0.0..=100.0f64, n in 1usize..50, factor in 0.1..5.0f64) {
        let rates = vec![rate; n];
        prop_assert!(success_rate_outliers(&rates, factor).iter().all(|o| !o));
    }

    #[test]
    fn success_rate_outliers_are_below_the_mean_and_bounded_by_chebyshev(
        rates in proptest::collection::vec(0.0..=100.0f64, 1..60),
        factor in 1.0..5.0f64,
    ) {
        let (mean, _) = mean_and_stdev(&rates);
        let outliers = success_rate_outliers(&rates, factor);
        for (rate, outlier) in rates.iter().zip(&outliers) {
            if *outlier {
                prop_assert!(*rate < mean, "{rate} is an outlier but not below the mean {mean}");
            }
        }
        let count = outliers.iter().filter(|o| **o).count() as f64;
        prop_assert!(count <= rates.len() as f64 / (factor * factor) + 1e-9);
    }

    #[test]
    fn a_larger_stdev_factor_never_adds_an_outlier(
        rates in proptest::collection::vec(0.0..=100.0f64, 1..60),
        low in 0.1..3.0f64,
        extra in 0.0..3.0f64,
    ) {
        let loose = success_rate_outliers(&rates, low);
        let strict = success_rate_outliers(&rates, low + extra);
        for (l, s) in loose.iter().zip(&strict) {
            prop_assert!(*l || !*s, "an outlier at factor {} was not one at {low}", low + extra);
        }
    }
}
