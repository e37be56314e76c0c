//! A balancer of gRPC servers over h2c: with gRPC health checks, a server whose health
//! service flips to `NOT_SERVING` is taken out of rotation and put back when it serves again;
//! with the gRPC classifier, `UNAVAILABLE` answers (HTTP 200) eject a server passively, in a
//! Trailers-Only head or, through `record_trailers`, in the trailers after a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_balance::{
    Balance, HttpEndpoint, HttpPolicy, LateOutcome, Picker, ReplayBody, ReplayBodyLayer, ServedBy,
    record_trailers,
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
/// Trailers-Only `grpc-status: 0` (or, with `in_trailers`, one message then the status in the
/// trailers). Counts the application calls. Aborted on drop.
struct GrpcServer {
    addr: SocketAddr,
    reporter: HealthReporter,
    calls: Arc<AtomicUsize>,
    /// The `grpc-status` the application methods answer with.
    status: Arc<AtomicU8>,
    /// The status comes in the trailers, after a message (HTTP 200, no status in the head).
    in_trailers: Arc<AtomicBool>,
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
        let in_trailers = Arc::new(AtomicBool::new(false));
        let trailing = in_trailers.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let health = health.clone();
                let counted = counted.clone();
                let answer = answer.clone();
                let trailing = trailing.clone();
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let health = health.clone();
                    let counted = counted.clone();
                    let code = answer.load(Ordering::SeqCst);
                    let in_trailers = trailing.load(Ordering::SeqCst);
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
                        if in_trailers {
                            return Ok(message_then_status(code));
                        }
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
            in_trailers,
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

/// HTTP 200 with a gRPC content type and no status, one message, then `grpc-status: code` in
/// the trailers (the usual shape of a gRPC answer).
fn message_then_status(code: u8) -> http::Response<ServerBody> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    let frames = [
        Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut res =
        http::Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync());
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    res
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

/// A call whose answer is read to its end through `record_trailers`: the `grpc-status` of its
/// trailers (`None`: a Trailers-Only answer) and the endpoint that served it.
async fn call_to_the_trailers<S>(client: &mut S) -> (Option<String>, String)
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
    let served = res
        .extensions()
        .get::<ServedBy>()
        .unwrap()
        .endpoint()
        .to_string();
    let late = res.extensions().get::<LateOutcome>().cloned();
    let res = record_trailers(res, GrpcClassifier::new());
    assert_eq!(res.body().is_pending(), late.is_some());
    let collected = res.into_body().collect().await.unwrap();
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned());
    if let Some(late) = late {
        assert!(late.is_recorded(), "the trailers recorded the outcome");
        assert_eq!(late.endpoint(), served);
        assert!(status.is_some());
    }
    (status, served)
}

