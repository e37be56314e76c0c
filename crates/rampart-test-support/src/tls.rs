//! TLS on loopback, with certificates made at test time (feature `tls`): a throwaway
//! certificate authority ([`Ca`]) that signs leaf certificates (for any names, valid or
//! expired), a rustls server configuration that offers h2 and HTTP/1.1 by ALPN and can require
//! a client certificate ([`server_config`]), and an HTTPS server ([`serve`]) that answers
//! `200` with the HTTP version it saw and counts the requests that reached it (a failed
//! handshake never does).
//!
//! ```
//! use rampart_test_support::tls::{Ca, serve, server_config};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ca = Ca::new("test ca");
//! let (cert, key) = ca.leaf(&["127.0.0.1"], false);
//! let server = serve(server_config(&cert, &key, None)).await;
//! assert!(server.base_url().starts_with("https://127.0.0.1:"));
//! assert_eq!(server.hits(), 0);
//! # }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::task::AbortOnDropHandle;

/// A self-signed certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA with common name `name` (two CAs never trust each other's certificates).
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA certificate in PEM (what a client trusts).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate in DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    /// A leaf certificate and its private key, both PEM, for `names` (DNS names or IP
    /// addresses); `expired` puts its validity in the past (2001–2002).
    pub fn leaf(&self, names: &[&str], expired: bool) -> (String, String) {
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

/// A rustls server configuration (ring provider) for a PEM certificate chain and key,
/// offering h2 then HTTP/1.1 by ALPN; with `client_ca`, clients must present a certificate
/// that CA signed (mutual TLS).
pub fn server_config(
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
            roots.add(ca.der().clone()).unwrap();
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

/// An HTTPS server on loopback; it (and its connections) stop when this is dropped.
#[derive(Debug)]
pub struct TlsServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    h2_hits: Arc<AtomicUsize>,
    _task: AbortOnDropHandle<()>,
}

impl TlsServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Requests that reached the server (after a successful handshake).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests that came over HTTP/2.
    pub fn h2_hits(&self) -> usize {
        self.h2_hits.load(Ordering::SeqCst)
    }
}

/// Serves HTTPS with `config` on `127.0.0.1:0` on the current runtime: every request gets
/// `200` with the HTTP version it came in as the body (`HTTP/1.1`, `HTTP/2.0`).
pub async fn serve(config: Arc<rustls::ServerConfig>) -> TlsServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h2_hits = Arc::new(AtomicUsize::new(0));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (h, h2) = (hits.clone(), h2_hits.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let (h, h2) = (h.clone(), h2.clone());
            conns.spawn(async move {
                // A failed handshake never reaches the service below.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    if req.version() == http::Version::HTTP_2 {
                        h2.fetch_add(1, Ordering::SeqCst);
                    }
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
    TlsServer {
        addr,
        hits,
        h2_hits,
        _task: AbortOnDropHandle::new(task),
    }
}
