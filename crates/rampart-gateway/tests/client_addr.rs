//! The client's address reaches the service: axum's `ConnectInfo<SocketAddr>` and the
//! server's `ConnectionInfo` extract in an app served through the server, and the proxy
//! appends the real client IP to `X-Forwarded-For`. Over loopback, so the client is
//! `127.0.0.1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::ConnectInfo;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use rampart_gateway::config::GatewayConfig;
use rampart_gateway::proxy::Proxy;
use rampart_gateway::server::{self, ConnectionInfo, ServerConfig, TowerHandler};

use proxy_support::{BOUND, Client, backend, echo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_connect_info_and_connection_info_extract_the_client_and_server_addresses() {
    let app = axum::Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/conn",
            get(|Extension(conn): Extension<ConnectionInfo>| async move {
                format!("{} {} {}", conn.peer(), conn.local(), conn.is_tls())
            }),
        );
    let config = ServerConfig::builder().name("test").build().unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &config).unwrap();
    let serving = server::spawn(listener, &config, TowerHandler::new(app)).unwrap();
    let stream = tokio::net::TcpStream::connect(serving.local_addr())
        .await
        .unwrap();
    let client_addr = stream.local_addr().unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let _conn = tokio::spawn(conn);
    let mut get = async |path: &str| {
        let req = http::Request::get(path)
            .header("host", "test")
            .body(Empty::new())
            .unwrap();
        let resp = tokio::time::timeout(BOUND, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    };
    let peer: SocketAddr = get("/peer").await.parse().unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.1");
    assert_eq!(peer, client_addr);
    assert_eq!(
        get("/conn").await,
        format!("{client_addr} {} false", serving.local_addr())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_appends_the_real_client_ip_to_x_forwarded_for() {
    let a = backend("a").await;
    let toml = format!(
        "[[routes]]\ncluster = \"a\"\n[clusters.a]\nendpoints = [\"{}\"]\n",
        a.addr
    );
    let config = GatewayConfig::from_toml(&toml).unwrap();
    let proxy = Proxy::build(&config).unwrap();
    let server_config = config.server.to_server_config("test").unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &server_config).unwrap();
    let serving = server::spawn(listener, &server_config, proxy).unwrap();
    let mut client = Client::connect(serving.local_addr()).await;

    let (status, _, body) = client.get("shop.test", "/").await;
    assert_eq!(status, 200);
    let seen = &echo(&body)["headers"];
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http");

    // An existing chain gets this client appended.
    let req = http::Request::get("/")
        .header("host", "shop.test")
        .header("x-forwarded-for", "203.0.113.9")
        .body(http_body_util::Empty::new())
        .unwrap();
    let (status, _, body) = client.send(req).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        echo(&body)["headers"]["x-forwarded-for"],
        "203.0.113.9, 127.0.0.1"
    );
}
