//! TLS termination over real loopback sockets, with certificates made at test time: ALPN
//! `h2` and `http/1.1` on one port, the handshake within the header-read timeout, and
//! `[server.tls]` errors naming the key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_gateway::config::GatewayConfig;
use rampart_gateway::server::{self, ConnectionInfo, Serving, TowerHandler};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(5);

/// A CA, and a certificate for `localhost` it signed, written as PEM files.
struct Certs {
    ca: CertificateDer<'static>,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn certs(tag: &str) -> Certs {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "rampart-gw-tls-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Certs {
        ca: ca.der().clone(),
        cert,
        key: key_path,
    }
}

fn start(certs: &Certs) -> Serving {
    let toml = format!(
        "[server]\nheader_read_timeout = \"300ms\"\n[server.tls]\ncert = {:?}\nkey = {:?}\n",
        certs.cert.display().to_string(),
        certs.key.display().to_string()
    );
    let config = GatewayConfig::from_toml(&toml).unwrap();
    let server_config = config.server.to_server_config("tls-test").unwrap();
    assert!(server_config.tls().is_some());
    let app = axum::Router::new().route(
        "/",
        get(|Extension(conn): Extension<ConnectionInfo>| async move {
            format!("tls={} peer={}", conn.is_tls(), conn.peer().ip())
        }),
    );
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &server_config).unwrap();
    server::spawn(listener, &server_config, TowerHandler::new(app)).unwrap()
}

async fn connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(
        BOUND,
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .unwrap()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_is_served_over_http2_and_the_handler_sees_tls() {
    let certs = certs("h2");
    let serving = start(&certs);
    let tls = connect(serving.local_addr(), &certs.ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let _conn = tokio::spawn(conn);
    let req = http::Request::get("https://localhost/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(BOUND, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"tls=true peer=127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_http1_is_served_over_http1() {
    let certs = certs("h1");
    let serving = start(&certs);
    let tls = connect(serving.local_addr(), &certs.ca, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let _conn = tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(BOUND, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"tls=true peer=127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_the_handshake_is_closed_after_the_header_read_timeout() {
    let certs = certs("stall");
    let serving = start(&certs);
    let mut tcp = TcpStream::connect(serving.local_addr()).await.unwrap();
    // Nothing sent: no ClientHello.
    let closed = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 256];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept a connection with no handshake"
    );
}

#[test]
fn tls_settings_that_cannot_be_loaded_are_refused_naming_the_key() {
    let err = GatewayConfig::from_toml(
        "[server.tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("server.tls.cert: "), "{err}");
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");

    let certs = certs("badkey");
    std::fs::write(&certs.key, "not a key").unwrap();
    let err = GatewayConfig::from_toml(&format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\n",
        certs.cert.display().to_string(),
        certs.key.display().to_string()
    ))
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("server.tls.key: "), "{err}");

    let err = GatewayConfig::from_toml("[server.tls]\ncert = \"a\"\nkey = \"b\"\nciphers = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ciphers"), "{err}");
}
