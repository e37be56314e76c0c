//! Per-call overhead of the breaker against a bare `service_fn` call and the anchors
//! (`failsafe`'s breaker, `tower-resilience`'s circuit breaker), single-threaded and with two
//! threads sharing one breaker. Prints ns/op and the ratios at the end.
//!
//! `cargo bench -p rampart-breaker --bench overhead -- --warm-up-time 1 --measurement-time 3`
//!
//! Times are on-CPU time of the measuring thread (from `/proc/thread-self/schedstat`, falling
//! back to wall-clock time where that file does not exist), so that the time slices other
//! processes take on a shared machine are not counted. With two threads, both run until the
//! first has made its calls (see [`pair`]), and the report shows a lower bound of the share of
//! that span during which both were on a CPU at once.
//!
//! Every variant drives the same loop: `poll_ready` then `call`, polling the futures to
//! completion with a no-op waker (they are ready at once; a contended tokio mutex in
//! tower-resilience may need a few polls). Overhead = variant − bare with the same inner.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::Criterion;
use failsafe::futures::CircuitBreaker as _;
use rampart_breaker::{CircuitBreakerLayer, Policy, SlidingWindow};
use tower::{Layer, Service, service_fn};

#[derive(Debug)]
struct Boom;
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}
impl std::error::Error for Boom {}

/// The inner service: answers at once; every 10th request fails when `fail_every_10th`.
fn inner(
    fail_every_10th: bool,
) -> impl Service<u64, Response = u64, Error = Boom, Future = std::future::Ready<Result<u64, Boom>>>
+ Clone
+ Send
+ 'static {
    service_fn(move |x: u64| {
        std::future::ready(if fail_every_10th && x.is_multiple_of(10) {
            Err(Boom)
        } else {
            Ok(x)
        })
    })
}

fn block<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::hint::spin_loop();
    }
}

#[inline]
fn drive<S: Service<u64>>(svc: &mut S, x: u64) -> bool {
    if block(poll_fn(|cx| svc.poll_ready(cx))).is_err() {
        return false;
    }
    block(svc.call(x)).is_ok()
}

/// On-CPU time of the calling thread, if the kernel reports it.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `f` and returns the thread's on-CPU time for it (wall time as a fallback).
fn timed(f: impl FnOnce()) -> Duration {
    let (cpu, wall) = (cpu_time(), Instant::now());
    f();
    match (cpu, cpu_time()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall.elapsed(),
    }
}

static RESULTS: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn note(name: &str, elapsed: Duration, iters: u64) {
    note_ns(name, elapsed.as_nanos() as f64 / iters.max(1) as f64);
}

fn note_ns(name: &str, ns: f64) {
    RESULTS
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .push(ns);
}

/// One thread: `make()` builds the call loop body.
fn single<O: FnMut(u64) -> bool>(c: &mut Criterion, name: &str, mut make: impl FnMut() -> O) {
    let mut group = c.benchmark_group("1 thread");
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut op = make();
            let elapsed = timed(|| {
                for i in 0..iters {
                    black_box(op(black_box(i)));
                }
            });
            note(&format!("1t {name}"), elapsed, iters);
            elapsed
        });
    });
    group.finish();
}

/// Calls between two looks at the shared stop flag in [`pair`].
const CHUNK: u64 = 64;

/// Two threads sharing one breaker: `make()` is called once per thread.
///
/// Both threads spin until the other has started, then call in chunks of [`CHUNK`] until one
/// of them has made `iters` calls, and that one raises a shared flag that stops the other at
/// its next chunk: so both are live for the whole measured span, and neither runs alone at the
/// end. The cost is the two threads' on-CPU time over their calls (ns of CPU per call, the
/// same unit as the single-thread rows, and contention shows as a higher figure). Live is not
/// running, though: on a loaded machine the scheduler may still run one while the other waits.
/// So each sample also records a lower bound of the share of the span during which both
/// threads were on a CPU at once: (cpu₁ + cpu₂ − span) / span.
fn pair<O: FnMut(u64) -> bool + Send + 'static>(
    c: &mut Criterion,
    name: &str,
    mut make: impl FnMut() -> O,
) {
    let mut group = c.benchmark_group("2 threads");
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let started = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let mut op = make();
                    let started = started.clone();
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        started.fetch_add(1, Ordering::SeqCst);
                        while started.load(Ordering::SeqCst) < 2 {
                            std::hint::spin_loop();
                        }
                        let begin = Instant::now();
                        let mut done = 0u64;
                        let cpu = timed(|| {
                            while done < iters && !stop.load(Ordering::Relaxed) {
                                for i in done..(done + CHUNK).min(iters) {
                                    black_box(op(black_box(i)));
                                }
                                done = (done + CHUNK).min(iters);
                            }
                            stop.store(true, Ordering::Relaxed);
                        });
                        (cpu, done, begin, Instant::now())
                    })
                })
                .collect();
            let runs: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let cpu: Duration = runs.iter().map(|r| r.0).sum();
            let calls: u64 = runs.iter().map(|r| r.1).sum();
            let first_begin = runs.iter().map(|r| r.2).min().unwrap();
            let last_end = runs.iter().map(|r| r.3).max().unwrap();
            let span = (last_end - first_begin).as_secs_f64().max(1e-9);
            let both = ((cpu.as_secs_f64() - span) / span).clamp(0.0, 1.0);
            BOTH_ON_CPU
                .lock()
                .unwrap()
                .entry(name.to_string())
                .or_default()
                .push(both);
            let per_call = cpu.as_nanos() as f64 / calls.max(1) as f64;
            note_ns(&format!("2t {name}"), per_call);
            // Criterion wants the time of `iters` calls.
            Duration::from_secs_f64(per_call * iters as f64 / 1e9)
        });
    });
    group.finish();
}

