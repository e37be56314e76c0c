//! The per-call timing scaffold of the middleware benchmarks (feature `bench`): a bare
//! baseline and the variants measured side by side in one run, on one thread and on two
//! threads sharing one middleware, with the medians kept for a same-run report.
//!
//! A variant is a factory of **batches**: `make()` is called once per measuring thread and
//! returns a closure that makes the calls numbered by a range. Two ways to drive a service:
//!
//! - [`polled`]: `poll_ready` then `call`, polling the futures with a no-op waker (the
//!   middleware alone: no runtime in the loop);
//! - [`on_tokio`]: what an application does, on a current-thread tokio runtime:
//!   `svc.ready().await?.call(x).await` in an `async` loop (one `block_on` per batch).
//!
//! Times are on-CPU time of the measuring thread (from `/proc/thread-self/schedstat`, wall
//! time where that file does not exist), so that the time slices other processes take on a
//! shared machine are not counted. With two threads the figure is the wall time per call of
//! the stretches during which both threads were running at once (see [`pair`]), and
//! [`both_ran`] says what share of the calls were made in such stretches.
//!
//! ```no_run
//! use criterion::Criterion;
//! use rampart_test_support::bench::{self, Threads};
//!
//! let mut c = Criterion::default();
//! for threads in [Threads::One, Threads::Two] {
//!     bench::run(&mut c, threads, "bare", || {
//!         bench::polled(tower::service_fn(|x: u64| async move { Ok::<_, std::io::Error>(x) }))
//!     });
//! }
//! println!("{:.1} ns", bench::median_of(Threads::One, "bare"));
//! ```

use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::hint::black_box;
use std::ops::Range;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::Criterion;
use tower::{Service, ServiceExt};

/// One thread, or two threads sharing the middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One thread.
    One,
    /// Two threads, each with its own service (clone) around one shared middleware state.
    Two,
}

impl Threads {
    /// The key prefix of the results (`"1t"`, `"2t"`).
    pub const fn key(self) -> &'static str {
        match self {
            Threads::One => "1t",
            Threads::Two => "2t",
        }
    }

    /// A heading for reports.
    pub const fn title(self) -> &'static str {
        match self {
            Threads::One => "1 thread",
            Threads::Two => "2 threads sharing one instance",
        }
    }
}

/// Polls `f` to completion with a no-op waker (spinning while it is pending).
pub fn block<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::hint::spin_loop();
    }
}

/// One call: `poll_ready` then `call`, polled with a no-op waker; `true` when it succeeded.
#[inline]
pub fn drive<S: Service<u64>>(svc: &mut S, x: u64) -> bool {
    if block(poll_fn(|cx| svc.poll_ready(cx))).is_err() {
        return false;
    }
    block(svc.call(x)).is_ok()
}

/// One call as an application makes it: `svc.ready().await?.call(x).await`.
#[inline]
pub async fn ready_call<S: Service<u64>>(svc: &mut S, x: u64) -> bool {
    match svc.ready().await {
        Ok(svc) => svc.call(x).await.is_ok(),
        Err(_) => false,
    }
}

/// A batch of calls from a per-call closure.
pub fn calls(mut op: impl FnMut(u64) -> bool) -> impl FnMut(Range<u64>) {
    move |range| {
        for i in range {
            black_box(op(black_box(i)));
        }
    }
}

/// A batch of calls through `svc` with [`drive`] (no runtime).
pub fn polled<S: Service<u64>>(mut svc: S) -> impl FnMut(Range<u64>) {
    calls(move |x| drive(&mut svc, x))
}

/// A batch of calls through `svc` with [`ready_call`] in an `async` loop on a current-thread
/// tokio runtime (time enabled) owned by the batch.
pub fn on_tokio<S: Service<u64>>(mut svc: S) -> impl FnMut(Range<u64>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    move |range| {
        rt.block_on(async {
            for i in range {
                black_box(ready_call(&mut svc, black_box(i)).await);
            }
        });
    }
}

/// On-CPU time of the calling thread, if the kernel reports it.
///
/// Read from `/proc/thread-self/schedstat`, which the kernel brings up to date at its
/// scheduler ticks (every 4 ms on a 250 Hz kernel) and context switches: a timed stretch
/// should last hundreds of milliseconds for the tick to stay within a few percent.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `f` and returns the thread's on-CPU time for it (wall time as a fallback).
pub fn timed(f: impl FnOnce()) -> Duration {
    let (cpu, wall) = (cpu_time(), Instant::now());
    f();
    match (cpu, cpu_time()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall.elapsed(),
    }
}

