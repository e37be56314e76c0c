//! The `metrics` feature: the checker and the outlier detector record their counters and
//! gauges through the `metrics` facade. A small in-memory recorder captures them.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rampart_health::{
    Checker, CheckerConfig, Health, Outcome, OutlierConfig, OutlierDetector, ProbeError,
    ProbeErrorKind, probe_fn,
};
use rampart_test_support::metrics::Captured;

#[test]
fn outlier_ejections_are_counted_and_gauged() {
    let captured = Captured::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&captured, || {
        runtime.block_on(async {
            let detector = OutlierDetector::new(
                OutlierConfig::builder()
                    .name("catalog")
                    .max_ejection_percent(100.0)
                    .build()
                    .unwrap(),
            );
            let a = detector.track("a");
            for _ in 0..5 {
                a.record(Outcome::Failure);
            }
            assert!(a.is_ejected());
            tokio::time::advance(Duration::from_secs(30)).await;
            assert!(!a.is_ejected());
        });
    });
    assert_eq!(
        captured.counter(
            "rampart_health_outlier_ejections_total{detector=catalog,endpoint=a,reason=consecutive_failures}"
        ),
        1
    );
    assert_eq!(
        captured.gauge("rampart_health_outlier_ejected{detector=catalog,endpoint=a}"),
        Some(0.0)
    );
}

#[test]
fn checker_probes_and_transitions_are_counted() {
    let captured = Captured::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&captured, || {
        runtime.block_on(async {
            let config = CheckerConfig::builder()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_secs(1))
                .jitter(0.0)
                .fall(2)
                .build()
                .unwrap();
            let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let flag = up.clone();
            let handle = Checker::spawn(
                "c",
                probe_fn(move || {
                    let passed = flag.load(Ordering::SeqCst);
                    async move {
                        if passed {
                            Ok(())
                        } else {
                            Err(ProbeError::new(ProbeErrorKind::Status, "status 500"))
                        }
                    }
                }),
                config,
            );
            let mut watch = handle.watch();
            assert_eq!(watch.changed().await, Some(Health::Healthy));
            up.store(false, Ordering::SeqCst);
            assert_eq!(watch.changed().await, Some(Health::Unhealthy));
        });
    });
    assert_eq!(
        captured.counter("rampart_health_probes_total{checker=c,result=pass}"),
        1
    );
    assert_eq!(
        captured.counter("rampart_health_probes_total{checker=c,result=fail}"),
        2
    );
    assert_eq!(
        captured.counter("rampart_health_transitions_total{checker=c,to=healthy}"),
        1
    );
    assert_eq!(
        captured.counter("rampart_health_transitions_total{checker=c,to=unhealthy}"),
        1
    );
    assert_eq!(
        captured.gauge("rampart_health_checker_healthy{checker=c}"),
        Some(0.0)
    );
}
