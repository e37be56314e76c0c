//! The response future of [`ReplayBodyService`](super::ReplayBodyService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Body;
use http_body_util::combinators::Collect;
use pin_project_lite::pin_project;
use rampart_health::BoxError;
use tower_service::Service;

use super::ReplayBody;
use super::error::{ClosedBeforeResponse, closed_before_response};

pin_project! {
    #[project = StateProj]
    enum State<S, B, F>
    where
        B: Body,
    {
        Collecting { #[pin] collect: Collect<B>, parts: Option<http::request::Parts>, svc: Option<S> },
        Calling { #[pin] fut: F },
        // A streamed body: sent once; a connection that closes before the answer is reported
        // as `ClosedBeforeResponse`.
        Streaming { #[pin] fut: F },
    }
}

pin_project! {
    /// Collects a qualifying body, then calls the inner service.
    pub struct ResponseFuture<S, B>
    where
        S: Service<http::Request<ReplayBody<B>>>,
        B: Body,
    {
        #[pin]
        state: State<S, B, S::Future>,
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<http::Request<ReplayBody<B>>>,
    B: Body,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<http::Request<ReplayBody<B>>>,
    B: Body,
{
    pub(crate) fn calling(fut: S::Future) -> Self {
        Self {
            state: State::Calling { fut },
        }
    }

    pub(crate) fn streaming(fut: S::Future) -> Self {
        Self {
            state: State::Streaming { fut },
        }
    }

    pub(crate) fn collecting(collect: Collect<B>, parts: http::request::Parts, svc: S) -> Self {
        Self {
            state: State::Collecting {
                collect,
                parts: Some(parts),
                svc: Some(svc),
            },
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<http::Request<ReplayBody<B>>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Collecting {
                    collect,
                    parts,
                    svc,
                } => {
                    let collected = ready!(collect.poll(cx)).map_err(Into::into)?;
                    let (Some(parts), Some(mut svc)) = (parts.take(), svc.take()) else {
                        return Poll::Ready(Err("replay future polled after completion".into()));
                    };
                    let req = http::Request::from_parts(
                        parts,
                        ReplayBody::buffered(collected.to_bytes()),
                    );
                    // `svc` was driven to readiness by the caller before `call`.
                    let fut = svc.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Streaming { fut } => {
                    return fut.poll(cx).map_err(|e| {
                        let e: BoxError = e.into();
                        if closed_before_response(&*e) {
                            Box::new(ClosedBeforeResponse::new(e)) as BoxError
                        } else {
                            e
                        }
                    });
                }
            }
        }
    }
}
