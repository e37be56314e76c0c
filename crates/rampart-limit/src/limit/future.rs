//! The response future of [`Limit`](super::Limit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use rampart_health::{BoxError, Classify};
use tokio::sync::oneshot;
use tower_service::Service;

use crate::Overloaded;
use crate::limiter::{Limiter, Permit};

pin_project! {
    /// The future of a call through a [`Limit`](super::Limit): the inner call holding its
    /// [`Permit`], a call waiting in the queue, a bypassing call, or an immediate
    /// [`Overloaded`] error.
    ///
    /// Completed, the call's round-trip time and outcome feed the limit; dropped, it returns
    /// its slot (or leaves the queue) without a measurement.
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S::Future, S, Req, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, S, Req, C> {
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
            classify: C,
        },
        Bypass {
            #[pin]
            future: F,
        },
        Queued {
            waiting: Box<Waiting<S, Req>>,
            classify: C,
        },
        Rejected {
            error: Option<Overloaded>,
        },
    }
}

/// A call waiting for a slot (boxed: the queue is the slow path).
struct Waiting<S, Req> {
    rx: oneshot::Receiver<Permit>,
    service: Option<S>,
    req: Option<Req>,
    limiter: Limiter,
    class: usize,
    /// The longest wait the queue allows; CoDel usually drops the call sooner.
    timeout: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S, Req, C> ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    pub(crate) fn called(future: S::Future, permit: Permit, classify: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classify,
            },
        }
    }

    pub(crate) fn bypass(future: S::Future) -> Self {
        Self {
            kind: Kind::Bypass { future },
        }
    }

    pub(crate) fn rejected(error: Overloaded) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn queued(
        rx: oneshot::Receiver<Permit>,
        service: S,
        req: Req,
        limiter: Limiter,
        class: usize,
        classify: C,
    ) -> Self {
        let timeout = limiter
            .queue_interval()
            .map(|d| Box::pin(tokio::time::sleep(d)));
        Self {
            kind: Kind::Queued {
                waiting: Box::new(Waiting {
                    rx,
                    service: Some(service),
                    req: Some(req),
                    limiter,
                    class,
                    timeout,
                }),
                classify,
            },
        }
    }
}

impl<S, Req, C> fmt::Debug for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Bypass { .. } => "bypass",
            Kind::Queued { .. } => "queued",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                KindProj::Called {
                    future,
                    permit,
                    classify,
                } => {
                    let result = ready!(future.poll(cx));
                    if let Some(permit) = permit.take() {
                        permit.record(classify.classify(result.as_ref()));
                    }
                    return Poll::Ready(result.map_err(Into::into));
                }
                KindProj::Bypass { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                KindProj::Rejected { error } => {
                    return Poll::Ready(Err(match error.take() {
                        Some(e) => e.into(),
                        None => BoxError::from("limit response future polled after completion"),
                    }));
                }
                KindProj::Queued { waiting, classify } => {
                    let w = &mut **waiting;
                    match Pin::new(&mut w.rx).poll(cx) {
                        Poll::Ready(Ok(permit)) => {
                            let (Some(mut service), Some(req)) = (w.service.take(), w.req.take())
                            else {
                                return Poll::Ready(Err(BoxError::from(
                                    "limit response future polled after completion",
                                )));
                            };
                            let future = service.call(req);
                            let classify = classify.clone();
                            kind.set(Kind::Called {
                                future,
                                permit: Some(permit),
                                classify,
                            });
                        }
                        Poll::Ready(Err(_)) => {
                            // The queue dropped us (CoDel or eviction) and counted it.
                            let e = w.limiter.dropped_from_queue(w.class);
                            kind.set(Kind::Rejected { error: None });
                            return Poll::Ready(Err(e.into()));
                        }
                        Poll::Pending => {
                            let timed_out = w
                                .timeout
                                .as_mut()
                                .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                            if !timed_out {
                                return Poll::Pending;
                            }
                            let e = w.limiter.shed_timed_out(w.class);
                            // Dropping the receiver returns a permit sent meanwhile.
                            kind.set(Kind::Rejected { error: None });
                            return Poll::Ready(Err(e.into()));
                        }
                    }
                }
            }
        }
    }
}
