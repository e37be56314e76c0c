//! Limit changes and sheds are `tracing` events, rate-limited so a surge does not flood the
//! log. (One test in this binary: tracing caches per-callsite interest process-wide.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_health::Outcome;
use rampart_limit::algorithm::Aimd;
use rampart_limit::{Class, Limiter};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// `(level, message, to)` of one event.
type Seen = (Level, String, Option<String>);

/// Collects every event.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Seen>>>);

#[derive(Default)]
struct Message {
    message: String,
    to: Option<String>,
}
impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "to" => self.to = Some(format!("{value:?}")),
            _ => {}
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
        let mut m = Message::default();
        event.record(&mut m);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), m.message, m.to));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn limit_changes_and_sheds_are_logged_at_most_once_a_second_each() {
    let collect = Collect::default();
    let (clock, mock) = quanta::Clock::mock();
    tracing::subscriber::with_default(collect.clone(), || {
        let limiter = Limiter::builder()
            .name("logged")
            .algorithm(
                Aimd::builder()
                    .initial_limit(20)
                    .min_limit(1)
                    .backoff(0.9)
                    .build()
                    .unwrap(),
            )
            .window_samples(1)
            .min_window(Duration::ZERO)
            .clock(clock)
            .build()
            .unwrap();
        // Ten limit changes within the same second: one info event, nine trace events.
        for _ in 0..10 {
            mock.increment(Duration::from_millis(1));
            limiter
                .try_acquire(Class::Partition(0))
                .unwrap()
                .record(Outcome::Failure);
        }
        let held: Vec<_> = (0..limiter.limit())
            .map(|_| limiter.try_acquire(Class::Partition(0)).unwrap())
            .collect();
        for _ in 0..5 {
            assert!(limiter.try_acquire(Class::Partition(0)).is_err());
        }
        mock.increment(Duration::from_secs(2));
        assert!(limiter.try_acquire(Class::Partition(0)).is_err());
        drop(held);
    });
    let events = collect.0.lock().unwrap();
    let count = |level: Level, msg: &str| {
        events
            .iter()
            .filter(|(l, m, _)| *l == level && m == msg)
            .count()
    };
    assert_eq!(count(Level::INFO, "concurrency limit changed"), 1);
    assert_eq!(count(Level::TRACE, "concurrency limit changed"), 9);
    let first = events
        .iter()
        .find(|(l, m, _)| *l == Level::INFO && m == "concurrency limit changed")
        .unwrap();
    assert_eq!(first.2.as_deref(), Some("18"), "20 × 0.9 = 18");
    assert_eq!(
        count(Level::WARN, "request shed"),
        2,
        "first shed, then 2 s later"
    );
    assert_eq!(count(Level::TRACE, "request shed"), 4);
}
