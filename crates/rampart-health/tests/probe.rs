//! Probes against real loopback servers on `127.0.0.1:0`.
//!
//! Every probe is additionally wrapped in a generous safety-net timeout: if a probe ever hung,
//! the test would fail with "probe hung" instead of blocking the suite. These bounds are not
//! timing assertions.

#![cfg(feature = "http")] // the HTTP probe
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{any, get};
use rampart_health::{HttpProbe, Probe, ProbeError, ProbeErrorKind, TcpProbe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SAFETY_NET: Duration = Duration::from_secs(10);

async fn run(probe: &dyn Probe) -> Result<(), ProbeError> {
    tokio::time::timeout(SAFETY_NET, probe.probe())
        .await
        .expect("probe hung past its own timeout")
}

/// An axum server whose `/healthz` answers with the status in `status`.
async fn axum_server(status: Arc<AtomicU16>) -> SocketAddr {
    async fn healthz(State(status): State<Arc<AtomicU16>>) -> (StatusCode, &'static str) {
        let code = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
        (code, "status: ok")
    }
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/big", get(|| async { vec![b'x'; 100 * 1024] }))
        .route(
            "/method",
            any(|method: axum::http::Method| async move { format!("method={method}") }),
        )
        .route(
            "/host",
            get(|headers: axum::http::HeaderMap| async move {
                headers
                    .get("host")
                    .map(|h| h.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            }),
        )
        .with_state(status);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A raw TCP server that runs `answer` on every accepted connection.
async fn raw_server<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(answer(stream));
        }
    });
    addr
}

/// Reads the request head so the client sees its request consumed.
async fn read_head(stream: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 1024];
    let _ = stream.read(&mut buf).await;
}

fn uri(addr: SocketAddr) -> http::Uri {
    format!("http://{addr}").parse().unwrap()
}

async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[tokio::test]
async fn http_probe_follows_the_status_of_healthz() {
    let status = Arc::new(AtomicU16::new(200));
    let addr = axum_server(status.clone()).await;
    let probe = HttpProbe::builder(uri(addr)).build().unwrap();

    run(&probe).await.unwrap();
    status.store(500, Ordering::SeqCst);
    let err = run(&probe).await.unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Status);
    assert!(err.to_string().contains("500"), "{err}");
    status.store(200, Ordering::SeqCst);
    run(&probe).await.unwrap();
}

#[tokio::test]
async fn http_probe_checks_body_substring_and_status_range() {
    let status = Arc::new(AtomicU16::new(200));
    let addr = axum_server(status.clone()).await;

    let ok = HttpProbe::builder(uri(addr))
        .body_contains("ok")
        .build()
        .unwrap();
    run(&ok).await.unwrap();

    let missing = HttpProbe::builder(uri(addr))
        .body_contains("ready")
        .build()
        .unwrap();
    assert_eq!(
        run(&missing).await.unwrap_err().kind(),
        ProbeErrorKind::Body
    );

    // A 404 route fails the default range but passes a range that admits it.
    let not_found = HttpProbe::builder(uri(addr)).path("/nope").build().unwrap();
    assert_eq!(
        run(&not_found).await.unwrap_err().kind(),
        ProbeErrorKind::Status
    );
    let lenient = HttpProbe::builder(uri(addr))
        .path("/nope")
        .expect_status(200..=499)
        .build()
        .unwrap();
    run(&lenient).await.unwrap();
}

#[tokio::test]
async fn http_probe_sends_the_configured_method() {
    let addr = axum_server(Arc::new(AtomicU16::new(200))).await;
    let default = HttpProbe::builder(uri(addr))
        .path("/method")
        .body_contains("method=GET")
        .build()
        .unwrap();
    run(&default).await.unwrap();
    let post = HttpProbe::builder(uri(addr))
        .method(http::Method::POST)
        .path("/method")
        .body_contains("method=POST")
        .build()
        .unwrap();
    run(&post).await.unwrap();
    // The body check really looks at what came back.
    let wrong = HttpProbe::builder(uri(addr))
        .method(http::Method::PUT)
        .path("/method")
        .body_contains("method=POST")
        .build()
        .unwrap();
    assert_eq!(run(&wrong).await.unwrap_err().kind(), ProbeErrorKind::Body);
    // HEAD: no body to read, the status decides.
    let head = HttpProbe::builder(uri(addr))
        .method(http::Method::HEAD)
        .path("/method")
        .build()
        .unwrap();
    run(&head).await.unwrap();
}

#[tokio::test]
async fn http_probe_sends_the_host_override() {
    let addr = axum_server(Arc::new(AtomicU16::new(200))).await;
    let probe = HttpProbe::builder(uri(addr))
        .path("/host")
        .host("catalog.internal")
        .body_contains("catalog.internal")
        .build()
        .unwrap();
    run(&probe).await.unwrap();
}

