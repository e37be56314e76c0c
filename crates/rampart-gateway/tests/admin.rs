//! The admin listener of the `rampart-gateway` binary: `/healthz`, `/status.json`,
//! `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use proxy_support::{Client, GatewayProcess, backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_healthz_status_and_prometheus_metrics() {
    let a = backend("a").await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\ncluster = \"shop\"\n[clusters.shop]\nendpoints = [\"{}\"]\n",
        a.addr
    );
    let gw = GatewayProcess::start("admin", &toml);
    let mut proxied = Client::connect(gw.addr).await;
    assert_eq!(proxied.get("x", "/").await.0, 200);

    let mut admin = Client::connect(gw.admin.unwrap()).await;
    let (status, _, body) = admin.get("admin", "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body, "ok\n");

    let (status, headers, body) = admin.get("admin", "/status.json").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let shop = &doc["clusters"][0];
    assert_eq!(shop["name"], "shop");
    assert_eq!(shop["breaker"]["state"], "closed");
    assert_eq!(shop["endpoints"][0]["name"], a.addr.to_string());
    assert_eq!(shop["total"], 1);

    let (status, _, body) = admin.get("admin", "/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    for series in [
        "rampart_gateway_connections_accepted_total",
        "rampart_balance_endpoints",
        "rampart_breaker_calls_total",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    assert!(gw.stop().success());
}
