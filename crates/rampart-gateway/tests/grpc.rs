//! gRPC through the gateway, end to end over real loopback sockets: tonic clients speak h2c
//! to the gateway's listener, the gateway speaks h2c to gRPC servers (tonic-health's
//! `grpc.health.v1.Health` service and a few raw methods).
//!
//! - unary calls succeed, a server-streaming call streams (each message arrives while the
//!   stream is still open), trailers come through;
//! - `grpc-status` decides the breaker's verdict, in a Trailers-Only head or in the trailers
//!   after the messages: UNAVAILABLE answers (HTTP 200) open it;
//! - and the balancer's passive ejection: an upstream answering UNAVAILABLE in its trailers
//!   is ejected, and the calls go to its healthy sibling;
//! - `grpc-timeout` bounds the call, and a call already past it is not sent;
//! - with every upstream down, a tonic client gets `UNAVAILABLE` with
//!   `grpc-retry-pushback-ms`, fast;
//! - the same through the `rampart-gateway` binary run from a configuration file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxy_support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_support::{BOUND, dead_port};
use rampart_gateway::config::GatewayConfig;
use rampart_gateway::proxy::{Proxy, ProxyBalance};
use rampart_gateway::server::{self, Serving};
use tonic::Code;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ServerBody = UnsyncBoxBody<Bytes, BoxError>;

const SERVICE: &str = "catalog.v1.Catalog";

/// A gRPC server over h2c: tonic-health's health service, and raw methods
/// `/test.Raw/Ok` (Trailers-Only `grpc-status: 0`), `/test.Raw/Fail` (Trailers-Only
/// `grpc-status: 14`, HTTP 200), `/test.Raw/Slow` (answers after 5 s) and `/test.Raw/Stream`
/// (a message, then the status `stream_code` in the trailers, after `stream_delay_ms`). Counts
/// the raw calls and remembers the last request's `te` and `grpc-timeout` headers.
struct GrpcServer {
    addr: SocketAddr,
    reporter: HealthReporter,
    raw_calls: Arc<AtomicUsize>,
    stream_code: Arc<AtomicU8>,
    stream_delay_ms: Arc<AtomicU64>,
    seen: Arc<Mutex<Seen>>,
    _task: tokio::task::JoinHandle<()>,
}

#[derive(Default, Clone, Debug)]
struct Seen {
    te: Option<String>,
    grpc_timeout: Option<String>,
}

fn trailers_only(code: u8) -> http::Response<ServerBody> {
    let mut res = http::Response::new(
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    let h = res.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    res
}

/// One message, then the status in the trailers (the usual shape of a gRPC answer).
fn message_then_status(code: u8) -> http::Response<ServerBody> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    let frames = Frames(
        [
            Frame::data(Bytes::from_static(b"\0\0\0\0\0")),
            Frame::trailers(trailers),
        ]
        .into(),
    );
    let mut res = http::Response::new(frames.map_err(|never| match never {}).boxed_unsync());
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    res
}

