//! `HttpEndpoint` over HTTPS against real TLS servers on loopback, with certificates made at
//! test time: requests over HTTP/1.1 and over h2 by ALPN; an unknown CA, an expired
//! certificate and a refused client (mutual TLS without a certificate) are failures that never
//! reached the backend.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_balance::HttpEndpoint;
use rampart_health::transport::HttpVersion;
use rampart_health::{BoxError, TlsConfig, is_never_reached};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower::ServiceExt;

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

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names`; `expired` puts its validity in the past.
    fn leaf(&self, names: &[&str], expired: bool) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&Ca>,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.issuer.der().clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS server answering `200` with the HTTP version it saw; counts the requests that
/// reached it. Aborted on drop.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(config: Arc<rustls::ServerConfig>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let h = hits.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let h = h.clone();
            conns.spawn(async move {
                // A failed handshake never reaches the service below.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let version = format!("{:?}", req.version());
                    async move {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(version))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Server { addr, hits, task }
}

fn endpoint(addr: SocketAddr, tls: TlsConfig, version: HttpVersion) -> HttpEndpoint<Empty<Bytes>> {
    HttpEndpoint::builder(format!("https://{addr}").parse().unwrap())
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(5))
        .http_version(version)
        .tls(tls)
        .build()
        .unwrap()
}

async fn get(ep: &HttpEndpoint<Empty<Bytes>>) -> Result<(u16, String), BoxError> {
    let req = http::Request::get("/items").body(Empty::new()).unwrap();
    let res = ep.clone().oneshot(req).await?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn https_endpoint_serves_over_http1_and_over_h2_by_alpn() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], false);
    let server = serve(server_config(&cert, &key, None)).await;
    let tls = TlsConfig::builder().ca_pem(ca.pem()).build().unwrap();

    let h1 = endpoint(server.addr, tls.clone(), HttpVersion::Http1);
    assert_eq!(h1.name(), format!("https://{}", server.addr));
    assert_eq!(get(&h1).await.unwrap(), (200, "HTTP/1.1".to_string()));

    let auto = endpoint(server.addr, tls.clone(), HttpVersion::Auto);
    assert_eq!(get(&auto).await.unwrap(), (200, "HTTP/2.0".to_string()));
    let h2 = endpoint(server.addr, tls, HttpVersion::Http2);
    assert_eq!(get(&h2).await.unwrap(), (200, "HTTP/2.0".to_string()));
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn unknown_ca_and_expired_certificate_never_reach_the_backend() {
    let ca = Ca::new("the server's ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false);
    let server = serve(server_config(&cert, &key, None)).await;
    let other = TlsConfig::builder()
        .ca_pem(Ca::new("some other ca").pem())
        .build()
        .unwrap();
    let err = get(&endpoint(server.addr, other, HttpVersion::Auto))
        .await
        .unwrap_err();
    assert!(is_never_reached(&*err), "{err:?}");

    let (old_cert, old_key) = ca.leaf(&["127.0.0.1"], true);
    let expired = serve(server_config(&old_cert, &old_key, None)).await;
    let tls = TlsConfig::builder().ca_pem(ca.pem()).build().unwrap();
    let err = get(&endpoint(expired.addr, tls, HttpVersion::Http1))
        .await
        .unwrap_err();
    assert!(is_never_reached(&*err), "{err:?}");

    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
    assert_eq!(expired.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_before_the_backend() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false);
    let server = serve(server_config(&cert, &key, Some(&ca))).await;

    for version in [HttpVersion::Http1, HttpVersion::Auto] {
        let tls = TlsConfig::builder().ca_pem(ca.pem()).build().unwrap();
        let err = get(&endpoint(server.addr, tls, version)).await.unwrap_err();
        assert!(is_never_reached(&*err), "{version}: {err:?}");
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    let (client_cert, client_key) = ca.leaf(&["client.rampart.test"], false);
    let tls = TlsConfig::builder()
        .ca_pem(ca.pem())
        .client_cert_pem(client_cert, client_key)
        .build()
        .unwrap();
    let (status, _) = get(&endpoint(server.addr, tls, HttpVersion::Auto))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn https_base_is_accepted_and_bad_schemes_are_named() {
    let err = HttpEndpoint::builder("ftp://127.0.0.1:21".parse().unwrap())
        .build::<Empty<Bytes>>()
        .unwrap_err();
    assert_eq!(
        (err.field(), err.value()),
        ("base", "\"ftp://127.0.0.1:21/\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_pool_is_health_checked_with_its_own_ca() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false);
    let server = serve(server_config(&cert, &key, None)).await;
    let tls = TlsConfig::builder().ca_pem(ca.pem()).build().unwrap();
    let template = HttpEndpoint::builder("https://127.0.0.1".parse().unwrap())
        .http_version(HttpVersion::Auto)
        .tls(tls);
    let probes = template.clone();
    let balance = rampart_balance::Balance::builder::<HttpEndpoint<Empty<Bytes>>>()
        .http_endpoints(
            [format!("https://{}", server.addr).parse().unwrap()],
            &template,
        )
        .unwrap()
        .probe_with(move |name: &str| {
            probes
                .http_probe(name.parse().ok()?)
                .path("/healthz")
                .build()
                .ok()
        })
        .health_checks(
            rampart_health::CheckerConfig::builder()
                .interval(Duration::from_millis(100))
                .timeout(Duration::from_millis(100))
                .unhealthy_interval(Duration::from_millis(100))
                .rise(1)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let handle = balance.handle();
    let mut healthy = false;
    for _ in 0..250 {
        if handle.snapshot().endpoints[0].health == rampart_health::Health::Healthy {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(healthy, "{:?}", handle.snapshot());
    assert!(server.hits.load(Ordering::SeqCst) >= 1);
}
