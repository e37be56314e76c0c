//! Every transition, rejection and slow call is a `tracing` event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_breaker::{BreakerEvent, BreakerHandle, BreakerState, Policy, SlidingWindow};
use rampart_health::Outcome;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Collects `(level, message)` of every event, and the `from`/`to` fields of transitions.
#[derive(Clone, Default)]
struct Collect(
    Arc<Mutex<Vec<(Level, String)>>>,
    Arc<Mutex<Vec<(String, String)>>>,
);

#[derive(Default)]
struct Message {
    message: String,
    from: Option<String>,
    to: Option<String>,
}
impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "from" => self.from = Some(format!("{value:?}")),
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
        if let (Some(from), Some(to)) = (m.from, m.to) {
            self.1.lock().unwrap().push((from, to));
        }
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), m.message));
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

/// Drives a breaker through every kind of transition: each one is a tracing event and a
/// broadcast `BreakerEvent`, in the same order; so is every rejection.
#[tokio::test(start_paused = true)]
async fn every_transition_and_rejection_is_traced_and_broadcast() {
    use BreakerState::{Closed, Disabled, ForcedOpen, HalfOpen, MetricsOnly, Open};
    use Outcome::{Failure as F, Success as S};
    use tokio::time::advance;

    let collect = Collect::default();
    let _guard = tracing::subscriber::set_default(collect.clone());
    let b = BreakerHandle::new(
        Policy::builder()
            .sliding_window(SlidingWindow::count(2))
            .minimum_calls(2)
            .open_duration(Duration::from_secs(1))
            .open_jitter(0.0)
            .permitted_calls_in_half_open(1)
            .max_wait_in_half_open(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    let mut rx = b.subscribe();
    let call = |o: Outcome| b.try_acquire().unwrap().record(o);
    let mut rejections = 0;

    call(F);
    call(F); // closed -> open (failure rate)
    assert!(b.try_acquire().is_err());
    rejections += 1;
    advance(Duration::from_secs(1)).await;
    call(S); // open -> half-open, then half-open -> closed
    call(F);
    call(F); // closed -> open
    advance(Duration::from_secs(1)).await;
    call(F); // open -> half-open, half-open -> open (verdict); 2 s now
    advance(Duration::from_secs(2)).await;
    let hung = b.try_acquire().unwrap(); // open -> half-open
    assert!(b.try_acquire().is_err(), "the only permit is taken");
    rejections += 1;
    advance(Duration::from_secs(10)).await;
    assert!(b.try_acquire().is_err()); // half-open -> open (timed out), rejected
    rejections += 1;
    drop(hung);
    b.force_open();
    assert!(b.try_acquire().is_err());
    rejections += 1;
    b.disable();
    b.metrics_only();
    b.reset();

    let expected = [
        (Closed, Open),
        (Open, HalfOpen),
        (HalfOpen, Closed),
        (Closed, Open),
        (Open, HalfOpen),
        (HalfOpen, Open),
        (Open, HalfOpen),
        (HalfOpen, Open),
        (Open, ForcedOpen),
        (ForcedOpen, Disabled),
        (Disabled, MetricsOnly),
        (MetricsOnly, Closed),
    ];
    let events: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let broadcast: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            BreakerEvent::Transition { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(broadcast, expected);
    let traced = collect.1.lock().unwrap().clone();
    let expected_names: Vec<_> = expected
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(traced, expected_names);
    let rejected_broadcast = events
        .iter()
        .filter(|e| matches!(e, BreakerEvent::Rejected { .. }))
        .count();
    let rejected_traced = collect
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, m)| *level == Level::DEBUG && m == "call rejected by circuit breaker")
        .count();
    assert_eq!(
        (rejected_broadcast, rejected_traced),
        (rejections, rejections)
    );
}
