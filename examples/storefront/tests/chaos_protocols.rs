//! The catalog over h2c and over HTTPS (`--catalog-protocol`): the fleet's catalog replicas
//! speak only that protocol, the shop's catalog balancer dials them the same way, and the
//! quick chaos run keeps its verdicts: zero errors in every phase, no order lost or
//! duplicated.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use serde_json::Value;
use storefront::Demo;
use storefront::fleet::{CatalogProtocol, Region, ServiceName};
use support::{Http, eventually, test_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

/// The chaos runs take the whole (small) machine: one at a time.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a replica answers to a plain HTTP/1.1 request, as text (empty when it closed the
/// connection without a word of HTTP/1.1).
async fn plain_http1_answer(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

async fn catalog_speaks_only(protocol: CatalogProtocol) {
    let mut config = test_config(&format!("protocol-{protocol}"));
    config.fleet.catalog_protocol = protocol;
    let demo = Demo::start(config).await.unwrap();
    let replica = demo.fleet().upstreams()[&ServiceName::Catalog][&Region::UsEast][0];

    // The replica does not answer plain HTTP/1.1 ...
    let answer = plain_http1_answer(replica).await;
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "a {protocol} replica answered HTTP/1.1: {answer:?}"
    );
    // ... but does answer a client dialing the way the shop does, over HTTP/2.
    let dial = demo.fleet().catalog_dial();
    assert_eq!(dial.protocol(), protocol);
    let base = format!("{}://{replica}", dial.scheme()).parse().unwrap();
    let endpoint = dial.endpoint(base).unwrap().build::<Full<Bytes>>().unwrap();
    let resp = endpoint
        .oneshot(
            Request::get("/healthz")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);

    // So a fresh product page means the shop reached the catalog over that protocol.
    let http = Http::new(demo.url());
    eventually("a fresh product page", Duration::from_secs(10), || async {
        let r = http.get("/products/7").await;
        (r.status == StatusCode::OK
            && r.header("x-rampart-stale").is_none()
            && r.header("x-rampart-degraded").is_none())
        .then_some(())
    })
    .await;
    // And the shop's checks of every catalog replica pass.
    eventually(
        "healthy catalog replicas",
        Duration::from_secs(10),
        || async {
            let r = http.get("/status.json").await;
            let json: Value = serde_json::from_str(&r.body).unwrap();
            let catalog = json["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["service"] == "catalog")
                .cloned()
                .unwrap();
            catalog["sites"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["replicas"].as_array().unwrap().clone())
                .all(|r| r["health"] == "healthy")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_catalog_refuses_http1_and_serves_the_shop_over_http2() {
    catalog_speaks_only(CatalogProtocol::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_catalog_refuses_plaintext_and_serves_the_shop_over_tls() {
    catalog_speaks_only(CatalogProtocol::Https).await;
}

/// Runs `storefront chaos --quick --catalog-protocol <protocol>` and checks the verdicts of
/// `tests/chaos.rs`: the run passed, no phase had an error, no order was lost or duplicated,
/// every 503 carried `Retry-After`, and the shops really were told the protocol.
fn quick_chaos_run_passes_over(protocol: CatalogProtocol) {
    let _one = ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = std::env::temp_dir().join(format!(
        "storefront-chaos-{protocol}-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let report_path = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_storefront"))
        .args(["chaos", "--quick", "--catalog-protocol", protocol.as_str()])
        // The surge is not what this run is about: keep it within what the machine sustains.
        .args(["--surge-rate", "120"])
        .arg("--report")
        .arg(&report_path)
        .arg("--data-dir")
        .arg(dir.join("run"))
        .env_remove("STOREFRONT_ADMIN_TOKEN")
        .output()
        .expect("storefront chaos runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chaos run over {protocol} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap())
        .expect("the report is JSON");
    for p in report["phases"].as_array().unwrap() {
        assert!(p["requests"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["errors"], 0, "no errors over {protocol}: {p}\n{stdout}");
    }
    let orders = &report["orders"];
    assert!(orders["acknowledged"].as_u64().unwrap() > 0, "{orders}");
    assert_eq!(orders["lost"], 0, "{orders}");
    assert_eq!(orders["duplicated"], 0, "{orders}");
    let facts: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.facts.json")).unwrap())
            .unwrap();
    for f in facts["phases"].as_array().unwrap() {
        assert_eq!(
            f["responses_503"], f["apology_with_retry_after"],
            "every 503 carries Retry-After: {f}"
        );
    }
    // The shops' configuration, as the fleet wrote it, names the protocol (and the CA).
    let fleet_toml = std::fs::read_to_string(dir.join("run/fleet/fleet.toml")).unwrap();
    assert!(
        fleet_toml.contains(&format!("catalog_protocol = \"{protocol}\"")),
        "{fleet_toml}"
    );
    if protocol == CatalogProtocol::Https {
        assert!(fleet_toml.contains("catalog_ca_file"), "{fleet_toml}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn quick_chaos_run_passes_with_the_catalog_over_h2c() {
    quick_chaos_run_passes_over(CatalogProtocol::H2c);
}

#[test]
fn quick_chaos_run_passes_with_the_catalog_over_https() {
    quick_chaos_run_passes_over(CatalogProtocol::Https);
}
