//! A balancer of gRPC servers over h2c: with gRPC health checks, a server whose health
//! service flips to `NOT_SERVING` is taken out of rotation and put back when it serves again;
//! with the gRPC classifier, `UNAVAILABLE` answers (HTTP 200) eject a server passively.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_balance::{
    Balance, HttpEndpoint, HttpPolicy, Picker, ReplayBody, ReplayBodyLayer, ServedBy,
};
use rampart_health::transport::HttpVersion;
use rampart_health::{
    BoxError, CheckerConfig, Classify, GrpcClassifier, GrpcHealthProbe, Health, Outcome,
    OutlierConfig,
};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::{Layer, Service, ServiceExt};

const SERVICE: &str = "catalog.v1.Catalog";

type ServerBody = UnsyncBoxBody<Bytes, BoxError>;

/// A gRPC server: tonic-health's health service, and every other method answered
/// Trailers-Only `grpc-status: 0`. Counts the application calls. Aborted on drop.
struct GrpcServer {
    addr: SocketAddr,
    reporter: HealthReporter,
    calls: Arc<AtomicUsize>,
    /// The `grpc-status` the application methods answer with.
    status: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcServer {
    async fn start() -> Self {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(SERVICE, ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let status = Arc::new(AtomicU8::new(0));
        let answer = status.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let health = health.clone();
                let counted = counted.clone();
                let answer = answer.clone();
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let health = health.clone();
                    let counted = counted.clone();
                    let code = answer.load(Ordering::SeqCst);
                    async move {
                        if req.uri().path().starts_with("/grpc.health.v1.Health/") {
                            let res = match health.oneshot(req).await {
                                Ok(res) => res,
                                Err(never) => match never {},
                            };
                            return Ok::<_, Infallible>(res.map(|b| {
                                b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
                            }));
                        }
                        counted.fetch_add(1, Ordering::SeqCst);
                        let mut res = http::Response::new(
                            Empty::<Bytes>::new()
                                .map_err(|never| match never {})
                                .boxed_unsync(),
                        );
                        let h = res.headers_mut();
                        h.insert("content-type", HeaderValue::from_static("application/grpc"));
                        h.insert("grpc-status", HeaderValue::from(u16::from(code)));
                        Ok::<http::Response<ServerBody>, Infallible>(res)
                    }
                });
                conns.spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            reporter,
            calls,
            status,
            task,
        }
    }

    fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn name(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status(SERVICE, status).await;
    }
}

type Body = Full<Bytes>;

async fn call<S>(client: &mut S) -> (Outcome, String)
where
    S: Service<http::Request<ReplayBody<Body>>, Response = http::Response<hyper::body::Incoming>>,
    S::Error: std::fmt::Debug,
{
    let req = http::Request::post(format!("/{SERVICE}/List"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(ReplayBody::buffered(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let res = client.ready().await.unwrap().call(req).await.unwrap();
    let outcome = GrpcClassifier::new().classify(Ok::<_, &BoxError>(&res));
    let served = res
        .extensions()
        .get::<ServedBy>()
        .unwrap()
        .endpoint()
        .to_string();
    (outcome, served)
}

async fn wait_for(handle: &rampart_balance::BalanceHandle, name: &str, health: Health) -> bool {
    for _ in 0..250 {
        if handle
            .snapshot()
            .endpoints
            .iter()
            .any(|e| e.name == name && e.health == health)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_server_leaves_the_rotation_and_comes_back() {
    let a = GrpcServer::start().await;
    let b = GrpcServer::start().await;
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .http_version(HttpVersion::Http2)
        .request_timeout(Duration::from_secs(5));
    let balance = Balance::builder()
        .http_endpoints([a.uri(), b.uri()], &template)
        .unwrap()
        // Round robin and no slow start: "back in rotation" shows on the next calls.
        .picker(Picker::RoundRobin)
        .slow_start(rampart_balance::SlowStart::off())
        .probe_with(|name: &str| {
            GrpcHealthProbe::builder(name.parse().ok()?)
                .service(SERVICE)
                .timeout(Duration::from_millis(300))
                .build()
                .ok()
        })
        .health_checks(
            CheckerConfig::builder()
                .interval(Duration::from_millis(300))
                .unhealthy_interval(Duration::from_millis(300))
                .timeout(Duration::from_millis(300))
                .jitter(0.0)
                .rise(1)
                .fall(2)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let handle = balance.handle();
    let mut client = ReplayBodyLayer::new().layer(balance);

    assert!(wait_for(&handle, &a.name(), Health::Healthy).await);
    assert!(wait_for(&handle, &b.name(), Health::Healthy).await);

    // Out of rotation: every call goes to b.
    a.set(ServingStatus::NotServing).await;
    assert!(wait_for(&handle, &a.name(), Health::Unhealthy).await);
    let a_before = a.calls.load(Ordering::SeqCst);
    for _ in 0..20 {
        let (outcome, served) = call(&mut client).await;
        assert_eq!(outcome, Outcome::Success);
        assert_eq!(served, b.name());
    }
    assert_eq!(a.calls.load(Ordering::SeqCst), a_before);

    // Back in rotation: a serves again.
    a.set(ServingStatus::Serving).await;
    assert!(wait_for(&handle, &a.name(), Health::Healthy).await);
    let mut served_by_a = false;
    for _ in 0..10 {
        let (outcome, served) = call(&mut client).await;
        assert_eq!(outcome, Outcome::Success);
        if served == a.name() {
            served_by_a = true;
            break;
        }
    }
    assert!(served_by_a, "a is back in rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_answers_eject_an_endpoint_through_the_grpc_classifier() {
    let a = GrpcServer::start().await;
    let b = GrpcServer::start().await;
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .http_version(HttpVersion::Http2)
        .request_timeout(Duration::from_secs(5));
    // HTTP 200 with `grpc-status: 14` is a failure only to a gRPC classifier.
    let balance = Balance::builder()
        .policy(HttpPolicy::new().with_classifier(GrpcClassifier::new()))
        .http_endpoints([a.uri(), b.uri()], &template)
        .unwrap()
        .picker(Picker::RoundRobin)
        .slow_start(rampart_balance::SlowStart::off())
        .outlier_detection(
            OutlierConfig::builder()
                .consecutive_failures(3)
                .base_ejection_time(Duration::from_secs(30))
                .max_ejection_percent(50.0)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let handle = balance.handle();
    let mut client = ReplayBodyLayer::new().layer(balance);

    a.status.store(14, Ordering::SeqCst);
    let mut unavailable = 0;
    for _ in 0..50 {
        let (outcome, served) = call(&mut client).await;
        if outcome == Outcome::Failure {
            unavailable += 1;
            assert_eq!(served, a.name());
        }
        if handle.snapshot().endpoint(&a.name()).unwrap().ejected {
            break;
        }
    }
    assert!(handle.snapshot().endpoint(&a.name()).unwrap().ejected);
    assert_eq!(
        unavailable, 3,
        "ejected after 3 consecutive UNAVAILABLE answers"
    );
    let a_calls = a.calls.load(Ordering::SeqCst);
    for _ in 0..10 {
        let (outcome, served) = call(&mut client).await;
        assert_eq!((outcome, served), (Outcome::Success, b.name()));
    }
    assert_eq!(a.calls.load(Ordering::SeqCst), a_calls);
}
