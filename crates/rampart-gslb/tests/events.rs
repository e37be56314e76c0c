//! Every change of decision is a `tracing` event (and, with the `metrics` feature, a counter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Mock, settle};
use rampart_gslb::{Gslb, GslbConfig, Site, Sites};
use rampart_health::{HealthReport, HealthReporter};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn decision_changes_are_traced() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    // tracing-core computes a call site's interest from the registering thread's own
    // subscriber while only one subscriber exists ("just one" mode), so the other tests of
    // this binary, which run without one, would cache "never" for our call sites. A second
    // registered subscriber turns that mode off; then re-evaluate what was cached before.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::callsite::rebuild_interest_cache();

    let p0 = HealthReporter::new(HealthReport::new(2, 2));
    let sites = Sites::builder()
        .site(Site::new("eu", Mock::new("eu")).health_report(p0.subscribe()))
        .site(Site::new("us", Mock::new("us")).priority(1))
        .build()
        .unwrap();
    let gslb = Gslb::new(
        GslbConfig::<()>::builder().name("catalog").build().unwrap(),
        sites,
    );
    let handle = gslb.handle();
    let v0 = handle.snapshot().version;

    p0.publish(HealthReport::new(1, 2));
    settle().await;
    let log = captured.text();
    assert!(log.contains("site health changed"), "{log}");
    assert!(log.contains("gslb decision changed"), "{log}");
    assert!(log.contains("gslb=catalog"), "{log}");
    assert!(log.contains("loads=[(0, 70), (1, 30)]"), "{log}");
    assert_eq!(handle.snapshot().version, v0 + 1);

    handle.drain("us").unwrap();
    let log = captured.text();
    assert!(log.contains("site drained"), "{log}");
    assert_eq!(handle.snapshot().version, v0 + 2);

    p0.publish(HealthReport::new(2, 2));
    settle().await;
    assert!(captured.text().contains("failback pending"));
}

#[cfg(feature = "metrics")]
mod metrics_feature {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    #[derive(Default)]
    struct Cell(AtomicU64);
    impl CounterFn for Cell {
        fn increment(&self, v: u64) {
            self.0.fetch_add(v, Ordering::Relaxed);
        }
        fn absolute(&self, v: u64) {
            self.0.store(v, Ordering::Relaxed);
        }
    }
    impl GaugeFn for Cell {
        fn increment(&self, v: f64) {
            self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) + v);
        }
        fn decrement(&self, v: f64) {
            self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) - v);
        }
        fn set(&self, v: f64) {
            self.0.store(v.to_bits(), Ordering::Relaxed);
        }
    }

    /// A recorder that remembers every counter and gauge by its rendered key.
    #[derive(Default, Clone)]
    struct Memory(Arc<Mutex<HashMap<String, Arc<Cell>>>>);

    impl Memory {
        fn cell(&self, key: &Key) -> Arc<Cell> {
            let mut name = key.name().to_string();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            if !labels.is_empty() {
                name = format!("{name}{{{}}}", labels.join(","));
            }
            self.0.lock().unwrap().entry(name).or_default().clone()
        }
        fn counter(&self, name: &str) -> u64 {
            self.0.lock().unwrap()[name].0.load(Ordering::Relaxed)
        }
        fn gauge(&self, name: &str) -> f64 {
            f64::from_bits(self.0.lock().unwrap()[name].0.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Memory {
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

    #[tokio::test(start_paused = true)]
    async fn decisions_and_requests_are_counted() {
        use tower::{Service, ServiceExt};
        let memory = Memory::default();
        let _guard = metrics::set_default_local_recorder(&memory);
        let p0 = HealthReporter::new(HealthReport::new(2, 2));
        let sites = Sites::builder()
            .site(Site::new("eu", Mock::new("eu")).health_report(p0.subscribe()))
            .site(Site::new("us", Mock::new("us")).priority(1))
            .build()
            .unwrap();
        let mut gslb = Gslb::new(
            GslbConfig::<()>::builder().name("m").build().unwrap(),
            sites,
        );
        gslb.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(
            memory.counter("rampart_gslb_requests_total{gslb=m,site=eu}"),
            1
        );
        assert_eq!(memory.gauge("rampart_gslb_active_priority{gslb=m}"), 0.0);
        let before = memory.counter("rampart_gslb_decision_changes_total{gslb=m}");
        p0.publish(HealthReport::new(0, 2));
        settle().await;
        assert_eq!(
            memory.counter("rampart_gslb_decision_changes_total{gslb=m}"),
            before + 1
        );
        assert_eq!(memory.gauge("rampart_gslb_active_priority{gslb=m}"), 1.0);
        assert_eq!(
            memory.gauge("rampart_gslb_site_traffic_share{gslb=m,site=us}"),
            1.0
        );
        gslb.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(
            memory.counter("rampart_gslb_requests_total{gslb=m,site=us}"),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_recorder_installed_after_the_selector_is_built_still_gets_every_series() {
        use tower::{Service, ServiceExt};
        // Built while no recorder is installed...
        let p0 = HealthReporter::new(HealthReport::new(2, 2));
        let sites = Sites::builder()
            .site(Site::new("eu", Mock::new("eu")).health_report(p0.subscribe()))
            .site(Site::new("us", Mock::new("us")).priority(1))
            .build()
            .unwrap();
        let mut gslb = Gslb::new(
            GslbConfig::<()>::builder().name("late").build().unwrap(),
            sites,
        );
        // ...and the recorder arrives before the first request.
        let memory = Memory::default();
        let _guard = metrics::set_default_local_recorder(&memory);
        gslb.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(
            memory.counter("rampart_gslb_requests_total{gslb=late,site=eu}"),
            1
        );
        assert_eq!(
            memory.counter("rampart_gslb_requests_total{gslb=late,site=us}"),
            0
        );
        assert_eq!(memory.counter("rampart_gslb_retries_total{gslb=late}"), 0);
        p0.publish(HealthReport::new(0, 2));
        settle().await;
        assert_eq!(
            memory.counter("rampart_gslb_decision_changes_total{gslb=late}"),
            1
        );
        assert_eq!(memory.gauge("rampart_gslb_active_priority{gslb=late}"), 1.0);
        assert_eq!(
            memory.gauge("rampart_gslb_site_health_share{gslb=late,site=eu}"),
            0.0
        );
        assert!(
            memory
                .0
                .lock()
                .unwrap()
                .keys()
                .all(|k| k.contains("gslb=late")),
            "every series carries the selector's name"
        );
    }
}
