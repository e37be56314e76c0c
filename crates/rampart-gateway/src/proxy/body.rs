//! The proxy's response body: the upstream's body streamed through (or an apology), and, for
//! a gRPC call whose status comes in the trailers, the verdict taken there for the breaker and
//! for the balancer's passive ejection.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use rampart_balance::LateOutcome;
use rampart_breaker::BreakerHandle;
use rampart_fallback::FallbackBody;
use rampart_health::{GrpcClassifier, Outcome};

pin_project! {
    /// The proxy's response body (see the [module docs](self)): frames pass through untouched.
    pub struct ProxyBody {
        #[pin]
        inner: FallbackBody<Incoming>,
        verdict: Option<TrailerVerdict>,
    }
}

impl fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyBody")
            .field("inner", &self.inner)
            .field("verdict_pending", &self.verdict.is_some())
            .finish()
    }
}

/// A gRPC call's verdict still to come: recorded with the cluster's breaker, and with the
/// balancer's passive ejection for the endpoint that answered, when the trailers arrive (their
/// `grpc-status`), when the body ends without them (UNKNOWN) or fails (a failure). A body
/// dropped before its end records nothing: the caller went away.
pub(crate) struct TrailerVerdict {
    classifier: GrpcClassifier,
    breaker: BreakerHandle,
    late: Option<LateOutcome>,
}

impl TrailerVerdict {
    pub(crate) fn new(classifier: GrpcClassifier, breaker: BreakerHandle) -> Self {
        Self {
            classifier,
            breaker,
            late: None,
        }
    }

    /// Also records the verdict with the balancer (the answer's [`LateOutcome`], if it has one).
    pub(crate) fn with_late(mut self, late: Option<LateOutcome>) -> Self {
        self.late = late;
        self
    }

    fn record(self, outcome: Outcome) {
        if outcome == Outcome::Ignored {
            return;
        }
        if let Some(late) = &self.late {
            late.record(outcome);
        }
        // The call was admitted when it started; its verdict is counted now. An open breaker
        // has no use for it (it is already failing fast).
        if let Ok(permit) = self.breaker.try_acquire() {
            permit.record(outcome);
        }
    }
}

impl ProxyBody {
    /// A body with no verdict to take.
    pub(crate) fn new(inner: FallbackBody<Incoming>) -> Self {
        Self {
            inner,
            verdict: None,
        }
    }

    /// A body whose trailers decide the breaker's verdict.
    pub(crate) fn with_verdict(inner: FallbackBody<Incoming>, verdict: TrailerVerdict) -> Self {
        Self {
            inner,
            verdict: Some(verdict),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if this.verdict.is_some() {
            let outcome = match &polled {
                Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|t| {
                    this.verdict.as_ref().map_or(Outcome::Ignored, |v| {
                        v.classifier.classify_trailers(Some(t))
                    })
                }),
                Poll::Ready(Some(Err(_))) => Some(Outcome::Failure),
                Poll::Ready(None) => Some(
                    this.verdict
                        .as_ref()
                        .map_or(Outcome::Ignored, |v| v.classifier.classify_trailers(None)),
                ),
                Poll::Pending => None,
            };
            if let Some(outcome) = outcome
                && let Some(verdict) = this.verdict.take()
            {
                verdict.record(outcome);
            }
        }
        polled
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
