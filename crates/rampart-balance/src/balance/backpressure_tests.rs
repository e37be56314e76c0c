//! Unit tests of backpressure (`Retry-After`, gRPC pushback), the failure penalty, deadlines
//! and hedging, on in-memory HTTP endpoints and paused time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use rampart_health::{BoxError, Deadline, DeadlineExceeded, Health, find_in_chain};
use tower::ServiceExt;
use tower_service::Service;

use super::*;
use crate::{HttpPolicy, Picker, ServedBy, ServicePolicy};

type Req = http::Request<String>;
type Res = http::Response<String>;

/// An in-memory HTTP endpoint: answers with a fixed status and headers, counting requests and
/// recording the deadline header it was sent.
#[derive(Clone)]
struct Replica {
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    hits: Arc<AtomicUsize>,
    seen_deadline: Arc<std::sync::Mutex<Option<String>>>,
}

impl Replica {
    fn new(status: u16, headers: &'static [(&'static str, &'static str)]) -> Self {
        Self {
            status,
            headers,
            hits: Arc::default(),
            seen_deadline: Arc::default(),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Service<Req> for Replica {
    type Response = Res;
    type Error = BoxError;
    type Future = Ready<Result<Res, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Req) -> Self::Future {
        self.hits.fetch_add(1, Ordering::SeqCst);
        *self.seen_deadline.lock().unwrap() = req
            .headers()
            .get("x-rampart-deadline-ms")
            .map(|v| v.to_str().unwrap().to_owned());
        let mut res = http::Response::builder().status(self.status);
        for (k, v) in self.headers {
            res = res.header(*k, *v);
        }
        ready(Ok(res.body(String::new()).unwrap()))
    }
}

/// A replica whose answer can be switched between 200 and a rate-limit answer.
#[derive(Clone)]
struct Switch {
    limited: Arc<std::sync::atomic::AtomicBool>,
    limited_answer: Replica,
    ok: Replica,
}

impl Service<Req> for Switch {
    type Response = Res;
    type Error = BoxError;
    type Future = Ready<Result<Res, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Req) -> Self::Future {
        if self.limited.load(Ordering::SeqCst) {
            self.limited_answer.call(req)
        } else {
            self.ok.call(req)
        }
    }
}

fn get() -> Req {
    http::Request::get("/").body(String::new()).unwrap()
}

async fn send<S>(b: &mut Balance<S, HttpPolicy>, req: Req) -> Result<Res, BoxError>
where
    S: Service<Req, Response = Res, Error = BoxError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    b.ready().await.unwrap().call(req).await
}

/// Two replicas, `a` answering `limited` while switched on, `b` always 200.
fn pool(
    limited: Replica,
    max_backoff: Option<Duration>,
) -> (
    Balance<Switch, HttpPolicy>,
    Arc<std::sync::atomic::AtomicBool>,
    Switch,
    Switch,
) {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let a = Switch {
        limited: flag.clone(),
        limited_answer: limited,
        ok: Replica::new(200, &[]),
    };
    let b = Switch {
        limited: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        limited_answer: Replica::new(500, &[]),
        ok: Replica::new(200, &[]),
    };
    let mut builder = Balance::builder()
        .picker(Picker::RoundRobin)
        .endpoint("a", a.clone())
        .endpoint("b", b.clone());
    if let Some(max) = max_backoff {
        builder = builder.max_backoff(max);
    }
    (builder.build().unwrap(), flag, a, b)
}

