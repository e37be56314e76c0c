//! Per-request cost of a `Gslb` call (selection + response future) with 2, 10 and 100 sites,
//! beside a bare `service_fn` call.
//!
//! Run: `cargo bench -p rampart-gslb --bench select -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rampart_gslb::{Gslb, GslbConfig, LatencyConfig, Site, Sites};
use rampart_health::{HealthReport, HealthReporter};
use tower::{Service, service_fn};

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("expected an immediate result"),
    }
}

/// A small request type, so that the figures show the selector rather than header maps.
#[derive(Clone, Copy)]
struct Client {
    region: &'static str,
}

fn client_region(c: &Client) -> Option<&str> {
    Some(c.region)
}

type Svc = tower::util::ServiceFn<fn(Client) -> Ready<Result<u64, Infallible>>>;

fn backend(_: Client) -> Ready<Result<u64, Infallible>> {
    ready(Ok(1))
}

fn svc() -> Svc {
    service_fn(backend as fn(Client) -> Ready<Result<u64, Infallible>>)
}

/// `n` sites: half in priority 0 (one of them half healthy, so both levels take traffic when
/// `spill`), half in priority 1.
fn sites(n: usize, spill: bool, reporters: &mut Vec<HealthReporter>) -> Sites<Svc> {
    let mut b = Sites::builder();
    for i in 0..n {
        let priority = u32::from(i >= n / 2);
        let health = if spill && priority == 0 {
            HealthReport::new(1, 4)
        } else {
            HealthReport::new(4, 4)
        };
        let r = HealthReporter::new(health);
        b = b.site(
            Site::new(format!("site-{i}"), svc())
                .region(if i % 2 == 0 { "eu" } else { "us" })
                .priority(priority)
                .weight(1.0 + (i % 3) as f64)
                .health_report(r.subscribe()),
        );
        reporters.push(r);
    }
    b.build().unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let req = Client { region: "us" };

    let mut group = c.benchmark_group("select");
    let mut bare = svc();
    group.bench_function("bare service_fn", |b| {
        b.iter(|| now(bare.call(black_box(req))).unwrap());
    });
    let mut keep = Vec::new();
    for n in [2usize, 10, 100] {
        for (label, spill) in [("weighted", false), ("weighted+spill", true)] {
            let mut gslb: Gslb<Svc, Client> =
                Gslb::new(GslbConfig::default(), sites(n, spill, &mut keep));
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| now(gslb.call(black_box(req))).unwrap());
            });
        }
        let config = GslbConfig::builder()
            .geo(client_region as fn(&Client) -> Option<&str>)
            .build()
            .unwrap();
        let mut gslb = Gslb::new(config, sites(n, true, &mut keep));
        group.bench_with_input(BenchmarkId::new("geo", n), &n, |b, _| {
            b.iter(|| now(gslb.call(black_box(req))).unwrap());
        });
        let config = GslbConfig::builder()
            .lowest_latency(LatencyConfig::default())
            .build()
            .unwrap();
        let mut gslb = Gslb::new(config, sites(n, false, &mut keep));
        group.bench_with_input(BenchmarkId::new("lowest_latency", n), &n, |b, _| {
            b.iter(|| now(gslb.call(black_box(req))).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
