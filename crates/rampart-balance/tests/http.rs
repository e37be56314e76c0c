//! The balancer in front of real axum backends on loopback: a killed backend costs no
//! request, a failing one is ejected and comes back, a hanging one is routed around, and an
//! all-down pool fails fast with `NoHealthyEndpoints`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rampart_balance::{
    Balance, HttpEndpoint, HttpPolicy, NoHealthyEndpoints, ReplayBody, ReplayBodyLayer,
    ReplayBodyService, ServedBy,
};
use rampart_health::{BoxError, CheckerConfig, OutlierConfig, find_in_chain, is_never_reached};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tower::{Layer, Service, ServiceExt};

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;
const UNAVAILABLE: u8 = 3;

#[derive(Clone)]
struct BackendState {
    name: Arc<str>,
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicUsize>,
}

struct Backend {
    addr: SocketAddr,
    state: BackendState,
    task: JoinHandle<()>,
    /// Connections accepted.
    conns: Arc<AtomicUsize>,
}

/// Reads the whole request body before answering, as most handlers do: the server then keeps
/// the connection alive. (A backend that answers before reading the body closes the connection
/// after its answer, and a pooled client may send the next request into that closing
/// connection: that case has tests of its own below, with backends that close exactly when
/// the test says.)
async fn app_handler(
    State(s): State<BackendState>,
    uri: Uri,
    _body: Bytes,
) -> (StatusCode, String) {
    s.hits.fetch_add(1, Ordering::SeqCst);
    match s.mode.load(Ordering::SeqCst) {
        FAIL => (StatusCode::INTERNAL_SERVER_ERROR, "broken".into()),
        HANG => std::future::pending().await,
        UNAVAILABLE => (StatusCode::SERVICE_UNAVAILABLE, "busy".into()),
        _ => (StatusCode::OK, format!("{} {}", s.name, uri)),
    }
}

async fn health_handler(State(s): State<BackendState>) -> StatusCode {
    match s.mode.load(Ordering::SeqCst) {
        FAIL => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    }
}

impl Backend {
    async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = BackendState {
            name: name.into(),
            mode: Arc::new(AtomicU8::new(OK)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/healthz", get(health_handler))
            .fallback(app_handler)
            .with_state(state.clone());
        // Connections live in a JoinSet owned by the server task: aborting the task closes
        // the listener and every connection, like a killed process.
        let conns = Arc::new(AtomicUsize::new(0));
        let accepted = conns.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            addr,
            state,
            task,
            conns,
        }
    }

    fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn name(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    fn kill(&self) {
        self.task.abort();
    }
}

type Body = Full<Bytes>;
type Client = ReplayBodyService<Balance<HttpEndpoint<ReplayBody<Body>>, HttpPolicy>>;

fn fast_checks() -> CheckerConfig {
    checks(2)
}

fn checks(fall: u32) -> CheckerConfig {
    CheckerConfig::builder()
        .interval(Duration::from_millis(100))
        .unhealthy_interval(Duration::from_millis(100))
        .timeout(Duration::from_millis(100))
        .jitter(0.0)
        .rise(1)
        .fall(fall)
        .build()
        .unwrap()
}

fn client(
    backends: &[&Backend],
    configure: impl FnOnce(
        rampart_balance::BalanceBuilder<HttpEndpoint<ReplayBody<Body>>, HttpPolicy>,
    ) -> rampart_balance::BalanceBuilder<
        HttpEndpoint<ReplayBody<Body>>,
        HttpPolicy,
    >,
) -> Client {
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .connect_timeout(Duration::from_millis(200))
        .request_timeout(Duration::from_millis(300));
    let builder = Balance::builder()
        .http_endpoints(backends.iter().map(|b| b.uri()), &template)
        .unwrap()
        .http_health_checks("/healthz")
        .health_checks(fast_checks());
    let balance = configure(builder).build().unwrap();
    ReplayBodyLayer::new().layer(balance)
}

/// Waits until every endpoint has passed its first check.
async fn all_healthy(client: &Client) {
    let handle = client.get_ref().handle();
    assert!(
        eventually(Duration::from_secs(5), || {
            handle
                .snapshot()
                .endpoints
                .iter()
                .all(|e| e.health == rampart_health::Health::Healthy)
        })
        .await
    );
}

async fn send(
    client: &mut Client,
    req: http::Request<Body>,
) -> Result<(StatusCode, String, Option<ServedBy>), BoxError> {
    let res = client.ready().await?.call(req).await?;
    let status = res.status();
    let served = res.extensions().get::<ServedBy>().cloned();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), served))
}

