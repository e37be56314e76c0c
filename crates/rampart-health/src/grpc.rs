//! gRPC outcome classification: [`GrpcClassifier`], [`GrpcCode`] and [`GrpcBody`].
//!
//! A gRPC call's outcome is its `grpc-status`, which travels either in the response headers
//! (a *Trailers-Only* response: the call failed before any message, as proxies and Rampart's
//! own apology answer) or in the trailers at the end of the body. [`GrpcClassifier`] reads
//! both:
//!
//! - as a [`Classify`] of the response head (what the breaker and the balancer ask when the
//!   head arrives): a Trailers-Only status is judged at once; a non-200 HTTP status is mapped
//!   to a gRPC code as gRPC's HTTP-to-gRPC status mapping says (429, 502, 503, 504 →
//!   UNAVAILABLE, …); a response whose status is still to come in the trailers is a
//!   provisional success;
//! - at the end of the stream, through [`GrpcBody`] ([`GrpcClassifier::wrap_body`]): the body
//!   is passed through untouched and a callback receives the final outcome once, when the
//!   trailers arrive, when the body ends without them (UNKNOWN: a failure), when it fails (a
//!   failure), or, if it is dropped before its end, [`Outcome::Ignored`] (the caller went
//!   away; that says nothing about the server).
//!
//! Defaults follow gRPC's retry and health documents: UNAVAILABLE, DEADLINE_EXCEEDED,
//! INTERNAL, UNKNOWN and DATA_LOSS are failures; RESOURCE_EXHAUSTED is a success unless
//! [`GrpcClassifier::resource_exhausted_is_failure`] says otherwise; every other code (the
//! caller's mistakes such as INVALID_ARGUMENT or NOT_FOUND) is a success. Any code can be
//! reconfigured with [`GrpcClassifier::code_is_failure`].
//!
//! ```
//! use rampart_health::{Classify, GrpcClassifier, GrpcCode, Outcome};
//!
//! let classify = GrpcClassifier::new();
//! let trailers_only = http::Response::builder()
//!     .header("content-type", "application/grpc")
//!     .header("grpc-status", "14")
//!     .body(())
//!     .unwrap();
//! assert_eq!(classify.classify(Ok::<_, &std::io::Error>(&trailers_only)), Outcome::Failure);
//! assert_eq!(classify.classify_code(GrpcCode::NotFound), Outcome::Success);
//! let strict = classify.code_is_failure(GrpcCode::NotFound, true);
//! assert_eq!(strict.classify_code(GrpcCode::NotFound), Outcome::Failure);
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{Classify, Outcome};

/// The `grpc-status` header (or trailer).
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-message` header (or trailer).
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// The `grpc-retry-pushback-ms` trailer: how long a client should wait before retrying (a
/// negative value: do not retry).
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// A gRPC status code (the 17 codes of gRPC's `statuscodes.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    const ALL: [GrpcCode; 17] = [
        GrpcCode::Ok,
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    /// The code for a number; numbers outside 0..=16 are UNKNOWN (as gRPC says).
    pub fn from_u32(n: u32) -> Self {
        Self::ALL
            .get(n as usize)
            .copied()
            .unwrap_or(GrpcCode::Unknown)
    }

    /// Parses a `grpc-status` value (ASCII digits); anything else is UNKNOWN.
    pub fn from_bytes(value: &[u8]) -> Self {
        if value.is_empty() || value.len() > 3 {
            return GrpcCode::Unknown;
        }
        let mut n: u32 = 0;
        for b in value {
            if !b.is_ascii_digit() {
                return GrpcCode::Unknown;
            }
            n = n * 10 + u32::from(b - b'0');
        }
        Self::from_u32(n)
    }

    /// The code's number.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The code for a non-200 HTTP status, per gRPC's "HTTP to gRPC status code mapping".
    pub fn from_http_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => GrpcCode::Internal,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::Unimplemented,
            429 | 502 | 503 | 504 => GrpcCode::Unavailable,
            _ => GrpcCode::Unknown,
        }
    }

    /// The canonical name, such as `UNAVAILABLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcCode::Ok => "OK",
            GrpcCode::Cancelled => "CANCELLED",
            GrpcCode::Unknown => "UNKNOWN",
            GrpcCode::InvalidArgument => "INVALID_ARGUMENT",
            GrpcCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            GrpcCode::NotFound => "NOT_FOUND",
            GrpcCode::AlreadyExists => "ALREADY_EXISTS",
            GrpcCode::PermissionDenied => "PERMISSION_DENIED",
            GrpcCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            GrpcCode::FailedPrecondition => "FAILED_PRECONDITION",
            GrpcCode::Aborted => "ABORTED",
            GrpcCode::OutOfRange => "OUT_OF_RANGE",
            GrpcCode::Unimplemented => "UNIMPLEMENTED",
            GrpcCode::Internal => "INTERNAL",
            GrpcCode::Unavailable => "UNAVAILABLE",
            GrpcCode::DataLoss => "DATA_LOSS",
            GrpcCode::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `true` when `headers` say the message is gRPC (`content-type: application/grpc`, with or
/// without a `+proto`/`+json` suffix or parameters).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

fn is_grpc_content_type(v: &[u8]) -> bool {
    const P: &[u8] = b"application/grpc";
    v.len() >= P.len()
        && v[..P.len()].eq_ignore_ascii_case(P)
        && matches!(v.get(P.len()), None | Some(b'+' | b';' | b' '))
}

/// What a server's `grpc-retry-pushback-ms` asks of a client's retry (gRPC's retry design,
/// A6): wait this long before the next attempt, or do not retry at all (a negative value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryPushback {
    /// Retry no sooner than this.
    After(std::time::Duration),
    /// Do not retry this call.
    DoNotRetry,
}

