//! The send timeout over real loopback sockets: a client that asks for a large response and
//! stops reading it is closed once the socket has refused writes for the (short, configured)
//! send timeout, and the response is dropped (its memory released); a slow client that
//! keeps reading gets all of it. HTTP/1 and HTTP/2. Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_gateway::server::{self, ServerConfig, Serving, TowerHandler};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const BOUND: Duration = Duration::from_secs(10);
const CHUNK: usize = 64 * 1024;

/// Tells the test when it is dropped: the response body, so the connection's state too.
struct Dropped(mpsc::UnboundedSender<()>);

impl Drop for Dropped {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// `/big?n=CHUNKS`: `n` chunks of 64 KiB, streamed.
fn start(send_timeout: Duration) -> (Serving, mpsc::UnboundedReceiver<()>) {
    let (tx, dropped) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/big/{chunks}",
        get(
            move |axum::extract::Path(chunks): axum::extract::Path<usize>| {
                let guard = Dropped(tx.clone());
                async move {
                    let chunk = Bytes::from(vec![b'x'; CHUNK]);
                    Body::new(Chunks {
                        left: chunks,
                        chunk,
                        _guard: guard,
                    })
                }
            },
        ),
    );
    let config = ServerConfig::builder()
        .name("send-test")
        .send_timeout(send_timeout)
        .keep_alive_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &config).unwrap();
    let serving = server::spawn(listener, &config, TowerHandler::new(app)).unwrap();
    (serving, dropped)
}

/// `n` copies of `chunk`, owning `guard`.
struct Chunks {
    left: usize,
    chunk: Bytes,
    _guard: Dropped,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
    }
}

async fn wait_dropped(dropped: &mut mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(BOUND, dropped.recv())
        .await
        .expect("the response was dropped within the bound")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_the_send_timeout_and_its_response_dropped() {
    let (serving, mut dropped) = start(Duration::from_millis(300));
    let mut stream = TcpStream::connect(serving.local_addr()).await.unwrap();
    // 256 MiB: far more than the socket buffers of both ends hold.
    stream
        .write_all(b"GET /big/4096 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    // Never read: the server's writes are refused once the buffers are full.
    wait_dropped(&mut dropped).await;
    // The connection is closed: what was buffered, then the end (or a reset).
    let ended = tokio::time::timeout(BOUND, async {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the server closed the connection");
    assert!(ended < 4096 * CHUNK, "the whole response arrived: {ended}");

    // The server still serves.
    let mut other = TcpStream::connect(serving.local_addr()).await.unwrap();
    other
        .write_all(b"GET /big/1 HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, other.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_that_keeps_reading_gets_the_whole_response() {
    let (serving, _dropped) = start(Duration::from_secs(2));
    let mut stream = TcpStream::connect(serving.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /big/64 HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let total = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break total,
                Ok(n) => total += n,
                Err(e) => panic!("cut off after {total} bytes: {e}"),
            }
            // A slow reader: far less than the send timeout between two reads.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("read within the bound");
    assert!(total > 64 * CHUNK, "{total}");
}

/// A socket whose reads stop (pending forever) once `stalled` is set.
struct StallingIo {
    inner: TcpStream,
    stalled: Arc<AtomicBool>,
}

impl AsyncRead for StallingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stalled.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_that_stops_reading_is_closed_and_its_response_dropped() {
    let (serving, mut dropped) = start(Duration::from_millis(300));
    let stalled = Arc::new(AtomicBool::new(false));
    let io = StallingIo {
        inner: TcpStream::connect(serving.local_addr()).await.unwrap(),
        stalled: stalled.clone(),
    };
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    let _conn = tokio::spawn(conn);
    let req = http::Request::get("http://test/big/4096")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(BOUND, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let _first = tokio::time::timeout(BOUND, body.frame()).await.unwrap();
    // From now on the client reads nothing more.
    stalled.store(true, Ordering::SeqCst);
    wait_dropped(&mut dropped).await;
}
