//! The umbrella's `metrics` feature turns on the enabled crates' own `metrics` features: with
//! it, an outlier ejection made through `rampart::health` reaches a `metrics` recorder. (Run
//! with `--no-default-features --features health,metrics` to check the `health` line alone:
//! with `full`, the other crates' `metrics` features also turn on rampart-health's.)

#![cfg(all(feature = "metrics", feature = "health"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use rampart::health::{OutlierConfig, OutlierDetector};
use rampart_test_support::metrics::Captured;

/// The name of every series registered, without its labels.
fn names(captured: &Captured) -> BTreeSet<String> {
    captured
        .keys()
        .iter()
        .map(|key| key.split('{').next().unwrap_or(key).to_owned())
        .collect()
}

#[test]
fn health_metrics_are_recorded_through_the_umbrella_feature() {
    let captured = Captured::default();
    metrics::with_local_recorder(&captured, || {
        let detector = OutlierDetector::new(OutlierConfig::default());
        let endpoint = detector.track("a");
        assert!(endpoint.eject());
    });
    let names = names(&captured);
    assert!(
        names.contains("rampart_health_outlier_ejections_total"),
        "{names:?}"
    );
    assert!(
        names.contains("rampart_health_outlier_ejected"),
        "{names:?}"
    );
}

#[cfg(feature = "limit")]
#[test]
fn limit_metrics_are_recorded_through_the_umbrella_feature() {
    let captured = Captured::default();
    metrics::with_local_recorder(&captured, || {
        let limiter = rampart::limit::Limiter::builder()
            .name("l")
            .build()
            .unwrap();
        drop(limiter.try_acquire(rampart::limit::Class::Partition(0)));
    });
    let names = names(&captured);
    assert!(names.contains("rampart_limit_limit"), "{names:?}");
    assert!(names.contains("rampart_limit_shed_total"), "{names:?}");
}
