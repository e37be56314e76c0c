//! Outcomes that arrive after the response head: gRPC statuses in the trailers.
//!
//! A gRPC call's outcome is its `grpc-status`. A call that fails before any message answers in
//! Trailers-Only form (the status in the response headers), which the balancer judges when the
//! head arrives. Every other call answers HTTP 200 with no status yet: it comes in the trailers,
//! after the messages. Judged at its head, such an answer looks like a success, and a backend
//! that keeps answering `UNAVAILABLE` in its trailers would never be ejected.
//!
//! A policy that says an answer's outcome is still to come ([`BalancePolicy::defers`]) makes
//! the balancer record only the attempt's latency at the head (the head did arrive: the
//! endpoint's load estimate and the hedge delay learn from it) and hand the response a
//! [`LateOutcome`] ([`BalancePolicy::defer`]; [`HttpPolicy`] puts it in the response's
//! extensions). Whoever reads the body records the final outcome through it, once: passive
//! outlier detection counts it, and a failure weighs in the endpoint's latency estimate as a
//! failure at the head would have.
//!
//! For HTTP responses, [`record_trailers`] wraps the body in a [`GrpcOutcomeBody`] that does
//! it: the trailers' `grpc-status` when they arrive, UNKNOWN (a failure) when the body ends
//! without them, a failure when it fails, and nothing when it is dropped before its end (the
//! caller went away: that says nothing about the server).
//!
//! ```
//! use bytes::Bytes;
//! use http_body::Frame;
//! use http_body_util::{BodyExt, StreamBody};
//! use rampart_balance::{Balance, HttpPolicy, late::record_trailers};
//! use rampart_health::{GrpcClassifier, OutlierConfig};
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A gRPC server answering UNAVAILABLE in its trailers, after an HTTP 200 head.
//! let server = tower::service_fn(|_: http::Request<String>| async {
//!     let mut trailers = http::HeaderMap::new();
//!     trailers.insert("grpc-status", "14".parse().unwrap());
//!     let frames = vec![Ok::<_, std::io::Error>(Frame::<Bytes>::trailers(trailers))];
//!     let body = StreamBody::new(futures_util::stream::iter(frames));
//!     let res = http::Response::builder()
//!         .header("content-type", "application/grpc")
//!         .body(body)
//!         .unwrap();
//!     Ok::<_, std::io::Error>(res)
//! });
//! let mut balance = Balance::builder()
//!     .policy(HttpPolicy::grpc())
//!     .endpoints([("a", server)])
//!     .outlier_detection(
//!         OutlierConfig::builder()
//!             .consecutive_failures(2)
//!             .max_ejection_percent(100.0)
//!             .build()
//!             .unwrap(),
//!     )
//!     .build()
//!     .unwrap();
//! for _ in 0..2 {
//!     let req = http::Request::post("/catalog.v1.Catalog/List")
//!         .header("content-type", "application/grpc")
//!         .body(String::new())
//!         .unwrap();
//!     let res = balance.ready().await.unwrap().call(req).await.unwrap();
//!     // Reading the body to its trailers records UNAVAILABLE: a failure.
//!     let res = record_trailers(res, GrpcClassifier::new());
//!     res.into_body().collect().await.unwrap();
//! }
//! let a = &balance.snapshot().endpoints[0];
//! assert_eq!(a.failures, 2);
//! assert!(a.ejected);
//! # }
//! ```
//!
//! [`BalancePolicy::defers`]: crate::BalancePolicy::defers
//! [`BalancePolicy::defer`]: crate::BalancePolicy::defer
//! [`HttpPolicy`]: crate::HttpPolicy

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use rampart_health::{GrpcClassifier, Outcome};

/// Where a late outcome goes: the endpoint of one attempt in one balancer.
pub(crate) trait LateSink: Send + Sync + 'static {
    /// Records `outcome` (called at most once).
    fn record(&self, outcome: Outcome);
    /// The endpoint's name.
    fn endpoint(&self) -> &str;
}

/// The record's state and its sink, in one allocation (`T` unsized to `dyn LateSink`).
struct Inner<T: ?Sized> {
    recorded: AtomicBool,
    sink: T,
}

/// The outcome of one attempt, still to be recorded with the endpoint that answered (see the
/// [module docs](self)).
///
/// The balancer hands one out for each answer whose outcome its policy defers. Clones share
/// the one record: the first [`record`](Self::record) counts and later ones do nothing. A
/// handle dropped without a record records nothing. A record may come at any time after the
/// attempt ended: it does not touch the endpoint's in-flight count (the attempt released it at
/// the head) nor the hedge delay (which learned the head's latency).
///
/// ```
/// use rampart_balance::{Balance, HttpPolicy, late::LateOutcome};
/// use rampart_health::Outcome;
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // HTTP 200, gRPC, no `grpc-status` yet: the status will come in the trailers.
/// let server = tower::service_fn(|_: http::Request<String>| async {
///     let res = http::Response::builder()
///         .header("content-type", "application/grpc")
///         .body(())
///         .unwrap();
///     Ok::<_, std::io::Error>(res)
/// });
/// let mut balance = Balance::builder()
///     .policy(HttpPolicy::grpc())
///     .endpoints([("a", server)])
///     .build()
///     .unwrap();
/// let req = http::Request::post("/catalog.v1.Catalog/List").body(String::new()).unwrap();
/// let res = balance.ready().await.unwrap().call(req).await.unwrap();
/// let late = res.extensions().get::<LateOutcome>().unwrap().clone();
/// assert_eq!(late.endpoint(), "a");
/// assert!(late.record(Outcome::Failure));
/// assert!(!late.record(Outcome::Success), "recorded once");
/// assert_eq!(balance.snapshot().endpoints[0].failures, 1);
/// # }
/// ```
#[derive(Clone)]
pub struct LateOutcome {
    inner: Arc<Inner<dyn LateSink>>,
}

