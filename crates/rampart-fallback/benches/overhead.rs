//! The same cases as `benches/apology.rs`, timed for a loaded machine: each case runs many
//! short batches and reports the fastest batch's time per call (preemption and other
//! processes only ever add time, so the minimum is the stable figure) next to the median
//! batch, and the difference from its group's anchor (the first case of the group).
//!
//! `cargo bench -p rampart-fallback --all-features --bench overhead`
//!
//! With `RAMPART_BENCH_COUNT=N` and a filter it instead makes `N` calls of the matching cases
//! inside `count_calls`, untimed, for an instruction count that load cannot disturb:
//! `valgrind --tool=callgrind --toggle-collect='*count_calls*' target/release/deps/overhead-… apology/apology_html`
//! (instructions per call = the collected total / N).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    missing_docs
)]

mod common;

use std::hint::black_box;
use std::time::Instant;

const BATCHES: usize = 400;
const CALLS: usize = 500;

fn main() {
    // `cargo bench` passes `--bench`; a filter, if any, selects cases by substring.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    if let Some(n) = std::env::var("RAMPART_BENCH_COUNT")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        for mut case in common::cases() {
            let id = format!("{}/{}", case.group, case.name);
            if filter.as_deref().is_none_or(|f| id.ends_with(f)) {
                let dispatch = case.dispatch.take().unwrap_or_default();
                tracing::dispatcher::with_default(&dispatch, || {
                    warm_up(&mut case, 200);
                    black_box(count_calls(&mut case, n));
                });
                println!("{id}: {n} calls");
            }
        }
        return;
    }
    let mut anchor: Option<(&str, f64)> = None;
    println!(
        "{:<45} {:>10} {:>10} {:>12}",
        "case", "min ns", "median ns", "min - anchor"
    );
    for mut case in common::cases() {
        let id = format!("{}/{}", case.group, case.name);
        if filter.as_deref().is_some_and(|f| !id.contains(f)) {
            continue;
        }
        let dispatch = case.dispatch.take().unwrap_or_default();
        let mut per_call: Vec<f64> = tracing::dispatcher::with_default(&dispatch, || {
            for _ in 0..CALLS * 4 {
                black_box((case.run)());
            }
            (0..BATCHES)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..CALLS {
                        black_box((case.run)());
                    }
                    start.elapsed().as_nanos() as f64 / CALLS as f64
                })
                .collect()
        });
        per_call.sort_by(f64::total_cmp);
        let (min, median) = (per_call[0], per_call[BATCHES / 2]);
        if anchor.is_none_or(|(g, _)| g != case.group) {
            anchor = Some((case.group, min));
        }
        let delta = anchor.map_or(0.0, |(_, a)| min - a);
        println!("{id:<45} {min:>10.0} {median:>10.0} {delta:>+12.0}");
    }
}

#[inline(never)]
fn warm_up(case: &mut common::Case, n: usize) {
    for _ in 0..n {
        black_box((case.run)());
    }
}

/// Not identical to `warm_up` (identical functions may be merged by the linker).
#[inline(never)]
fn count_calls(case: &mut common::Case, n: usize) -> usize {
    let mut bytes = 0;
    for _ in 0..n {
        bytes += black_box((case.run)());
    }
    bytes
}
