//! Unit tests of the balancer, by topic, on tower-test mocks, in-memory services and paused
//! time; the helpers every topic shares are here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use rampart_health::{
    BoxError, Deadline, DeadlineExceeded, Health, HealthPublisher, NeverReached, find_in_chain,
    is_never_reached,
};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::ServiceExt;
use tower_service::Service;
use tower_test::mock;

use super::*;
use crate::{Endpoint, HttpPolicy, LatencyEstimate, Picker, ServedBy, ServicePolicy};

mod backpressure;
mod deadline;
mod ejection;
mod hedge;
mod late;
mod lifecycle;
mod observability;
mod panic;
mod picking;
mod retry;

type Mock = mock::Mock<&'static str, &'static str>;
type Handle = mock::Handle<&'static str, &'static str>;

fn mocks(n: usize) -> (Vec<Mock>, Vec<Handle>) {
    (0..n).map(|_| mock::pair()).unzip()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("e{i}")).collect()
}

/// Which handle received a request (polling each once).
fn who_got(handles: &mut [Handle]) -> Vec<usize> {
    let mut got = Vec::new();
    for (i, h) in handles.iter_mut().enumerate() {
        while let Poll::Ready(Some((_, send))) = h.poll_request() {
            got.push(i);
            drop(send);
        }
    }
    got
}

type EchoBalance =
    Balance<Echo, ServicePolicy<rampart_health::FnClassify, fn(&u64) -> Option<u64>>>;

/// An in-memory endpoint that answers with its own name.
#[derive(Clone)]
struct Echo(Arc<str>);

impl Service<u64> for Echo {
    type Response = Arc<str>;
    type Error = BoxError;
    type Future = Ready<Result<Arc<str>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: u64) -> Self::Future {
        ready(Ok(self.0.clone()))
    }
}

fn echo_balance(n: usize, picker: Picker) -> EchoBalance {
    let key: fn(&u64) -> Option<u64> = |k| Some(*k);
    let mut b = Balance::builder()
        .policy(ServicePolicy::new().hash_key(key))
        .picker(picker);
    for name in names(n) {
        let name: Arc<str> = name.into();
        b = b.endpoint(Endpoint::new(name.clone(), Echo(name)));
    }
    b.build().unwrap()
}

async fn served(balance: &mut EchoBalance, key: u64) -> Arc<str> {
    balance.ready().await.unwrap().call(key).await.unwrap()
}

/// Like `who_got`, but keeps the responder so the request stays in flight.
fn who_got_hold(handles: &mut [Handle]) -> (usize, mock::SendResponse<&'static str>) {
    for (i, h) in handles.iter_mut().enumerate() {
        if let Poll::Ready(Some((_, send))) = h.poll_request() {
            return (i, send);
        }
    }
    panic!("no endpoint got the request");
}

fn watched_balance(n: usize, threshold: f64) -> (EchoBalance, Vec<HealthPublisher>) {
    let key: fn(&u64) -> Option<u64> = |k| Some(*k);
    let mut b = Balance::builder()
        .policy(ServicePolicy::new().hash_key(key))
        .panic_threshold(threshold)
        .picker(Picker::Random);
    let mut pubs = Vec::new();
    for name in names(n) {
        let p = HealthPublisher::with_initial(Health::Healthy);
        let name: Arc<str> = name.into();
        b = b.endpoint(Endpoint::new(name.clone(), Echo(name)).health_watch(p.subscribe()));
        pubs.push(p);
    }
    (b.build().unwrap(), pubs)
}

/// Lets the health-watch tasks run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

type HttpReq = http::Request<String>;
type HttpRes = http::Response<&'static str>;

fn status_of(res: &HttpRes) -> u16 {
    res.status().as_u16()
}

/// The documented default settings, observed rather than configured.
fn health_pool(n: usize) -> (Balance<Echo, ServicePolicy>, Vec<HealthPublisher>) {
    let mut b = Balance::builder().policy(ServicePolicy::new());
    let mut pubs = Vec::new();
    for name in names(n) {
        let p = HealthPublisher::with_initial(Health::Healthy);
        let name: Arc<str> = name.into();
        b = b.endpoint(Endpoint::new(name.clone(), Echo(name)).health_watch(p.subscribe()));
        pubs.push(p);
    }
    (b.build().unwrap(), pubs)
}

fn ramping<S: Send + Sync + 'static, P: Send + Sync + 'static>(
    balance: &Balance<S, P>,
    name: &str,
) -> (bool, f64) {
    let snap = balance.snapshot();
    let e = snap.endpoint(name).unwrap();
    (e.slow_start, e.effective_weight)
}

/// An endpoint whose answers are failures while `failing` is set.
#[derive(Clone)]
struct Flaky {
    name: Arc<str>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Service<u64> for Flaky {
    type Response = Arc<str>;
    type Error = BoxError;
    type Future = Ready<Result<Arc<str>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: u64) -> Self::Future {
        if self.failing.load(Ordering::SeqCst) {
            ready(Err("broken".into()))
        } else {
            ready(Ok(self.name.clone()))
        }
    }
}

/// Three healthy round-robin endpoints with manual health publishers; `e0` fails while
/// `failing` is set.
fn flaky_trio(
    failing: &Arc<std::sync::atomic::AtomicBool>,
    outlier: rampart_health::OutlierConfig,
) -> (Balance<Flaky, ServicePolicy>, Vec<HealthPublisher>) {
    let mut pubs = Vec::new();
    let mut b = Balance::builder()
        .policy(ServicePolicy::new())
        .picker(Picker::RoundRobin)
        .outlier_detection(outlier);
    for (i, name) in names(3).into_iter().enumerate() {
        let p = HealthPublisher::with_initial(Health::Healthy);
        let svc = Flaky {
            name: name.clone().into(),
            failing: if i == 0 {
                failing.clone()
            } else {
                Arc::default()
            },
        };
        b = b.endpoint(Endpoint::new(name, svc).health_watch(p.subscribe()));
        pubs.push(p);
    }
    (b.build().unwrap(), pubs)
}

// In-memory HTTP endpoints for the backpressure, deadline and hedging tests.

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
        .endpoint(Endpoint::new("a", a.clone()))
        .endpoint(Endpoint::new("b", b.clone()));
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
