//! A small, fast backend replica for the HTTP benchmarks: an axum server on loopback.
//!
//! ```text
//! backend --listen 127.0.0.1:0 [--threads N]
//! ```
//!
//! Prints its bound address on stdout as the first line (so a script can start it on port 0
//! and read where it listens), then serves:
//! - `GET /` — a small fixed body (`hello from <addr>\n`, about 30 bytes);
//! - `GET /healthz` — `ok`.
//!
//! The body is built once at start-up; a request allocates nothing of ours.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;

fn main() -> std::process::ExitCode {
    let args = match rampart_bench::args::Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("backend: {e}\nusage: backend --listen ADDR [--threads N]");
            return std::process::ExitCode::from(2);
        }
    };
    let listen: SocketAddr = match args.value_or("listen", "127.0.0.1:0") {
        Ok(a) => a,
        Err(e) => {
            eprintln!("backend: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let threads: usize = match args.value_or("threads", "1") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("backend: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let result = runtime.and_then(|rt| rt.block_on(serve(listen)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backend: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let body = Bytes::from(format!("hello from {addr}\n"));
    let app = Router::new()
        .route("/", get(move || std::future::ready(body.clone())))
        .route("/healthz", get(|| std::future::ready("ok")));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{addr}")?;
        out.flush()?;
    }
    axum::serve(listener, app).await
}
