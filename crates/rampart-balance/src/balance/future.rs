//! The balancer's response future: one attempt at a time, retried elsewhere when the policy
//! and the budget allow.
//!
//! A response that the policy wanted retried (a 503 to an idempotent request, say) is kept
//! while the retry runs: a later response replaces it, but a later error does not. When the
//! retry cannot produce an answer (it never reaches its endpoint, fails after sending, or no
//! further attempt is possible), the caller gets the last real response rather than a
//! transport error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use rampart_health::{BoxError, Deadline, DeadlineExceeded, NeverReached, Outcome};
use tower_service::Service;

use super::shared::{Late, Shared};
use crate::late::LateOutcome;
use crate::pick::{Tried, pick};
use crate::policy::BalancePolicy;
use crate::table::{InFlight, Member, Table};

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Driving the endpoint's `poll_ready`.
        Ready,
        // Waiting for the endpoint's response.
        Calling { #[pin] fut: F },
        // Finished (or failed before any attempt).
        Done,
    }
}

/// A hedge: its timer, then its attempt (boxed: only hedged requests pay for it).
struct Hedging<S, F> {
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The timer fired (a hedge was sent, or could not be).
    fired: bool,
    fut: Option<Pin<Box<F>>>,
    inflight: Option<InFlight<S>>,
    start: u64,
}

/// Everything an attempt and its retries need, outside the pinned state.
struct Attempt<S: Service<Req>, P, Req, Res> {
    shared: Arc<Shared<S, P>>,
    inflight: Option<InFlight<S>>,
    svc: Option<S>,
    req: Option<Req>,
    copy: Option<Req>,
    /// The last response that was retried (already marked with its endpoint): returned if no
    /// later attempt produces a response.
    last: Option<Res>,
    start: u64,
    retries_left: u32,
    tried: Tried,
    key: Option<u64>,
    seed: u64,
    /// The caller's deadline: no attempt starts past it.
    deadline: Option<Deadline>,
    /// The hedge of the first attempt (hedging on and the request hedgeable).
    hedge: Option<Hedging<S, S::Future>>,
    /// The request was considered for a hedge.
    hedge_checked: bool,
}

pin_project! {
    /// The response future of [`Balance`](crate::Balance).
    pub struct ResponseFuture<S, P, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        attempt: Option<Attempt<S, P, Req, S::Response>>,
        error: Option<BoxError>,
    }
}

impl<S, P, Req> std::fmt::Debug for ResponseFuture<S, P, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, P, Req> ResponseFuture<S, P, Req>
where
    S: Service<Req>,
{
    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Done,
            attempt: None,
            error: Some(error),
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn new(
        shared: Arc<Shared<S, P>>,
        table: Arc<Table<S>>,
        index: usize,
        svc: S,
        req: Req,
        copy: Option<Req>,
        retries: u32,
        key: Option<u64>,
        seed: u64,
        deadline: Option<Deadline>,
    ) -> Self {
        let panic = table.panic;
        Self {
            state: State::Ready,
            attempt: Some(Attempt {
                shared,
                inflight: Some(InFlight::start(table, index, panic)),
                svc: Some(svc),
                req: Some(req),
                copy,
                last: None,
                start: 0,
                retries_left: retries,
                tried: Tried::default(),
                key,
                seed,
                deadline,
                hedge: None,
                hedge_checked: false,
            }),
            error: None,
        }
    }
}