/// A body of given frames.
struct Frames(VecDeque<Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
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
        let raw_calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (calls, seen2) = (raw_calls.clone(), seen.clone());
        let stream_code = Arc::new(AtomicU8::new(0));
        let stream_delay_ms = Arc::new(AtomicU64::new(0));
        let stream = (stream_code.clone(), stream_delay_ms.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (health, calls, seen) = (health.clone(), calls.clone(), seen2.clone());
                let stream = stream.clone();
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (health, calls, seen) = (health.clone(), calls.clone(), seen.clone());
                    let code = stream.0.load(Ordering::SeqCst);
                    let delay = Duration::from_millis(stream.1.load(Ordering::SeqCst));
                    async move {
                        {
                            let header = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .map(|v| v.to_str().unwrap_or("").to_owned())
                            };
                            let mut s = seen.lock().unwrap();
                            s.te = header("te");
                            s.grpc_timeout = header("grpc-timeout");
                        }
                        let path = req.uri().path().to_owned();
                        if path.starts_with("/grpc.health.v1.Health/") {
                            let res = match health.oneshot(req).await {
                                Ok(res) => res,
                                Err(never) => match never {},
                            };
                            return Ok::<_, Infallible>(res.map(|b| {
                                b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
                            }));
                        }
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok(match path.as_str() {
                            "/test.Raw/Fail" => trailers_only(14),
                            "/test.Raw/StreamOk" => message_then_status(0),
                            "/test.Raw/StreamFail" => message_then_status(14),
                            "/test.Raw/Stream" => {
                                tokio::time::sleep(delay).await;
                                message_then_status(code)
                            }
                            "/test.Raw/Slow" => {
                                tokio::time::sleep(Duration::from_secs(5)).await;
                                trailers_only(0)
                            }
                            _ => trailers_only(0),
                        })
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
            raw_calls,
            stream_code,
            stream_delay_ms,
            seen,
            _task: task,
        }
    }

    fn calls(&self) -> usize {
        self.raw_calls.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(toml: &str) -> (Serving, Proxy<impl ProxyBalance>) {
    let config = GatewayConfig::from_toml(toml).unwrap();
    let proxy = Proxy::build(&config).unwrap();
    let server = config.server.to_server_config("test").unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &server).unwrap();
    (
        server::spawn(listener, &server, proxy.clone()).unwrap(),
        proxy,
    )
}

/// A `grpc = true`, `protocol = "h2c"` cluster of `endpoints`, gRPC health checks every 200 ms.
fn grpc_cluster(endpoints: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[routes]]\ncluster = \"catalog\"\n\
         [clusters.catalog]\nendpoints = [{}]\nprotocol = \"h2c\"\ngrpc = true\n{extra}\n\
         [clusters.catalog.checks]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n",
        eps.join(", ")
    )
}

/// An HTTP/2 (prior knowledge) client pool, for tonic and for raw requests.
fn h2_client<B>() -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn health_client(gateway: SocketAddr) -> HealthClient<Client<HttpConnector, tonic::body::Body>> {
    HealthClient::with_origin(h2_client(), format!("http://{gateway}").parse().unwrap())
}