static BOTH_ON_CPU: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// A factory of call loops through one shared breaker of ours.
macro_rules! ours {
    ($policy:expr, $fail:expr) => {{
        let layer = CircuitBreakerLayer::new($policy);
        move || {
            let mut svc = layer.layer(inner($fail));
            move |x| drive(&mut svc, x)
        }
    }};
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let default = Policy::default;
    let slow = || {
        Policy::builder()
            .slow_call_duration(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    let time_window = || {
        Policy::builder()
            .sliding_window(SlidingWindow::time(Duration::from_secs(10)))
            .build()
            .unwrap()
    };

    for threads in [1, 2] {
        macro_rules! run {
            ($name:expr, $make:expr) => {
                if threads == 1 {
                    single(&mut c, $name, $make)
                } else {
                    pair(&mut c, $name, $make)
                }
            };
        }
        run!("bare", || {
            let mut svc = inner(false);
            move |x| drive(&mut svc, x)
        });
        run!("clock read (reference)", || {
            |x| {
                black_box(tokio::time::Instant::now());
                black_box(x) > 0
            }
        });
        run!("bare 10% failures", || {
            let mut svc = inner(true);
            move |x| drive(&mut svc, x)
        });
        run!("rampart closed", ours!(default(), false));
        run!("rampart 10% failures", ours!(default(), true));
        run!("rampart slow-call tracking", ours!(slow(), false));
        run!("rampart time window", ours!(time_window(), false));
        {
            let breaker = failsafe::Config::new().build();
            run!("failsafe", || {
                let mut svc = inner(false);
                let breaker = breaker.clone();
                move |x| {
                    if block(poll_fn(|cx| svc.poll_ready(cx))).is_err() {
                        return false;
                    }
                    block(breaker.call(svc.call(x))).is_ok()
                }
            });
        }
        {
            let layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                .build()
                .unwrap();
            let proto = layer.layer(inner(false));
            run!("tower-resilience", || {
                let mut svc = proto.clone();
                move |x| drive(&mut svc, x)
            });
        }
    }
    c.final_summary();
    report();
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report() {
    let results = RESULTS.lock().unwrap();
    let get = |k: &str| results.get(k).map(|v| median(v)).unwrap_or(f64::NAN);
    println!("\n== per-call cost (median of criterion samples, ns/op) ==");
    for threads in ["1t", "2t"] {
        let bare = get(&format!("{threads} bare"));
        let bare10 = get(&format!("{threads} bare 10% failures"));
        let fs = get(&format!("{threads} failsafe")) - bare;
        let tr = get(&format!("{threads} tower-resilience")) - bare;
        println!(
            "-- {} --",
            if threads == "1t" {
                "1 thread"
            } else {
                "2 threads sharing one breaker"
            }
        );
        println!(
            "{:<30} {:>9} {:>10} {:>12} {:>12} {:>14}",
            "variant",
            "ns/op",
            "overhead",
            "vs failsafe",
            "vs tower-res",
            if threads == "2t" {
                "both on CPU ≥"
            } else {
                ""
            }
        );
        for (name, base) in [
            ("bare", bare),
            ("bare 10% failures", bare10),
            ("clock read (reference)", 0.0),
            ("rampart closed", bare),
            ("rampart 10% failures", bare10),
            ("rampart slow-call tracking", bare),
            ("rampart time window", bare),
            ("failsafe", bare),
            ("tower-resilience", bare),
        ] {
            let ns = get(&format!("{threads} {name}"));
            let over = ns - base;
            let overlap = if threads == "2t" {
                BOTH_ON_CPU
                    .lock()
                    .unwrap()
                    .get(name)
                    .map(|v| format!("{:.0} %", median(v) * 100.0))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            println!(
                "{name:<30} {ns:>9.1} {over:>10.1} {:>11.2}x {:>11.2}x {overlap:>14}",
                over / fs,
                over / tr
            );
        }
    }
}
