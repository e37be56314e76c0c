//! Property test: random sequences of calls (timed or not), held permits, cancellations, resets and clock
//! advances against a simple sequential reference model of the state machine; states,
//! admissions, rejections and retry hints must be identical.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use rampart_breaker::{BreakerHandle, BreakerState, Permit, Policy, SlidingWindow};
use rampart_health::Outcome;

#[derive(Debug, Clone)]
struct Params {
    /// `Some((bucket width ms, buckets))` for a time-based window of `width × buckets`;
    /// `None` for a count-based window of `window` calls.
    time: Option<(u64, u16)>,
    window: u32,
    minimum: u32,
    threshold: u32,
    permits: u32,
    open_ms: u64,
    cap_ms: u64,
    max_wait_ms: u64,
    consecutive: Option<u32>,
    /// `Some((slow-call duration ms, slow-call rate threshold %))`.
    slow: Option<(u64, u32)>,
}

#[derive(Debug, Clone)]
enum Op {
    Call(Outcome),
    /// A call that took this many ms (recorded with `record_with_duration`).
    TimedCall(Outcome, u64),
    Hold,
    Complete(usize, Outcome),
    Cancel(usize),
    Advance(u64),
    /// Advance to the current deadline (open or half-open) plus -1, 0 or +1 ms.
    AdvanceNearDeadline(i64),
    Reset,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => outcome().prop_map(Op::Call),
        4 => (outcome(), 0u64..200).prop_map(|(o, ms)| Op::TimedCall(o, ms)),
        2 => Just(Op::Hold),
        2 => (any::<usize>(), outcome()).prop_map(|(i, o)| Op::Complete(i, o)),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => prop_oneof![0u64..50, 50u64..3_000, 3_000u64..20_000].prop_map(Op::Advance),
        3 => (-1i64..=1).prop_map(Op::AdvanceNearDeadline),
        1 => Just(Op::Reset),
    ]
}

