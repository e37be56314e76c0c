//! The `metrics` feature: counters and the state gauge reach the installed recorder.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use rampart_breaker::{BreakerHandle, Policy, SlidingWindow};
use rampart_health::Outcome;

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
        self.0.store(value as u64, Ordering::SeqCst);
    }
}

/// Keeps every counter and gauge, keyed by name and sorted labels.
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
            .unwrap_or_else(|| panic!("no metric {name}"))
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
fn calls_rejections_transitions_and_state_are_counted() {
    let capture = Capture::default();
    metrics::with_local_recorder(&capture, || {
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
        capture.get("rampart_breaker_calls_total{breaker=m,outcome=success}"),
        1
    );
    assert_eq!(
        capture.get("rampart_breaker_calls_total{breaker=m,outcome=ignored}"),
        1
    );
    assert_eq!(
        capture.get("rampart_breaker_calls_total{breaker=m,outcome=failure}"),
        1
    );
    assert_eq!(capture.get("rampart_breaker_rejected_total{breaker=m}"), 2);
    assert_eq!(
        capture.get("rampart_breaker_transitions_total{breaker=m,from=closed,to=open}"),
        1
    );
    assert_eq!(
        capture.get("rampart_breaker_slow_calls_total{breaker=m}"),
        1
    );
    assert_eq!(
        capture.get("rampart_breaker_transitions_total{breaker=m,from=open,to=forced_open}"),
        1
    );
    assert_eq!(
        capture.get("rampart_breaker_state{breaker=m}"),
        3,
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
    let capture = Capture::default();
    metrics::with_local_recorder(&capture, || {
        b.try_acquire().unwrap().record(Outcome::Success);
        b.try_acquire().unwrap().record(Outcome::Failure);
        assert!(b.try_acquire().is_err());
    });
    assert_eq!(
        capture.get("rampart_breaker_calls_total{breaker=late,outcome=success}"),
        1
    );
    assert_eq!(
        capture.get("rampart_breaker_calls_total{breaker=late,outcome=failure}"),
        1
    );
    assert_eq!(
        capture.get("rampart_breaker_rejected_total{breaker=late}"),
        1
    );
    assert_eq!(
        capture.get("rampart_breaker_state{breaker=late}"),
        1,
        "1 = open"
    );
    assert!(
        capture
            .0
            .lock()
            .unwrap()
            .keys()
            .all(|k| k.contains("breaker=late")),
        "every series carries the breaker's name"
    );
}

#[test]
fn a_breaker_built_under_a_recorder_shows_every_series_before_its_first_call() {
    let capture = Capture::default();
    metrics::with_local_recorder(&capture, || {
        let _b = BreakerHandle::new(Policy::builder().name("idle").build().unwrap());
    });
    for series in [
        "rampart_breaker_calls_total{breaker=idle,outcome=success}",
        "rampart_breaker_calls_total{breaker=idle,outcome=failure}",
        "rampart_breaker_calls_total{breaker=idle,outcome=ignored}",
        "rampart_breaker_rejected_total{breaker=idle}",
        "rampart_breaker_slow_calls_total{breaker=idle}",
        "rampart_breaker_state{breaker=idle}",
    ] {
        assert_eq!(capture.get(series), 0, "{series}");
    }
}
