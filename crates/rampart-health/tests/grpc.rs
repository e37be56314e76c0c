//! The gRPC health probe against tonic-health's own server on loopback (h2c): `SERVING`
//! passes, `NOT_SERVING` and an unknown service fail, a server that is gone is a connect
//! failure, and a checker follows a service that flips out of service and back.
#![cfg(feature = "grpc")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rampart_health::{Checker, CheckerConfig, GrpcHealthProbe, Health, Probe, ProbeErrorKind};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

const SERVICE: &str = "catalog.v1.Catalog";

/// tonic-health's server over h2c; aborted on drop.
struct Server {
    addr: SocketAddr,
    reporter: HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve() -> Server {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let svc = TowerToHyperService::new(service.clone());
            conns.spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Server {
        addr,
        reporter,
        task,
    }
}

fn probe(addr: SocketAddr, service: &str) -> GrpcHealthProbe {
    GrpcHealthProbe::builder(format!("http://{addr}").parse().unwrap())
        .service(service)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn serving_passes_not_serving_and_unknown_services_fail() {
    let server = serve().await;
    let p = probe(server.addr, SERVICE);
    p.probe().await.unwrap();

    server
        .reporter
        .set_service_status(SERVICE, ServingStatus::NotServing)
        .await;
    let err = p.probe().await.unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Status, "{err}");
    assert!(err.to_string().contains("not_serving"), "{err}");

    let err = probe(server.addr, "no.such.Service")
        .probe()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Status, "{err}");
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");

    // The whole server ("") is registered by tonic-health as serving.
    probe(server.addr, "").probe().await.unwrap();
}

#[tokio::test]
async fn a_server_that_is_gone_is_a_connect_failure() {
    let addr = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let err = probe(addr, SERVICE).probe().await.unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Connect, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_takes_a_not_serving_service_out_and_puts_it_back() {
    let server = serve().await;
    let config = CheckerConfig::builder()
        .interval(Duration::from_millis(300))
        .unhealthy_interval(Duration::from_millis(300))
        .timeout(Duration::from_millis(300))
        .jitter(0.0)
        .rise(2)
        .fall(2)
        .build()
        .unwrap();
    let handle = Checker::spawn("catalog-1", probe(server.addr, SERVICE), config);
    let mut watch = handle.watch();
    let within = Duration::from_secs(10);

    let first = tokio::time::timeout(within, watch.changed()).await.unwrap();
    assert_eq!(first, Some(Health::Healthy));

    server
        .reporter
        .set_service_status(SERVICE, ServingStatus::NotServing)
        .await;
    let next = tokio::time::timeout(within, watch.changed()).await.unwrap();
    assert_eq!(next, Some(Health::Unhealthy));

    server
        .reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let back = tokio::time::timeout(within, watch.changed()).await.unwrap();
    assert_eq!(back, Some(Health::Healthy));
}

#[test]
fn builder_rejects_paths_zero_timeouts_and_other_schemes() {
    let base = |s: &str| s.parse::<http::Uri>().unwrap();
    let err = GrpcHealthProbe::builder(base("http://127.0.0.1:1/prefix"))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "base");
    let err = GrpcHealthProbe::builder(base("ftp://127.0.0.1:1"))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "base");
    let err = GrpcHealthProbe::builder(base("http://127.0.0.1:1"))
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!((err.field(), err.value()), ("timeout", "0ns"));
}
