//! `HttpEndpoint` over prior-knowledge HTTP/2 (h2c) against real hyper servers on loopback:
//! a server limiting each connection to two concurrent streams still serves ten concurrent
//! requests (on more connections), a server that drains with GOAWAY in the middle of a run
//! costs no request, and a peer that goes silent is noticed by keep-alive PINGs long before
//! the request timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rampart_balance::{Balance, HttpEndpoint, ReplayBody, ReplayBodyLayer};
use rampart_health::transport::HttpVersion;
use rampart_test_support::h2c::H2cServer;
use tokio::sync::watch;
use tower::{Layer, Service, ServiceExt};

type Body = Full<Bytes>;

fn template() -> rampart_balance::HttpEndpointBuilder {
    HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
        .http_version(HttpVersion::Http2)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_requests_through_two_stream_slots_all_succeed() {
    let server = H2cServer::start(2, Duration::from_millis(20)).await;
    let balance = Balance::builder()
        .http_endpoints([server.uri()], &template())
        .unwrap()
        .max_retries(3)
        .build()
        .unwrap();
    let client = ReplayBodyLayer::new().layer(balance);

    // One request first: the connection is up and the server's SETTINGS are known. (A burst
    // on a brand-new connection can outrun them: the server refuses the excess streams with
    // REFUSED_STREAM, which never reached it and is retried on another endpoint.)
    let warm_up = http::Request::get("/").body(Body::default()).unwrap();
    let res = client.clone().oneshot(warm_up).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let mut client = client.clone();
        tasks.spawn(async move {
            let req = http::Request::get(format!("/item/{i}"))
                .body(Body::default())
                .unwrap();
            let res = client.ready().await?.call(req).await?;
            let status = res.status();
            res.into_body().collect().await?;
            Ok::<_, rampart_health::BoxError>(status)
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap().unwrap(), http::StatusCode::OK);
        ok += 1;
    }
    assert_eq!(ok, 10);
    assert_eq!(server.started(), 11);
    assert_eq!(server.h2_requests(), 11, "every request over h2c");
    assert!(
        server.conns() > 1,
        "a second connection once the first one's two slots are taken"
    );
    assert!(
        server.max_in_flight() <= 2,
        "the server's limit holds on every connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_mid_run_fails_no_request() {
    let draining = H2cServer::start(100, Duration::from_millis(5)).await;
    let steady = H2cServer::start(100, Duration::from_millis(5)).await;
    let balance = Balance::builder()
        .http_endpoints([draining.uri(), steady.uri()], &template())
        .unwrap()
        .max_retries(3)
        .build()
        .unwrap();
    let client = ReplayBodyLayer::new().layer(balance);

    const WORKERS: usize = 4;
    const PER_WORKER: usize = 50;
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let mut client = client.clone();
        let sent = sent.clone();
        tasks.spawn(async move {
            let mut failures = Vec::new();
            for i in 0..PER_WORKER {
                sent.fetch_add(1, Ordering::SeqCst);
                // Idempotent (the key): a stream the server never processed is retried
                // whatever the error says, a GOAWAY's refusal or the reset of a connection
                // that the draining server closed with the request unread.
                let req = http::Request::post(format!("/order/{w}/{i}"))
                    .header("idempotency-key", format!("{w}-{i}"))
                    .body(ReplayBody::<Body>::buffered(Bytes::from_static(b"{}")))
                    .unwrap();
                let result = async {
                    let res = client.ready().await?.call(req).await?;
                    let status = res.status();
                    res.into_body().collect().await?;
                    Ok::<_, rampart_health::BoxError>(status)
                }
                .await;
                match result {
                    Ok(s) if s == http::StatusCode::OK => {}
                    other => failures.push(format!("{other:?}")),
                }
            }
            failures
        });
    }
    // Drain one server once a quarter of the run has been sent.
    for _ in 0..1000 {
        if sent.load(Ordering::SeqCst) >= WORKERS * PER_WORKER / 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let before = draining.started();
    draining.drain();

    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failures.extend(done.unwrap());
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    // Every request was served. A stream refused by the GOAWAY (above its last-stream-id)
    // never reached the draining server and went once to the other. One that hyper still
    // held waiting for a stream slot when the connection shut down may or may not have
    // reached it: being keyed, it is retried, so it may be served twice, but only ever
    // first by the draining server and then by the steady one.
    let drained: Vec<String> = draining.paths();
    let steady_paths: Vec<String> = steady.paths();
    let mut served = std::collections::HashMap::<&str, (usize, usize)>::new();
    for p in &drained {
        served.entry(p).or_default().0 += 1;
    }
    for p in &steady_paths {
        served.entry(p).or_default().1 += 1;
    }
    assert_eq!(served.len(), WORKERS * PER_WORKER, "every request served");
    for (path, (on_drained, on_steady)) in &served {
        assert!(
            (*on_drained, *on_steady) == (1, 0)
                || (*on_drained, *on_steady) == (0, 1)
                || (*on_drained, *on_steady) == (1, 1),
            "{path}: served {on_drained} time(s) by the draining server, {on_steady} by the other"
        );
    }
    assert!(before > 0, "the drained server served before its GOAWAY");
}

#[tokio::test]
async fn a_request_past_its_grpc_deadline_is_not_sent() {
    let server = H2cServer::start(10, Duration::ZERO).await;
    let endpoint: HttpEndpoint<Body> = template().base(server.uri()).build().unwrap();
    let req = http::Request::post("/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "0m")
        .body(Body::default())
        .unwrap();
    let err = endpoint.clone().oneshot(req).await.unwrap_err();
    assert!(
        err.downcast_ref::<rampart_health::DeadlineExceeded>()
            .is_some(),
        "{err:?}"
    );
    let req = http::Request::post("/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "5S")
        .body(Body::default())
        .unwrap();
    assert_eq!(endpoint.oneshot(req).await.unwrap().status(), 200);
    assert_eq!(server.started(), 1);
}

/// A TCP relay to `upstream` that can be frozen: it then stops moving bytes either way but keeps
/// both sockets open, like a peer behind a dead link. Aborted on drop.
struct Relay {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = frozen.wait_for(|f| *f) => 0,
        };
        let is_frozen = *frozen.borrow();
        if n == 0 || is_frozen || to.write_all(&buf[..n]).await.is_err() {
            // Hold both sockets, move nothing.
            std::future::pending::<()>().await;
        }
    }
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (down_r, down_w) = down.into_split();
                let (up_r, up_w) = up.into_split();
                pumps.spawn(pump(down_r, up_w, rx.clone()));
                pumps.spawn(pump(up_r, down_w, rx.clone()));
            }
        });
        Self { addr, frozen, task }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_pings_notice_a_silent_peer_before_the_request_timeout() {
    let server = H2cServer::start(100, Duration::from_millis(1)).await;
    let relay = Relay::start(server.addr()).await;
    let endpoint: HttpEndpoint<Body> =
        HttpEndpoint::builder(format!("http://{}", relay.addr).parse().unwrap())
            .http_version(HttpVersion::Http2)
            .request_timeout(Duration::from_secs(60))
            .http2_keep_alive(Duration::from_millis(200), Duration::from_millis(500))
            .build()
            .unwrap();
    let req = || http::Request::get("/").body(Body::default()).unwrap();
    assert_eq!(endpoint.clone().oneshot(req()).await.unwrap().status(), 200);

    // The link dies silently: no FIN, no RST, nothing.
    relay.frozen.send(true).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), endpoint.oneshot(req())).await;
    let err = outcome
        .expect("the dead connection is noticed within 20 s, not the 60 s request timeout")
        .unwrap_err();
    assert!(
        err.downcast_ref::<rampart_balance::RequestTimeout>()
            .is_none(),
        "{err:?}"
    );
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        chain = format!("{chain}: {e}");
        source = e.source();
    }
    assert!(chain.contains("keep-alive timed out"), "{chain}");
}