#[tokio::test]
async fn http_probe_fails_a_body_over_the_limit() {
    let addr = axum_server(Arc::new(AtomicU16::new(200))).await;
    // /big answers 100 KiB, over the 64 KiB default.
    let probe = HttpProbe::builder(uri(addr)).path("/big").build().unwrap();
    let err = run(&probe).await.unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Body);
    assert!(err.to_string().contains("exceeds"), "{err}");
    // With a higher limit the same body passes.
    let roomy = HttpProbe::builder(uri(addr))
        .path("/big")
        .max_body_bytes(200 * 1024)
        .build()
        .unwrap();
    run(&roomy).await.unwrap();
}

#[tokio::test]
async fn http_probe_times_out_on_a_server_that_never_answers() {
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        // Hold the connection open without answering.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(stream);
    })
    .await;
    let probe = HttpProbe::builder(uri(addr))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = run(&probe).await.unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Timeout);
}

#[tokio::test]
async fn http_probe_times_out_on_a_body_that_never_ends_slowly() {
    // Headers, then a body that trickles nothing: the timeout bounds the body read too.
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab")
            .await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let probe = HttpProbe::builder(uri(addr))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert_eq!(
        run(&probe).await.unwrap_err().kind(),
        ProbeErrorKind::Timeout
    );
}

#[tokio::test]
async fn http_probe_fails_fast_on_a_closed_port() {
    let addr = closed_port().await;
    // A long timeout: the refusal, not the timeout, must end the attempt.
    let probe = HttpProbe::builder(uri(addr))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = run(&probe).await.unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Connect, "{err}");
    assert!(err.to_string().starts_with("connect failed"), "{err}");
}

#[tokio::test]
async fn http_probe_fails_on_garbage() {
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"\x00\x01garbage that is not http\r\n\r\n")
            .await;
        // Keep the connection open: the probe must fail on the bytes, not on the close.
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let probe = HttpProbe::builder(uri(addr))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = run(&probe).await.unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Other, "{err}");
}

#[tokio::test]
async fn http_probe_bounds_an_endless_body() {
    // A chunked body that never ends, written as fast as the client reads.
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let chunk = {
            let mut c = b"1000\r\n".to_vec();
            c.extend(std::iter::repeat_n(b'z', 0x1000));
            c.extend_from_slice(b"\r\n");
            c
        };
        while stream.write_all(&chunk).await.is_ok() {}
    })
    .await;
    let probe = HttpProbe::builder(uri(addr))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = run(&probe).await.unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Body, "{err}");
}

#[tokio::test]
async fn tcp_probe_passes_on_a_listener_and_fails_on_a_closed_port() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = TcpProbe::new(listener.local_addr().unwrap());
    run(&open).await.unwrap();

    let closed = TcpProbe::builder(closed_port().await)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = run(&closed).await.unwrap_err();
    assert_eq!(err.kind(), ProbeErrorKind::Connect, "{err}");
}

#[tokio::test]
async fn http_probe_reuses_one_connection_and_closes_it_when_dropped() {
    // Answers keep-alive requests on each connection; reports how many connections it saw
    // and when a connection is closed by the client.
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let accepted = Arc::new(AtomicU16::new(0));
    let counted = accepted.clone();
    let addr = raw_server(move |mut stream| {
        counted.fetch_add(1, Ordering::SeqCst);
        let closed_tx = closed_tx.clone();
        async move {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = closed_tx.send(());
                        return;
                    }
                    Ok(_) => {
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    })
    .await;

    let probe = HttpProbe::builder(uri(addr)).build().unwrap();
    for _ in 0..3 {
        run(&probe).await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one pooled connection");

    drop(probe);
    let closed = tokio::time::timeout(SAFETY_NET, closed_rx.recv()).await;
    assert!(
        matches!(closed, Ok(Some(()))),
        "connection still open after the probe was dropped"
    );
}

#[tokio::test]
async fn a_timed_out_http_probe_closes_its_connection() {
    // Reads the request, never answers, and reports when the client hangs up.
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let addr = raw_server(move |mut stream| {
        let closed_tx = closed_tx.clone();
        async move {
            read_head(&mut stream).await;
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = closed_tx.send(());
                        return;
                    }
                    Ok(_) => {}
                }
            }
        }
    })
    .await;
    let probe = HttpProbe::builder(uri(addr))
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    assert_eq!(
        run(&probe).await.unwrap_err().kind(),
        ProbeErrorKind::Timeout
    );
    // The probe is still alive: the abandoned connection must not linger in the background.
    let closed = tokio::time::timeout(SAFETY_NET, closed_rx.recv()).await;
    assert!(
        matches!(closed, Ok(Some(()))),
        "the timed-out connection stayed open"
    );
    drop(probe);
}
