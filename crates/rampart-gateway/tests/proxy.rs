//! The reverse proxy over real loopback sockets: routing, forwarding headers, `Host`
//! handling, the apology, and a reload of the routing table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::net::SocketAddr;

use http_body_util::Empty;
use proxy_support::{Client, backend, dead_port, echo};
use rampart_gateway::config::GatewayConfig;
use rampart_gateway::proxy::Proxy;
use rampart_gateway::server::{self, Serving};

async fn serve(toml: &str) -> (Serving, Proxy<impl rampart_gateway::proxy::ProxyBalance>) {
    let config = GatewayConfig::from_toml(toml).unwrap();
    let proxy = Proxy::build(&config).unwrap();
    let server = config.server.to_server_config("test").unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &server).unwrap();
    (
        server::spawn(listener, &server, proxy.clone()).unwrap(),
        proxy,
    )
}

fn cluster(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[clusters.{name}]\nendpoints = [{}]\n{extra}\n[clusters.{name}.checks]\ninterval = \"1s\"\n",
        eps.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_routed_by_host_then_path_prefix_first_match_wins() {
    let a = backend("a").await;
    let b = backend("b").await;
    let c = backend("c").await;
    let toml = format!(
        "[[routes]]\nhost = \"api.test\"\nprefix = \"/v1\"\ncluster = \"a\"\n\
         [[routes]]\nprefix = \"/static\"\ncluster = \"b\"\n\
         [[routes]]\ncluster = \"c\"\n{}{}{}",
        cluster("a", &[a.addr], ""),
        cluster("b", &[b.addr], ""),
        cluster("c", &[c.addr], ""),
    );
    let (serving, _proxy) = serve(&toml).await;
    let mut client = Client::connect(serving.local_addr()).await;
    for (host, path, want) in [
        ("api.test", "/v1/items", "a"),
        ("API.test:8080", "/v1", "a"),
        ("other.test", "/v1/items", "c"),
        ("api.test", "/static/logo.png", "b"),
        ("api.test", "/v2", "c"),
    ] {
        let (status, headers, body) = client.get(host, path).await;
        assert_eq!(status, 200, "{host}{path}");
        assert_eq!(headers["x-backend"], want, "{host}{path}");
        assert_eq!(echo(&body)["path"], path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_matching_no_route_is_answered_404() {
    let a = backend("a").await;
    let toml = format!(
        "[[routes]]\nprefix = \"/api\"\ncluster = \"a\"\n{}",
        cluster("a", &[a.addr], "")
    );
    let (serving, _proxy) = serve(&toml).await;
    let mut client = Client::connect(serving.local_addr()).await;
    let (status, _, _) = client.get("x", "/elsewhere").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped_and_forwarding_headers_added() {
    let a = backend("a").await;
    let toml = format!(
        "[[routes]]\ncluster = \"a\"\n{}",
        cluster("a", &[a.addr], "")
    );
    let (serving, _proxy) = serve(&toml).await;
    let mut client = Client::connect(serving.local_addr()).await;
    let req = http::Request::get("/")
        .header("host", "shop.test")
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=9")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-kept", "yes")
        .body(Empty::new())
        .unwrap();
    let (status, resp_headers, body) = client.send(req).await.unwrap();
    assert_eq!(status, 200);
    let seen = &echo(&body)["headers"];
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {seen}"
        );
    }
    assert_eq!(seen["x-kept"], "yes");
    let xff = seen["x-forwarded-for"].as_str().unwrap();
    assert!(xff.starts_with("203.0.113.9, "), "{xff}");
    assert_eq!(seen["via"], "1.1 rampart");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.test");
    // The response: the upstream's Keep-Alive is not passed on, Via is added.
    assert!(!resp_headers.contains_key("keep-alive"), "{resp_headers:?}");
    assert_eq!(resp_headers["via"], "1.1 rampart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_preserved_or_set_to_the_endpoint_per_cluster() {
    let a = backend("a").await;
    let b = backend("b").await;
    let toml = format!(
        "[[routes]]\nprefix = \"/keep\"\ncluster = \"keep\"\n[[routes]]\ncluster = \"rewrite\"\n{}{}",
        cluster("keep", &[a.addr], "host = \"preserve\""),
        cluster("rewrite", &[b.addr], "host = \"upstream\""),
    );
    let (serving, _proxy) = serve(&toml).await;
    let mut client = Client::connect(serving.local_addr()).await;
    let (_, _, body) = client.get("shop.test", "/keep").await;
    assert_eq!(echo(&body)["headers"]["host"], "shop.test");
    let (_, _, body) = client.get("shop.test", "/other").await;
    assert_eq!(echo(&body)["headers"]["host"], b.addr.to_string());
    assert_eq!(echo(&body)["headers"]["x-forwarded-host"], "shop.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_replicas_down_answers_the_apology_503_with_retry_after() {
    let toml = format!(
        "[[routes]]\ncluster = \"gone\"\n{}",
        cluster(
            "gone",
            &[dead_port().await, dead_port().await],
            "retry_after = \"7s\"\nconnect_timeout = \"500ms\""
        )
    );
    let (serving, _proxy) = serve(&toml).await;
    let mut client = Client::connect(serving.local_addr()).await;
    for _ in 0..3 {
        let (status, headers, _) = client.get("x", "/").await;
        assert_eq!(status, 503);
        assert!(headers.contains_key("retry-after"), "{headers:?}");
        assert_eq!(headers["cache-control"], "no-store");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_route_and_keeps_unchanged_clusters() {
    let a = backend("a").await;
    let b = backend("b").await;
    let clusters = format!(
        "{}{}",
        cluster("a", &[a.addr], ""),
        cluster("b", &[b.addr], "")
    );
    let (serving, proxy) = serve(&format!("[[routes]]\ncluster = \"a\"\n{clusters}")).await;
    let mut client = Client::connect(serving.local_addr()).await;
    assert_eq!(client.get("x", "/").await.1["x-backend"], "a");
    let before = proxy.clusters();
    let next =
        GatewayConfig::from_toml(&format!("[[routes]]\ncluster = \"b\"\n{clusters}")).unwrap();
    let summary = proxy.reload(&next).unwrap();
    assert_eq!(summary.kept, vec!["a".to_owned(), "b".to_owned()]);
    assert!(summary.rebuilt.is_empty());
    // Same connection, new route.
    assert_eq!(client.get("x", "/").await.1["x-backend"], "b");
    // The kept clusters share their balancer state (same breaker).
    let after = proxy.clusters();
    assert!(before[0].breaker().same_breaker(after[0].breaker()));
    // An invalid configuration changes nothing.
    let mut bad = next.clone();
    bad.clusters.get_mut("b").unwrap().retries = 99;
    let err = proxy.reload(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "clusters.b.retries: 99 is above the maximum of 10"
    );
    assert_eq!(client.get("x", "/").await.1["x-backend"], "b");
}
