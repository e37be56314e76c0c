//! The server's series through the `metrics` facade, read from a recorder installed for this
//! test binary: a half-sent request counts as accepted, timed out (`header_read`) and
//! answered `408`, and the open-connections gauge returns to zero.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rampart_gateway::server::{self, ServerConfig, TowerHandler};
use rampart_test_support::{metrics, series};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_head_is_counted_under_the_servers_name() {
    let captured = metrics::global();
    let config = ServerConfig::builder()
        .name("metered")
        .header_read_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &config).unwrap();
    let app: axum::Router = axum::Router::new();
    let running = server::spawn(listener, &config, TowerHandler::new(app)).unwrap();

    let mut c = TcpStream::connect(running.local_addr()).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nho").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer))
        .await
        .expect("closed by the server")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 408"));

    let counter = |key: &str| series::counter(captured, key);
    assert_eq!(
        counter("rampart_gateway_connections_accepted_total{server=metered}"),
        1
    );
    assert_eq!(
        counter("rampart_gateway_connections_timed_out_total{server=metered,timeout=header_read}"),
        1
    );
    assert_eq!(
        counter("rampart_gateway_request_timeout_responses_total{server=metered}"),
        1
    );
    assert_eq!(
        counter("rampart_gateway_connections_timed_out_total{server=metered,timeout=keep_alive}"),
        0
    );
    // The gauge returns to zero once the connection's task has ended.
    let mut open = f64::NAN;
    for _ in 0..100 {
        open = series::gauge(captured, "rampart_gateway_connections_open{server=metered}");
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open, 0.0);
}