fn served_by(res: &Res) -> String {
    res.extensions()
        .get::<ServedBy>()
        .unwrap()
        .endpoint()
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn retry_after_takes_the_endpoint_out_of_picking_until_then_and_it_stays_healthy() {
    let (mut b, limited, a, other) = pool(Replica::new(429, &[("retry-after", "2")]), None);
    // Round robin: within two requests `a` answers 429 with Retry-After: 2; the GET is retried
    // on `b`, so the caller sees a 200.
    for _ in 0..2 {
        let res = send(&mut b, get()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(served_by(&res), "b");
    }
    assert_eq!(a.limited_answer.hits(), 1, "a was tried once");
    limited.store(false, Ordering::SeqCst);
    let snap = b.snapshot();
    let ea = snap.endpoints.iter().find(|e| e.name == "a").unwrap();
    assert_eq!(ea.health, Health::Healthy);
    assert!(!ea.ejected);
    assert!(!ea.routable);
    let left = ea.backing_off_until.expect("backing off");
    assert!(left > Duration::from_millis(1900) && left <= Duration::from_secs(2));
    assert_eq!((snap.routable, snap.total), (1, 2));
    // For the next 1.9 s nothing goes to `a`.
    for _ in 0..19 {
        for _ in 0..10 {
            assert_eq!(served_by(&send(&mut b, get()).await.unwrap()), "b");
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert_eq!(a.ok.hits(), 0);
    // After 2 s (and the next maintenance tick) it is picked again.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut to_a = 0;
    for _ in 0..10 {
        if served_by(&send(&mut b, get()).await.unwrap()) == "a" {
            to_a += 1;
        }
    }
    assert_eq!(to_a, 5, "round robin again");
    assert!(
        b.snapshot()
            .endpoints
            .iter()
            .all(|e| e.backing_off_until.is_none())
    );
    assert!(other.ok.hits() > 190);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_does_not_back_off() {
    let (mut b, _limited, a, _) = pool(Replica::new(429, &[]), None);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(send(&mut b, get()).await.unwrap().status().as_u16());
    }
    // Not retried (no Retry-After), not backed off: `a` keeps its share.
    assert_eq!(a.limited_answer.hits(), 5);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 5);
    assert!(
        b.snapshot()
            .endpoints
            .iter()
            .all(|e| e.backing_off_until.is_none() && e.routable)
    );
}

#[tokio::test(start_paused = true)]
async fn a_503_with_retry_after_backs_off_and_the_back_off_is_bounded_by_max_backoff() {
    let (mut b, limited, a, _) = pool(
        Replica::new(503, &[("retry-after", "3600")]),
        Some(Duration::from_secs(5)),
    );
    for _ in 0..2 {
        assert_eq!(send(&mut b, get()).await.unwrap().status(), 200);
    }
    limited.store(false, Ordering::SeqCst);
    let ea = b
        .snapshot()
        .endpoints
        .into_iter()
        .find(|e| e.name == "a")
        .unwrap();
    assert!(ea.backing_off_until.unwrap() <= Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(5300)).await;
    for _ in 0..4 {
        send(&mut b, get()).await.unwrap();
    }
    assert_eq!(a.ok.hits(), 2, "back after max_backoff, not an hour");
}

#[tokio::test(start_paused = true)]
async fn grpc_retry_pushback_backs_off_and_max_backoff_zero_turns_it_off() {
    let (mut b, _limited, a, _) = pool(
        Replica::new(200, &[("grpc-retry-pushback-ms", "1500")]),
        None,
    );
    for _ in 0..10 {
        send(&mut b, get()).await.unwrap();
    }
    assert_eq!(a.limited_answer.hits(), 1);
    let left = b.snapshot().endpoints[0].backing_off_until.unwrap();
    assert!(left <= Duration::from_millis(1500));

    let (mut b, _limited, a, _) = pool(
        Replica::new(200, &[("grpc-retry-pushback-ms", "1500")]),
        Some(Duration::ZERO),
    );
    for _ in 0..10 {
        send(&mut b, get()).await.unwrap();
    }
    assert_eq!(a.limited_answer.hits(), 5);
}

#[tokio::test(start_paused = true)]
async fn backing_off_endpoints_count_as_healthy_in_the_health_report() {
    let (mut b, _limited, _a, _) = pool(Replica::new(429, &[("retry-after", "10")]), None);
    for _ in 0..2 {
        send(&mut b, get()).await.unwrap();
    }
    let report = *rampart_health::ReportHealth::health_report(&b.handle()).borrow();
    assert_eq!(report.healthy_share(), 1.0);
    assert!(!b.snapshot().panic);
}

/// An endpoint that fails at once is not favoured by P2C for being fast: every failure
/// counts at least twice the current average (and at least the failure penalty).
#[tokio::test(start_paused = true)]
async fn fast_failures_do_not_attract_traffic() {
    let hits = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let svc = |i: usize, hits: Arc<AtomicUsize>| {
        tower::service_fn(move |_: u64| {
            hits.fetch_add(1, Ordering::SeqCst);
            let fail = i == 0;
            async move {
                if fail {
                    Err::<u64, BoxError>("boom".into())
                } else {
                    // The healthy endpoint is slower: 2 ms.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok(1)
                }
            }
        })
    };
    let mut b = Balance::builder()
        .policy(ServicePolicy::new().replay(false))
        .failure_penalty(Duration::from_millis(50))
        .max_retries(0)
        .endpoint("failing", svc(0, hits[0].clone()))
        .endpoint("ok", svc(1, hits[1].clone()))
        .build()
        .unwrap();
    for i in 0..400u64 {
        let _ = b.ready().await.unwrap().call(i).await;
    }
    let failing = hits[0].load(Ordering::SeqCst);
    assert!(
        failing < 40,
        "the failing endpoint got {failing} of 400 requests"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_is_never_sent_and_not_retried() {
    let a = Replica::new(200, &[]);
    let bb = Replica::new(200, &[]);
    let mut b = Balance::builder()
        .endpoint("a", a.clone())
        .endpoint("b", bb.clone())
        .build()
        .unwrap();
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(10)));
    tokio::time::advance(Duration::from_millis(20)).await;
    let err = send(&mut b, req).await.unwrap_err();
    assert!(find_in_chain::<DeadlineExceeded>(&*err).is_some(), "{err}");
    assert!(rampart_health::is_never_reached(&*err));
    assert_eq!(a.hits() + bb.hits(), 0);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_remaining_budget() {
    let a = Replica::new(503, &[]);
    let bb = Replica::new(503, &[]);
    let mut b = Balance::builder()
        .picker(Picker::RoundRobin)
        .endpoint("a", a.clone())
        .endpoint("b", bb.clone())
        .build()
        .unwrap();
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(800)));
    tokio::time::advance(Duration::from_millis(300)).await;
    let res = send(&mut b, req).await.unwrap();
    assert_eq!(res.status(), 503);
    // Both endpoints were tried (a retry on 503), and each attempt was told what was left.
    assert_eq!(a.hits() + bb.hits(), 2);
    for r in [&a, &bb] {
        assert_eq!(r.seen_deadline.lock().unwrap().as_deref(), Some("500"));
    }
}

/// An in-memory endpoint that answers 200 after `delay` (tokio time), counting requests
/// started and requests dropped before answering.
#[derive(Clone)]
struct Slow {
    delay: Duration,
    started: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
}

struct CountDrop(Arc<AtomicUsize>, bool);
impl CountDrop {
    fn done(mut self) {
        self.1 = true;
    }
}
impl Drop for CountDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Service<Req> for Slow {
    type Response = Res;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Res, BoxError>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Req) -> Self::Future {
        self.started.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay;
        let guard = CountDrop(self.cancelled.clone(), false);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            guard.done();
            Ok(http::Response::new(String::new()))
        })
    }
}