fn trailer_balance(
    a: &GrpcServer,
    b: &GrpcServer,
) -> Balance<HttpEndpoint<ReplayBody<ReplayBody<Body>>>, HttpPolicy<GrpcClassifier>> {
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .http_version(HttpVersion::Http2)
        .request_timeout(Duration::from_secs(5));
    Balance::builder()
        .policy(HttpPolicy::grpc())
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
        .unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_in_the_trailers_ejects_an_endpoint_through_record_trailers() {
    let a = GrpcServer::start().await;
    let b = GrpcServer::start().await;
    for s in [&a, &b] {
        s.in_trailers.store(true, Ordering::SeqCst);
    }
    // HTTP 200 and no status in the head: only the trailers say UNAVAILABLE.
    a.status.store(14, Ordering::SeqCst);
    let balance = trailer_balance(&a, &b);
    let handle = balance.handle();
    let mut client = ReplayBodyLayer::new().layer(balance);

    let mut unavailable = 0;
    for _ in 0..50 {
        let (status, served) = call_to_the_trailers(&mut client).await;
        if status.as_deref() == Some("14") {
            unavailable += 1;
            assert_eq!(served, a.name());
        } else {
            assert_eq!((status.as_deref(), &*served), (Some("0"), &*b.name()));
        }
        if handle.snapshot().endpoint(&a.name()).unwrap().ejected {
            break;
        }
    }
    let snap = handle.snapshot();
    let ea = snap.endpoint(&a.name()).unwrap();
    assert!(ea.ejected, "{ea:?}");
    assert_eq!(ea.ejection_count, 1);
    assert_eq!(ea.failures, 3, "{ea:?}");
    assert!(!ea.routable);
    assert_eq!(
        unavailable, 3,
        "ejected after 3 consecutive UNAVAILABLE trailers"
    );
    let eb = snap.endpoint(&b.name()).unwrap();
    assert!(!eb.ejected && eb.failures == 0, "{eb:?}");
    // Every later call goes to b.
    let a_calls = a.calls.load(Ordering::SeqCst);
    for _ in 0..10 {
        let (status, served) = call_to_the_trailers(&mut client).await;
        assert_eq!((status.as_deref(), served), (Some("0"), b.name()));
    }
    assert_eq!(a.calls.load(Ordering::SeqCst), a_calls);
    // The attempts released their in-flight count at the head, as before.
    let snap = handle.snapshot();
    assert!(
        snap.endpoints.iter().all(|e| e.outstanding == 0),
        "{snap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_in_the_trailers_never_ejects_and_resets_the_count() {
    let a = GrpcServer::start().await;
    let b = GrpcServer::start().await;
    for s in [&a, &b] {
        s.in_trailers.store(true, Ordering::SeqCst);
    }
    let balance = trailer_balance(&a, &b);
    let handle = balance.handle();
    let mut client = ReplayBodyLayer::new().layer(balance);

    for _ in 0..30 {
        let (status, _) = call_to_the_trailers(&mut client).await;
        assert_eq!(status.as_deref(), Some("0"));
    }
    let snap = handle.snapshot();
    for e in &snap.endpoints {
        assert!(!e.ejected && e.failures == 0 && e.routable, "{e:?}");
        assert!(e.requests >= 10, "both served: {e:?}");
    }

    // a answers UNAVAILABLE twice, then OK, twice over (each in its trailers): the success
    // starts the consecutive count over, so four failures never make three in a row.
    let codes = [14u8, 14, 0, 14, 14, 0];
    let mut next = 0;
    a.status.store(codes[0], Ordering::SeqCst);
    let mut a_failures = 0;
    for _ in 0..40 {
        let (status, served) = call_to_the_trailers(&mut client).await;
        if served != a.name() {
            continue;
        }
        assert_eq!(status, Some(codes[next].to_string()));
        if codes[next] == 14 {
            a_failures += 1;
        }
        next += 1;
        if next == codes.len() {
            break;
        }
        a.status.store(codes[next], Ordering::SeqCst);
    }
    assert_eq!(next, codes.len(), "a served every call of the sequence");
    assert_eq!(a_failures, 4);
    let ea = handle.snapshot().endpoint(&a.name()).cloned().unwrap();
    assert_eq!(ea.failures, 4, "{ea:?}");
    assert!(
        !ea.ejected,
        "successes in the trailers reset the count: {ea:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_grpc_trailers_the_head_judges_and_unavailable_in_the_trailers_goes_unseen() {
    let a = GrpcServer::start().await;
    let b = GrpcServer::start().await;
    for s in [&a, &b] {
        s.in_trailers.store(true, Ordering::SeqCst);
    }
    a.status.store(14, Ordering::SeqCst);
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .http_version(HttpVersion::Http2)
        .request_timeout(Duration::from_secs(5));
    let balance = Balance::builder()
        .policy(HttpPolicy::new().with_classifier(GrpcClassifier::new()))
        .http_endpoints([a.uri(), b.uri()], &template)
        .unwrap()
        .picker(Picker::RoundRobin)
        .outlier_detection(
            OutlierConfig::builder()
                .consecutive_failures(3)
                .max_ejection_percent(50.0)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let handle = balance.handle();
    let mut client = ReplayBodyLayer::new().layer(balance);
    for _ in 0..12 {
        let (_, _) = call_to_the_trailers(&mut client).await;
    }
    // No late outcome was handed out (the head was judged: a success so far).
    let ea = handle.snapshot().endpoint(&a.name()).cloned().unwrap();
    assert!(!ea.ejected && ea.failures == 0, "{ea:?}");
}