impl RetryPushback {
    /// Reads `grpc-retry-pushback-ms` from headers or trailers; `None` when absent or not a
    /// decimal integer (then the client's own backoff applies).
    ///
    /// ```
    /// use std::time::Duration;
    /// use rampart_health::grpc::RetryPushback;
    ///
    /// let mut h = http::HeaderMap::new();
    /// assert_eq!(RetryPushback::from_headers(&h), None);
    /// h.insert("grpc-retry-pushback-ms", "1500".parse().unwrap());
    /// assert_eq!(RetryPushback::from_headers(&h), Some(RetryPushback::After(Duration::from_millis(1500))));
    /// h.insert("grpc-retry-pushback-ms", "-1".parse().unwrap());
    /// assert_eq!(RetryPushback::from_headers(&h), Some(RetryPushback::DoNotRetry));
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let v = headers.get(GRPC_RETRY_PUSHBACK_MS)?.to_str().ok()?.trim();
        if let Some(rest) = v.strip_prefix('-') {
            return rest.parse::<u64>().ok().map(|_| RetryPushback::DoNotRetry);
        }
        v.parse::<u64>()
            .ok()
            .map(|ms| RetryPushback::After(std::time::Duration::from_millis(ms)))
    }
}

/// The gRPC classifier (see the [module docs](self)).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    /// Bit `n` set: code `n` is a failure.
    failures: u32,
}

impl fmt::Debug for GrpcClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failing: Vec<&str> = GrpcCode::ALL
            .iter()
            .filter(|c| self.failures & (1 << c.as_u32()) != 0)
            .map(|c| c.as_str())
            .collect();
        f.debug_struct("GrpcClassifier")
            .field("failures", &failing)
            .finish()
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

const fn bit(code: GrpcCode) -> u32 {
    1 << (code as u32)
}

impl GrpcClassifier {
    /// UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN and DATA_LOSS fail; the rest succeed.
    pub const fn new() -> Self {
        Self {
            failures: bit(GrpcCode::Unavailable)
                | bit(GrpcCode::DeadlineExceeded)
                | bit(GrpcCode::Internal)
                | bit(GrpcCode::Unknown)
                | bit(GrpcCode::DataLoss),
        }
    }

    /// Whether RESOURCE_EXHAUSTED (a server shedding load, or a quota) is a failure (default
    /// `false`).
    pub const fn resource_exhausted_is_failure(self, yes: bool) -> Self {
        self.code_is_failure(GrpcCode::ResourceExhausted, yes)
    }

    /// Whether `code` is a failure.
    pub const fn code_is_failure(mut self, code: GrpcCode, yes: bool) -> Self {
        if yes {
            self.failures |= bit(code);
        } else {
            self.failures &= !bit(code);
        }
        self
    }

