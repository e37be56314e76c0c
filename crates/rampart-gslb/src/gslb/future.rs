//! The response future: waits for the chosen site's readiness, calls it, and retries on the
//! next site when the failure never reached a backend and the request can be replayed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use rampart_health::{BoxError, is_never_reached};
use tokio::time::Instant;
use tower_service::Service;

use super::{Shared, Target};
use crate::gslb::error::NoHealthySite;
use crate::gslb::layer::MAX_RETRIES;

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
        shared: Arc<Shared<S, Req>>,
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
    pub(super) fn new(shared: Arc<Shared<S, Req>>, target: Target, request: Req) -> Self {
        match target {
            Target::Site(site) => {
                let service = shared.service(site).clone();
                let replay = if shared.config.replay_enabled && shared.config.retries > 0 {
                    shared.config.replay.clone_request(&request)
                } else {
                    None
                };
                let started = shared.control.latency.as_ref().map(|_| Instant::now());
                #[cfg(feature = "metrics")]
                shared.control.metrics.request(site);
                let mut tried = [usize::MAX; MAX_ATTEMPTS];
                tried[0] = site;
                Self {
                    state: State::Ready {
                        service,
                        request: Some(request),
                    },
                    shared,
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
                    shared,
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
                            match (request, is_never_reached(&*error)) {
                                (Some(req), true) => {
                                    if let Some(next) = next_attempt(&mut this) {
                                        let service = this.shared.service(next).clone();
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
                            if let Some(started) = *this.started {
                                let site = this.tried[usize::from(*this.attempts) - 1];
                                this.shared.control.record_latency(site, started.elapsed());
                            }
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Err(e) => {
                            let error: BoxError = e.into();
                            if this.replay.is_some()
                                && is_never_reached(&*error)
                                && let Some(next) = next_attempt(&mut this)
                            {
                                let req = this.replay.take();
                                // Keep a copy for a further retry, if one may follow.
                                if usize::from(*this.attempts)
                                    <= usize::from(this.shared.config.retries)
                                    && let Some(r) = &req
                                {
                                    *this.replay = this.shared.config.replay.clone_request(r);
                                }
                                let service = this.shared.service(next).clone();
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

/// Chooses the next site for a retry (bounded by the configured retries), records it as
/// tried, and emits the retry event.
fn next_attempt<S, Req: 'static>(this: &mut ResponseFutureProj<'_, S, Req>) -> Option<usize>
where
    S: Service<Req>,
{
    let attempts = usize::from(*this.attempts);
    if attempts > usize::from(this.shared.config.retries) || attempts >= MAX_ATTEMPTS {
        return None;
    }
    let tried = &this.tried[..attempts];
    let next = this.shared.next_site(tried)?;
    let from = tried[attempts - 1];
    this.tried[attempts] = next;
    *this.attempts += 1;
    if this.started.is_some() {
        *this.started = Some(Instant::now());
    }
    tracing::debug!(
        target: "rampart_gslb",
        gslb = %this.shared.control.name,
        from = this.shared.site_name(from),
        to = this.shared.site_name(next),
        "request never reached a backend: retrying on the next site"
    );
    #[cfg(feature = "metrics")]
    {
        this.shared.control.metrics.retry();
        this.shared.control.metrics.request(next);
    }
    Some(next)
}