impl<S, P, Req> Attempt<S, P, Req, S::Response>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    P: BalancePolicy<Req, S::Response>,
{
    /// Moves on to another endpoint; `false` when no retry is possible (no copy, no attempts
    /// left, budget exhausted, or every routable endpoint tried).
    fn retry(&mut self) -> bool {
        // An unsent request (its endpoint failed `poll_ready`) goes as it is; a sent one
        // needs a replayable copy.
        if self.retries_left == 0 || (self.req.is_none() && self.copy.is_none()) {
            return false;
        }
        if self.deadline.is_some_and(|d| d.is_expired()) {
            tracing::debug!("retry elsewhere: the caller's deadline has passed");
            return false;
        }
        if self.tried.is_empty()
            && let Some(current) = self.endpoint()
        {
            let id = current.id;
            self.tried.push(id);
        }
        let shared = &self.shared;
        let (table, _) = shared.table();
        let panic = table.panic;
        let set = table.set();
        let mut rng = fastrand::Rng::with_seed(self.seed);
        self.seed = rng.u64(..);
        let Some(i) = pick(shared.config.picker, &set, &mut rng, self.key, &self.tried) else {
            tracing::debug!("retry elsewhere: no untried endpoint left");
            return false;
        };
        if !shared.budget.withdraw() {
            tracing::debug!("retry elsewhere: retry budget exhausted");
            #[cfg(feature = "metrics")]
            metrics::counter!("rampart_balance_retries_total", "balancer" => shared.config.name.clone(), "result" => "budget_exhausted")
                .increment(1);
            return false;
        }
        let req = match self.req.take() {
            Some(unsent) => unsent,
            None => {
                let next = match (&self.copy, self.retries_left > 1) {
                    (Some(copy), true) => shared.policy.clone_request(copy),
                    _ => None,
                };
                match next.or_else(|| self.copy.take()) {
                    Some(r) => r,
                    None => return false,
                }
            }
        };
        self.retries_left -= 1;
        let endpoint = &set.endpoints[i];
        self.tried.push(endpoint.id);
        tracing::debug!(endpoint = %endpoint.name, "retrying on another endpoint");
        #[cfg(feature = "metrics")]
        metrics::counter!("rampart_balance_retries_total", "balancer" => shared.config.name.clone(), "result" => "retried")
            .increment(1);
        self.svc = Some(endpoint.service.clone());
        self.req = Some(req);
        self.inflight = Some(InFlight::start(table.clone(), i, panic));
        true
    }

    /// Arms the hedge timer for the first attempt of a hedgeable request (called on its first
    /// pending poll).
    fn arm_hedge(&mut self) {
        let Some(hedge) = &self.shared.hedge else {
            return;
        };
        if self.hedge.is_some()
            || !self.tried.is_empty()
            || !self
                .copy
                .as_ref()
                .is_some_and(|c| self.shared.policy.hedgeable(c))
        {
            return;
        }
        let mut at = tokio::time::Instant::now() + hedge.delay();
        if let Some(d) = self.deadline {
            if d.instant() <= at {
                // The hedge would start past the deadline.
                return;
            }
            at = at.min(d.instant());
        }
        self.hedge = Some(Hedging {
            timer: Box::pin(tokio::time::sleep_until(at)),
            fired: false,
            fut: None,
            inflight: None,
            start: 0,
        });
    }

    /// Drives the hedge while the first attempt is pending: sends it when its timer fires,
    /// and returns its response if it answers first with one worth keeping.
    fn poll_hedge(&mut self, cx: &mut Context<'_>) -> Option<S::Response> {
        let h = self.hedge.as_mut()?;
        if h.fut.is_none() {
            if h.fired || h.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            h.fired = true;
            self.send_hedge(cx)?;
        }
        let h = self.hedge.as_mut()?;
        let fut = h.fut.as_mut()?;
        let result = match fut.as_mut().poll(cx) {
            Poll::Pending => return None,
            Poll::Ready(r) => r,
        };
        let shared = &self.shared;
        let policy = &shared.policy;
        let inflight = h.inflight.as_ref()?;
        match result {
            Ok(mut response) => {
                if policy.defers(&response) {
                    let late = defer(shared, inflight, h.start);
                    policy.defer(&mut response, late);
                } else {
                    shared.record(
                        inflight.endpoint(),
                        inflight.load(),
                        policy.classify(Ok(&response)),
                        h.start,
                    );
                }
                if let Some(wait) = policy.backoff(&response) {
                    shared.back_off(inflight.endpoint(), wait);
                }
                let worse = self
                    .copy
                    .as_ref()
                    .is_some_and(|r| policy.retry_response(r, &response));
                if worse {
                    // A 503 from the hedge is no better than waiting for the first attempt.
                    h.fut = None;
                    h.inflight = None;
                    return None;
                }
                policy.on_response(&mut response, &inflight.endpoint().served_by);
                tracing::debug!(endpoint = %inflight.endpoint().name, "hedge answered first");
                #[cfg(feature = "metrics")]
                metrics::counter!("rampart_balance_hedges_total", "balancer" => shared.config.name.clone(), "result" => "won")
                    .increment(1);
                // The first attempt lost: it was at least this slow.
                if let Some(first) = &self.inflight {
                    shared.record_latency(first.load(), self.start);
                }
                Some(response)
            }
            Err(e) => {
                let err: BoxError = e.into();
                shared.record(
                    inflight.endpoint(),
                    inflight.load(),
                    policy.classify(Err(&err)),
                    h.start,
                );
                tracing::debug!(error = %err, "hedge failed; waiting for the first attempt");
                h.fut = None;
                h.inflight = None;
                None
            }
        }
    }