/// ns per call of every sample, by `"<threads key> <name>"`.
static RESULTS: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());
/// Two threads: the share of each sample's calls made while both threads ran, by name.
static BOTH_RAN: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// Keeps one sample (ns per call) of `name` run on `threads`.
pub fn note(threads: Threads, name: &str, ns: f64) {
    RESULTS
        .lock()
        .unwrap()
        .entry(format!("{} {name}", threads.key()))
        .or_default()
        .push(ns);
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median ns per call of `name` on `threads` (NaN when it did not run).
pub fn median_of(threads: Threads, name: &str) -> f64 {
    RESULTS
        .lock()
        .unwrap()
        .get(&format!("{} {name}", threads.key()))
        .map_or(f64::NAN, |v| median(v))
}

/// Two threads: the mean share of calls made while both ran, and how many samples had any
/// (`"97.0 % (10/10)"`); empty when `name` did not run on two threads.
pub fn both_ran(name: &str) -> String {
    BOTH_RAN
        .lock()
        .unwrap()
        .get(name)
        .map(|v| {
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            let with = v.iter().filter(|x| **x > 0.0).count();
            format!("{:.1} % ({with}/{})", mean * 100.0, v.len())
        })
        .unwrap_or_default()
}

/// Runs `name` on one thread ([`single`]) or two ([`pair`]).
pub fn run<B>(c: &mut Criterion, threads: Threads, name: &str, make: impl FnMut() -> B)
where
    B: FnMut(Range<u64>) + Send + 'static,
{
    match threads {
        Threads::One => single(c, name, make),
        Threads::Two => pair(c, name, make),
    }
}

/// One thread: `make()` builds the batch, which then makes every call of the sample.
pub fn single<B: FnMut(Range<u64>)>(c: &mut Criterion, name: &str, mut make: impl FnMut() -> B) {
    let mut group = c.benchmark_group("1 thread");
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut batch = make();
            let elapsed = timed(|| batch(0..iters));
            note(
                Threads::One,
                name,
                elapsed.as_nanos() as f64 / iters.max(1) as f64,
            );
            elapsed
        });
    });
    group.finish();
}

/// Calls per timed chunk in [`pair`].
pub const CHUNK: u64 = 64;

/// A timed chunk of calls: start, end, calls.
type Chunk = (Instant, Instant, u64);

/// A chunk whose wall time exceeds this many times the thread's fastest chunk was preempted
/// (a time slice lost to another process lasts hundreds of µs to ms; a chunk of 64 calls
/// takes a few µs, and contention between our two threads slows it by far less than this).
pub const PREEMPTED: u32 = 10;

/// Two threads sharing one middleware: `make()` is called once per thread.
///
/// Both threads spin until the other has started, then call in chunks of [`CHUNK`],
/// timestamping each chunk, until one of them has made `iters` calls and raises a shared flag
/// that stops the other. A chunk much slower than the thread's fastest ([`PREEMPTED`]) was
/// preempted and is dropped. The figure is the **wall time per call of the chunks during which
/// the other thread was running too** (the intervals of both threads' unpreempted chunks,
/// intersected): on a loaded machine the scheduler often runs one thread while the other
/// waits, and calls made alone say nothing about contention. The share of calls made while
/// both ran is kept beside it ([`both_ran`]). The timestamps (one clock read per 64 calls) are
/// in every 2-thread row, the bare call's included, so they cancel out of the overheads.
pub fn pair<B>(c: &mut Criterion, name: &str, mut make: impl FnMut() -> B)
where
    B: FnMut(Range<u64>) + Send + 'static,
{
    let mut group = c.benchmark_group("2 threads");
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let started = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let mut batch = make();
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
                            batch(done..until);
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
                note(Threads::Two, name, ns);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_sample() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn both_drivers_make_every_call_of_the_batch() {
        let count = Arc::new(AtomicUsize::new(0));
        let svc = |count: Arc<AtomicUsize>| {
            tower::service_fn(move |x: u64| {
                count.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Ok::<_, std::io::Error>(x))
            })
        };
        polled(svc(count.clone()))(0..10);
        on_tokio(svc(count.clone()))(0..10);
        assert_eq!(count.load(Ordering::Relaxed), 20);
    }
}
