//! The umbrella's `metrics` feature turns on the enabled crates' own `metrics` features: with
//! it, an outlier ejection made through `rampart::health` reaches a `metrics` recorder. (Run
//! with `--no-default-features --features health,metrics` to check the `health` line alone:
//! with `full`, the other crates' `metrics` features also turn on rampart-health's.)

#![cfg(all(feature = "metrics", feature = "health"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use rampart::health::{OutlierConfig, OutlierDetector};

/// Remembers the name of every counter and gauge registered.
#[derive(Default)]
struct Names(Mutex<BTreeSet<String>>);

impl Recorder for Names {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0.lock().unwrap().insert(key.name().to_owned());
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0.lock().unwrap().insert(key.name().to_owned());
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0.lock().unwrap().insert(key.name().to_owned());
        Histogram::noop()
    }
}

#[test]
fn health_metrics_are_recorded_through_the_umbrella_feature() {
    let names = Names::default();
    metrics::with_local_recorder(&names, || {
        let detector = OutlierDetector::new(OutlierConfig::default());
        let endpoint = detector.track("a");
        assert!(endpoint.eject());
    });
    let names = names.0.into_inner().unwrap();
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
    let names = Names::default();
    metrics::with_local_recorder(&names, || {
        let limiter = rampart::limit::Limiter::builder()
            .name("l")
            .build()
            .unwrap();
        drop(limiter.try_acquire(rampart::limit::Class::Partition(0)));
    });
    let names = names.0.into_inner().unwrap();
    assert!(names.contains("rampart_limit_limit"), "{names:?}");
    assert!(names.contains("rampart_limit_shed_total"), "{names:?}");
}