    /// Sends the hedge: another endpoint, within the budget and the deadline.
    fn send_hedge(&mut self, cx: &mut Context<'_>) -> Option<()> {
        // What is left of the deadline (none: no hedge past it), read once.
        let remaining = match &self.deadline {
            Some(d) => {
                let left = d.remaining();
                if left.is_zero() {
                    return None;
                }
                Some(left)
            }
            None => None,
        };
        let shared = &self.shared;
        let mut tried = Tried::default();
        tried.push(self.endpoint()?.id);
        let (table, _) = shared.table();
        let panic = table.panic;
        let set = table.set();
        let mut rng = fastrand::Rng::with_seed(self.seed);
        self.seed = rng.u64(..);
        let i = pick(shared.config.picker, &set, &mut rng, self.key, &tried)?;
        if !shared.budget.withdraw() {
            tracing::debug!("hedge not sent: budget exhausted");
            #[cfg(feature = "metrics")]
            metrics::counter!("rampart_balance_hedges_total", "balancer" => shared.config.name.clone(), "result" => "budget_exhausted")
                .increment(1);
            return None;
        }
        let mut req = shared.policy.clone_request(self.copy.as_ref()?)?;
        let endpoint = &set.endpoints[i];
        let mut svc = endpoint.service.clone();
        // Endpoints that are not ready at once are not worth a hedge.
        if !matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))) {
            return None;
        }
        if let Some(remaining) = remaining {
            shared.policy.write_deadline(&mut req, remaining);
        }
        tracing::debug!(endpoint = %endpoint.name, "hedge sent");
        #[cfg(feature = "metrics")]
        metrics::counter!("rampart_balance_hedges_total", "balancer" => shared.config.name.clone(), "result" => "sent")
            .increment(1);
        let inflight = InFlight::start(table.clone(), i, panic);
        let h = self.hedge.as_mut()?;
        h.inflight = Some(inflight);
        h.start = shared.clock.raw();
        h.fut = Some(Box::pin(svc.call(req)));
        Some(())
    }

    fn endpoint(&self) -> Option<&Member<S>> {
        self.inflight.as_ref().map(InFlight::endpoint)
    }

    /// Gives up after an error: the last real response if an earlier attempt had one,
    /// else the error.
    fn give_up(&mut self, err: BoxError) -> Result<S::Response, BoxError> {
        match self.last.take() {
            Some(response) => {
                tracing::debug!(error = %err, "retry failed; returning the earlier response");
                Ok(response)
            }
            None => Err(err),
        }
    }

    #[inline]
    fn record(&self, outcome: Outcome) {
        if let Some(inflight) = &self.inflight {
            self.shared
                .record(inflight.endpoint(), inflight.load(), outcome, self.start);
        }
    }

    /// The outcome of `response` comes later: records the head's latency and hands the
    /// response its [`LateOutcome`].
    #[cold]
    fn defer(&self, response: &mut S::Response) {
        if let Some(inflight) = &self.inflight {
            let late = defer(&self.shared, inflight, self.start);
            self.shared.policy.defer(response, late);
        }
    }
}

/// Records the head of an attempt whose outcome comes later and makes its [`LateOutcome`].
#[cold]
fn defer<S, P>(shared: &Arc<Shared<S, P>>, inflight: &InFlight<S>, start: u64) -> LateOutcome
where
    S: Send + Sync + 'static,
    P: Send + Sync + 'static,
{
    let rtt = shared.record_head(inflight.load(), start);
    LateOutcome::new(Late {
        shared: shared.clone(),
        ep: inflight.member().clone(),
        rtt,
    })
}

fn closed() -> BoxError {
    "balancer response future polled after completion".into()
}