    /// Classifies a code.
    #[inline]
    pub fn classify_code(&self, code: GrpcCode) -> Outcome {
        if self.failures & bit(code) != 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    /// The outcome carried by a header map (`grpc-status`), or `None` when it has none.
    #[inline]
    pub fn classify_headers(&self, headers: &HeaderMap) -> Option<Outcome> {
        headers
            .get(GRPC_STATUS)
            .map(|v| self.classify_code(GrpcCode::from_bytes(v.as_bytes())))
    }

    /// The final outcome of a stream from its trailers: `grpc-status` if present, else (no
    /// trailers, or trailers without a status) UNKNOWN.
    pub fn classify_trailers(&self, trailers: Option<&HeaderMap>) -> Outcome {
        trailers
            .and_then(|t| self.classify_headers(t))
            .unwrap_or_else(|| self.classify_code(GrpcCode::Unknown))
    }

    /// Classifies a response head: HTTP status, then a Trailers-Only `grpc-status`; `None`
    /// when the outcome is only known at the end of the body.
    pub fn classify_head<B>(&self, response: &http::Response<B>) -> Option<Outcome> {
        if response.status() != StatusCode::OK {
            return Some(self.classify_code(GrpcCode::from_http_status(response.status())));
        }
        self.classify_headers(response.headers())
    }

    /// Wraps a response body so that `on_outcome` receives the call's final outcome exactly
    /// once (see the [module docs](self)).
    pub fn wrap_body<B, F>(&self, body: B, on_outcome: F) -> GrpcBody<B, F>
    where
        F: FnOnce(Outcome),
    {
        GrpcBody {
            body,
            guard: Guard {
                classifier: *self,
                on_outcome: Some(on_outcome),
            },
        }
    }
}

impl<B, E> Classify<http::Response<B>, E> for GrpcClassifier {
    #[inline]
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        match result {
            // Transport errors are failures, as for HTTP.
            Err(_) => Outcome::Failure,
            // Status still to come in the trailers: provisionally a success (see `wrap_body`).
            Ok(response) => self.classify_head(response).unwrap_or(Outcome::Success),
        }
    }
}

struct Guard<F: FnOnce(Outcome)> {
    classifier: GrpcClassifier,
    on_outcome: Option<F>,
}

impl<F: FnOnce(Outcome)> Guard<F> {
    fn report(&mut self, outcome: Outcome) {
        if let Some(f) = self.on_outcome.take() {
            f(outcome);
        }
    }
}

impl<F: FnOnce(Outcome)> Drop for Guard<F> {
    fn drop(&mut self) {
        // Dropped before its end: the caller went away.
        self.report(Outcome::Ignored);
    }
}

pin_project! {
    /// A response body that reports the gRPC call's final outcome; see
    /// [`GrpcClassifier::wrap_body`].
    pub struct GrpcBody<B, F: FnOnce(Outcome)> {
        #[pin]
        body: B,
        guard: Guard<F>,
    }
}

impl<B: fmt::Debug, F: FnOnce(Outcome)> fmt::Debug for GrpcBody<B, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcBody")
            .field("body", &self.body)
            .field("reported", &self.guard.on_outcome.is_none())
            .finish()
    }
}

impl<B, F> GrpcBody<B, F>
where
    F: FnOnce(Outcome),
{
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.body
    }
}

