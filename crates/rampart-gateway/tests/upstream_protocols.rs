//! Upstream protocols over real loopback sockets, with certificates made at test time
//! (rcgen): a gRPC cluster over HTTPS (ALPN `h2`, the CA from `tls.ca`), health-checked with
//! the gRPC health protocol over the same TLS; an unknown CA never reaches the backend; an
//! HTTP/2 client reaches an HTTP/1 cluster, and an HTTP/1 client an h2c cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_support::{BOUND, backend, echo};
use rampart_gateway::config::GatewayConfig;
use rampart_gateway::proxy::{Proxy, ProxyBalance};
use rampart_gateway::server::{self, Serving};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::Code;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SERVICE: &str = "catalog.v1.Catalog";

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// A server configuration (ALPN `h2`, `http/1.1`) with a leaf for `localhost` and
    /// `127.0.0.1` signed by this CA.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert.pem().as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A gRPC server over TLS: tonic-health's health service; counts the requests that got
/// through the handshake (checks included).
struct TlsGrpcServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

async fn tls_grpc_server(config: Arc<rustls::ServerConfig>) -> TlsGrpcServer {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        let _reporter = reporter;
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, health, counted) = (acceptor.clone(), health.clone(), counted.clone());
            conns.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let health = health.clone();
                    async move {
                        let res = match health.oneshot(req).await {
                            Ok(res) => res,
                            Err(never) => match never {},
                        };
                        Ok::<_, Infallible>(
                            res.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()),
                        )
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    TlsGrpcServer {
        addr,
        requests,
        _task: task,
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

fn https_grpc_config(endpoint: SocketAddr, ca_file: &std::path::Path) -> String {
    format!(
        "[[routes]]\ncluster = \"catalog\"\n\
         [clusters.catalog]\nendpoints = [\"{endpoint}\"]\nprotocol = \"https\"\ngrpc = true\n\
         [clusters.catalog.tls]\nca = {ca:?}\n\
         [clusters.catalog.checks]\ninterval = \"200ms\"\ntimeout = \"150ms\"\ngrpc_service = \"{SERVICE}\"\n",
        ca = ca_file.display().to_string(),
    )
}

async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + BOUND;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_cluster_over_https_is_checked_and_served_with_the_configured_ca() {
    let ca = Ca::new("gateway test CA");
    let upstream = tls_grpc_server(ca.server_config()).await;
    let dir = proxy_support::temp_dir("https-grpc");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.issuer.pem()).unwrap();
    let (serving, proxy) = serve(&https_grpc_config(upstream.addr, &ca_file)).await;

    // The gRPC health checks dial over the same TLS and find the service serving.
    assert!(
        eventually(|| proxy.status()["clusters"][0]["endpoints"][0]["health"] == "healthy").await,
        "{}",
        proxy.status()
    );
    let mut client = HealthClient::with_origin(
        h2_client(),
        format!("http://{}", serving.local_addr()).parse().unwrap(),
    );
    for _ in 0..3 {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_from_an_unknown_ca_never_reaches_the_backend() {
    let trusted = Ca::new("trusted CA");
    let other = Ca::new("some other CA");
    let upstream = tls_grpc_server(other.server_config()).await;
    let dir = proxy_support::temp_dir("https-unknown-ca");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, trusted.issuer.pem()).unwrap();
    let (serving, proxy) = serve(&https_grpc_config(upstream.addr, &ca_file)).await;
    let mut client = HealthClient::with_origin(
        h2_client(),
        format!("http://{}", serving.local_addr()).parse().unwrap(),
    );
    let status = tokio::time::timeout(
        BOUND,
        client.check(HealthCheckRequest {
            service: SERVICE.to_owned(),
        }),
    )
    .await
    .expect("answered within the bound")
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.metadata().contains_key("grpc-retry-pushback-ms"));
    // Nor do the checks: the endpoint is unhealthy, and no request got past a handshake.
    assert!(
        eventually(|| proxy.status()["clusters"][0]["endpoints"][0]["health"] == "unhealthy").await,
        "{}",
        proxy.status()
    );
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_reaches_an_http1_cluster_with_its_authority_as_host() {
    let a = backend("a").await;
    let toml = format!(
        "[[routes]]\nhost = \"shop.test\"\ncluster = \"a\"\n\
         [clusters.a]\nendpoints = [\"{}\"]\n",
        a.addr
    );
    let (serving, _proxy) = serve(&toml).await;
    // An h2 request carries `:authority`, no `Host`: it routes by it and arrives as `Host`.
    let req = http::Request::get(format!(
        "http://shop.test:{}/items?page=2",
        serving.local_addr().port()
    ))
    .body(Empty::<Bytes>::new())
    .unwrap();
    let stream = tokio::net::TcpStream::connect(serving.local_addr())
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let _conn = tokio::spawn(conn);
    let res = tokio::time::timeout(BOUND, sender.send_request(req))
        .await
        .expect("answered within the bound")
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-backend"], "a");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let echo = echo(&body);
    assert_eq!(echo["path"], "/items");
    assert_eq!(
        echo["headers"]["host"],
        format!("shop.test:{}", serving.local_addr().port())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_reaches_an_h2c_cluster_and_the_body_streams_back() {
    // An h2c server answering with the version it saw and the request body it got.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let version = format!("{:?}", req.version());
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let mut out = version.into_bytes();
                    out.push(b' ');
                    out.extend_from_slice(&body);
                    Ok::<_, Infallible>(http::Response::new(
                        Full::new(Bytes::from(out))
                            .map_err(|never| match never {})
                            .boxed_unsync(),
                    ))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let toml = format!(
        "[[routes]]\ncluster = \"h2\"\n\
         [clusters.h2]\nendpoints = [\"{addr}\"]\nprotocol = \"h2c\"\n\
         [clusters.h2.checks]\nenabled = false\n"
    );
    let (serving, _proxy) = serve(&toml).await;
    let stream = tokio::net::TcpStream::connect(serving.local_addr())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let _conn = tokio::spawn(conn);
    let req = http::Request::post("/upload")
        .header("host", "shop.test")
        .body(Full::new(Bytes::from_static(b"hello over h2c")))
        .unwrap();
    let res = tokio::time::timeout(BOUND, sender.send_request(req))
        .await
        .expect("answered within the bound")
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"HTTP/2.0 hello over h2c");
}
