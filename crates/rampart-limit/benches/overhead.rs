//! Per-request cost of the limiter against a bare `service_fn` call and the anchors (tower's
//! `ConcurrencyLimit`, tower-resilience's adaptive limiter), single-threaded and with two
//! threads sharing one limiter. Prints ns/op and the ratios at the end.
//!
//! `cargo bench -p rampart-limit --bench overhead -- --warm-up-time 1 --measurement-time 3`
//!
//! The harness is the breaker benchmark's: on-CPU time of the measuring thread (from
//! `/proc/thread-self/schedstat`, wall time where that file does not exist); with two threads,
//! the wall time per call of the stretches during which both threads ran at once. Every
//! variant drives `poll_ready` then `call` and polls the future to completion with a no-op
//! waker; the inner service answers at once. Every limit is far above the (at most 2) calls in
//! flight, so nothing is shed: this is the admission + measurement cost of a request that
//! goes through.
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
use rampart_limit::algorithm::{Fixed, Gradient2};
use rampart_limit::{AdaptiveThrottle, AdaptiveThrottleLayer, Class, LimitLayer, Limiter};
use tower::{Layer, Service, service_fn};

#[derive(Debug)]
struct Boom;
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}
impl std::error::Error for Boom {}

/// The inner service: answers at once.
fn inner()
-> impl Service<u64, Response = u64, Error = Boom, Future = std::future::Ready<Result<u64, Boom>>>
+ Clone
+ Send
+ 'static {
    service_fn(|x: u64| std::future::ready(Ok::<_, Boom>(x)))
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

/// Calls per timed chunk in [`pair`].
const CHUNK: u64 = 64;

/// A timed chunk of calls: start, end, calls.
type Chunk = (Instant, Instant, u64);

/// A chunk whose wall time exceeds this many times the thread's fastest chunk was preempted
/// (a time slice lost to another process lasts hundreds of µs to ms; a chunk of 64 calls
/// takes a few µs, and contention between our two threads slows it by far less than this).
const PREEMPTED: u32 = 10;

/// Two threads sharing one limiter: `make()` is called once per thread.
///
/// Both threads spin until the other has started, then call in chunks of [`CHUNK`],
/// timestamping each chunk, until one of them has made `iters` calls and raises a shared flag
/// that stops the other. A chunk much slower than the thread's fastest ([`PREEMPTED`]) was
/// preempted and is dropped. The figure is the **wall time per call of the chunks during which
/// the other thread was running too** (the intervals of both threads' unpreempted chunks,
/// intersected): on a loaded machine the scheduler often runs one thread while the other
/// waits, and calls made alone say nothing about contention. The share of calls made while
/// both ran is reported beside it. The timestamps (one clock read per 64 calls) are in every
/// 2-thread row, the bare call's included, so they cancel out of the overheads.
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
                        let mut chunks: Vec<Chunk> =
                            Vec::with_capacity((iters / CHUNK + 1) as usize);
                        started.fetch_add(1, Ordering::SeqCst);
                        while started.load(Ordering::SeqCst) < 2 {
                            std::hint::spin_loop();
                        }
                        let mut done = 0u64;
                        let mut begin = Instant::now();
                        while done < iters && !stop.load(Ordering::Relaxed) {
                            let until = (done + CHUNK).min(iters);
                            for i in done..until {
                                black_box(op(black_box(i)));
                            }
                            let end = Instant::now();
                            chunks.push((begin, end, until - done));
                            done = until;
                            begin = end;
                        }
                        stop.store(true, Ordering::Relaxed);
                        chunks
                    })
                })
                .collect();
            let runs: Vec<Vec<Chunk>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let running: Vec<Vec<Chunk>> = runs.iter().map(|r| unpreempted(r)).collect();
            let (mut time, mut calls, mut all) = (Duration::ZERO, 0u64, 0u64);
            for (me, other) in [(0, 1), (1, 0)] {
                all += runs[me].iter().map(|c| c.2).sum::<u64>();
                for &(start, end, n) in &running[me] {
                    if covered(&running[other], start, end) {
                        time += end - start;
                        calls += n;
                    }
                }
            }
            BOTH_RAN
                .lock()
                .unwrap()
                .entry(name.to_string())
                .or_default()
                .push(calls as f64 / all.max(1) as f64);
            let per_call = if calls > 0 {
                let ns = time.as_nanos() as f64 / calls as f64;
                note_ns(&format!("2t {name}"), ns);
                ns
            } else {
                // The threads never ran at once (criterion still needs a time): the solo
                // chunks' figure, left out of the report.
                let solo: Vec<Chunk> = running.concat();
                let t: Duration = solo.iter().map(|c| c.1 - c.0).sum();
                t.as_nanos() as f64 / solo.iter().map(|c| c.2).sum::<u64>().max(1) as f64
            };
            // Criterion wants the time of `iters` calls.
            Duration::from_secs_f64(per_call * iters as f64 / 1e9)
        });
    });
    group.finish();
}

/// The chunks not slowed by preemption (see [`PREEMPTED`]), in time order.
fn unpreempted(chunks: &[Chunk]) -> Vec<Chunk> {
    // Per call: the last chunk may be short.
    let per_call = |c: &Chunk| (c.1 - c.0) / c.2.max(1) as u32;
    let Some(fastest) = chunks.iter().map(per_call).min() else {
        return Vec::new();
    };
    let limit = fastest * PREEMPTED;
    chunks
        .iter()
        .copied()
        .filter(|c| per_call(c) <= limit)
        .collect()
}