/// A raw gRPC call (one empty message) to `path` with extra headers; the response head and
/// its trailers (if any).
async fn raw_call(
    gateway: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Option<http::HeaderMap>) {
    let mut req = http::Request::post(format!("http://{gateway}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let res = tokio::time::timeout(BOUND, h2_client().request(req))
        .await
        .expect("answered within the bound")
        .unwrap();
    let (parts, body) = res.into_parts();
    let collected = body.collect().await.unwrap();
    (parts, collected.trailers().cloned())
}

fn grpc_status(parts: &http::response::Parts, trailers: Option<&http::HeaderMap>) -> String {
    parts
        .headers
        .get("grpc-status")
        .or_else(|| trailers.and_then(|t| t.get("grpc-status")))
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_grpc_calls_are_proxied_over_h2c_with_trailers() {
    let upstream = GrpcServer::start().await;
    let (serving, _proxy) = serve(&grpc_cluster(&[upstream.addr], "")).await;
    let mut client = health_client(serving.local_addr());
    for _ in 0..5 {
        let res = tokio::time::timeout(
            BOUND,
            client.check(HealthCheckRequest {
                service: SERVICE.to_owned(),
            }),
        )
        .await
        .expect("answered within the bound")
        .unwrap();
        assert_eq!(res.into_inner().status(), PbStatus::Serving);
    }
    // The upstream was asked as a gRPC server expects (`TE: trailers` kept).
    assert_eq!(upstream.seen().te.as_deref(), Some("trailers"));
    // A status the server reports in the trailers (after a message) reaches the client: an
    // unknown service is NOT_FOUND.
    let err = client
        .check(HealthCheckRequest {
            service: "no.such.Service".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // And raw: a Trailers-Only answer passes through as it was.
    let (parts, trailers) = raw_call(serving.local_addr(), "/test.Raw/Ok", &[]).await;
    assert_eq!(parts.status, 200);
    assert_eq!(grpc_status(&parts, trailers.as_ref()), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_streaming_call_streams_through_the_gateway() {
    let upstream = GrpcServer::start().await;
    let (serving, _proxy) = serve(&grpc_cluster(&[upstream.addr], "")).await;
    let mut client = health_client(serving.local_addr());
    let mut stream = tokio::time::timeout(
        BOUND,
        client.watch(HealthCheckRequest {
            service: SERVICE.to_owned(),
        }),
    )
    .await
    .expect("the stream opened within the bound")
    .unwrap()
    .into_inner();
    assert_eq!(next(&mut stream).await, PbStatus::Serving);
    // Each change arrives while the stream stays open: nothing is buffered to the end.
    upstream
        .reporter
        .set_service_status(SERVICE, ServingStatus::NotServing)
        .await;
    assert_eq!(next(&mut stream).await, PbStatus::NotServing);
    upstream
        .reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    assert_eq!(next(&mut stream).await, PbStatus::Serving);
}

async fn next(s: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>) -> PbStatus {
    tokio::time::timeout(BOUND, s.message())
        .await
        .expect("a message within the bound")
        .unwrap()
        .expect("the stream is still open")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_upstream_down_a_grpc_client_gets_unavailable_with_pushback_fast() {
    let (serving, _proxy) = serve(&grpc_cluster(&[dead_port().await, dead_port().await], "")).await;
    let mut client = health_client(serving.local_addr());
    for _ in 0..3 {
        // Within the client's own 1 s bound, although the cluster's timeouts are 15 s / 30 s.
        let status = tokio::time::timeout(
            Duration::from_secs(1),
            client.check(HealthCheckRequest {
                service: SERVICE.to_owned(),
            }),
        )
        .await
        .expect("answered within 1 s")
        .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(!status.message().is_empty());
        let pushback = status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .expect("a pushback")
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap();
        assert!(pushback > 0 && pushback <= 5_000, "{pushback}");
    }
    // Raw: HTTP 200, Trailers-Only, gRPC content type.
    let (parts, trailers) = raw_call(serving.local_addr(), "/test.Raw/Ok", &[]).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "application/grpc");
    assert_eq!(parts.headers["grpc-status"], "14");
    assert!(trailers.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_answers_with_http_200_open_a_grpc_clusters_breaker() {
    let upstream = GrpcServer::start().await;
    let extra = "[clusters.catalog.breaker]\nwindow = 10\nminimum_calls = 5\nfailure_rate = 50.0\nopen_duration = \"30s\"\n";
    let (serving, proxy) = serve(&grpc_cluster(&[upstream.addr], extra)).await;
    let gateway = serving.local_addr();
    // The upstream's own UNAVAILABLE answers pass through (no pushback of ours) until the
    // breaker has seen enough of them.
    let mut ours = 0;
    for _ in 0..20 {
        let (parts, trailers) = raw_call(gateway, "/test.Raw/Fail", &[]).await;
        assert_eq!(parts.status, 200);
        assert_eq!(grpc_status(&parts, trailers.as_ref()), "14");
        if parts.headers.contains_key("grpc-retry-pushback-ms") {
            ours += 1;
        }
    }
    assert!(ours > 0, "the breaker never opened");
    assert!(
        upstream.calls() < 20,
        "the open breaker kept sending: {}",
        upstream.calls()
    );
    let status = proxy.status();
    assert_eq!(
        status["clusters"][0]["breaker"]["state"], "open",
        "{status}"
    );
    // A pushback close to the breaker's time to its next probe (30 s), not the 5 s default.
    let (parts, _) = raw_call(gateway, "/test.Raw/Ok", &[]).await;
    let pushback: u64 = parts.headers["grpc-retry-pushback-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pushback > 5_000, "{pushback}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_in_the_trailers_decides_the_breakers_verdict() {
    let upstream = GrpcServer::start().await;
    let extra = "[clusters.catalog.breaker]\nwindow = 10\nminimum_calls = 5\nfailure_rate = 50.0\nopen_duration = \"30s\"\n";
    let (serving, proxy) = serve(&grpc_cluster(&[upstream.addr], extra)).await;
    let gateway = serving.local_addr();
    let breaker = |p: &Proxy<_>| p.status()["clusters"][0]["breaker"].clone();

    // Successes in the trailers are counted (the head said nothing yet) and keep it closed.
    for _ in 0..10 {
        let (parts, trailers) = raw_call(gateway, "/test.Raw/StreamOk", &[]).await;
        assert_eq!(grpc_status(&parts, trailers.as_ref()), "0");
        assert!(
            parts.headers.get("grpc-status").is_none(),
            "not Trailers-Only"
        );
    }
    let b = breaker(&proxy);
    assert_eq!(b["state"], "closed", "{b}");
    assert_eq!(b["failures"], 0, "{b}");
    assert!(b["calls"].as_u64().unwrap() >= 5, "{b}");

    // UNAVAILABLE in the trailers (after a message, HTTP 200) is a failure: the breaker opens.
    let mut ours = 0;
    for _ in 0..20 {
        let (parts, trailers) = raw_call(gateway, "/test.Raw/StreamFail", &[]).await;
        assert_eq!(grpc_status(&parts, trailers.as_ref()), "14");
        if parts.headers.contains_key("grpc-retry-pushback-ms") {
            ours += 1;
        }
    }
    assert!(ours > 0, "the breaker never opened: {}", breaker(&proxy));
    assert_eq!(breaker(&proxy)["state"], "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_in_the_trailers_ejects_the_upstream_passively() {
    let good = GrpcServer::start().await;
    let bad = GrpcServer::start().await;
    // The bad upstream answers HTTP 200, a message, then UNAVAILABLE in the trailers, fast;
    // the good one answers OK after 50 ms. Calls go in concurrent rounds, so that the good
    // one's requests in flight make the latency-aware pick send some to the bad one whatever
    // its latency estimate, until passive ejection takes it out.
    bad.stream_code.store(14, Ordering::SeqCst);
    good.stream_delay_ms.store(50, Ordering::SeqCst);
    // A breaker that never opens here: the ejection alone decides.
    let extra = "[clusters.catalog.ejection]\nconsecutive_failures = 3\nmax_ejection_percent = 50.0\n\
                 [clusters.catalog.breaker]\nwindow = 1000\nminimum_calls = 1000\n";
    let (serving, proxy) = serve(&grpc_cluster(&[good.addr, bad.addr], extra)).await;
    let gateway = serving.local_addr();
    let endpoint = |p: &Proxy<_>, addr: SocketAddr| {
        let status = p.status();
        status["clusters"][0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == addr.to_string())
            .cloned()
            .unwrap()
    };

    let mut unavailable = 0;
    for _ in 0..30 {
        let mut round = tokio::task::JoinSet::new();
        for _ in 0..16 {
            round.spawn(raw_call(gateway, "/test.Raw/Stream", &[]));
        }
        while let Some(done) = round.join_next().await {
            let (parts, trailers) = done.unwrap();
            assert_eq!(parts.status, 200);
            assert!(
                parts.headers.get("grpc-status").is_none(),
                "not Trailers-Only"
            );
            if grpc_status(&parts, trailers.as_ref()) == "14" {
                unavailable += 1;
            }
        }
        if endpoint(&proxy, bad.addr)["ejected"] == true {
            break;
        }
    }
    let b = endpoint(&proxy, bad.addr);
    assert_eq!(b["ejected"], true, "{}", proxy.status());
    assert_eq!(b["routable"], false, "{b}");
    // Every UNAVAILABLE the client saw was counted against the bad upstream (at least the
    // three in a row that ejected it; calls already sent when it was ejected also count).
    assert!(unavailable >= 3, "{unavailable}");
    assert_eq!(b["failures"], unavailable, "{b}");
    let g = endpoint(&proxy, good.addr);
    assert_eq!(g["ejected"], false, "{g}");
    assert_eq!(g["failures"], 0, "{g}");
    assert_eq!(proxy.status()["clusters"][0]["breaker"]["state"], "closed");

    // Every later call goes to the good upstream.
    let (bad_before, good_before) = (bad.calls(), good.calls());
    for _ in 0..10 {
        let (parts, trailers) = raw_call(gateway, "/test.Raw/Stream", &[]).await;
        assert_eq!(grpc_status(&parts, trailers.as_ref()), "0");
    }
    assert_eq!(bad.calls(), bad_before);
    assert_eq!(good.calls(), good_before + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_in_the_trailers_never_ejects_an_upstream() {
    let a = GrpcServer::start().await;
    let b = GrpcServer::start().await;
    let extra =
        "[clusters.catalog.ejection]\nconsecutive_failures = 1\nmax_ejection_percent = 50.0\n";
    let (serving, proxy) = serve(&grpc_cluster(&[a.addr, b.addr], extra)).await;
    for _ in 0..20 {
        let (parts, trailers) = raw_call(serving.local_addr(), "/test.Raw/Stream", &[]).await;
        assert_eq!(grpc_status(&parts, trailers.as_ref()), "0");
    }
    let status = proxy.status();
    for e in status["clusters"][0]["endpoints"].as_array().unwrap() {
        assert_eq!(e["ejected"], false, "{status}");
        assert_eq!(e["failures"], 0, "{status}");
    }
    assert_eq!(a.calls() + b.calls(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_bounds_the_call_and_a_call_past_it_is_not_sent() {
    let upstream = GrpcServer::start().await;
    let (serving, _proxy) = serve(&grpc_cluster(&[upstream.addr], "")).await;
    let gateway = serving.local_addr();

    // A 300 ms budget against a 5 s method: answered (UNAVAILABLE) long before the method
    // or the cluster's 15 s attempt timeout; the upstream was told what was left.
    let (parts, trailers) = tokio::time::timeout(
        Duration::from_secs(3),
        raw_call(gateway, "/test.Raw/Slow", &[("grpc-timeout", "300m")]),
    )
    .await
    .expect("answered within 3 s");
    assert_eq!(parts.status, 200);
    assert_ne!(grpc_status(&parts, trailers.as_ref()), "0");
    let sent = upstream
        .seen()
        .grpc_timeout
        .expect("grpc-timeout forwarded");
    let unit = sent.chars().last().unwrap();
    let n: u64 = sent[..sent.len() - 1].parse().unwrap();
    let millis = match unit {
        'm' => n,
        'u' => n / 1_000,
        'n' => n / 1_000_000,
        'S' => n * 1_000,
        other => panic!("unexpected unit {other}"),
    };
    assert!(millis <= 300, "{sent}");

    // A call whose budget is already spent never reaches the upstream.
    let before = upstream.calls();
    let (parts, trailers) = raw_call(gateway, "/test.Raw/Ok", &[("grpc-timeout", "0n")]).await;
    assert_eq!(parts.status, 200);
    assert_ne!(grpc_status(&parts, trailers.as_ref()), "0");
    assert_eq!(upstream.calls(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_proxies_grpc_from_its_config_file_and_apologises_in_grpc() {
    let upstream = GrpcServer::start().await;
    let dead = dead_port().await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n[admin]\nenabled = false\n\
         [[routes]]\nhost = \"down.test\"\ncluster = \"down\"\n\
         [[routes]]\ncluster = \"catalog\"\n\
         [clusters.catalog]\nendpoints = [\"{}\"]\nprotocol = \"h2c\"\ngrpc = true\n\
         [clusters.down]\nendpoints = [\"{dead}\"]\nprotocol = \"h2c\"\ngrpc = true\n",
        upstream.addr
    );
    let gw = proxy_support::GatewayProcess::start("grpc", &toml);
    // Unary calls over several connections (the workers share the upstream's h2 connection).
    for _ in 0..4 {
        let mut client = health_client(gw.addr);
        let res = tokio::time::timeout(
            BOUND,
            client.check(HealthCheckRequest {
                service: SERVICE.to_owned(),
            }),
        )
        .await
        .expect("answered within the bound")
        .unwrap();
        assert_eq!(res.into_inner().status(), PbStatus::Serving);
    }
    // `curl --http2-prior-knowledge -H 'content-type: application/grpc' http://down.test/…`
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let _conn = tokio::spawn(conn);
    let req = http::Request::post("http://down.test/catalog.v1.Catalog/List")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(1), sender.send_request(req))
        .await
        .expect("answered within 1 s")
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "14");
    assert!(res.headers().contains_key("grpc-message"));
    assert!(res.headers().contains_key("grpc-retry-pushback-ms"));
    assert!(gw.stop().success());
}

#[test]
fn protocol_grpc_and_tls_keys_are_validated_naming_the_key() {
    let base = "[[routes]]\ncluster = \"c\"\n[clusters.c]\nendpoints = [\"127.0.0.1:50051\"]\n";
    let err = |extra: &str| {
        GatewayConfig::from_toml(&format!("{base}{extra}"))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("grpc = true\n"),
        "clusters.c.grpc: true needs protocol = \"h2c\" or \"https\" (gRPC runs over HTTP/2)"
    );
    assert!(
        err("protocol = \"h3\"\n").starts_with("clusters.c.protocol: unknown variant `h3`"),
        "{}",
        err("protocol = \"h3\"\n")
    );
    assert_eq!(
        err("protocol = \"h2c\"\n[clusters.c.tls]\nserver_name = \"x\"\n"),
        "clusters.c.tls: (a table) applies only to protocol = \"https\""
    );
    assert!(
        err("protocol = \"https\"\n[clusters.c.tls]\nca = \"/no/such/ca.pem\"\n")
            .starts_with("clusters.c.tls.ca: "),
        "{}",
        err("protocol = \"https\"\n[clusters.c.tls]\nca = \"/no/such/ca.pem\"\n")
    );
    assert_eq!(
        err("protocol = \"https\"\n[clusters.c.tls]\nclient_cert = \"/x.pem\"\n"),
        "clusters.c.tls.client_cert: \"/x.pem\" needs client_key too"
    );
    assert!(
        err("[clusters.c.tls]\nverify = false\n")
            .starts_with("clusters.c.tls.verify: unknown field"),
        "{}",
        err("[clusters.c.tls]\nverify = false\n")
    );
    let mismatch =
        "[[routes]]\ncluster = \"c\"\n[clusters.c]\nendpoints = [\"https://127.0.0.1:443\"]\n";
    assert_eq!(
        GatewayConfig::from_toml(mismatch).unwrap_err().to_string(),
        "clusters.c.endpoints[0]: \"https://127.0.0.1:443\" does not match protocol = \"http1\" (write host:port)"
    );
    let ok = GatewayConfig::from_toml(&format!(
        "{base}protocol = \"h2c\"\ngrpc = true\n[clusters.c.checks]\ngrpc_service = \"catalog.v1.Catalog\"\n"
    ))
    .unwrap();
    assert!(ok.clusters["c"].grpc);
    assert_eq!(ok.clusters["c"].checks.grpc_service, "catalog.v1.Catalog");
}