fn slow(ms: u64) -> Slow {
    Slow {
        delay: Duration::from_millis(ms),
        started: Arc::default(),
        cancelled: Arc::default(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_hedge_after_the_delay_wins_against_a_slow_endpoint_and_the_loser_is_dropped() {
    let (a, bb) = (slow(1000), slow(10));
    let mut b = Balance::builder()
        .picker(Picker::RoundRobin)
        .hedge(crate::Hedge::fixed(Duration::from_millis(50)))
        .endpoint("a", a.clone())
        .endpoint("b", bb.clone())
        .build()
        .unwrap();
    // Round robin sends the first request to `a`: the hedge goes to `b` at 50 ms.
    let start = tokio::time::Instant::now();
    let res = send(&mut b, get()).await.unwrap();
    assert_eq!(served_by(&res), "b");
    assert_eq!(start.elapsed(), Duration::from_millis(60));
    assert_eq!(a.started.load(Ordering::SeqCst), 1);
    assert_eq!(
        a.cancelled.load(Ordering::SeqCst),
        1,
        "the loser was dropped"
    );
    // A POST is not hedged: it waits for `a`... round robin now picks `b` first, then `a`.
    let post = || http::Request::post("/").body(String::new()).unwrap();
    send(&mut b, post()).await.unwrap();
    let res = send(&mut b, post()).await.unwrap();
    assert_eq!(served_by(&res), "a");
    assert_eq!(bb.started.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_fast_first_attempt_sends_no_hedge_and_hedging_is_off_by_default() {
    let (a, bb) = (slow(10), slow(10));
    let mut b = Balance::builder()
        .hedge(crate::Hedge::fixed(Duration::from_millis(50)))
        .endpoint("a", a.clone())
        .endpoint("b", bb.clone())
        .build()
        .unwrap();
    for _ in 0..10 {
        send(&mut b, get()).await.unwrap();
    }
    let started = a.started.load(Ordering::SeqCst) + bb.started.load(Ordering::SeqCst);
    assert_eq!(started, 10);
    let (a, bb) = (slow(1000), slow(1000));
    let mut b = Balance::builder()
        .endpoint("a", a.clone())
        .endpoint("b", bb.clone())
        .build()
        .unwrap();
    send(&mut b, get()).await.unwrap();
    assert_eq!(
        a.started.load(Ordering::SeqCst) + bb.started.load(Ordering::SeqCst),
        1
    );
}
