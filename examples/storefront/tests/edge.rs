//! The edge gateway over real loopback servers: proxying, header forwarding, retry of
//! idempotent POSTs on the other shop, the shop's apology passed through, the edge's own
//! apology, routing around a dead instance, and the CLI's first line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use storefront::edge::{EDGE_APOLOGY_HEADER, Edge, EdgeConfig};
use tokio::net::TcpListener;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A shop stand-in named `name`: `/healthz`, `GET /page`, `POST /checkout` (echoes the
/// `Idempotency-Key` it received), `GET /sorry` (its own apology).
async fn shop(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/page",
            get(move || async move { format!("page from {name}") }),
        )
        .route(
            "/checkout",
            post(move |headers: HeaderMap, body: Bytes| async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                format!("{name} key={key} body={}", String::from_utf8_lossy(&body))
            }),
        )
        .route(
            "/sorry",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "7")],
                    "the shop apologises",
                )
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

/// A shop instance that dies mid-request: it reads the request, then closes the connection
/// without answering. Counts the connections it accepted.
fn dying_shop() -> (SocketAddr, Arc<AtomicUsize>) {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = vec![0u8; 64 * 1024];
            if let Ok(n) = s.read(&mut buf)
                && n > 0
                && !buf[..n].starts_with(b"GET /healthz")
            {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            drop(s);
        }
    });
    (addr, seen)
}

