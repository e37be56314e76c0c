//! HTTPS probes against real TLS servers on loopback, with certificates made at test time.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_health::transport::HttpVersion;
use rampart_health::{HttpProbe, Probe, ProbeErrorKind, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// A TLS server answering `200 ok`; counts the requests that reached it and the HTTP
/// versions they came in with. Aborted on drop.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    h2_hits: Arc<AtomicUsize>,
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
    let h2_hits = Arc::new(AtomicUsize::new(0));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (h, h2) = (hits.clone(), h2_hits.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let (h, h2) = (h.clone(), h2.clone());
            tokio::spawn(async move {
                // A failed handshake never reaches the service below.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    if req.version() == http::Version::HTTP_2 {
                        h2.fetch_add(1, Ordering::SeqCst);
                    }
                    async {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Server {
        addr,
        hits,
        h2_hits,
        task,
    }
}

fn https(addr: SocketAddr) -> http::Uri {
    format!("https://{addr}").parse().unwrap()
}

fn probe(addr: SocketAddr, tls: TlsConfig) -> HttpProbe {
    HttpProbe::builder(https(addr))
        .path("/healthz")
        .timeout(Duration::from_secs(5))
        .tls(tls)
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_probe_passes_with_a_custom_ca_over_http1_and_h2() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"], false);
    let server = serve(server_config(&cert, &key, None)).await;
    let tls = TlsConfig::builder().ca_pem(ca.pem()).build().unwrap();

    probe(server.addr, tls.clone()).probe().await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.h2_hits.load(Ordering::SeqCst),
        0,
        "HTTP/1.1 by default"
    );

    // ALPN offers h2 first; the server takes it.
    let p = HttpProbe::builder(https(server.addr))
        .http_version(HttpVersion::Auto)
        .timeout(Duration::from_secs(5))
        .tls(tls)
        .build()
        .unwrap();
    p.probe().await.unwrap();
    assert_eq!(server.h2_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unknown_ca_fails_the_probe_before_the_backend_sees_it() {
    let ca = Ca::new("the server's ca");
    let other = Ca::new("some other ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false);
    let server = serve(server_config(&cert, &key, None)).await;

    let err = probe(
        server.addr,
        TlsConfig::builder().ca_pem(other.pem()).build().unwrap(),
    )
    .probe()
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Connect, "{err}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn expired_certificate_fails_the_probe_before_the_backend_sees_it() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], true);
    let server = serve(server_config(&cert, &key, None)).await;

    let err = probe(
        server.addr,
        TlsConfig::builder().ca_pem(ca.pem()).build().unwrap(),
    )
    .probe()
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Connect, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn name_mismatch_fails_unless_the_server_name_is_configured() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["catalog.internal"], false);
    let server = serve(server_config(&cert, &key, None)).await;

    let err = probe(
        server.addr,
        TlsConfig::builder().ca_pem(ca.pem()).build().unwrap(),
    )
    .probe()
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Connect, "{err}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    // SNI and verification against the configured name.
    let tls = TlsConfig::builder()
        .ca_pem(ca.pem())
        .server_name("catalog.internal")
        .build()
        .unwrap();
    probe(server.addr, tls).probe().await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn mutual_tls_server_refuses_a_probe_without_a_client_certificate() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false);
    let server = serve(server_config(&cert, &key, Some(&ca))).await;

    let err = probe(
        server.addr,
        TlsConfig::builder().ca_pem(ca.pem()).build().unwrap(),
    )
    .probe()
    .await
    .unwrap_err();
    assert_ne!(err.kind(), ProbeErrorKind::Timeout, "{err}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    let (client_cert, client_key) = ca.leaf(&["probe.rampart.test"], false);
    let tls = TlsConfig::builder()
        .ca_pem(ca.pem())
        .client_cert_pem(client_cert, client_key)
        .build()
        .unwrap();
    assert!(tls.has_client_cert());
    probe(server.addr, tls).probe().await.unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn tls_config_errors_name_the_field_and_value() {
    let err = TlsConfig::builder()
        .ca_pem(b"-----BEGIN NOTHING".to_vec())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "ca_pem");

    let err = TlsConfig::builder()
        .ca_pem_file("/nonexistent/rampart-ca.pem")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "ca_pem_file");
    assert!(err.value().contains("/nonexistent/rampart-ca.pem"), "{err}");

    let ca = Ca::new("rampart test ca");
    let err = TlsConfig::builder()
        .ca_pem(ca.pem())
        .server_name("not a name!")
        .build()
        .unwrap_err();
    assert_eq!(
        (err.field(), err.value()),
        ("server_name", "\"not a name!\"")
    );

    let err = TlsConfig::builder()
        .ca_pem(ca.pem())
        .client_cert_pem(ca.pem(), "no key here")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "client_cert_pem");

    // Without the TLS feature's connector, or with a scheme nobody speaks.
    let err = HttpProbe::builder("ftp://127.0.0.1:1".parse().unwrap())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "base");
}
