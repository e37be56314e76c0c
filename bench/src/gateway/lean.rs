//! The lean gateway: round robin over upstreams with active checks and passive ejection, retry
//! elsewhere for replayable requests, and a static apology. No Rampart middleware on the
//! request path: it is the yardstick for what the Rampart stack costs on top.
//!
//! - Active checks: `rampart::health::Checker` with an `HttpProbe` on `GET /healthz` per
//!   upstream (HAProxy's `check inter 1s fall 2 rise 2` by default); a watcher task mirrors
//!   each verdict into an atomic the request path reads.
//! - Passive ejection: an upstream that refuses a connection is skipped for `eject_for`
//!   (the request is retried on the next one at once).
//! - A request without a body and with an idempotent method is retried on the next routable
//!   upstream when the exchange fails (the upstream died mid-request), like nginx's
//!   `proxy_next_upstream error`. When no upstream answers: the apology (503 + Retry-After).

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use rampart_gateway::server::Handler;

use super::apology::Apology;
use super::{GatewayBody, strip_hop_by_hop};
use rampart_gateway::proxy::upstream::{Upstream, clone_request, up_body};

/// One upstream and what the request path knows of its health.
#[derive(Debug)]
pub struct LeanBackend {
    upstream: Upstream,
    /// The active checks' verdict (true unless they say unhealthy).
    checked_up: AtomicBool,
    /// Passive ejection: milliseconds since `epoch` until which the upstream is skipped (0: not ejected).
    ejected_until_ms: AtomicU64,
}

impl LeanBackend {
    /// An upstream, considered up until its checks say otherwise.
    pub fn new(upstream: Upstream) -> Self {
        Self {
            upstream,
            checked_up: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    /// Records the active checks' verdict.
    pub fn set_checked_up(&self, up: bool) {
        self.checked_up.store(up, Ordering::Relaxed);
        if up {
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    fn routable(&self, epoch: Instant) -> bool {
        if !self.checked_up.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        // The clock is read only while an ejection is pending.
        until == 0 || epoch.elapsed().as_millis() as u64 >= until
    }

    fn eject(&self, epoch: Instant, for_: Duration) {
        let until = (epoch.elapsed() + for_).as_millis() as u64;
        self.ejected_until_ms.store(until.max(1), Ordering::Relaxed);
        tracing::info!(upstream = %self.upstream.addr(), "ejected after a refused connection");
    }

    /// The upstream.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }
}

/// The lean gateway's handler; clone per worker with [`Lean::for_worker`].
#[derive(Debug, Clone)]
pub struct Lean {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backends: Arc<[LeanBackend]>,
    apology: Apology,
    epoch: Instant,
    eject_for: Duration,
}

thread_local! {
    static NEXT: Cell<usize> = const { Cell::new(0) };
}

impl Lean {
    /// A handler over `backends`.
    pub fn new(backends: Arc<[LeanBackend]>, apology: Apology, eject_for: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                backends,
                apology,
                epoch: Instant::now(),
                eject_for,
            }),
        }
    }

    /// A copy with its own reference count, so that workers on different cores do not bounce
    /// one counter's cache line on every request.
    pub fn for_worker(&self) -> Self {
        Self {
            inner: Arc::new(Inner {
                backends: self.inner.backends.clone(),
                apology: self.inner.apology.clone(),
                epoch: self.inner.epoch,
                eject_for: self.inner.eject_for,
            }),
        }
    }

    async fn route(self, req: Request<Incoming>) -> Response<GatewayBody> {
        let inner = &*self.inner;
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let mut req = Some(Request::from_parts(parts, up_body(body)));
        let replayable = req.as_ref().is_some_and(|r| {
            r.body().is_buffered()
                && matches!(*r.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        });
        let n = inner.backends.len();
        let start = NEXT.with(|c| {
            let v = c.get();
            c.set(v.wrapping_add(1));
            v
        });
        for k in 0..n {
            let backend = &inner.backends[(start + k) % n];
            if !backend.routable(inner.epoch) {
                continue;
            }
            let Some(current) = req.as_ref() else { break };
            let attempt = if replayable {
                match clone_request(current) {
                    Some(copy) => copy,
                    None => break,
                }
            } else {
                match req.take() {
                    Some(r) => r,
                    None => break,
                }
            };
            match backend.upstream.send(attempt).await {
                Ok(resp) => {
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    return Response::from_parts(parts, GatewayBody::Upstream { body });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "upstream attempt failed");
                    if e.is_never_reached() {
                        backend.eject(inner.epoch, inner.eject_for);
                    }
                    if !replayable {
                        break;
                    }
                }
            }
        }
        inner.apology.response()
    }
}

impl Handler for Lean {
    type Body = GatewayBody;

    fn handle(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<GatewayBody>> + Send + 'static + use<> {
        self.clone().route(req)
    }
}