fn params() -> impl Strategy<Value = Params> {
    (
        1u32..12,
        1u32..=100,
        1u32..5,
        1u64..2_000,
        0u32..4,
        1u64..15_000,
        proptest::option::of(1u32..6),
        proptest::option::weighted(0.4, (1u64..3_000, 1u16..6)),
        proptest::option::weighted(0.4, (1u64..150, 1u32..=100)),
    )
        .prop_flat_map(
            |(
                window,
                threshold,
                permits,
                open_ms,
                doublings,
                max_wait_ms,
                consecutive,
                time,
                slow,
            )| {
                // A count window caps the minimum at its size; a time window does not.
                let max_minimum = if time.is_some() { 12 } else { window };
                (1..=max_minimum).prop_map(move |minimum| Params {
                    time,
                    window,
                    minimum,
                    threshold,
                    permits,
                    open_ms,
                    cap_ms: open_ms << doublings,
                    max_wait_ms,
                    consecutive,
                    slow,
                })
            },
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Window,
    Trial,
}

/// The reference: Resilience4j's state machine, written as plainly as possible.
#[derive(Debug)]
struct Model {
    p: Params,
    now: u64,
    state: BreakerState,
    generation: u64,
    /// `(time-window epoch, failed, slow)` of each recorded call, oldest first.
    window: VecDeque<(u64, bool, bool)>,
    consecutive: u32,
    reopens: u32,
    open_until: u64,
    half_open_until: u64,
    admitted: u32,
    passed: u32,
    failed: u32,
    slow: u32,
}

impl Model {
    fn new(p: Params) -> Self {
        Self {
            p,
            now: 0,
            state: BreakerState::Closed,
            generation: 0,
            window: VecDeque::new(),
            consecutive: 0,
            reopens: 0,
            open_until: 0,
            half_open_until: 0,
            admitted: 0,
            passed: 0,
            failed: 0,
            slow: 0,
        }
    }

    fn epoch(&self) -> u64 {
        self.p.time.map_or(0, |(width, _)| self.now / width)
    }

    /// Drops what has left the window: beyond the last N calls, or in a bucket N or more
    /// buckets old.
    fn expire(&mut self) {
        match self.p.time {
            None => {
                while self.window.len() > self.p.window as usize {
                    self.window.pop_front();
                }
            }
            Some((_, buckets)) => {
                let now = self.epoch();
                self.window.retain(|(e, _, _)| e + u64::from(buckets) > now);
            }
        }
    }

    fn open(&mut self, from_half_open: bool) -> u64 {
        self.generation += 1;
        if from_half_open {
            self.reopens += 1;
        }
        let d = (self.p.open_ms << self.reopens.min(40)).min(self.p.cap_ms);
        self.open_until = self.now + d;
        self.window.clear();
        self.consecutive = 0;
        self.state = BreakerState::Open;
        d
    }

    fn close(&mut self) {
        self.generation += 1;
        self.state = BreakerState::Closed;
        self.reopens = 0;
        self.consecutive = 0;
        self.window.clear();
    }

    /// The state the next call will see: time-driven transitions are reported before the
    /// call that performs them.
    fn effective(&self) -> BreakerState {
        match self.state {
            BreakerState::Open if self.now >= self.open_until => BreakerState::HalfOpen,
            BreakerState::HalfOpen if self.now >= self.half_open_until => BreakerState::Open,
            s => s,
        }
    }

    /// `Ok((generation, kind))` or `Err((state, retry_after_ms))`.
    fn acquire(&mut self) -> Result<(u64, Kind), (BreakerState, Option<u64>)> {
        match self.state {
            BreakerState::Closed => Ok((self.generation, Kind::Window)),
            BreakerState::Open => {
                if self.now >= self.open_until {
                    self.generation += 1;
                    self.state = BreakerState::HalfOpen;
                    self.admitted = 1;
                    self.passed = 0;
                    self.failed = 0;
                    self.slow = 0;
                    self.half_open_until = self.now + self.p.max_wait_ms;
                    Ok((self.generation, Kind::Trial))
                } else {
                    Err((BreakerState::Open, Some(self.open_until - self.now)))
                }
            }
            BreakerState::HalfOpen => {
                if self.now >= self.half_open_until {
                    let d = self.open(true);
                    Err((BreakerState::Open, Some(d)))
                } else if self.admitted < self.p.permits {
                    self.admitted += 1;
                    Ok((self.generation, Kind::Trial))
                } else {
                    Err((BreakerState::HalfOpen, None))
                }
            }
            other => unreachable!("{other:?} is not modelled"),
        }
    }

    /// Whether a call's rates are over the thresholds (failure rate first, then slow calls).
    fn over(&self, calls: u64, failures: u64, slow: u64) -> bool {
        failures * 100 >= u64::from(self.p.threshold) * calls
            || self
                .p
                .slow
                .is_some_and(|(_, t)| slow * 100 >= u64::from(t) * calls)
    }

    fn record(&mut self, token: (u64, Kind), outcome: Outcome) {
        self.record_timed(token, outcome, None);
    }

    fn record_timed(&mut self, (generation, kind): (u64, Kind), outcome: Outcome, ms: Option<u64>) {
        let failed = outcome == Outcome::Failure;
        let slow = match (self.p.slow, ms) {
            (Some((limit, _)), Some(ms)) => ms >= limit && outcome != Outcome::Ignored,
            _ => false,
        };
        match kind {
            Kind::Window => {
                if outcome == Outcome::Ignored || generation != self.generation {
                    return;
                }
                self.window.push_back((self.epoch(), failed, slow));
                self.expire();
                if let Some(k) = self.p.consecutive {
                    if failed {
                        self.consecutive += 1;
                        if self.consecutive >= k {
                            self.open(false);
                            return;
                        }
                    } else {
                        self.consecutive = 0;
                    }
                }
                let calls = self.window.len() as u64;
                let failures = self.window.iter().filter(|(_, f, _)| *f).count() as u64;
                let slow_calls = self.window.iter().filter(|(_, _, s)| *s).count() as u64;
                if calls >= u64::from(self.p.minimum) && self.over(calls, failures, slow_calls) {
                    self.open(false);
                }
            }
            Kind::Trial => {
                if outcome == Outcome::Ignored {
                    self.release((generation, kind));
                    return;
                }
                if self.state != BreakerState::HalfOpen || generation != self.generation {
                    return;
                }
                if failed {
                    self.failed += 1;
                } else {
                    self.passed += 1;
                }
                self.slow += u32::from(slow);
                let judged = self.passed + self.failed;
                if judged >= self.p.permits {
                    if self.over(
                        u64::from(judged),
                        u64::from(self.failed),
                        u64::from(self.slow),
                    ) {
                        self.open(true);
                    } else {
                        self.close();
                    }
                }
            }
        }
    }

    fn release(&mut self, (generation, kind): (u64, Kind)) {
        if kind == Kind::Trial
            && self.state == BreakerState::HalfOpen
            && generation == self.generation
            && self.admitted > self.passed + self.failed
        {
            self.admitted -= 1;
        }
    }
}

fn check(p: Params, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let window = match p.time {
            Some((width, buckets)) => SlidingWindow::time_with_buckets(
                Duration::from_millis(width * u64::from(buckets)),
                buckets,
            ),
            None => SlidingWindow::count(p.window),
        };
        let mut builder = Policy::builder()
            .sliding_window(window)
            .minimum_calls(p.minimum)
            .failure_rate_threshold(f64::from(p.threshold))
            .permitted_calls_in_half_open(p.permits)
            .open_duration(Duration::from_millis(p.open_ms))
            .max_open_duration(Duration::from_millis(p.cap_ms))
            .open_backoff(2.0)
            .open_jitter(0.0)
            .max_wait_in_half_open(Duration::from_millis(p.max_wait_ms));
        if let Some(k) = p.consecutive {
            builder = builder.consecutive_failures(k);
        }
        if let Some((ms, threshold)) = p.slow {
            builder = builder
                .slow_call_duration(Duration::from_millis(ms))
                .slow_call_rate_threshold(f64::from(threshold));
        }
        let breaker = BreakerHandle::new(builder.build().unwrap());
        let mut model = Model::new(p);
        // Held permits with the model time they were taken at (their calls' start).
        let mut held: Vec<(Permit, (u64, Kind), u64)> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            let acquire = |model: &mut Model| {
                let real = breaker.try_acquire();
                let expected = model.acquire();
                match (&real, &expected) {
                    (Ok(permit), Ok((_, kind))) => {
                        prop_assert_eq!(permit.is_trial(), *kind == Kind::Trial, "step {}", step);
                    }
                    (Err(e), Err((state, retry))) => {
                        prop_assert_eq!(e.state(), *state, "step {}", step);
                        prop_assert_eq!(
                            e.retry_after(),
                            retry.map(Duration::from_millis),
                            "step {}",
                            step
                        );
                    }
                    _ => prop_assert!(
                        false,
                        "step {}: real {:?} vs model {:?}",
                        step,
                        real.as_ref().map(|_| ()),
                        expected
                    ),
                }
                Ok(real.ok().zip(expected.ok()))
            };
            match op {
                Op::Call(o) => {
                    if let Some((permit, token)) = acquire(&mut model)? {
                        permit.record(o);
                        model.record(token, o);
                    }
                }
                Op::TimedCall(o, ms) => {
                    if let Some((permit, token)) = acquire(&mut model)? {
                        permit.record_with_duration(o, Duration::from_millis(ms));
                        model.record_timed(token, o, Some(ms));
                    }
                }
                Op::Hold => {
                    if let Some((permit, token)) = acquire(&mut model)? {
                        held.push((permit, token, model.now));
                    }
                }
                Op::Complete(i, o) if !held.is_empty() => {
                    // The permit times the call from its acquisition (slow-call tracking).
                    let (permit, token, taken_at) = held.remove(i % held.len());
                    permit.record(o);
                    model.record_timed(token, o, Some(model.now - taken_at));
                }
                Op::Cancel(i) if !held.is_empty() => {
                    let (permit, token, _) = held.remove(i % held.len());
                    drop(permit);
                    model.release(token);
                }
                Op::Complete(..) | Op::Cancel(_) => {}
                Op::Advance(ms) => {
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    model.now += ms;
                }
                Op::AdvanceNearDeadline(offset) => {
                    let deadline = match model.state {
                        BreakerState::Open => model.open_until,
                        BreakerState::HalfOpen => model.half_open_until,
                        _ => model.now,
                    };
                    let target = deadline.saturating_add_signed(offset).max(model.now);
                    let ms = target - model.now;
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    model.now += ms;
                }
                Op::Reset => {
                    breaker.reset();
                    model.close();
                }
            }
            prop_assert_eq!(breaker.state(), model.effective(), "step {}", step);
            let snap = breaker.snapshot();
            prop_assert_eq!(snap.state, model.effective(), "step {}", step);
            prop_assert_eq!(snap.recorded_state, model.state, "step {}", step);
            prop_assert_eq!(snap.reopens, model.reopens, "step {}", step);
            let open = model.state == BreakerState::Open && model.effective() == BreakerState::Open;
            prop_assert_eq!(
                snap.retry_after,
                open.then(|| Duration::from_millis(model.open_until - model.now)),
                "step {}",
                step
            );
            if model.state == BreakerState::Closed {
                model.expire();
                prop_assert_eq!(snap.calls, model.window.len() as u64, "step {}", step);
            }
            if model.state == BreakerState::HalfOpen && model.effective() == BreakerState::HalfOpen
            {
                prop_assert_eq!(
                    snap.half_open_time_left,
                    Some(Duration::from_millis(model.half_open_until - model.now)),
                    "step {}",
                    step
                );
                prop_assert_eq!(
                    snap.half_open_in_flight,
                    model.admitted - model.passed - model.failed,
                    "step {}",
                    step
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_breaker_behaves_like_the_reference_model(
        p in params(),
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        check(p, ops)?;
    }
}
