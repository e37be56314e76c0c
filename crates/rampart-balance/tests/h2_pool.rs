//! One `HttpEndpoint` speaking prior-knowledge HTTP/2 (h2c) to a real hyper server on loopback
//! that allows two concurrent streams per connection: the endpoint opens a second connection
//! when the first is full, survives the server draining its connections with GOAWAY, and sends
//! the streams of a burst the server refused again on a new connection, all without a balancer
//! to retry elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rampart_balance::HttpEndpoint;
use rampart_health::BoxError;
use rampart_health::transport::HttpVersion;
use rampart_test_support::h2c::{Counters, H2cServer};
use tower::{Service, ServiceExt};

type Body = Full<Bytes>;

fn endpoint(server: &H2cServer) -> HttpEndpoint<Body> {
    HttpEndpoint::builder(server.uri())
        .http_version(HttpVersion::Http2)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Posts `payload` and returns the echoed body.
async fn post(endpoint: HttpEndpoint<Body>, payload: String) -> Result<Bytes, BoxError> {
    send(endpoint, http::Request::post("/echo"), payload).await
}

/// Posts `payload` with an `Idempotency-Key` and returns the echoed body.
async fn post_keyed(endpoint: HttpEndpoint<Body>, payload: String) -> Result<Bytes, BoxError> {
    let req = http::Request::post("/echo").header("idempotency-key", payload.clone());
    send(endpoint, req, payload).await
}

/// Sends `req` with `payload` as its body; an answer other than 200 is an error.
async fn send(
    mut endpoint: HttpEndpoint<Body>,
    req: http::request::Builder,
    payload: String,
) -> Result<Bytes, BoxError> {
    let req = req.body(Full::new(Bytes::from(payload))).unwrap();
    let res = endpoint.ready().await?.call(req).await?;
    if res.status() != http::StatusCode::OK {
        return Err(format!("status {}", res.status()).into());
    }
    Ok(res.into_body().collect().await?.to_bytes())
}

/// `n` concurrent posts; every echo checked.
async fn burst(endpoint: &HttpEndpoint<Body>, n: usize) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let endpoint = endpoint.clone();
        tasks.spawn(async move {
            let payload = format!("request {i}");
            match post(endpoint, payload.clone()).await {
                Ok(echo) if echo == payload.as_bytes() => None,
                other => Some(format!("{i}: {other:?}")),
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failures.extend(done.unwrap());
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_requests_over_two_stream_slots_open_more_connections() {
    let server = H2cServer::start(2, Duration::from_millis(100)).await;
    let endpoint = endpoint(&server);

    // One request first: the connection is up and the server's SETTINGS are known.
    post(endpoint.clone(), "warm up".into()).await.unwrap();
    assert_eq!(server.conns(), 1);

    let failures = burst(&endpoint, 10).await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(server.handled(), 11, "each request handled exactly once");
    assert!(
        server.conns() > 1,
        "a second connection once the first one's two slots were taken"
    );
    assert!(
        server.max_in_flight() <= 2,
        "the server's limit holds on every connection"
    );
}

/// An h2c server (the h2 crate, to refuse streams at will) whose first connection serves its
/// first two streams and refuses every later one with `REFUSED_STREAM`; later connections serve
/// everything. Echoes the request body after `delay`. Aborted on drop.
struct RefusingServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RefusingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RefusingServer {
    async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let refused = Arc::new(AtomicUsize::new(0));
        let (c, r) = (counters.clone(), refused.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let first = c.conns.fetch_add(1, Ordering::SeqCst) == 0;
                let (c, r) = (c.clone(), r.clone());
                conns.spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    let mut streams = 0;
                    let mut handlers = tokio::task::JoinSet::new();
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        streams += 1;
                        if first && streams > 2 {
                            r.fetch_add(1, Ordering::SeqCst);
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            continue;
                        }
                        let c = c.clone();
                        handlers.spawn(async move {
                            let mut body = req.into_body();
                            let mut echo = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                echo.extend_from_slice(&chunk);
                            }
                            tokio::time::sleep(delay).await;
                            c.handled.fetch_add(1, Ordering::SeqCst);
                            let Ok(mut send) =
                                respond.send_response(http::Response::new(()), false)
                            else {
                                return;
                            };
                            let _ = send.send_data(Bytes::from(echo), true);
                        });
                    }
                    while handlers.join_next().await.is_some() {}
                });
            }
        });
        Self {
            addr,
            counters,
            refused,
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_burst_succeeds_on_a_new_connection_of_the_same_endpoint() {
    let server = RefusingServer::start(Duration::from_millis(20)).await;
    let endpoint: HttpEndpoint<Body> =
        HttpEndpoint::builder(format!("http://{}", server.addr).parse().unwrap())
            .http_version(HttpVersion::Http2)
            .request_timeout(Duration::from_secs(10))
            .build()
            .unwrap();

    let failures = burst(&endpoint, 10).await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(
        server.refused.load(Ordering::SeqCst),
        8,
        "the first connection refused all but two streams"
    );
    assert_eq!(
        server.counters.handled.load(Ordering::SeqCst),
        10,
        "each request handled exactly once"
    );
    assert!(
        server.counters.conns.load(Ordering::SeqCst) >= 2,
        "the refused streams went out again on a new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_mid_run_fails_no_request_of_a_single_endpoint() {
    let server = H2cServer::start(2, Duration::from_millis(5)).await;
    let endpoint = endpoint(&server);

    const WORKERS: usize = 4;
    const PER_WORKER: usize = 50;
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let endpoint = endpoint.clone();
        let sent = sent.clone();
        tasks.spawn(async move {
            let mut failures = Vec::new();
            for i in 0..PER_WORKER {
                sent.fetch_add(1, Ordering::SeqCst);
                let payload = format!("{w}/{i}");
                // Keyed: a stream hyper still held when its connection shut down may have
                // been processed, and only a keyed (or idempotent) request is sent again.
                match post_keyed(endpoint.clone(), payload.clone()).await {
                    Ok(echo) if echo == payload.as_bytes() => {}
                    other => failures.push(format!("{payload}: {other:?}")),
                }
            }
            failures
        });
    }
    // Drain every open connection a quarter of the way in, and again halfway.
    for fraction in [4, 2] {
        for _ in 0..2000 {
            if sent.load(Ordering::SeqCst) >= WORKERS * PER_WORKER / fraction {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.drain_open_connections();
    }

    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failures.extend(done.unwrap());
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    // Each echo was checked above. A keyed request hyper dropped while it waited for a stream
    // slot may have been handled before it was sent again: at most once more, and only a
    // request in flight at one of the two drains (each worker has one in flight at a time).
    let hits = server.handled();
    assert!(
        (WORKERS * PER_WORKER..=WORKERS * PER_WORKER + 2 * WORKERS).contains(&hits),
        "each request handled once (rarely twice across a drain): {hits}"
    );
    assert!(
        server.conns() > 1,
        "new connections replaced the drained ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_stream_cap_opens_connections_below_the_servers_limit() {
    let server = H2cServer::start(100, Duration::from_millis(300)).await;
    let mut endpoint: HttpEndpoint<Body> = HttpEndpoint::builder(server.uri())
        .http_version(HttpVersion::Http2)
        .http2_max_streams_per_connection(2)
        .build()
        .unwrap();
    let ok = endpoint
        .ready()
        .await
        .unwrap()
        .call(http::Request::post("/").body(Body::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(ok.status(), http::StatusCode::OK);

    let failures = burst(&endpoint, 6).await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(
        server.conns() >= 3,
        "six concurrent streams at two per connection: {} connections",
        server.conns()
    );
}

#[test]
fn a_zero_stream_cap_is_a_config_error_naming_the_field() {
    let err = HttpEndpoint::builder("http://127.0.0.1:1".parse().unwrap())
        .http_version(HttpVersion::Http2)
        .http2_max_streams_per_connection(0)
        .build::<Body>()
        .unwrap_err();
    assert!(
        err.to_string().contains("http2_max_streams_per_connection"),
        "{err}"
    );
}
