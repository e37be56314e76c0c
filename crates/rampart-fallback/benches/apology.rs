//! The apology versus a bare handler returning a static body, the stale-if-error hit path, and
//! what `FallbackLayer` and `StaleIfErrorLayer` add to a healthy request (the pass-through).
//!
//! Every case builds its request (shaped like hyper's: shared bytes), calls the service, and
//! drains the response body; the anchors do the same, so differences are the layers' cost.
//! The services answer at once, so futures are polled with a no-op waker (no runtime in the
//! measurement); a current-thread tokio runtime is entered only so `tokio::time::Instant`
//! works. Compare each case with its anchor in the same run: `bare_static_handler` for the
//! apology and the plain pass-through, `bare_cacheable_handler` for cacheable responses.
//! On a loaded machine, prefer `benches/overhead.rs` (the minimum over many short batches).
//!
//! `cargo bench -p rampart-fallback --all-features --bench apology -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    for mut case in common::cases() {
        let mut g = c.benchmark_group(case.group);
        let dispatch = case.dispatch.take().unwrap_or_default();
        tracing::dispatcher::with_default(&dispatch, || {
            g.bench_function(case.name, |b| b.iter(|| black_box((case.run)())));
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
