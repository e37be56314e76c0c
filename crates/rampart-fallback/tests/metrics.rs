//! The `metrics` feature: counters are emitted with the documented names and labels.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use rampart_fallback::{Degrade, FallbackLayer};
use rampart_health::{BoxError, NeverReached};
use tower::{Layer, Service, service_fn};

/// Records every counter increment as `name{label=value,...} += n`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

struct Handle {
    key: String,
    log: Log,
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.log
            .0
            .lock()
            .unwrap()
            .push(format!("{} += {value}", self.key));
    }
    fn absolute(&self, value: u64) {
        self.log
            .0
            .lock()
            .unwrap()
            .push(format!("{} = {value}", self.key));
    }
}

impl GaugeFn for Handle {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.log
            .0
            .lock()
            .unwrap()
            .push(format!("{} = {value}", self.key));
    }
}

fn render(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Log {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle {
            key: render(key),
            log: self.clone(),
        }))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Handle {
            key: render(key),
            log: self.clone(),
        }))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("expected an immediate result"),
    }
}

#[test]
fn apologies_and_degradations_are_counted() {
    let log = Log::default();
    metrics::with_local_recorder(&log, || {
        let mut svc = FallbackLayer::new().layer(service_fn(|_req: Request<()>| {
            std::future::ready(Err::<Response<Empty<Bytes>>, BoxError>(Box::new(
                NeverReached::new(),
            )))
        }));
        now(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap();
        let resp = now(svc.call(Request::new(()))).unwrap();
        assert_eq!(resp.status(), 503);

        // A named layer writes its own series.
        let mut named = FallbackLayer::new()
            .name("checkout")
            .layer(service_fn(|_req: Request<()>| {
                std::future::ready(Err::<Response<Empty<Bytes>>, BoxError>(
                    std::io::Error::other("reset").into(),
                ))
            }));
        now(std::future::poll_fn(|cx| named.poll_ready(cx))).unwrap();
        assert_eq!(now(named.call(Request::new(()))).unwrap().status(), 503);

        let degrade = Degrade::new("recommendations");
        let out = now(degrade.or_default(async { Err::<u8, _>(std::io::Error::other("x")) }));
        assert!(out.is_degraded());
    });
    let log = log.0.lock().unwrap().clone();
    assert!(
        log.contains(
            &"rampart_fallback_apologies_total{layer=fallback,trigger=never_reached} += 1"
                .to_string()
        ),
        "{log:?}"
    );
    assert!(
        log.contains(
            &"rampart_fallback_apologies_total{layer=checkout,trigger=error} += 1".to_string()
        ),
        "{log:?}"
    );
    assert!(
        log.contains(
            &"rampart_fallback_degraded_total{layer=recommendations,dependency=recommendations,reason=failed} += 1"
                .to_string()
        ),
        "{log:?}"
    );
}
