//! Per-call overhead of the breaker against a bare `service_fn` call and the anchors
//! (`failsafe`'s breaker, `tower-resilience`'s circuit breaker), single-threaded and with two
//! threads sharing one breaker, in two harnesses. Prints ns/op and the ratios at the end.
//!
//! `cargo bench -p rampart-breaker --bench overhead -- --warm-up-time 1 --measurement-time 3`
//! (a criterion filter such as `tokio` runs one harness only).
//!
//! - **polled**: `poll_ready` then `call`, polling the futures to completion with a no-op
//!   waker (they are ready at once; a contended tokio mutex in tower-resilience may need a few
//!   polls): the middleware alone.
//! - **tokio**: what an application writes, `svc.ready().await?.call(x).await` in an `async`
//!   loop on a current-thread tokio runtime.
//!
//! The timing scaffold is `rampart_test_support::bench`: on-CPU time of the measuring thread;
//! with two threads, the wall time per call of the stretches during which both threads ran
//! at once, with the share of calls made in such stretches beside it. Overhead = variant −
//! bare with the same inner service and the same harness.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::hint::black_box;
use std::ops::Range;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::Criterion;
use rampart_breaker::{CircuitBreakerLayer, Policy, SlidingWindow};
use rampart_test_support::bench::{self, Threads};
use rampart_test_support::boom::Boom;
use tower::{Layer, Service, service_fn};

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

/// `failsafe`'s breaker as a tower service (its futures API wraps the inner call's future).
#[derive(Clone)]
struct Failsafe<S, B> {
    inner: S,
    breaker: B,
}

impl<S, B> Service<u64> for Failsafe<S, B>
where
    S: Service<u64>,
    B: failsafe::futures::CircuitBreaker,
{
    type Response = S::Response;
    type Error = failsafe::Error<S::Error>;
    type Future = failsafe::futures::ResponseFuture<
        S::Future,
        B::FailurePolicy,
        B::Instrument,
        failsafe::Any,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }

    fn call(&mut self, x: u64) -> Self::Future {
        self.breaker.call(self.inner.call(x))
    }
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

    for threads in [Threads::One, Threads::Two] {
        for h in HARNESSES {
            let mut run =
                |name: &str, make: &mut dyn FnMut() -> Box<dyn FnMut(Range<u64>) + Send>| {
                    bench::run(&mut c, threads, &format!("{name}{h}"), make);
                };
            run("bare", &mut || batch(h, inner(false)));
            if h.is_empty() {
                run("clock read (reference)", &mut || {
                    Box::new(bench::calls(|x| {
                        black_box(tokio::time::Instant::now());
                        black_box(x) > 0
                    }))
                });
                run("bare 10% failures", &mut || batch(h, inner(true)));
            }
            let layer = CircuitBreakerLayer::new(default());
            run("rampart closed", &mut || {
                batch(h, layer.layer(inner(false)))
            });
            if h.is_empty() {
                let layer = CircuitBreakerLayer::new(default());
                run("rampart 10% failures", &mut || {
                    batch(h, layer.layer(inner(true)))
                });
                let layer = CircuitBreakerLayer::new(slow());
                run("rampart slow-call tracking", &mut || {
                    batch(h, layer.layer(inner(false)))
                });
                let layer = CircuitBreakerLayer::new(time_window());
                run("rampart time window", &mut || {
                    batch(h, layer.layer(inner(false)))
                });
            }
            let breaker = failsafe::Config::new().build();
            run("failsafe", &mut || {
                batch(
                    h,
                    Failsafe {
                        inner: inner(false),
                        breaker: breaker.clone(),
                    },
                )
            });
            let layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                .build()
                .unwrap();
            let proto = layer.layer(inner(false));
            run("tower-resilience", &mut || batch(h, proto.clone()));
        }
    }
    c.final_summary();
    report();
}

fn report() {
    println!("\n== per-call cost (median of criterion samples, ns/op) ==");
    for threads in [Threads::One, Threads::Two] {
        for h in HARNESSES {
            let get = |name: &str| bench::median_of(threads, &format!("{name}{h}"));
            let bare = get("bare");
            let bare10 = get("bare 10% failures");
            let fs = get("failsafe") - bare;
            let tr = get("tower-resilience") - bare;
            println!(
                "-- {}, {} --",
                threads.title(),
                if h.is_empty() {
                    "polled with a no-op waker"
                } else {
                    "tokio: svc.ready().await?.call(x).await"
                }
            );
            if threads == Threads::Two {
                println!(
                    "(ns/op: wall time per call while both threads ran, median over the samples \
                     that had such calls; last column: mean share of calls made while both ran, \
                     and how many samples had any)"
                );
            }
            println!(
                "{:<30} {:>9} {:>10} {:>12} {:>12} {:>20}",
                "variant",
                "ns/op",
                "overhead",
                "vs failsafe",
                "vs tower-res",
                if threads == Threads::Two {
                    "calls both ran"
                } else {
                    ""
                }
            );
            let rows: &[(&str, f64)] = if h.is_empty() {
                &[
                    ("bare", bare),
                    ("bare 10% failures", bare10),
                    ("clock read (reference)", 0.0),
                    ("rampart closed", bare),
                    ("rampart 10% failures", bare10),
                    ("rampart slow-call tracking", bare),
                    ("rampart time window", bare),
                    ("failsafe", bare),
                    ("tower-resilience", bare),
                ]
            } else {
                &[
                    ("bare", bare),
                    ("rampart closed", bare),
                    ("failsafe", bare),
                    ("tower-resilience", bare),
                ]
            };
            for &(name, base) in rows {
                let ns = get(name);
                let over = ns - base;
                let overlap = if threads == Threads::Two {
                    bench::both_ran(&format!("{name}{h}"))
                } else {
                    String::new()
                };
                println!(
                    "{name:<30} {ns:>9.1} {over:>10.1} {:>11.2}x {:>11.2}x {overlap:>20}",
                    over / fs,
                    over / tr
                );
            }
        }
    }
}
