//! Every transition, rejection and slow call is a `tracing` event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_breaker::{BreakerHandle, Policy, SlidingWindow};
use rampart_health::Outcome;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Collects `(level, message)` of every event.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<(Level, String)>>>);

struct Message(String);
impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), m.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn transitions_rejections_and_slow_calls_are_traced() {
    let collect = Collect::default();
    tracing::subscriber::with_default(collect.clone(), || {
        let b = BreakerHandle::new(
            Policy::builder()
                .sliding_window(SlidingWindow::count(2))
                .minimum_calls(2)
                .slow_call_duration(Duration::from_millis(10))
                .build()
                .unwrap(),
        );
        b.try_acquire()
            .unwrap()
            .record_with_duration(Outcome::Success, Duration::from_millis(20));
        b.try_acquire().unwrap().record(Outcome::Failure);
        assert!(b.try_acquire().is_err());
        b.reset();
    });
    let events = collect.0.lock().unwrap().clone();
    assert_eq!(
        events,
        vec![
            (Level::INFO, "slow call".to_string()),
            (Level::WARN, "circuit breaker opened".to_string()),
            (Level::DEBUG, "call rejected by circuit breaker".to_string()),
            (Level::INFO, "circuit breaker changed state".to_string()),
        ]
    );
}
