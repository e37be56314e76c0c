//! [`ResponseFuture`] of [`StaleIfError`](super::StaleIfError).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;
use rampart_health::{BoxError, Classify};

use super::body::StaleBody;
use super::{RequestInfo, ServiceShared, record};

pin_project! {
    /// The response future of [`StaleIfError`](super::StaleIfError): the inner result, or a
    /// stored copy in place of a failure.
    pub struct ResponseFuture<F, C> {
        #[pin]
        future: F,
        info: Option<RequestInfo>,
        shared: Arc<ServiceShared<C>>,
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(future: F, info: Option<RequestInfo>, shared: Arc<ServiceShared<C>>) -> Self {
        Self {
            future,
            info,
            shared,
        }
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Classify<Response<B>, BoxError>,
    B: http_body::Body<Data = Bytes>,
{
    type Output = Result<Response<StaleBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        let Some(info) = this.info.take() else {
            // Neither GET nor HEAD (or polled again): pass through.
            return Poll::Ready(result.map(|r| r.map(StaleBody::passthrough)));
        };
        let result = match result {
            Ok(resp) if !this.shared.classify.classify(Ok(&resp)).is_failure() => {
                if info.head {
                    return Poll::Ready(Ok(resp.map(StaleBody::passthrough)));
                }
                return Poll::Ready(Ok(record(&this.shared.cache, info, resp)));
            }
            other => other,
        };
        let failed_status = result.as_ref().ok().map(Response::status);
        match this.shared.cache.lookup(&info) {
            Some(stale) => {
                tracing::warn!(
                    target: "rampart_fallback",
                    path = info.key.path(),
                    failed_status = failed_status.map(|s| s.as_u16()),
                    age = ?stale.headers().get(http::header::AGE),
                    "inner service failed; serving a stale copy"
                );
                // The failure (and any body it had) is dropped here.
                drop(result);
                Poll::Ready(Ok(stale))
            }
            None => Poll::Ready(result.map(|r| r.map(StaleBody::passthrough))),
        }
    }
}