impl<S, P, Req> Future for ResponseFuture<S, P, Req>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    P: BalancePolicy<Req, S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let Some(attempt) = this.attempt.as_mut() else {
                return Poll::Ready(Err(this.error.take().unwrap_or_else(closed)));
            };
            match this.state.as_mut().project() {
                StateProj::Ready => {
                    let Some(svc) = attempt.svc.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(closed()));
                    };
                    match ready!(svc.poll_ready(cx)) {
                        Ok(()) => {
                            let Some(mut req) = attempt.req.take() else {
                                this.state.set(State::Done);
                                return Poll::Ready(Err(closed()));
                            };
                            if let Some(deadline) = &attempt.deadline {
                                // One clock read for the check and the next hop's budget.
                                let remaining = deadline
                                    .instant()
                                    .saturating_duration_since(tokio::time::Instant::now());
                                if remaining.is_zero() {
                                    // Never sent: nobody would wait for the answer.
                                    tracing::debug!("deadline passed before the attempt: not sent");
                                    let result = attempt.give_up(Box::new(DeadlineExceeded::new()));
                                    this.state.set(State::Done);
                                    *this.attempt = None;
                                    return Poll::Ready(result);
                                }
                                attempt.shared.policy.write_deadline(&mut req, remaining);
                            }
                            attempt.start = attempt.shared.clock.raw();
                            let fut = svc.call(req);
                            this.state.set(State::Calling { fut });
                        }
                        Err(e) => {
                            // The endpoint's service is gone (closed, vanished): the request
                            // never left.
                            let err: BoxError = Box::new(NeverReached::new().with_source(e.into()));
                            attempt.record(Outcome::Failure);
                            let retry = attempt
                                .req
                                .as_ref()
                                .is_some_and(|r| attempt.shared.policy.retry_error(r, &err));
                            if retry && attempt.retry() {
                                continue;
                            }
                            let result = attempt.give_up(err);
                            this.state.set(State::Done);
                            *this.attempt = None;
                            return Poll::Ready(result);
                        }
                    }
                }
                StateProj::Calling { fut } => {
                    let result = match fut.poll(cx) {
                        Poll::Ready(r) => {
                            if let Some(h) = attempt.hedge.take()
                                && let Some(loser) = &h.inflight
                            {
                                // The hedge lost: dropping its future cancels it.
                                attempt.shared.record_latency(loser.load(), h.start);
                            }
                            r
                        }
                        Poll::Pending => {
                            if attempt.hedge.is_none() {
                                if attempt.shared.hedge.is_none() || attempt.hedge_checked {
                                    return Poll::Pending;
                                }
                                // Armed on the first pending poll: an attempt that answers at
                                // once costs no timer.
                                attempt.hedge_checked = true;
                                attempt.arm_hedge();
                                if attempt.hedge.is_none() {
                                    return Poll::Pending;
                                }
                            }
                            let Some(response) = attempt.poll_hedge(cx) else {
                                return Poll::Pending;
                            };
                            // The hedge won; the first attempt is dropped with the state.
                            this.state.set(State::Done);
                            *this.attempt = None;
                            return Poll::Ready(Ok(response));
                        }
                    };
                    match result {
                        Ok(mut response) => {
                            let policy = &attempt.shared.policy;
                            if policy.defers(&response) {
                                attempt.defer(&mut response);
                            } else {
                                attempt.record(policy.classify(Ok(&response)));
                            }
                            if let Some(wait) = policy.backoff(&response)
                                && let Some(inflight) = &attempt.inflight
                            {
                                attempt.shared.back_off(inflight.endpoint(), wait);
                            }
                            let retry = attempt
                                .copy
                                .as_ref()
                                .is_some_and(|r| policy.retry_response(r, &response));
                            if let Some(ep) = attempt.endpoint() {
                                policy.on_response(&mut response, &ep.served_by);
                            }
                            if retry && attempt.retry() {
                                // Kept (replacing an older one) in case the retry cannot do
                                // better.
                                attempt.last = Some(response);
                                this.state.set(State::Ready);
                                continue;
                            }
                            this.state.set(State::Done);
                            *this.attempt = None;
                            return Poll::Ready(Ok(response));
                        }
                        Err(e) => {
                            let err: BoxError = e.into();
                            let policy = &attempt.shared.policy;
                            attempt.record(policy.classify(Err(&err)));
                            let retry = attempt
                                .copy
                                .as_ref()
                                .is_some_and(|r| policy.retry_error(r, &err));
                            if retry && attempt.retry() {
                                this.state.set(State::Ready);
                                continue;
                            }
                            let result = attempt.give_up(err);
                            this.state.set(State::Done);
                            *this.attempt = None;
                            return Poll::Ready(result);
                        }
                    }
                }
                StateProj::Done => {
                    *this.attempt = None;
                    return Poll::Ready(Err(this.error.take().unwrap_or_else(closed)));
                }
            }
        }
    }
}