fn get_req(path: &str) -> http::Request<Body> {
    http::Request::get(path).body(Full::default()).unwrap()
}

/// Polls `cond` every 20 ms, up to `limit`.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_backends_fails_no_request() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let client = client(&backends.iter().collect::<Vec<_>>(), |b| {
        b.outlier_detection(
            OutlierConfig::builder()
                .consecutive_failures(3)
                .base_ejection_time(Duration::from_secs(5))
                .max_ejection_percent(50.0)
                .build()
                .unwrap(),
        )
    });
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..4 {
        let mut client = client.clone();
        let done = done.clone();
        workers.spawn(async move {
            let mut failures = Vec::new();
            for i in 0..100 {
                match send(&mut client, get_req(&format!("/items/{i}"))).await {
                    Ok((StatusCode::OK, _, _)) => {}
                    Ok((status, body, _)) => failures.push(format!("{status} {body}")),
                    Err(e) => failures.push(format!("error: {e}")),
                }
                done.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
            failures
        });
    }
    assert!(
        eventually(Duration::from_secs(10), || done.load(Ordering::SeqCst)
            >= 60)
        .await
    );
    let hits_before_kill = backends[1].hits();
    assert!(hits_before_kill > 0, "b served before it died");
    backends[1].kill();
    let mut failures = Vec::new();
    while let Some(r) = workers.join_next().await {
        failures.extend(r.unwrap());
    }
    assert_eq!(done.load(Ordering::SeqCst), 400);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let handle = client.get_ref().handle();
    let dead = backends[1].name();
    assert!(
        eventually(Duration::from_secs(5), || !handle
            .snapshot()
            .endpoint(&dead)
            .unwrap()
            .routable)
        .await,
        "the dead backend leaves rotation: {:?}",
        handle.snapshot().endpoint(&dead)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_returning_500_is_ejected_and_comes_back() {
    let backends = [Backend::start("a").await, Backend::start("b").await];
    let mut client = client(&backends.iter().collect::<Vec<_>>(), |b| {
        b.outlier_detection(
            OutlierConfig::builder()
                .consecutive_failures(3)
                .base_ejection_time(Duration::from_millis(500))
                .max_ejection_percent(50.0)
                .build()
                .unwrap(),
        )
        .slow_start(rampart_balance::SlowStart::off())
        // Deterministic alternation, so the failing backend sees its 3 requests at once
        // (with peak-EWMA P2C it would also lose traffic to its faster peer).
        .picker(rampart_balance::Picker::RoundRobin)
        // Passive detection acts within a few requests; the checks need 3 × 100 ms.
        .health_checks(checks(3))
    });
    all_healthy(&client).await;
    let handle = client.get_ref().handle();
    let bad = backends[0].name();
    backends[0].set(FAIL);
    // Requests until the failing backend is ejected; its 500s are answers (GET + 500 is not
    // retried), at most 3 of them before the ejection.
    let mut errors = 0;
    for i in 0..100 {
        let (status, _, served) = send(&mut client, get_req(&format!("/x/{i}")))
            .await
            .unwrap();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            errors += 1;
            assert_eq!(served.unwrap().endpoint(), bad);
        }
        if handle.snapshot().endpoint(&bad).unwrap().ejected {
            break;
        }
    }
    let snap = handle.snapshot();
    let ep = snap.endpoint(&bad).unwrap();
    assert!(ep.ejected, "ejected after 3 consecutive 500s: {ep:?}");
    assert_eq!(errors, 3);
    // While ejected, it gets nothing.
    let hits = backends[0].hits();
    for i in 0..20 {
        let (status, _, _) = send(&mut client, get_req(&format!("/y/{i}")))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(backends[0].hits(), hits);
    // Fixed: after the ejection time and a passing check it takes traffic again.
    backends[0].set(OK);
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = handle.snapshot();
            let e = s.endpoint(&bad).unwrap();
            !e.ejected && e.routable
        })
        .await,
        "back in rotation: {:?}",
        handle.snapshot()
    );
    let before = backends[0].hits();
    for i in 0..60 {
        let (status, _, _) = send(&mut client, get_req(&format!("/z/{i}")))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        backends[0].hits() > before,
        "traffic returned to the recovered backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_is_routed_around_after_timeouts() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let mut client = client(&backends.iter().collect::<Vec<_>>(), |b| {
        b.outlier_detection(
            OutlierConfig::builder()
                .consecutive_failures(2)
                .base_ejection_time(Duration::from_secs(30))
                .max_ejection_percent(50.0)
                .build()
                .unwrap(),
        )
    });
    backends[2].set(HANG);
    for i in 0..40 {
        let (status, body, _) = send(&mut client, get_req(&format!("/h/{i}")))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.starts_with('c'));
    }
    // Each request that met the hang timed out (300 ms) and was retried elsewhere (GET is
    // idempotent); peak-EWMA and ejection keep it from getting more than a couple.
    assert!(
        backends[2].hits() <= 2,
        "hanging backend got {} requests",
        backends[2].hits()
    );
    let snap = client.get_ref().snapshot();
    let hung = snap.endpoint(&backends[2].name()).unwrap();
    assert!(
        hung.failures >= 1 && hung.ewma >= Duration::from_millis(300),
        "{hung:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_fails_fast_with_no_healthy_endpoints() {
    let backends = [Backend::start("a").await, Backend::start("b").await];
    let mut client = client(&backends.iter().collect::<Vec<_>>(), |b| {
        b.panic_threshold(0.0)
    });
    let handle = client.get_ref().handle();
    let (status, _, _) = send(&mut client, get_req("/")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    for b in &backends {
        b.kill();
    }
    // Before the checks notice, requests fail with a transport error (a pooled connection
    // closed, or a refused connect); either way an error, never a hang.
    let err = tokio::time::timeout(Duration::from_secs(5), send(&mut client, get_req("/")))
        .await
        .expect("never hangs");
    assert!(err.is_err());
    assert!(eventually(Duration::from_secs(5), || handle.snapshot().routable == 0).await);
    // A hang guard, not a timing assertion.
    let err = tokio::time::timeout(Duration::from_secs(5), send(&mut client, get_req("/")))
        .await
        .expect("never hangs")
        .unwrap_err();
    assert!(err.is::<NoHealthyEndpoints>(), "{err}");
    assert!(is_never_reached(&*err));
    let report = rampart_health::ReportHealth::health_report(client.get_ref());
    assert_eq!(report.borrow().healthy, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_posts_are_replayed_on_503_and_plain_posts_are_not() {
    let backends = [Backend::start("a").await, Backend::start("b").await];
    let mut client = client(&backends.iter().collect::<Vec<_>>(), |b| {
        b.picker(rampart_balance::Picker::RoundRobin)
    });
    all_healthy(&client).await;
    backends[0].set(UNAVAILABLE);
    // Round robin sends every other first attempt to the 503 backend; a keyed POST (its body
    // buffered by ReplayBodyLayer) is replayed on the other one.
    for _ in 0..4 {
        let keyed = http::Request::post("/orders")
            .header("idempotency-key", "k-1")
            .body(Full::new(Bytes::from_static(b"{\"sku\":1}")))
            .unwrap();
        let (status, body, served) = send(&mut client, keyed).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(served.unwrap().endpoint(), backends[1].name());
    }
    assert_eq!(backends[0].hits(), 2);
    // A plain POST is not idempotent: its 503 is the answer.
    let mut unavailable = 0;
    for _ in 0..4 {
        let plain = http::Request::post("/orders")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (status, _, _) = send(&mut client, plain).await.unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            unavailable += 1;
        }
    }
    assert_eq!(unavailable, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uri_is_rewritten_and_the_endpoint_recorded() {
    let backend = Backend::start("a").await;
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap());
    let endpoint: HttpEndpoint<ReplayBody<Body>> = template
        .base(format!("http://{}/api", backend.addr).parse().unwrap())
        .build()
        .unwrap();
    let name = endpoint.name().to_string();
    let balance = Balance::builder()
        .endpoint(rampart_balance::Endpoint::new(name.clone(), endpoint))
        .build()
        .unwrap();
    let mut client = ReplayBodyLayer::new().layer(balance);
    let (status, body, served) = send(
        &mut client,
        get_req("http://storefront.example/items?page=2"),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "a /api/items?page=2");
    assert_eq!(served.unwrap().endpoint(), name);
}

/// A port with nothing listening: connecting is refused.
async fn refused_uri() -> Uri {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_kept_when_the_retry_is_refused() {
    // One backend answers 503; the only other endpoint refuses connections. An idempotent GET
    // (or a keyed POST) that got the 503 first is retried on the refusing endpoint, whose
    // error cannot be a better answer: the caller gets the 503, not the connection error.
    let busy = Backend::start("busy").await;
    busy.set(UNAVAILABLE);
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .connect_timeout(Duration::from_millis(200))
        .request_timeout(Duration::from_millis(500));
    let balance = Balance::builder()
        .http_endpoints([busy.uri(), refused_uri().await], &template)
        .unwrap()
        .picker(rampart_balance::Picker::RoundRobin)
        .build()
        .unwrap();
    let mut client = ReplayBodyLayer::new().layer(balance);
    // Round robin: every other request starts on the busy backend, the others on the refusing
    // one (and are retried on the busy one).
    for i in 0..4 {
        let (status, body, served) = send(&mut client, get_req(&format!("/g/{i}")))
            .await
            .unwrap_or_else(|e| panic!("request {i}: expected the 503, got error {e}"));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(served.unwrap().endpoint(), busy.name());
    }
    for i in 0..2 {
        let keyed = http::Request::post("/orders")
            .header("idempotency-key", format!("k-{i}"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (status, _, _) = send(&mut client, keyed)
            .await
            .unwrap_or_else(|e| panic!("keyed post {i}: expected the 503, got error {e}"));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(busy.hits(), 6, "each request reached the busy backend once");
}

/// A backend that reads each request and closes the connection without answering (a reset
/// before any response byte); counts the requests it swallowed.
async fn resetting_backend() -> (Uri, Arc<AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let swallowed = Arc::new(AtomicUsize::new(0));
    let count = swallowed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let mut buf = [0u8; 4096];
            if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                count.fetch_add(1, Ordering::SeqCst);
            }
            drop(stream);
        }
    });
    (format!("http://{addr}").parse().unwrap(), swallowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_before_the_response_is_retried_only_for_idempotent_or_keyed_requests() {
    // A reset before any response byte may come after the backend processed the request, so
    // only requests that are safe to repeat go again: idempotent methods and requests with an
    // Idempotency-Key. A plain POST gets the transport error.
    let good = Backend::start("good").await;
    let (reset_uri, swallowed) = resetting_backend().await;
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .connect_timeout(Duration::from_millis(200))
        .request_timeout(Duration::from_secs(2));
    let balance = Balance::builder()
        .http_endpoints([reset_uri, good.uri()], &template)
        .unwrap()
        .picker(rampart_balance::Picker::RoundRobin)
        .build()
        .unwrap();
    let mut client = ReplayBodyLayer::new().layer(balance);
    // Round robin: of two requests, one starts on the resetting backend.
    for i in 0..2 {
        let (status, _, served) = send(&mut client, get_req(&format!("/r/{i}")))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(served.unwrap().endpoint(), good.name());
    }
    for i in 0..2 {
        let keyed = http::Request::post("/orders")
            .header("idempotency-key", format!("r-{i}"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (status, _, _) = send(&mut client, keyed).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(swallowed.load(Ordering::SeqCst), 2);
    let mut errors = 0;
    for _ in 0..2 {
        let plain = http::Request::post("/orders")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        match send(&mut client, plain).await {
            Ok((status, _, _)) => assert_eq!(status, StatusCode::OK),
            Err(e) => {
                assert!(!is_never_reached(&*e), "the request did leave: {e}");
                errors += 1;
            }
        }
    }
    assert_eq!(
        errors, 1,
        "the plain POST that met the reset is not repeated"
    );
    assert_eq!(swallowed.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_bodies_up_to_64_kib_are_replayed() {
    let busy = Backend::start("busy").await;
    busy.set(UNAVAILABLE);
    let good = Backend::start("good").await;
    let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap());
    let balance = Balance::builder()
        .http_endpoints([busy.uri(), good.uri()], &template)
        .unwrap()
        .picker(rampart_balance::Picker::RoundRobin)
        .build()
        .unwrap();
    // The default limit.
    let mut client = ReplayBodyLayer::new().layer(balance);
    let keyed = |len: usize| {
        http::Request::post("/upload")
            .header("idempotency-key", "u")
            .body(Full::new(Bytes::from(vec![b'x'; len])))
            .unwrap()
    };
    for _ in 0..2 {
        let (status, _, _) = send(&mut client, keyed(64 * 1024)).await.unwrap();
        assert_eq!(status, StatusCode::OK, "64 KiB is replayed");
    }
    let mut unavailable = 0;
    for _ in 0..2 {
        let (status, _, _) = send(&mut client, keyed(64 * 1024 + 1)).await.unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            unavailable += 1;
        }
    }
    assert_eq!(
        unavailable, 1,
        "a larger body streams once and is not replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_an_endpoint_are_pooled() {
    let backend = Backend::start("a").await;
    let balance = Balance::builder()
        .http_endpoints(
            [backend.uri()],
            &HttpEndpoint::builder("http://127.0.0.1".parse().unwrap()),
        )
        .unwrap()
        .build()
        .unwrap();
    let mut client = ReplayBodyLayer::new().layer(balance);
    for i in 0..20 {
        let (status, _, _) = send(&mut client, get_req(&format!("/p/{i}")))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        tokio::task::yield_now().await;
    }
    let conns = backend.conns.load(Ordering::SeqCst);
    assert!(
        conns <= 3,
        "20 sequential requests opened {conns} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_timeout_bounds_the_wait_for_the_response_head() {
    let backend = Backend::start("slow").await;
    backend.set(HANG);
    let mut endpoint: HttpEndpoint<Body> = HttpEndpoint::builder(backend.uri())
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        endpoint.ready().await.unwrap().call(get_req("/")),
    )
    .await
    .expect("the request timeout fires")
    .unwrap_err();
    let timeout = err
        .downcast_ref::<rampart_balance::RequestTimeout>()
        .expect("a RequestTimeout");
    assert_eq!(timeout.after(), Duration::from_millis(200));
    assert!(!is_never_reached(&*err), "the request was sent");
    assert_eq!(backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeout_bounds_a_connect_that_gets_no_answer() {
    // A listener that never accepts, with its accept queue filled: further SYNs are dropped
    // and a connect hangs until its timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => break, // the queue is full
        }
        assert!(held.len() < 64, "the accept queue never filled");
    }
    let mut endpoint: HttpEndpoint<Body> =
        HttpEndpoint::builder(format!("http://{addr}").parse().unwrap())
            .connect_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        endpoint.ready().await.unwrap().call(get_req("/")),
    )
    .await
    .expect("the connect timeout fires")
    .unwrap_err();
    assert!(
        is_never_reached(&*err),
        "a connect timeout never reached: {err}"
    );
    drop(listener);
}

/// What a [`raw_backend`] does after it has read a request head.
#[derive(Clone, Copy)]
enum Raw {
    /// Answers `503` without reading the body, then shuts its side down and discards the
    /// rest of the body until the client is done (a lingering close, as nginx does).
    Answer503,
    /// Closes the connection without answering (and without reading the body).
    CloseUnanswered,
}

/// A backend speaking HTTP/1.1 by hand over loopback TCP, so that a test decides exactly when
/// it answers and closes; returns its URI and the server task.
async fn raw_backend(what: Raw) -> (Uri, JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            conns.spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                match what {
                    Raw::Answer503 => {
                        let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy";
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        let _ = stream.shutdown().await;
                    }
                    Raw::CloseUnanswered => {
                        let _ = stream.shutdown().await;
                    }
                }
                // Discard the rest of the body until the client closes (bounded), so that
                // closing never resets the connection under the client's feet.
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                })
                .await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    (uri, task)
}

fn raw_client(backend: Uri) -> Client {
    let balance = Balance::builder()
        .http_endpoints(
            [backend],
            &HttpEndpoint::builder("http://127.0.0.1".parse().unwrap()),
        )
        .unwrap()
        .build()
        .unwrap();
    ReplayBodyLayer::new().layer(balance)
}

/// A body of 1 MiB: larger than the replay limit (so streamed, sent once) and than the
/// socket buffers (so the backend answers while the client is still sending it).
fn large_upload() -> http::Request<Body> {
    http::Request::post("/upload")
        .header("idempotency-key", "u")
        .body(Full::new(Bytes::from(vec![b'x'; 1024 * 1024])))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_backend_answering_503_before_reading_a_large_body_gives_the_caller_its_503() {
    let (uri, task) = raw_backend(Raw::Answer503).await;
    let mut client = raw_client(uri);
    for i in 0..10 {
        let (status, body, _) =
            tokio::time::timeout(Duration::from_secs(10), send(&mut client, large_upload()))
                .await
                .expect("answered within 10 s")
                .unwrap_or_else(|e| panic!("request {i}: {e:?}"));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "request {i}");
        assert_eq!(body, "busy");
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_request_whose_connection_closes_unanswered_fails_with_closed_before_response() {
    let (uri, task) = raw_backend(Raw::CloseUnanswered).await;
    let mut client = raw_client(uri);
    for i in 0..5 {
        let err = tokio::time::timeout(Duration::from_secs(10), send(&mut client, large_upload()))
            .await
            .expect("answered within 10 s")
            .expect_err("no answer, no body to replay: an error");
        let closed = err
            .downcast_ref::<rampart_balance::replay::ClosedBeforeResponse>()
            .unwrap_or_else(|| panic!("request {i}: not ClosedBeforeResponse: {err:?}"));
        assert!(
            closed.to_string().contains("could not be replayed"),
            "{closed}"
        );
        assert!(std::error::Error::source(closed).is_some());
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_to_a_busy_backend_never_reuse_its_closing_connection() {
    // An ordinary hyper server whose handler never reads the body: hyper answers, reads what
    // is at hand, and closes the connection. Without care the client pooled that closing
    // connection and the next upload died on it (about 1 in 100 uploads failed with
    // `IncompleteMessage` or a broken pipe). Streamed uploads now go out with
    // `Connection: close`, so each one has a connection of its own: the server sees exactly
    // one connection per upload. Each upload ends with the backend's 503, or — when the
    // server's close (a reset, since the body was left unread) overtakes the 503 on the wire,
    // which TCP allows — with the typed `ClosedBeforeResponse`; never another error, never a
    // hang.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let app = Router::new().fallback(|| async { (StatusCode::SERVICE_UNAVAILABLE, "busy") });
    let server = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        }
    });
    let mut client = raw_client(format!("http://{addr}").parse().unwrap());
    let uploads = 200;
    let mut answered = 0;
    for i in 0..uploads {
        let outcome =
            tokio::time::timeout(Duration::from_secs(10), send(&mut client, large_upload()))
                .await
                .expect("answered within 10 s");
        match outcome {
            Ok((status, body, _)) => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "upload {i}");
                assert_eq!(body, "busy");
                answered += 1;
            }
            Err(e) => assert!(
                find_in_chain::<rampart_balance::replay::ClosedBeforeResponse>(&*e).is_some(),
                "upload {i}: {e:?}"
            ),
        }
    }
    assert!(answered > 0, "no upload saw the backend's 503");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        uploads,
        "a streamed upload reused a connection the backend was closing"
    );
    server.abort();
}
