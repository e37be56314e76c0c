//! `hold`: opens many connections to a proxy and holds them, for `bench/run.sh`'s
//! connection scenarios.
//!
//! - `--mode idle`: each connection sends one complete `GET /` (keep-alive), reads the
//!   answer, then stays idle.
//! - `--mode half`: each connection sends part of a request head and nothing more (a slow
//!   client).
//!
//! When every connection is open it prints `held N` (the script then measures the proxy's
//! memory and a normal request's latency), then watches for the server closing them for
//! `--hold` seconds, prints a summary (`key value` lines) and exits, closing what is left.
//!
//! ```text
//! hold --addr 127.0.0.1:8080 --connections 10000 --mode idle --hold 80
//! ```
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idle,
    Half,
}

struct Args {
    addr: SocketAddr,
    connections: usize,
    mode: Mode,
    hold: Duration,
}

fn usage() -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "usage: hold --addr HOST:PORT --connections N --mode idle|half --hold SECS"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut addr = None;
    let mut connections = 1000;
    let mut mode = Mode::Idle;
    let mut hold = Duration::from_secs(30);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--addr" => addr = v.parse().ok(),
            "--connections" => connections = v.parse().unwrap_or_else(|_| usage()),
            "--mode" => {
                mode = match v.as_str() {
                    "idle" => Mode::Idle,
                    "half" => Mode::Half,
                    _ => usage(),
                }
            }
            "--hold" => hold = Duration::from_secs(v.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    Args {
        addr: addr.unwrap_or_else(|| usage()),
        connections,
        mode,
        hold,
    }
}

/// What happened to one connection.
enum Event {
    /// Open (and, in idle mode, answered once).
    Opened,
    /// Could not be opened or its first request failed.
    Failed,
    /// The server closed it; whether it answered `408` first.
    Closed { answered_408: bool },
}

/// Reads one response with a `Content-Length` body (or up to the end of the head when it
/// has none); `false` if the connection failed first.
async fn read_response(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn one(
    addr: SocketAddr,
    mode: Mode,
    events: mpsc::UnboundedSender<Event>,
    open: Arc<Semaphore>,
) {
    let permit = open.acquire_owned().await;
    let stream = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr)).await;
    let Ok(Ok(mut stream)) = stream else {
        let _ = events.send(Event::Failed);
        return;
    };
    let ok = match mode {
        Mode::Idle => {
            stream
                .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
                .await
                .is_ok()
                && read_response(&mut stream).await
        }
        Mode::Half => stream
            .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nx-slow: ")
            .await
            .is_ok(),
    };
    drop(permit);
    if !ok {
        let _ = events.send(Event::Failed);
        return;
    }
    let _ = events.send(Event::Opened);
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) if got.len() < 64 => got.extend_from_slice(&chunk[..n]),
            Ok(_) => {}
        }
    }
    let _ = events.send(Event::Closed {
        answered_408: got.starts_with(b"HTTP/1.1 408") || got.starts_with(b"HTTP/1.0 408"),
    });
}

/// The `p` quantile of `sorted`, to a tenth of a second; `-` when empty.
fn percentile(sorted: &[f64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".to_owned();
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    format!("{:.1}", sorted[i.min(sorted.len() - 1)])
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // At most 256 connections being opened at once (a burst of 10,000 SYNs overflows backlogs).
    let opening = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        tasks.spawn(one(args.addr, args.mode, tx.clone(), opening.clone()));
    }
    drop(tx);
    let (mut opened, mut failed, mut closed, mut answered_408) = (0usize, 0usize, 0usize, 0usize);
    let mut closed_at = Vec::new();
    let mut held_since = None;
    let mut out = std::io::stdout();
    let deadline = tokio::time::sleep(Duration::from_secs(24 * 3600));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                None => break,
                Some(Event::Opened) => opened += 1,
                Some(Event::Failed) => failed += 1,
                Some(Event::Closed { answered_408: a }) => {
                    closed += 1;
                    answered_408 += usize::from(a);
                    if let Some(t) = held_since {
                        closed_at.push(Instant::now().duration_since(t).as_secs_f64());
                    } else {
                        closed_at.push(0.0);
                    }
                }
            },
            () = &mut deadline => break,
        }
        if held_since.is_none() && opened + failed == args.connections {
            held_since = Some(Instant::now());
            let _ = writeln!(out, "held {opened}");
            let _ = out.flush();
            deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + args.hold);
        }
    }
    closed_at.sort_by(f64::total_cmp);
    let _ = writeln!(out, "connections {}", args.connections);
    let _ = writeln!(out, "opened {opened}");
    let _ = writeln!(out, "failed {failed}");
    let _ = writeln!(out, "closed_by_server {closed}");
    let _ = writeln!(out, "answered_408 {answered_408}");
    let _ = writeln!(out, "closed_p50_s {}", percentile(&closed_at, 0.5));
    let _ = writeln!(out, "closed_max_s {}", percentile(&closed_at, 1.0));
    let _ = writeln!(out, "hold_s {}", args.hold.as_secs());
    let _ = out.flush();
    tasks.abort_all();
}