/// `true` when `[a, b)` lies within the union of `chunks` (sorted, adjacent or overlapping
/// where the thread ran without a break), give or take a tenth of its length.
fn covered(chunks: &[Chunk], a: Instant, b: Instant) -> bool {
    let need = (b - a).mul_f64(0.9);
    let first = chunks.partition_point(|c| c.1 <= a);
    let mut got = Duration::ZERO;
    for &(c0, c1, _) in &chunks[first..] {
        if c0 >= b {
            break;
        }
        got += c1.min(b).saturating_duration_since(c0.max(a));
    }
    got >= need
}

static BOTH_RAN: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn gradient2() -> Limiter {
    Limiter::builder()
        .name("bench")
        .algorithm(
            Gradient2::builder()
                .initial_limit(1000)
                .min_limit(1000)
                .max_limit(2000)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
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
            let mut svc = inner();
            move |x| drive(&mut svc, x)
        });
        run!("clock read (reference)", || {
            let clock = quanta::Clock::new();
            move |x| {
                black_box(clock.raw());
                black_box(x) > 0
            }
        });
        {
            let layer = LimitLayer::new(gradient2());
            run!("rampart gradient2", || {
                let mut svc = layer.layer(inner());
                move |x| drive(&mut svc, x)
            });
        }
        {
            let layer = LimitLayer::new(
                Limiter::builder()
                    .name("bench")
                    .algorithm(Fixed::new(1000).unwrap())
                    .build()
                    .unwrap(),
            );
            run!("rampart fixed", || {
                let mut svc = layer.layer(inner());
                move |x| drive(&mut svc, x)
            });
        }
        {
            let limiter = Limiter::builder()
                .name("bench")
                .algorithm(
                    Gradient2::builder()
                        .initial_limit(1000)
                        .min_limit(1000)
                        .max_limit(2000)
                        .build()
                        .unwrap(),
                )
                .partition("checkout", 0.5)
                .partition("pages", 0.4)
                .partition("recommendations", 0.1)
                .build()
                .unwrap();
            let layer = LimitLayer::new(limiter)
                .partition_by(|x: &u64| Class::Partition((*x % 3) as usize));
            run!("rampart gradient2 3 partitions", || {
                let mut svc = layer.layer(inner());
                move |x| drive(&mut svc, x)
            });
        }
        {
            let throttle = AdaptiveThrottle::builder().name("bench").build().unwrap();
            let layer = AdaptiveThrottleLayer::new(throttle);
            run!("rampart throttle", || {
                let mut svc = layer.layer(inner());
                move |x| drive(&mut svc, x)
            });
        }
        {
            let layer = tower::limit::ConcurrencyLimitLayer::new(1000);
            run!("tower ConcurrencyLimit", || {
                let mut svc = layer.layer(inner());
                move |x| drive(&mut svc, x)
            });
        }
        {
            // One semaphore shared by every service, like our limiter (`ConcurrencyLimitLayer`
            // gives each service its own).
            let layer = tower::limit::GlobalConcurrencyLimitLayer::new(1000);
            run!("tower GlobalConcurrencyLimit", || {
                let mut svc = layer.layer(inner());
                move |x| drive(&mut svc, x)
            });
        }
        {
            let aimd = tower_resilience::adaptive::Aimd::builder()
                .initial_limit(1000)
                .min_limit(1000)
                .max_limit(2000)
                .build()
                .unwrap();
            let layer = tower_resilience::adaptive::AdaptiveLimiterLayer::new(aimd);
            run!("tower-resilience adaptive", || {
                let mut svc = layer.layer(inner());
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
    let both = BOTH_RAN.lock().unwrap();
    let get = |k: &str| results.get(k).map(|v| median(v)).unwrap_or(f64::NAN);
    println!("\n== per-request cost (median of criterion samples, ns/op) ==");
    println!(
        "(overhead = variant - bare; tower* = tower's GlobalConcurrencyLimit, one shared semaphore)"
    );
    for threads in ["1t", "2t"] {
        let bare = get(&format!("{threads} bare"));
        let tower = get(&format!("{threads} tower GlobalConcurrencyLimit")) - bare;
        let tr = get(&format!("{threads} tower-resilience adaptive")) - bare;
        println!(
            "-- {} --",
            if threads == "1t" {
                "1 thread"
            } else {
                "2 threads sharing one limiter"
            }
        );
        println!(
            "{:<32} {:>9} {:>10} {:>10} {:>10} {:>8}",
            "variant", "ns/op", "overhead", "vs tower*", "vs t-res", "both ran"
        );
        for name in [
            "bare",
            "clock read (reference)",
            "rampart gradient2",
            "rampart fixed",
            "rampart gradient2 3 partitions",
            "rampart throttle",
            "tower ConcurrencyLimit",
            "tower GlobalConcurrencyLimit",
            "tower-resilience adaptive",
        ] {
            let ns = get(&format!("{threads} {name}"));
            let over = if name == "clock read (reference)" {
                ns
            } else {
                ns - bare
            };
            let overlap = if threads == "2t" {
                both.get(name)
                    .map(|v| {
                        format!(
                            "{:.0}%",
                            100.0 * v.iter().sum::<f64>() / v.len().max(1) as f64
                        )
                    })
                    .unwrap_or_default()
            } else {
                String::new()
            };
            println!(
                "{:<32} {:>9.1} {:>10.1} {:>9.2}x {:>9.2}x {:>8}",
                name,
                ns,
                over,
                over / tower,
                over / tr,
                overlap
            );
        }
    }
}
