//! The server's series through the `metrics` facade, read from a recorder installed for this
//! test binary: a half-sent request counts as accepted, timed out (`header_read`) and
//! answered `408`, and the open-connections gauge returns to zero.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use rampart_gateway::server::{self, ServerConfig, TowerHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every series by name and labels (`name{k=v,...}`), as atomics.
#[derive(Default)]
struct Series(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Series {
    fn get(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        self.0.lock().unwrap().entry(id).or_default().clone()
    }

    fn value(&self, id: &str) -> Option<u64> {
        self.0
            .lock()
            .unwrap()
            .get(id)
            .map(|v| v.load(Ordering::Relaxed))
    }
}

struct Capture(Arc<Series>);

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.get(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.get(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn series() -> Arc<Series> {
    static SERIES: OnceLock<Arc<Series>> = OnceLock::new();
    SERIES
        .get_or_init(|| {
            let s = Arc::new(Series::default());
            metrics::set_global_recorder(Capture(s.clone())).unwrap();
            s
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_head_is_counted_under_the_servers_name() {
    let series = series();
    let config = ServerConfig::builder()
        .name("metered")
        .header_read_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &config).unwrap();
    let app: axum::Router = axum::Router::new();
    let running = server::spawn(listener, &config, TowerHandler::new(app)).unwrap();

    let mut c = TcpStream::connect(running.local_addr()).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nho").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer))
        .await
        .expect("closed by the server")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 408"));

    let value = |id: &str| series.value(id);
    assert_eq!(
        value("rampart_gateway_connections_accepted_total{server=metered}"),
        Some(1)
    );
    assert_eq!(
        value("rampart_gateway_connections_timed_out_total{server=metered,timeout=header_read}"),
        Some(1)
    );
    assert_eq!(
        value("rampart_gateway_request_timeout_responses_total{server=metered}"),
        Some(1)
    );
    assert_eq!(
        value("rampart_gateway_connections_timed_out_total{server=metered,timeout=keep_alive}"),
        Some(0)
    );
    // The gauge (f64 bits) returns to zero once the connection's task has ended.
    let mut open = f64::NAN;
    for _ in 0..100 {
        open = f64::from_bits(value("rampart_gateway_connections_open{server=metered}").unwrap());
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open, 0.0);
}
