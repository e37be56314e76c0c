//! Per-request cost of the limiter against a bare `service_fn` call and the anchors (tower's
//! `ConcurrencyLimit`, tower-resilience's adaptive limiter), single-threaded and with two
//! threads sharing one limiter, in two harnesses. Prints ns/op and the ratios at the end.
//!
//! `cargo bench -p rampart-limit --bench overhead -- --warm-up-time 1 --measurement-time 3`
//! (a criterion filter such as `tokio` runs one harness only).
//!
//! The timing scaffold is `rampart_test_support::bench`, shared with the breaker's benchmark:
//! on-CPU time of the measuring thread; with two threads, the wall time per call of the
//! stretches during which both threads ran at once. Harnesses: **polled** (`poll_ready` then
//! `call`, polled with a no-op waker: the middleware alone) and **tokio**
//! (`svc.ready().await?.call(x).await` on a current-thread runtime, as an application calls).
//! The inner service answers at once. Every limit is far above the (at most 2) calls in
//! flight, so nothing is shed: this is the admission + measurement cost of a request that
//! goes through.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::hint::black_box;
use std::ops::Range;

use criterion::Criterion;
use rampart_limit::algorithm::{Fixed, Gradient2};
use rampart_limit::{AdaptiveThrottle, AdaptiveThrottleLayer, Class, LimitLayer, Limiter};
use rampart_test_support::bench::{self, Threads};
use rampart_test_support::boom::Boom;
use tower::{Layer, Service, service_fn};

/// The inner service: answers at once.
fn inner()
-> impl Service<u64, Response = u64, Error = Boom, Future = std::future::Ready<Result<u64, Boom>>>
+ Clone
+ Send
+ 'static {
    service_fn(|x: u64| std::future::ready(Ok::<_, Boom>(x)))
}

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

/// The harnesses, by the suffix of their rows.
const HARNESSES: [&str; 2] = ["", " (tokio)"];

/// A batch of calls through `svc` in harness `h`.
fn batch<S: Service<u64> + Send + 'static>(h: &str, svc: S) -> Box<dyn FnMut(Range<u64>) + Send> {
    if h.is_empty() {
        Box::new(bench::polled(svc))
    } else {
        Box::new(bench::on_tokio(svc))
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for threads in [Threads::One, Threads::Two] {
        for h in HARNESSES {
            let mut run =
                |name: &str, make: &mut dyn FnMut() -> Box<dyn FnMut(Range<u64>) + Send>| {
                    bench::run(&mut c, threads, &format!("{name}{h}"), make);
                };
            run("bare", &mut || batch(h, inner()));
            if h.is_empty() {
                run("clock read (reference)", &mut || {
                    let clock = quanta::Clock::new();
                    Box::new(bench::calls(move |x| {
                        black_box(clock.raw());
                        black_box(x) > 0
                    }))
                });
            }
            let layer = LimitLayer::new(gradient2());
            run("rampart gradient2", &mut || batch(h, layer.layer(inner())));
            if h.is_empty() {
                let layer = LimitLayer::new(
                    Limiter::builder()
                        .name("bench")
                        .algorithm(Fixed::new(1000).unwrap())
                        .build()
                        .unwrap(),
                );
                run("rampart fixed", &mut || batch(h, layer.layer(inner())));
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
                run("rampart gradient2 3 partitions", &mut || {
                    batch(h, layer.layer(inner()))
                });
                let throttle = AdaptiveThrottle::builder().name("bench").build().unwrap();
                let layer = AdaptiveThrottleLayer::new(throttle);
                run("rampart throttle", &mut || batch(h, layer.layer(inner())));
            }
            let layer = tower::limit::ConcurrencyLimitLayer::new(1000);
            run("tower ConcurrencyLimit", &mut || {
                batch(h, layer.layer(inner()))
            });
            // One semaphore shared by every service, like our limiter (`ConcurrencyLimitLayer`
            // gives each service its own).
            let layer = tower::limit::GlobalConcurrencyLimitLayer::new(1000);
            run("tower GlobalConcurrencyLimit", &mut || {
                batch(h, layer.layer(inner()))
            });
            if h.is_empty() {
                let aimd = tower_resilience::adaptive::Aimd::builder()
                    .initial_limit(1000)
                    .min_limit(1000)
                    .max_limit(2000)
                    .build()
                    .unwrap();
                let layer = tower_resilience::adaptive::AdaptiveLimiterLayer::new(aimd);
                run("tower-resilience adaptive", &mut || {
                    batch(h, layer.layer(inner()))
                });
            }
        }
    }
    c.final_summary();
    report();
}

fn report() {
    println!("\n== per-request cost (median of criterion samples, ns/op) ==");
    println!(
        "(overhead = variant - bare; tower* = tower's GlobalConcurrencyLimit, one shared semaphore)"
    );
    for threads in [Threads::One, Threads::Two] {
        for h in HARNESSES {
            let get = |name: &str| bench::median_of(threads, &format!("{name}{h}"));
            let bare = get("bare");
            let tower = get("tower GlobalConcurrencyLimit") - bare;
            let tr = get("tower-resilience adaptive") - bare;
            println!(
                "-- {}, {} --",
                threads.title(),
                if h.is_empty() {
                    "polled with a no-op waker"
                } else {
                    "tokio: svc.ready().await?.call(x).await"
                }
            );
            println!(
                "{:<32} {:>9} {:>10} {:>10} {:>10} {:>16}",
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
                let ns = get(name);
                if ns.is_nan() {
                    continue;
                }
                let over = if name == "clock read (reference)" {
                    ns
                } else {
                    ns - bare
                };
                let overlap = if threads == Threads::Two {
                    bench::both_ran(&format!("{name}{h}"))
                } else {
                    String::new()
                };
                println!(
                    "{:<32} {:>9.1} {:>10.1} {:>9.2}x {:>9.2}x {:>16}",
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
}
