//! The outlier detector's per-call costs: the success path (atomics only) and the ejection
//! check a balancer makes on every pick.
//!
//! Run: `cargo bench -p rampart-health --bench outlier -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rampart_health::{Outcome, OutlierConfig, OutlierDetector};

fn outlier(c: &mut Criterion) {
    let detector = OutlierDetector::new(OutlierConfig::default());
    let tracker = detector.track("a");
    let mut group = c.benchmark_group("outlier");
    group.bench_function("record_success", |b| {
        b.iter(|| tracker.record(black_box(Outcome::Success)));
    });

    let with_percentage = OutlierDetector::new(
        OutlierConfig::builder()
            .failure_percentage(50.0, 100)
            .build()
            .unwrap(),
    );
    let counted = with_percentage.track("b");
    group.bench_function("record_success_with_failure_percentage", |b| {
        b.iter(|| counted.record(black_box(Outcome::Success)));
    });

    group.bench_function("is_ejected_not_ejected", |b| {
        b.iter(|| black_box(tracker.is_ejected()));
    });

    let ejected = detector.track("c");
    ejected.eject();
    group.bench_function("is_ejected_while_ejected", |b| {
        b.iter(|| black_box(ejected.is_ejected()));
    });

    // Two threads recording successes on the same endpoint: no lock to fight over.
    let shared = Arc::new(detector.track("d"));
    group.bench_function("record_success_contended_2_threads", |b| {
        let other = Arc::clone(&shared);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let background = std::thread::spawn(move || {
            while !stop_flag.load(std::sync::atomic::Ordering::Relaxed) {
                other.record(Outcome::Success);
            }
        });
        b.iter(|| shared.record(black_box(Outcome::Success)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        background.join().unwrap();
    });
    group.finish();
}

criterion_group!(benches, outlier);
criterion_main!(benches);
