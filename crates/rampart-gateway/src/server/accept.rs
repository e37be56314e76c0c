//! The accept loop: the connection cap, back-off on accept errors, graceful shutdown.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{serve_connection, serve_tls};
use super::shared::Shared;
use super::{ConnectionInfo, Handler, ServerTls};

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Errors that concern one connection, not the listener: skip it and accept the next.
fn concerns_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Back-off after failed accepts (`EMFILE`, `ENFILE`, `ENOBUFS`...): 10 ms doubling to 1 s,
/// a warning at most once per second with the count of the ones not logged.
#[derive(Debug, Default)]
struct AcceptErrors {
    backoff: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn failed(&mut self, e: &io::Error, server: &str) -> Duration {
        self.backoff = if self.backoff.is_zero() {
            FIRST_BACKOFF
        } else {
            (self.backoff * 2).min(MAX_BACKOFF)
        };
        let now = Instant::now();
        if self.last_log.is_none_or(|t| now - t >= LOG_EVERY) {
            tracing::warn!(
                server,
                error = %e,
                suppressed = self.suppressed,
                backoff_ms = self.backoff.as_millis() as u64,
                "accept failed; backing off (suppressed: failures not logged since the last warning)"
            );
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        self.backoff
    }

    fn succeeded(&mut self, server: &str) {
        if !self.backoff.is_zero() {
            tracing::info!(
                server,
                suppressed = self.suppressed,
                "accepting connections again"
            );
            *self = Self::default();
        }
    }
}

/// Decrements the open-connections gauge when the connection ends.
struct OpenConnection {
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.shared.metrics.open.decrement(1.0);
    }
}

/// Accepts until `shutdown`, then lets the connections finish within the grace period and
/// closes the rest. Connections are tasks of this loop's `JoinSet`: dropping the loop's
/// future ends them.
pub(crate) async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: H,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let name = shared.config.name().to_owned();
    let listen_addr = listener.local_addr().ok();
    let mut conns: JoinSet<()> = JoinSet::new();
    let mut errors = AcceptErrors::default();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut last_limit_log: Option<Instant> = None;
    loop {
        if permit.is_none() {
            match shared.limit.clone().try_acquire_owned() {
                Ok(p) => permit = Some(p),
                Err(_) => {
                    // At the cap: stop calling accept, so new connections wait in the
                    // kernel's backlog instead of being accepted and dropped.
                    shared.metrics.limit_reached.increment(1);
                    let now = Instant::now();
                    if last_limit_log.is_none_or(|t| now - t >= LOG_EVERY) {
                        last_limit_log = Some(now);
                        tracing::warn!(
                            server = %name,
                            max_connections = shared.config.max_connections(),
                            "connection limit reached: not accepting until a connection closes"
                        );
                    }
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        p = shared.limit.clone().acquire_owned() => match p {
                            Ok(p) => permit = Some(p),
                            Err(_) => break,
                        },
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    errors.succeeded(&name);
                    let Some(permit) = permit.take() else { continue };
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().ok().or(listen_addr).unwrap_or(peer);
                    let info = ConnectionInfo::new(peer, local, false);
                    shared.metrics.accepted.increment(1);
                    shared.metrics.open.increment(1.0);
                    let open = OpenConnection { shared: shared.clone(), _permit: permit };
                    let handler = handler.clone();
                    let shutdown = shutdown.clone();
                    let deadline = Instant::now() + shared.config.header_read_timeout();
                    let tls = shared.config.tls().map(ServerTls::acceptor);
                    conns.spawn(async move {
                        let shared = open.shared.clone();
                        match tls {
                            None => {
                                serve_connection(stream, handler, shared, shutdown, info, deadline)
                                    .await;
                            }
                            // Boxed: a plain connection's task stays small.
                            Some(acceptor) => {
                                Box::pin(serve_tls(
                                    stream, acceptor, handler, shared, shutdown, info, deadline,
                                ))
                                .await;
                            }
                        }
                        drop(open);
                    });
                }
                Err(e) if concerns_one_connection(&e) => {}
                Err(e) => {
                    shared.metrics.accept_errors.increment(1);
                    let pause = errors.failed(&e, &name);
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    drain(conns, &shared, &name).await;
}

/// Waits for the connections (each finishing its request in flight) up to the grace period,
/// then closes the others.
async fn drain(mut conns: JoinSet<()>, shared: &Shared, name: &str) {
    if conns.is_empty() {
        return;
    }
    let grace = shared.config.shutdown_grace();
    tracing::info!(
        server = name,
        open = conns.len(),
        grace_ms = grace.as_millis() as u64,
        "stopped accepting; letting requests in flight finish"
    );
    let _ = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if !conns.is_empty() {
        tracing::info!(
            server = name,
            closed = conns.len(),
            "grace period over: closing the remaining connections"
        );
        conns.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_up_to_a_second_and_reset_on_success() {
        let mut errors = AcceptErrors::default();
        let e = io::Error::other("too many open files");
        let pauses: Vec<_> = (0..9).map(|_| errors.failed(&e, "t")).collect();
        assert_eq!(pauses[0], Duration::from_millis(10));
        assert_eq!(pauses[1], Duration::from_millis(20));
        assert_eq!(pauses[8], Duration::from_secs(1));
        // Logged once, the other eight counted.
        assert_eq!(errors.suppressed, 8);
        tokio::time::advance(Duration::from_secs(1)).await;
        errors.failed(&e, "t");
        assert_eq!(errors.suppressed, 0);
        errors.succeeded("t");
        assert_eq!(errors.failed(&e, "t"), Duration::from_millis(10));
    }
}
