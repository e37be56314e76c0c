//! SIGHUP reload of the `rampart-gateway` binary: a client looping on one keep-alive
//! connection sees the route change with zero failed requests and its connection kept open;
//! an invalid file is refused and the running configuration stays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use proxy_support::{Client, GatewayProcess, backend};

fn config(route_to: &str, a: std::net::SocketAddr, b: std::net::SocketAddr) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n[admin]\nenabled = false\n\
         [[routes]]\ncluster = \"{route_to}\"\n\
         [clusters.a]\nendpoints = [\"{a}\"]\n[clusters.b]\nendpoints = [\"{b}\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_route_with_zero_failed_requests_on_an_open_connection() {
    let a = backend("a").await;
    let b = backend("b").await;
    let gw = GatewayProcess::start("reload", &config("a", a.addr, b.addr));
    let mut client = Client::connect(gw.addr).await;
    assert_eq!(client.get("x", "/").await.1["x-backend"], "a");

    // An invalid file: refused, the running configuration stays.
    std::fs::write(&gw.config, config("a", a.addr, b.addr) + "retries = 99\n").unwrap();
    gw.signal("HUP");
    for _ in 0..50 {
        let (status, headers, _) = client.get("x", "/").await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-backend"], "a");
    }

    // A valid one: the route moves to b while the client keeps looping on its connection.
    std::fs::write(&gw.config, config("b", a.addr, b.addr)).unwrap();
    gw.signal("HUP");
    let mut moved = false;
    let mut requests = 0;
    for _ in 0..20_000 {
        // Every request on the same connection must succeed (an error here fails the test).
        let (status, headers, _) = client.get("x", "/").await;
        requests += 1;
        assert_eq!(status, 200, "request {requests} failed during the reload");
        if headers["x-backend"] == "b" {
            moved = true;
            break;
        }
    }
    assert!(moved, "the route did not move after {requests} requests");
    for _ in 0..20 {
        assert_eq!(client.get("x", "/").await.1["x-backend"], "b");
    }
    assert!(gw.stop().success());
}
