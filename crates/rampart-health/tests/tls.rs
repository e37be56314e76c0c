//! HTTPS probes against real TLS servers on loopback, with certificates made at test time.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use rampart_health::transport::HttpVersion;
use rampart_health::{HttpProbe, Probe, ProbeErrorKind, TlsConfig};
use rampart_test_support::tls::{Ca, serve, server_config};

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

    probe(server.addr(), tls.clone()).probe().await.unwrap();
    assert_eq!(server.hits(), 1);
    assert_eq!(server.h2_hits(), 0, "HTTP/1.1 by default");

    // ALPN offers h2 first; the server takes it.
    let p = HttpProbe::builder(https(server.addr()))
        .http_version(HttpVersion::Auto)
        .timeout(Duration::from_secs(5))
        .tls(tls)
        .build()
        .unwrap();
    p.probe().await.unwrap();
    assert_eq!(server.h2_hits(), 1);
}

#[tokio::test]
async fn unknown_ca_fails_the_probe_before_the_backend_sees_it() {
    let ca = Ca::new("the server's ca");
    let other = Ca::new("some other ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false);
    let server = serve(server_config(&cert, &key, None)).await;

    let err = probe(
        server.addr(),
        TlsConfig::builder().ca_pem(other.pem()).build().unwrap(),
    )
    .probe()
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Connect, "{err}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn expired_certificate_fails_the_probe_before_the_backend_sees_it() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], true);
    let server = serve(server_config(&cert, &key, None)).await;

    let err = probe(
        server.addr(),
        TlsConfig::builder().ca_pem(ca.pem()).build().unwrap(),
    )
    .probe()
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Connect, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn name_mismatch_fails_unless_the_server_name_is_configured() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["catalog.internal"], false);
    let server = serve(server_config(&cert, &key, None)).await;

    let err = probe(
        server.addr(),
        TlsConfig::builder().ca_pem(ca.pem()).build().unwrap(),
    )
    .probe()
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Connect, "{err}");
    assert_eq!(server.hits(), 0);

    // SNI and verification against the configured name.
    let tls = TlsConfig::builder()
        .ca_pem(ca.pem())
        .server_name("catalog.internal")
        .build()
        .unwrap();
    probe(server.addr(), tls).probe().await.unwrap();
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn mutual_tls_server_refuses_a_probe_without_a_client_certificate() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false);
    let server = serve(server_config(&cert, &key, Some(&ca))).await;

    let err = probe(
        server.addr(),
        TlsConfig::builder().ca_pem(ca.pem()).build().unwrap(),
    )
    .probe()
    .await
    .unwrap_err();
    assert_ne!(err.kind(), ProbeErrorKind::Timeout, "{err}");
    assert_eq!(server.hits(), 0);

    let (client_cert, client_key) = ca.leaf(&["probe.rampart.test"], false);
    let tls = TlsConfig::builder()
        .ca_pem(ca.pem())
        .client_cert_pem(client_cert, client_key)
        .build()
        .unwrap();
    assert!(tls.has_client_cert());
    probe(server.addr(), tls).probe().await.unwrap();
    assert_eq!(server.hits(), 1);
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
