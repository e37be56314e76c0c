//! Test helpers: a controllable site service.
#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use rampart_gslb::{Gslb, GslbHandle, Snapshot};
use rampart_health::{BoxError, NeverReached};
use tower::{Service, ServiceExt};

pub const OK: u8 = 0;
/// Fails with a `NeverReached` error (like a balancer with no healthy endpoint).
pub const NEVER_REACHED: u8 = 1;
/// Fails with an ordinary error (reached a backend, which failed).
pub const FAIL: u8 = 2;
/// `poll_ready` fails with a `NeverReached` error (the request is never handed over).
pub const NOT_READY: u8 = 3;
/// Fails with a bare `io::Error` of kind `ConnectionRefused`, wrapped in an unrelated error
/// (a plain client that does not mark its errors `NeverReached`).
pub const REFUSED: u8 = 4;
/// Fails with a bare `io::Error` of kind `ConnectionReset` (the request may have arrived).
pub const RESET: u8 = 5;

/// A client error wrapping a transport error, like hyper-util's `Error`.
#[derive(Debug)]
pub struct ClientError(pub std::io::Error);
impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client error")
    }
}
impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A site service answering its own name, with a switchable behaviour and a delay.
#[derive(Clone)]
pub struct Mock {
    pub name: &'static str,
    pub mode: Arc<AtomicU8>,
    pub calls: Arc<AtomicUsize>,
    pub delay_ms: Arc<AtomicU64>,
}

impl Mock {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            mode: Arc::new(AtomicU8::new(OK)),
            calls: Arc::new(AtomicUsize::new(0)),
            delay_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    pub fn delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub struct SiteDown;
impl std::fmt::Display for SiteDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("backend failed")
    }
}
impl std::error::Error for SiteDown {}

impl<R> Service<R> for Mock {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.mode.load(Ordering::SeqCst) == NOT_READY {
            return Poll::Ready(Err(Box::new(NeverReached::new())));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: R) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = self.mode.load(Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        let name = self.name;
        Box::pin(async move {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            match mode {
                OK => Ok(name),
                NEVER_REACHED => Err(Box::new(NeverReached::new()) as BoxError),
                REFUSED => Err(
                    Box::new(ClientError(std::io::ErrorKind::ConnectionRefused.into())) as BoxError,
                ),
                RESET => Err(
                    Box::new(ClientError(std::io::ErrorKind::ConnectionReset.into())) as BoxError,
                ),
                _ => Err(Box::new(SiteDown) as BoxError),
            }
        })
    }
}

/// Sends `n` requests made by `req` and counts answers per site name.
pub async fn tally<R: 'static>(
    gslb: &mut Gslb<Mock, R>,
    n: usize,
    mut req: impl FnMut() -> R,
) -> std::collections::HashMap<&'static str, usize> {
    let mut counts = std::collections::HashMap::new();
    for _ in 0..n {
        let name = gslb.ready().await.unwrap().call(req()).await.unwrap();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// Lets the background task run (paused-time tests).
pub async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Waits for the next recompute and returns the snapshot.
pub async fn next(handle: &mut GslbHandle) -> Snapshot {
    tokio::time::timeout(Duration::from_secs(1), handle.changed())
        .await
        .expect("no recompute within 1 s")
}
