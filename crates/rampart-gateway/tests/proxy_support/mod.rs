//! Shared by the proxy, reload and admin tests: echo backends on loopback and a small client.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Upper bound of every wait.
pub const BOUND: Duration = Duration::from_secs(10);

/// A backend answering every path with a JSON echo: its name, the path and the headers it got.
/// It adds `Keep-Alive: timeout=5` to its answers (a hop-by-hop header the proxy must drop).
pub struct Backend {
    pub addr: SocketAddr,
    _task: JoinHandle<()>,
}

pub async fn backend(name: &'static str) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(move |uri: Uri, headers: HeaderMap| async move {
            let headers: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        serde_json::Value::from(v.to_str().unwrap_or("")),
                    )
                })
                .collect();
            let body = serde_json::json!({ "name": name, "path": uri.path(), "headers": headers });
            Response::builder()
                .header("keep-alive", "timeout=5")
                .header("x-backend", name)
                .body(Body::from(body.to_string()))
                .unwrap()
        });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Backend { addr, _task: task }
}

/// A port nothing listens on.
pub async fn dead_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// One keep-alive client connection.
pub struct Client {
    sender: SendRequest<Empty<Bytes>>,
    _conn: JoinHandle<()>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Self {
            sender,
            _conn: conn,
        }
    }

    /// Sends `req` on this connection; the status, headers and body.
    pub async fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> Result<(u16, HeaderMap, Bytes), hyper::Error> {
        tokio::time::timeout(BOUND, async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok((status, headers, body))
        })
        .await
        .expect("answered within the bound")
    }

    /// `GET path` with `Host: host`.
    pub async fn get(&mut self, host: &str, path: &str) -> (u16, HeaderMap, Bytes) {
        let req = Request::get(path)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        self.send(req).await.unwrap()
    }
}

/// The echo's JSON.
pub fn echo(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

/// A `rampart-gateway` child process run from a config file in a fresh temp directory.
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub config: std::path::PathBuf,
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("rampart-gw-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl GatewayProcess {
    /// Writes `toml` to a file and starts the binary on it; waits (bounded) for its address
    /// lines on stdout.
    pub fn start(tag: &str, toml: &str) -> Self {
        use std::io::BufRead as _;
        let config = temp_dir(tag).join("gateway.toml");
        std::fs::write(&config, toml).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rampart-gateway"))
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = None;
        let mut admin = None;
        let want_admin = !toml.contains("[admin]\nenabled = false");
        while addr.is_none() || (want_admin && admin.is_none()) {
            let line = rx
                .recv_timeout(BOUND)
                .expect("the gateway printed its addresses");
            if let Some(a) = line.strip_prefix("listening on http://") {
                addr = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("admin on http://") {
                admin = Some(a.parse().unwrap());
            }
        }
        Self {
            child,
            addr: addr.unwrap(),
            admin,
            config,
        }
    }

    /// Sends `signal` (`HUP`, `TERM`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then waits (bounded) for the exit; the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
