//! The `metrics` feature: the limiter's and the throttle's series reach the recorder,
//! labelled with their names.
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
use rampart_health::Outcome;
use rampart_limit::algorithm::Aimd;
use rampart_limit::{AdaptiveThrottle, Class, Limiter};

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.0.store((value * 1000.0) as u64, Ordering::SeqCst);
    }
}

/// Keeps every counter and gauge (gauges × 1000), keyed by name and sorted labels.
#[derive(Default)]
struct Capture(Mutex<BTreeMap<String, Arc<Cell>>>);

impl Capture {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.0.lock().unwrap().entry(name).or_default().clone()
    }

    fn get(&self, name: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .map(|c| c.0.load(Ordering::SeqCst))
            .unwrap_or_else(|| panic!("no metric {name} in {:?}", self.0.lock().unwrap().keys()))
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn limit_admissions_sheds_and_throttling_are_counted_per_name() {
    let capture = Capture::default();
    let (clock, mock) = quanta::Clock::mock();
    metrics::with_local_recorder(&capture, || {
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
    assert_eq!(capture.get("rampart_limit_limit{limiter=m}"), 2000);
    assert_eq!(
        capture.get("rampart_limit_limit_changes_total{limiter=m}"),
        1
    );
    assert_eq!(
        capture.get("rampart_limit_rtt_seconds{limiter=m}"),
        0,
        "all dropped"
    );
    assert_eq!(
        capture.get("rampart_limit_admitted_total{limiter=m,partition=recommendations}"),
        4
    );
    assert_eq!(
        capture.get("rampart_limit_admitted_total{limiter=m,partition=checkout}"),
        0
    );
    assert_eq!(
        capture.get("rampart_limit_shed_total{limiter=m,partition=recommendations,reason=limit}"),
        1
    );
    assert_eq!(capture.get("rampart_limit_bypassed_total{limiter=m}"), 1);
    assert_eq!(
        capture.get("rampart_limit_throttle_requests_total{outcome=accepted,throttle=t}"),
        1
    );
    let rejected =
        capture.get("rampart_limit_throttle_requests_total{outcome=rejected_upstream,throttle=t}");
    let throttled =
        capture.get("rampart_limit_throttle_requests_total{outcome=throttled,throttle=t}");
    assert_eq!(rejected + throttled, 20);
    assert!(throttled > 0);
    assert!(capture.get("rampart_limit_throttle_probability{throttle=t}") > 0);
}
