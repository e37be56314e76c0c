//! The `metrics` feature: the checker and the outlier detector record their counters and
//! gauges through the `metrics` facade. A small in-memory recorder captures them.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use rampart_health::{
    Checker, CheckerConfig, Health, Outcome, OutlierConfig, OutlierDetector, ProbeError,
    ProbeErrorKind, probe_fn,
};

/// A counter or a gauge, stored as the bits of an `f64` (gauges) or a `u64` (counters).
#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        let v = f64::from_bits(self.0.load(Ordering::SeqCst)) + value;
        self.0.store(v.to_bits(), Ordering::SeqCst);
    }
    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::SeqCst);
    }
}

/// Keeps every counter and gauge under `name{label=value,…}`.
#[derive(Default)]
struct Captured {
    counters: Mutex<BTreeMap<String, Arc<Cell>>>,
    gauges: Mutex<BTreeMap<String, Arc<Cell>>>,
}

fn render(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Captured {
    fn counter(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.0.load(Ordering::SeqCst))
    }

    fn gauge(&self, key: &str) -> Option<f64> {
        self.gauges
            .lock()
            .unwrap()
            .get(key)
            .map(|c| f64::from_bits(c.0.load(Ordering::SeqCst)))
    }
}

impl Recorder for Captured {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = self
            .counters
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Counter::from_arc(cell)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let cell = self
            .gauges
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Gauge::from_arc(cell)
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

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
