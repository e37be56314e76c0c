//! `HttpEndpoint` over HTTPS against real TLS servers on loopback, with certificates made at
//! test time: requests over HTTP/1.1 and over h2 by ALPN; an unknown CA, an expired
//! certificate and a refused client (mutual TLS without a certificate) are failures that never
//! reached the backend.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rampart_balance::HttpEndpoint;
use rampart_health::transport::HttpVersion;
use rampart_health::{BoxError, TlsConfig, is_never_reached};
use rampart_test_support::tls::{Ca, serve, server_config};
use tower::ServiceExt;

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

    let h1 = endpoint(server.addr(), tls.clone(), HttpVersion::Http1);
    assert_eq!(h1.name(), format!("https://{}", server.addr()));
    assert_eq!(get(&h1).await.unwrap(), (200, "HTTP/1.1".to_string()));

    let auto = endpoint(server.addr(), tls.clone(), HttpVersion::Auto);
    assert_eq!(get(&auto).await.unwrap(), (200, "HTTP/2.0".to_string()));
    let h2 = endpoint(server.addr(), tls, HttpVersion::Http2);
    assert_eq!(get(&h2).await.unwrap(), (200, "HTTP/2.0".to_string()));
    assert_eq!(server.hits(), 3);
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
    let err = get(&endpoint(server.addr(), other, HttpVersion::Auto))
        .await
        .unwrap_err();
    assert!(is_never_reached(&*err), "{err:?}");

    let (old_cert, old_key) = ca.leaf(&["127.0.0.1"], true);
    let expired = serve(server_config(&old_cert, &old_key, None)).await;
    let tls = TlsConfig::builder().ca_pem(ca.pem()).build().unwrap();
    let err = get(&endpoint(expired.addr(), tls, HttpVersion::Http1))
        .await
        .unwrap_err();
    assert!(is_never_reached(&*err), "{err:?}");

    assert_eq!(server.hits(), 0);
    assert_eq!(expired.hits(), 0);
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_before_the_backend() {
    let ca = Ca::new("rampart test ca");
    let (cert, key) = ca.leaf(&["127.0.0.1"], false);
    let server = serve(server_config(&cert, &key, Some(&ca))).await;

    for version in [HttpVersion::Http1, HttpVersion::Auto] {
        let tls = TlsConfig::builder().ca_pem(ca.pem()).build().unwrap();
        let err = get(&endpoint(server.addr(), tls, version))
            .await
            .unwrap_err();
        assert!(is_never_reached(&*err), "{version}: {err:?}");
    }
    assert_eq!(server.hits(), 0);

    let (client_cert, client_key) = ca.leaf(&["client.rampart.test"], false);
    let tls = TlsConfig::builder()
        .ca_pem(ca.pem())
        .client_cert_pem(client_cert, client_key)
        .build()
        .unwrap();
    let (status, _) = get(&endpoint(server.addr(), tls, HttpVersion::Auto))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(server.hits(), 1);
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
            [format!("https://{}", server.addr()).parse().unwrap()],
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
    assert!(server.hits() >= 1);
}
