//! The response future of [`HttpEndpoint`](super::HttpEndpoint).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use pin_project_lite::pin_project;
use rampart_health::{BoxError, NeverReached};

use super::error::RequestTimeout;

pin_project! {
    #[project = InnerProj]
    enum Inner {
        Waiting { #[pin] fut: tokio::time::Timeout<hyper_util::client::legacy::ResponseFuture> },
        Pooled { #[pin] fut: tokio::time::Timeout<PooledFuture> },
        Failed { error: Option<BoxError> },
    }
}

/// A request on the endpoint's own HTTP/2 connections (boxed, as hyper-util's own response
/// future is).
pub(crate) type PooledFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, BoxError>> + Send>>;

pin_project! {
    /// Waits for the response head, within the request timeout.
    pub struct ResponseFuture {
        #[pin]
        inner: Inner,
        timeout: Duration,
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ResponseFuture {
    pub(crate) fn new(
        inner: hyper_util::client::legacy::ResponseFuture,
        timeout: Duration,
    ) -> Self {
        Self {
            inner: Inner::Waiting {
                fut: tokio::time::timeout(timeout, inner),
            },
            timeout,
        }
    }

    pub(crate) fn pooled(inner: PooledFuture, timeout: Duration) -> Self {
        Self {
            inner: Inner::Pooled {
                fut: tokio::time::timeout(timeout, inner),
            },
            timeout,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            inner: Inner::Failed { error: Some(error) },
            timeout: Duration::ZERO,
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let fut = match this.inner.project() {
            InnerProj::Waiting { fut } => fut,
            InnerProj::Pooled { fut } => {
                return match fut.poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(result)) => Poll::Ready(result),
                    Poll::Ready(Err(_elapsed)) => {
                        Poll::Ready(Err(Box::new(RequestTimeout::new(*this.timeout))))
                    }
                };
            }
            InnerProj::Failed { error } => {
                return Poll::Ready(Err(error
                    .take()
                    .unwrap_or_else(|| "endpoint future polled after completion".into())));
            }
        };
        match fut.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Ok(response))) => Poll::Ready(Ok(response)),
            Poll::Ready(Ok(Err(e))) => Poll::Ready(Err(map_error(e))),
            Poll::Ready(Err(_elapsed)) => {
                Poll::Ready(Err(Box::new(RequestTimeout::new(*this.timeout))))
            }
        }
    }
}

/// A failed connection attempt (TLS handshakes included) or a refused HTTP/2 stream means the
/// request never reached the backend: mark it so.
pub(crate) fn map_error(e: hyper_util::client::legacy::Error) -> BoxError {
    if rampart_health::transport::is_never_reached_error(&e) {
        Box::new(NeverReached::new().with_source(e))
    } else {
        Box::new(e)
    }
}
