//! [`ResponseFuture`] of [`Fallback`](super::Fallback).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http::header::RETRY_AFTER;
use pin_project_lite::pin_project;
use rampart_health::{
    BoxError, Classify, DeadlineExceeded, find_in_chain, is_never_reached, retry_after,
};

use super::handler::{Apologize, Captured, Trigger, retry_after_secs};
use super::{ErrorChain, Shared, apologize};
use crate::body::FallbackBody;

pin_project! {
    /// The response future of [`Fallback`](super::Fallback): the inner response, or the
    /// apology. Never fails.
    pub struct ResponseFuture<F, H, C> {
        #[pin]
        kind: Kind<F>,
        captured: Option<Captured>,
        shared: Arc<Shared<H, C>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Failed { error: Option<BoxError> },
    }
}

impl<F, H, C> std::fmt::Debug for ResponseFuture<F, H, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("captured", &self.captured)
            .finish_non_exhaustive()
    }
}

impl<F, H, C> ResponseFuture<F, H, C> {
    pub(crate) fn new(future: F, captured: Captured, shared: Arc<Shared<H, C>>) -> Self {
        Self {
            kind: Kind::Inner { future },
            captured: Some(captured),
            shared,
        }
    }

    pub(crate) fn failed(error: BoxError, captured: Captured, shared: Arc<Shared<H, C>>) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
            captured: Some(captured),
            shared,
        }
    }
}

impl<F, H, C, B, E> Future for ResponseFuture<F, H, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    H: Apologize,
    C: Classify<Response<B>, BoxError>,
    B: http_body::Body<Data = Bytes>,
{
    type Output = Result<Response<FallbackBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let error: BoxError = match this.kind.project() {
            KindProj::Inner { future } => match future.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(resp)) => {
                    if resp.extensions().get::<super::Apologized>().is_some()
                        || !this.shared.classify.classify(Ok(&resp)).is_failure()
                    {
                        return Poll::Ready(Ok(resp.map(FallbackBody::inner)));
                    }
                    let Some(captured) = this.captured.take() else {
                        // Polled after completion; answer with the failed response itself
                        // rather than panic.
                        return Poll::Ready(Ok(resp.map(FallbackBody::inner)));
                    };
                    let status = resp.status();
                    let upstream = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        // Never 0, like every other source: a client told "retry after 0"
                        // retries in a tight loop.
                        .map(|secs| secs.max(1));
                    let after = upstream.or(this.shared.retry_after);
                    match this.shared.log_gate.warn() {
                        Some(suppressed) => tracing::warn!(
                            target: "rampart_fallback",
                            status = status.as_u16(),
                            method = %captured.method,
                            path = captured.uri.path(),
                            retry_after_secs = after,
                            more_since_last_warning = suppressed,
                            "inner service answered with a failure status; serving the apology"
                        ),
                        None => tracing::debug!(
                            target: "rampart_fallback",
                            status = status.as_u16(),
                            method = %captured.method,
                            path = captured.uri.path(),
                            retry_after_secs = after,
                            "inner service answered with a failure status; serving the apology"
                        ),
                    }
                    // The failed response (and its body) is dropped here: nothing of it
                    // reaches the client.
                    drop(resp);
                    return Poll::Ready(Ok(apologize(
                        this.shared,
                        captured,
                        Trigger::Status(status),
                        after,
                    )));
                }
                Poll::Ready(Err(e)) => e.into(),
            },
            KindProj::Failed { error } => match error.take() {
                Some(e) => e,
                None => BoxError::from("inner service not ready"),
            },
        };
        let never_reached = is_never_reached(&*error);
        // The caller's deadline passed: a timeout, not a capacity problem, so 504 and no
        // Retry-After (coming back later would not have helped this request).
        let deadline = find_in_chain::<DeadlineExceeded>(&*error).is_some();
        let after = if deadline {
            None
        } else {
            retry_after(&*error)
                .map(retry_after_secs)
                .or(this.shared.retry_after)
        };
        let captured = match this.captured.take() {
            Some(c) => c,
            None => Captured {
                method: http::Method::GET,
                uri: http::Uri::from_static("/"),
                accept: None,
                request_id: None,
                grpc: false,
            },
        };
        match this.shared.log_gate.warn() {
            Some(suppressed) => tracing::warn!(
                target: "rampart_fallback",
                error = %ErrorChain(&*error),
                never_reached,
                method = %captured.method,
                path = captured.uri.path(),
                retry_after_secs = after,
                more_since_last_warning = suppressed,
                "inner service failed; serving the apology"
            ),
            None => tracing::debug!(
                target: "rampart_fallback",
                error = %ErrorChain(&*error),
                never_reached,
                method = %captured.method,
                path = captured.uri.path(),
                retry_after_secs = after,
                "inner service failed; serving the apology"
            ),
        }
        let grpc = captured.grpc;
        let mut resp = apologize(
            this.shared,
            captured,
            Trigger::Error { never_reached },
            after,
        );
        if deadline && !grpc {
            *resp.status_mut() = http::StatusCode::GATEWAY_TIMEOUT;
        }
        Poll::Ready(Ok(resp))
    }
}
