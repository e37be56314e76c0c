//! The response future: waits for the chosen site's readiness, calls it, and retries on the
//! next site when the failure never reached a backend and the request can be replayed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use rampart_health::{BoxError, is_never_reached};
use std::error::Error;
use tokio::time::Instant;
use tower_service::Service;

use super::{Shared, Target};
use crate::gslb::config::MAX_RETRIES;
use crate::gslb::error::NoHealthySite;

const MAX_ATTEMPTS: usize = MAX_RETRIES as usize + 1;

pin_project! {
    /// The response future of [`Gslb`](crate::Gslb).
    #[project = ResponseFutureProj]
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        // Only kept when a retry or a latency measurement may need it (saves two atomic
        // operations per request otherwise).
        shared: Option<Arc<Shared<S, Req>>>,
        replay: Option<Req>,
        tried: [usize; MAX_ATTEMPTS],
        attempts: u8,
        started: Option<Instant>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        // Waiting for the chosen site's clone to be ready; the request is still here.
        Ready { service: S, request: Option<Req> },
        Calling { #[pin] future: S::Future },
        Failed { error: Option<BoxError> },
        Done,
    }
}

impl<S, Req: 'static> ResponseFuture<S, Req>
where
    S: Service<Req> + Clone,
{
    pub(super) fn new(shared: &Arc<Shared<S, Req>>, target: Target, request: Req) -> Self {
        match target {
            Target::Site(site) => {
                let service = shared.service(site).clone();
                let replay = if shared.config.replay_enabled && shared.config.retries > 0 {
                    shared.config.replay.clone_request(&request)
                } else {
                    None
                };
                let started = shared.control.latency.as_ref().map(|_| Instant::now());
                let retry = shared.config.replay_enabled && shared.config.retries > 0;
                let keep = (retry || started.is_some()).then(|| shared.clone());
                #[cfg(feature = "metrics")]
                shared.control.metrics.request(site);
                let mut tried = [usize::MAX; MAX_ATTEMPTS];
                tried[0] = site;
                Self {
                    state: State::Ready {
                        service,
                        request: Some(request),
                    },
                    shared: keep,
                    replay,
                    tried,
                    attempts: 1,
                    started,
                }
            }
            Target::None => {
                tracing::debug!(
                    target: "rampart_gslb",
                    gslb = %shared.control.name,
                    "no healthy site: failing fast"
                );
                #[cfg(feature = "metrics")]
                shared.control.metrics.no_healthy_site();
                let error: BoxError = Box::new(NoHealthySite::new(shared.control.name.clone()));
                Self {
                    state: State::Failed { error: Some(error) },
                    shared: None,
                    replay: None,
                    tried: [usize::MAX; MAX_ATTEMPTS],
                    attempts: 0,
                    started: None,
                }
            }
        }
    }
}

impl<S, Req: 'static> Future for ResponseFuture<S, Req>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Ready { service, request } => {
                    let ready = ready!(service.poll_ready(cx));
                    match ready {
                        Ok(()) => {
                            let Some(req) = request.take() else {
                                this.state.set(State::Done);
                                return Poll::Ready(Err(
                                    "gslb response future lost its request".into()
                                ));
                            };
                            let future = service.call(req);
                            this.state.set(State::Calling { future });
                        }
                        Err(e) => {
                            let error: BoxError = e.into();
                            // Not ready means not sent: the request is still ours to move.
                            let request = request.take();
                            match (request, never_reached(&*error)) {
                                (Some(req), true) => {
                                    if let Some(service) = next_attempt(&mut this) {
                                        this.state.set(State::Ready {
                                            service,
                                            request: Some(req),
                                        });
                                        continue;
                                    }
                                    this.state.set(State::Done);
                                    return Poll::Ready(Err(error));
                                }
                                _ => {
                                    this.state.set(State::Done);
                                    return Poll::Ready(Err(error));
                                }
                            }
                        }
                    }
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    match result {
                        Ok(response) => {
                            if let (Some(started), Some(shared)) = (*this.started, this.shared) {
                                let site = this.tried[usize::from(*this.attempts) - 1];
                                shared.control.record_latency(site, started.elapsed());
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Err(e) => {
                            let error: BoxError = e.into();
                            if this.replay.is_some()
                                && never_reached(&*error)
                                && let Some(service) = next_attempt(&mut this)
                            {
                                let req = this.replay.take();
                                // Keep a copy for a further retry, if one may follow.
                                if let Some(shared) = this.shared
                                    && usize::from(*this.attempts)
                                        <= usize::from(shared.config.retries)
                                    && let Some(r) = &req
                                {
                                    *this.replay = shared.config.replay.clone_request(r);
                                }
                                this.state.set(State::Ready {
                                    service,
                                    request: req,
                                });
                                continue;
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    }
                }
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .unwrap_or_else(|| "gslb response future polled after completion".into());
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => {
                    return Poll::Ready(Err("gslb response future polled after completion".into()));
                }
            }
        }
    }
}

/// Whether `error` shows the request never reached a backend: a [`NeverReached`] marker
/// anywhere in its chain (a balancer's "no healthy endpoint", a client's refused connection,
/// an open breaker), or a bare [`std::io::Error`] of kind `ConnectionRefused` (a site that is
/// a plain client and does not mark its errors). Other transport errors (reset, timeout) may
/// have reached a backend and are not retried.
///
/// [`NeverReached`]: rampart_health::NeverReached
pub(crate) fn never_reached(error: &(dyn Error + 'static)) -> bool {
    if is_never_reached(error) {
        return true;
    }
    let mut current = Some(error);
    let mut depth = 0;
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        depth += 1;
        if depth > 64 {
            return false;
        }
        current = e.source();
    }
    false
}

/// Chooses the next site for a retry (only with a replay strategy, bounded by the configured
/// retries), records it as tried, emits the retry event and returns the site's service.
fn next_attempt<S, Req: 'static>(this: &mut ResponseFutureProj<'_, S, Req>) -> Option<S>
where
    S: Service<Req> + Clone,
{
    let shared = this.shared.as_ref()?;
    let attempts = usize::from(*this.attempts);
    if !shared.config.replay_enabled
        || attempts > usize::from(shared.config.retries)
        || attempts >= MAX_ATTEMPTS
    {
        return None;
    }
    let tried = &this.tried[..attempts];
    let next = shared.next_site(tried)?;
    let from = tried[attempts - 1];
    this.tried[attempts] = next;
    *this.attempts += 1;
    if this.started.is_some() {
        *this.started = Some(Instant::now());
    }
    tracing::debug!(
        target: "rampart_gslb",
        gslb = %shared.control.name,
        from = shared.site_name(from),
        to = shared.site_name(next),
        "request never reached a backend: retrying on the next site"
    );
    #[cfg(feature = "metrics")]
    {
        shared.control.metrics.retry();
        shared.control.metrics.request(next);
    }
    Some(shared.service(next).clone())
}