fn config(upstreams: &[SocketAddr], check_interval: Duration) -> EdgeConfig {
    EdgeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: upstreams.iter().map(|a| format!("http://{a}")).collect(),
        workers: 1,
        check_interval,
        check_timeout: Duration::from_millis(200).min(check_interval),
        timeout: Duration::from_secs(3),
        ..EdgeConfig::default()
    }
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, String) {
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("edge answered in time")
        .expect("edge answered");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn get_req(edge: &Edge, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{}{path}", edge.addr()))
        .header("accept", "text/html")
        .body(Full::default())
        .unwrap()
}

fn checkout_req(edge: &Edge, key: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::post(format!("http://{}/checkout", edge.addr()))
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(Full::new(Bytes::from_static(b"item=1"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_pages_and_forwards_the_idempotency_key() {
    let (a, _ta) = shop("a").await;
    let (b, _tb) = shop("b").await;
    let edge = Edge::start(config(&[a, b], Duration::from_millis(200)))
        .await
        .unwrap();
    let c = client();
    let mut froms = std::collections::BTreeSet::new();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let req = get_req(&edge, "/page");
        let c = c.clone();
        set.spawn(async move { send(&c, req).await });
    }
    while let Some(r) = set.join_next().await {
        let (status, _, body) = r.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("page from "), "{body}");
        froms.insert(body);
    }
    assert_eq!(froms.len(), 2, "both instances take traffic: {froms:?}");
    let (status, _, body) = send(&c, checkout_req(&edge, Some("key-123456"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.ends_with("key=key-123456 body=item=1"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_with_idempotency_key_is_retried_on_the_other_instance() {
    let (dead, dead_seen) = dying_shop();
    let (b, _tb) = shop("b").await;
    // Checks are slow here, so the dying instance stays in rotation (health unknown) and only
    // passive detection and retries keep requests away from it.
    let edge = Edge::start(config(&[dead, b], Duration::from_secs(60)))
        .await
        .unwrap();
    let c = client();
    // Concurrent, so that P2C sees load on the healthy instance and sends some to the other.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let key = format!("order-{i:04}");
        let req = checkout_req(&edge, Some(&key));
        let c = c.clone();
        set.spawn(async move { (key, send(&c, req).await) });
    }
    while let Some(r) = set.join_next().await {
        let (key, (status, headers, body)) = r.unwrap();
        assert_eq!(status, StatusCode::OK, "{headers:?} {body}");
        assert_eq!(body, format!("b key={key} body=item=1"));
    }
    assert!(
        dead_seen.load(Ordering::SeqCst) >= 1,
        "the dying instance was tried first at least once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_without_key_is_not_replayed_and_gets_the_edge_apology() {
    let (dead, dead_seen) = dying_shop();
    let edge = Edge::start(config(&[dead], Duration::from_secs(60)))
        .await
        .unwrap();
    let c = client();
    let (status, headers, body) = send(&c, checkout_req(&edge, None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(headers[EDGE_APOLOGY_HEADER], "error");
    assert!(
        !body.contains(&dead.to_string()),
        "no backend address leaks"
    );
    assert_eq!(dead_seen.load(Ordering::SeqCst), 1, "sent exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_apology_passes_through_untouched() {
    let (a, _ta) = shop("a").await;
    let edge = Edge::start(config(&[a], Duration::from_millis(200)))
        .await
        .unwrap();
    let (status, headers, body) = send(&client(), get_req(&edge, "/sorry")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "7");
    assert!(!headers.contains_key(EDGE_APOLOGY_HEADER));
    assert_eq!(body, "the shop apologises");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_up_gives_the_edge_apology_with_retry_after() {
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let edge = Edge::start(config(&[gone], Duration::from_millis(100)))
        .await
        .unwrap();
    let c = client();
    for _ in 0..5 {
        let (status, headers, body) = send(&c, get_req(&edge, "/page")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["retry-after"], "5");
        assert_eq!(headers["cache-control"], "no-store");
        assert!(headers.contains_key(EDGE_APOLOGY_HEADER));
        assert!(body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_costs_no_failed_get() {
    let (a, ta) = shop("a").await;
    let (b, _tb) = shop("b").await;
    let edge = Edge::start(config(&[a, b], Duration::from_millis(100)))
        .await
        .unwrap();
    let c = client();
    for _ in 0..10 {
        assert_eq!(send(&c, get_req(&edge, "/page")).await.0, StatusCode::OK);
    }
    ta.abort();
    let _ = ta.await;
    // Concurrent, so that P2C keeps sending some to the dead instance until it is ejected:
    // those never reach it and are retried on the other.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let req = get_req(&edge, "/page");
        let c = c.clone();
        set.spawn(async move { send(&c, req).await });
    }
    while let Some(r) = set.join_next().await {
        let (status, headers, body) = r.unwrap();
        assert_eq!(status, StatusCode::OK, "{headers:?} {body}");
        assert_eq!(body, "page from b");
    }
    let snap = edge.snapshot();
    assert_eq!(snap.endpoints.len(), 2);
}

#[test]
fn cli_prints_the_bound_address_first() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_storefront"))
        .args([
            "edge",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--upstream",
        ])
        .arg(format!("http://{}", upstream.local_addr().unwrap()))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let addr: SocketAddr = first.trim().parse().expect("first line is the address");
    assert_ne!(addr.port(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_edge_stops_its_workers() {
    let (a, _ta) = shop("a").await;
    let edge = Edge::start(config(&[a], Duration::from_millis(100)))
        .await
        .unwrap();
    let addr = edge.addr();
    assert_eq!(
        send(&client(), get_req(&edge, "/page")).await.0,
        StatusCode::OK
    );
    drop(edge);
    // The workers see the signal, end their accept loops and close the listener.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the edge still accepts connections after drop");
}

#[test]
fn cli_reads_edge_toml_and_names_bad_keys() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!(
        "storefront-edge-toml-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("edge.toml");
    std::fs::write(
        &good,
        format!(
            "listen = \"127.0.0.1:0\"\nupstreams = [\"http://{}\"]\nworkers = 1\ncheck_interval = \"250ms\"\n",
            upstream.local_addr().unwrap()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_storefront"))
        .arg("edge")
        .arg("--config")
        .arg(&good)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let addr: SocketAddr = first.trim().parse().expect("first line is the address");
    assert_ne!(addr.port(), 0);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "upstreams = [\"http://127.0.0.1:1\"]\nfall = 0\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_storefront"))
        .arg("edge")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fall"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
