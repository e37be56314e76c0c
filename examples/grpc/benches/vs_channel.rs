//! Rampart's client stack against tonic's own `Channel`, side by side in one run, over TLS on
//! loopback (certificates made at start-up with rcgen):
//!
//! 1. gRPC unary `GetItem` to three tonic servers (HTTP/2, ALPN `h2`): the example's
//!    [`Catalog`] (`Fallback → CircuitBreaker → Balance` of `HttpEndpoint`s, gRPC health
//!    checks, gRPC classifier) against `tonic::transport::Channel::balance_list` (tonic's
//!    power-of-two-choices balancer) calling the same servers with `tonic::client::Grpc`.
//! 2. An HTTPS keep-alive request (HTTP/1.1 over TLS) to three hyper servers:
//!    `CircuitBreaker → Balance` of `HttpEndpoint`s against the bare `HttpEndpoint`s
//!    (hyper-util's pooled client, the same TLS settings), taken in turn.
//!
//! Each pair runs the same closed-loop load (`CALLERS` concurrent callers for a fixed time),
//! interleaved over a few rounds so both see the same machine; prints calls per second, p50
//! and p99, and the ratios.
//!
//! `cargo bench -p grpc-example --bench vs_channel`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grpc_example::proto::{GET_ITEM, GetItemRequest, Item};
use grpc_example::{CallResult, Catalog, CatalogServer, Pki};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rampart::balance::{Balance, HttpEndpoint, HttpPolicy};
use rampart::breaker::{CircuitBreaker, CircuitBreakerLayer, Policy, SlidingWindow};
use rampart::health::HttpClassifier;
use rampart::health::transport::HttpVersion;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tower::{Layer, ServiceExt};

const CALLERS: usize = 32;
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 2;

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One closed-loop run: `CALLERS` callers of `call` for `ROUND`; latencies in microseconds.
async fn drive<F>(call: F, hist: &mut Histogram<u64>) -> (usize, Duration)
where
    F: Fn(u64) -> BoxFut + Clone + Send + Sync + 'static,
{
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CALLERS {
        let call = call.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            let mut id = c as u64;
            while start.elapsed() < ROUND {
                let t = Instant::now();
                call(id).await;
                out.push(t.elapsed().as_micros() as u64);
                id += CALLERS as u64;
            }
            out
        });
    }
    let mut n = 0;
    while let Some(done) = tasks.join_next().await {
        for us in done.unwrap() {
            hist.record(us.max(1)).unwrap();
            n += 1;
        }
    }
    (n, start.elapsed())
}

struct Tally {
    name: &'static str,
    hist: Histogram<u64>,
    calls: usize,
    time: Duration,
}

impl Tally {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            hist: Histogram::new(3).unwrap(),
            calls: 0,
            time: Duration::ZERO,
        }
    }

    async fn run<F>(&mut self, call: F)
    where
        F: Fn(u64) -> BoxFut + Clone + Send + Sync + 'static,
    {
        let (n, t) = drive(call, &mut self.hist).await;
        self.calls += n;
        self.time += t;
    }

    fn rate(&self) -> f64 {
        self.calls as f64 / self.time.as_secs_f64()
    }

    fn p99(&self) -> f64 {
        self.hist.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn print(&self) {
        println!(
            "  {:<44} {:>8.0} calls/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            self.name,
            self.rate(),
            self.hist.value_at_quantile(0.5) as f64 / 1000.0,
            self.p99()
        );
    }
}

fn compare(ours: &Tally, theirs: &Tally) {
    println!(
        "  throughput ratio {:.2}x, p99 ratio {:.2} (ours / theirs)",
        ours.rate() / theirs.rate(),
        ours.p99() / theirs.p99()
    );
}

/// An HTTPS (HTTP/1.1, keep-alive) server answering `ok`.
async fn https_server(pki: &Pki) -> (http::Uri, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_tls(&[b"http/1.1"]).unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (format!("https://{addr}").parse().unwrap(), task)
}