impl<B, F> Body for GrpcBody<B, F>
where
    B: Body,
    F: FnOnce(Outcome),
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let outcome = this.guard.classifier.classify_trailers(Some(trailers));
                    this.guard.report(outcome);
                }
            }
            Poll::Ready(Some(Err(_))) => this.guard.report(Outcome::Failure),
            Poll::Ready(None) => {
                let outcome = this.guard.classifier.classify_trailers(None);
                this.guard.report(outcome);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;

    fn head(status: u16, grpc_status: Option<&str>) -> http::Response<()> {
        let mut b = http::Response::builder()
            .status(status)
            .header("content-type", "application/grpc");
        if let Some(s) = grpc_status {
            b = b.header("grpc-status", s);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn default_codes() {
        let c = GrpcClassifier::new();
        for code in GrpcCode::ALL {
            let expected = matches!(
                code,
                GrpcCode::Unavailable
                    | GrpcCode::DeadlineExceeded
                    | GrpcCode::Internal
                    | GrpcCode::Unknown
                    | GrpcCode::DataLoss
            );
            assert_eq!(c.classify_code(code).is_failure(), expected, "{code}");
        }
        assert!(
            c.resource_exhausted_is_failure(true)
                .classify_code(GrpcCode::ResourceExhausted)
                .is_failure()
        );
        assert!(
            c.code_is_failure(GrpcCode::Unavailable, false)
                .classify_code(GrpcCode::Unavailable)
                .is_success()
        );
    }

    #[test]
    fn trailers_only_head_is_judged_at_once() {
        let c = GrpcClassifier::new();
        let ok = |r: &http::Response<()>| c.classify(Ok::<_, &()>(r));
        assert_eq!(ok(&head(200, Some("14"))), Outcome::Failure);
        assert_eq!(ok(&head(200, Some("5"))), Outcome::Success);
        assert_eq!(ok(&head(200, Some("0"))), Outcome::Success);
        assert_eq!(ok(&head(200, Some("garbage"))), Outcome::Failure); // UNKNOWN
        assert_eq!(ok(&head(200, None)), Outcome::Success); // provisional
        assert_eq!(ok(&head(503, None)), Outcome::Failure); // UNAVAILABLE
        assert_eq!(ok(&head(404, None)), Outcome::Success); // UNIMPLEMENTED
        assert_eq!(
            Classify::<http::Response<()>, ()>::classify(&c, Err(&())),
            Outcome::Failure
        );
    }

    #[test]
    fn codes_parse() {
        assert_eq!(GrpcCode::from_bytes(b"14"), GrpcCode::Unavailable);
        assert_eq!(GrpcCode::from_bytes(b"99"), GrpcCode::Unknown);
        assert_eq!(GrpcCode::from_bytes(b""), GrpcCode::Unknown);
        assert_eq!(GrpcCode::from_u32(16), GrpcCode::Unauthenticated);
        assert_eq!(GrpcCode::Unavailable.to_string(), "UNAVAILABLE");
    }

    #[test]
    fn content_type_detection() {
        let mut h = HeaderMap::new();
        for (v, yes) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC; charset=x", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert(http::header::CONTENT_TYPE, v.parse().unwrap());
            assert_eq!(is_grpc(&h), yes, "{v}");
        }
    }

    fn recorder() -> (Arc<Mutex<Vec<Outcome>>>, impl FnOnce(Outcome)) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (seen, move |o| s.lock().unwrap().push(o))
    }

    /// A body of one data frame and, optionally, trailers with a `grpc-status`.
    struct TestBody(std::collections::VecDeque<Frame<Bytes>>);

    impl Body for TestBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }
    }

    fn frames(trailer_status: Option<&'static str>) -> TestBody {
        let mut v = std::collections::VecDeque::new();
        v.push_back(Frame::data(Bytes::from_static(b"\0\0\0\0\0")));
        if let Some(s) = trailer_status {
            let mut t = HeaderMap::new();
            t.insert(GRPC_STATUS, s.parse().unwrap());
            v.push_back(Frame::trailers(t));
        }
        TestBody(v)
    }

    #[tokio::test]
    async fn trailers_decide_at_the_end() {
        let c = GrpcClassifier::new();
        let (seen, f) = recorder();
        let body = c.wrap_body(frames(Some("13")), f);
        let collected = body.collect().await.unwrap();
        assert!(collected.trailers().is_some());
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Failure]);

        let (seen, f) = recorder();
        c.wrap_body(frames(Some("0")), f).collect().await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Success]);

        // Ended without a status: UNKNOWN, a failure.
        let (seen, f) = recorder();
        c.wrap_body(frames(None), f).collect().await.unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Failure]);
    }

    #[tokio::test]
    async fn dropped_early_is_ignored_and_reported_once() {
        let c = GrpcClassifier::new();
        let (seen, f) = recorder();
        let mut body = c.wrap_body(Full::new(Bytes::from_static(b"x")), f);
        let _ = body.frame().await;
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Ignored]);

        let (seen, f) = recorder();
        let body = c.wrap_body(frames(Some("0")), f);
        drop(body);
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Ignored]);
    }
}
