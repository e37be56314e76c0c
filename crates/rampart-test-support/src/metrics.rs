//! A capturing `metrics` recorder.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// A counter or a gauge, stored as the bits of a `u64` (counters) or an `f64` (gauges).
#[derive(Debug, Default)]
pub struct Cell(AtomicU64);

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

/// The values recorded into one histogram.
#[derive(Debug, Default)]
pub struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Keeps every counter, gauge and histogram under `name{label=value,…}` (labels in the order
/// they were given).
#[derive(Debug, Default)]
pub struct Captured {
    counters: Mutex<BTreeMap<String, Arc<Cell>>>,
    gauges: Mutex<BTreeMap<String, Arc<Cell>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

/// The process-wide [`Captured`], installed as the global recorder on the first call.
///
/// For code that records from tasks on other threads (a server's connection tasks on a
/// multi-threaded runtime), out of reach of `metrics::with_local_recorder`. Every test in the
/// binary shares it, so tests give their instances distinct names. Panics if another global
/// recorder was installed first.
pub fn global() -> &'static Captured {
    static GLOBAL: OnceLock<&'static Captured> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let captured: &'static Captured = Box::leak(Box::default());
        metrics::set_global_recorder(captured).expect("no other global recorder");
        captured
    })
}

/// Renders a key as `name{label=value,…}`.
pub fn render(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Captured {
    /// A counter's value (0 if it was never registered).
    pub fn counter(&self, key: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.0.load(Ordering::SeqCst))
    }

    /// A gauge's value, if it was registered.
    pub fn gauge(&self, key: &str) -> Option<f64> {
        self.gauges
            .lock()
            .unwrap()
            .get(key)
            .map(|c| f64::from_bits(c.0.load(Ordering::SeqCst)))
    }

    /// The values recorded into a histogram (empty if it was never registered).
    pub fn histogram(&self, key: &str) -> Vec<f64> {
        self.histograms
            .lock()
            .unwrap()
            .get(key)
            .map_or_else(Vec::new, |h| h.0.lock().unwrap().clone())
    }

    /// Every registered key (counters, gauges and histograms), sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.counters.lock().unwrap().keys().cloned().collect();
        keys.extend(self.gauges.lock().unwrap().keys().cloned());
        keys.extend(self.histograms.lock().unwrap().keys().cloned());
        keys.sort();
        keys
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

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let samples = self
            .histograms
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Histogram::from_arc(samples)
    }
}