async fn grpc(pki: &Pki) {
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        servers.push(CatalogServer::start(name, pki).await.unwrap());
    }
    let uris: Vec<http::Uri> = servers.iter().map(CatalogServer::uri).collect();

    let catalog = Catalog::new(&uris, pki.client_tls().unwrap()).unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca_pem()));
    let endpoints: Vec<Endpoint> = uris
        .iter()
        .map(|u| {
            Endpoint::from_shared(u.to_string())
                .unwrap()
                .tls_config(tls.clone())
                .unwrap()
        })
        .collect();
    let channel = Channel::balance_list(endpoints.into_iter());

    let rampart_call = {
        let catalog = catalog.clone();
        move |id: u64| -> BoxFut {
            let call = catalog.get_item(id);
            Box::pin(async move {
                match call.await {
                    Ok(CallResult::Item(item)) => assert_eq!(item.id, id),
                    other => panic!("rampart call failed: {other:?}"),
                }
            })
        }
    };
    let tonic_call = move |id: u64| -> BoxFut {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        Box::pin(async move {
            grpc.ready().await.unwrap();
            let codec = tonic_prost::ProstCodec::<GetItemRequest, Item>::default();
            let item = grpc
                .unary(
                    tonic::Request::new(GetItemRequest { id }),
                    http::uri::PathAndQuery::from_static(GET_ITEM),
                    codec,
                )
                .await
                .unwrap()
                .into_inner();
            assert_eq!(item.id, id);
        })
    };

    // Warm-up: connections, health checks, estimates.
    let mut ours = Tally::new("rampart Fallback → Breaker → Balance (gRPC)");
    let mut theirs = Tally::new("tonic Channel::balance_list (gRPC)");
    let mut scratch = Tally::new("warm-up");
    scratch.run(rampart_call.clone()).await;
    scratch.run(tonic_call.clone()).await;
    for _ in 0..ROUNDS {
        ours.run(rampart_call.clone()).await;
        theirs.run(tonic_call.clone()).await;
    }
    println!("gRPC unary GetItem over TLS (h2), three tonic servers, {CALLERS} callers:");
    ours.print();
    theirs.print();
    compare(&ours, &theirs);
    let served: Vec<usize> = servers.iter().map(CatalogServer::calls).collect();
    println!("  calls per server (a, b, c), both clients: {served:?}");
}

type Https = HttpEndpoint<Full<Bytes>>;

async fn https(pki: &Pki) {
    let mut uris = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (uri, task) = https_server(pki).await;
        uris.push(uri);
        tasks.push(task);
    }
    let template = HttpEndpoint::builder(http::Uri::from_static("https://127.0.0.1"))
        .http_version(HttpVersion::Http1)
        .request_timeout(Duration::from_secs(2))
        .tls(pki.client_tls().unwrap());
    let balance: Balance<Https, HttpPolicy> = Balance::builder()
        .http_endpoints(uris.iter().cloned(), &template)
        .unwrap()
        .build()
        .unwrap();
    let stack: CircuitBreaker<Balance<Https, HttpPolicy>, HttpClassifier> =
        CircuitBreakerLayer::new(
            Policy::builder()
                .sliding_window(SlidingWindow::count(100))
                .minimum_calls(20)
                .failure_rate_threshold(50.0)
                .build()
                .unwrap(),
        )
        .classifier(HttpClassifier::default())
        .layer(balance);
    let bare: Arc<Vec<Https>> = Arc::new(
        uris.iter()
            .map(|u| template.clone().base(u.clone()).build().unwrap())
            .collect(),
    );
    let turn = Arc::new(AtomicUsize::new(0));

    let rampart_call = move |_id: u64| -> BoxFut {
        let stack = stack.clone();
        Box::pin(async move {
            let req = http::Request::get("/ok").body(Full::default()).unwrap();
            let res = stack.oneshot(req).await.unwrap();
            assert_eq!(res.status(), http::StatusCode::OK);
            res.into_body().collect().await.unwrap();
        })
    };
    let bare_call = move |_id: u64| -> BoxFut {
        let i = turn.fetch_add(1, Ordering::Relaxed) % bare.len();
        let endpoint = bare[i].clone();
        Box::pin(async move {
            let req = http::Request::get("/ok").body(Full::default()).unwrap();
            let res = endpoint.oneshot(req).await.unwrap();
            assert_eq!(res.status(), http::StatusCode::OK);
            res.into_body().collect().await.unwrap();
        })
    };

    let mut ours = Tally::new("rampart Breaker → Balance (HTTPS/1.1)");
    let mut theirs = Tally::new("bare HttpEndpoint, in turn (HTTPS/1.1)");
    let mut scratch = Tally::new("warm-up");
    scratch.run(rampart_call.clone()).await;
    scratch.run(bare_call.clone()).await;
    for _ in 0..ROUNDS {
        ours.run(rampart_call.clone()).await;
        theirs.run(bare_call.clone()).await;
    }
    println!("HTTPS keep-alive GET, three hyper servers, {CALLERS} callers:");
    ours.print();
    theirs.print();
    compare(&ours, &theirs);
    for task in tasks {
        task.abort();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = Pki::generate().unwrap();
        grpc(&pki).await;
        https(&pki).await;
    });
}