impl LateOutcome {
    pub(crate) fn new<T: LateSink>(sink: T) -> Self {
        let inner: Arc<Inner<dyn LateSink>> = Arc::new(Inner {
            recorded: AtomicBool::new(false),
            sink,
        });
        Self { inner }
    }

    /// Records the attempt's outcome; `true` when this call recorded it, `false` when it had
    /// been recorded already (by this handle or a clone). [`Outcome::Ignored`] uses up the
    /// record and counts for nothing.
    pub fn record(&self, outcome: Outcome) -> bool {
        if self.inner.recorded.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.inner.sink.record(outcome);
        true
    }

    /// Whether the outcome has been recorded.
    pub fn is_recorded(&self) -> bool {
        self.inner.recorded.load(Ordering::Acquire)
    }

    /// The name of the endpoint that answered.
    pub fn endpoint(&self) -> &str {
        self.inner.sink.endpoint()
    }
}

impl fmt::Debug for LateOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LateOutcome")
            .field("endpoint", &self.endpoint())
            .field("recorded", &self.is_recorded())
            .finish()
    }
}

pin_project! {
    /// A response body that records a gRPC call's final outcome with the balancer (see
    /// [`record_trailers`]). Frames pass through untouched.
    pub struct GrpcOutcomeBody<B> {
        #[pin]
        body: B,
        late: Option<LateOutcome>,
        classifier: GrpcClassifier,
    }
}

impl<B: fmt::Debug> fmt::Debug for GrpcOutcomeBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcOutcomeBody")
            .field("body", &self.body)
            .field("pending", &self.late.is_some())
            .finish()
    }
}

impl<B: Body> GrpcOutcomeBody<B> {
    /// Wraps `body` so that `late` (if any) receives the outcome `classifier` reads at its end.
    /// A body already at its end (no trailers to come) records UNKNOWN at once.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Empty;
    /// use rampart_balance::late::GrpcOutcomeBody;
    /// use rampart_health::GrpcClassifier;
    ///
    /// // Without a late outcome to record, the body only passes through.
    /// let body = GrpcOutcomeBody::new(Empty::<Bytes>::new(), None, GrpcClassifier::new());
    /// assert!(!body.is_pending());
    /// ```
    pub fn new(body: B, late: Option<LateOutcome>, classifier: GrpcClassifier) -> Self {
        let mut late = late;
        if body.is_end_stream()
            && let Some(l) = late.take()
        {
            l.record(classifier.classify_trailers(None));
        }
        Self {
            body,
            late,
            classifier,
        }
    }
}

impl<B> GrpcOutcomeBody<B> {
    /// Whether an outcome is still to be recorded.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use rampart_balance::late::GrpcOutcomeBody;
    /// use rampart_health::GrpcClassifier;
    ///
    /// let body = GrpcOutcomeBody::new(Full::new(Bytes::from_static(b"hi")), None, GrpcClassifier::new());
    /// assert!(!body.is_pending());
    /// let _inner: &Full<Bytes> = body.get_ref();
    /// ```
    pub fn is_pending(&self) -> bool {
        self.late.is_some()
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.body
    }

    /// The wrapped body, and the outcome still to record (if any).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use rampart_balance::late::GrpcOutcomeBody;
    /// use rampart_health::GrpcClassifier;
    ///
    /// let body = GrpcOutcomeBody::new(Full::new(Bytes::new()), None, GrpcClassifier::new());
    /// let (_inner, late) = body.into_parts();
    /// assert!(late.is_none());
    /// ```
    pub fn into_parts(self) -> (B, Option<LateOutcome>) {
        (self.body, self.late)
    }
}

impl<B: Body> Body for GrpcOutcomeBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if this.late.is_some() {
            let outcome = match &polled {
                Poll::Ready(Some(Ok(frame))) => frame
                    .trailers_ref()
                    .map(|t| this.classifier.classify_trailers(Some(t))),
                Poll::Ready(Some(Err(_))) => Some(Outcome::Failure),
                Poll::Ready(None) => Some(this.classifier.classify_trailers(None)),
                Poll::Pending => None,
            };
            if let Some(outcome) = outcome
                && let Some(late) = this.late.take()
            {
                late.record(outcome);
            }
        }
        polled
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Takes the [`LateOutcome`] out of `response`'s extensions (if the balancer put one there)
/// and wraps the body so that it records the call's final outcome as `classifier` reads it from
/// the trailers (see the [module docs](self) for a full example). A response without one
/// passes through unchanged but for the wrapper.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use rampart_balance::late::record_trailers;
/// use rampart_health::GrpcClassifier;
///
/// let res = http::Response::new(Full::new(Bytes::from_static(b"\0\0\0\0\0")));
/// let res = record_trailers(res, GrpcClassifier::new());
/// assert!(!res.body().is_pending());
/// ```
pub fn record_trailers<B: Body>(
    mut response: http::Response<B>,
    classifier: GrpcClassifier,
) -> http::Response<GrpcOutcomeBody<B>> {
    let late = response.extensions_mut().remove::<LateOutcome>();
    response.map(|body| GrpcOutcomeBody::new(body, late, classifier))
}
