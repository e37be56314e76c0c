//! Per-request policy: what may be replayed, what is retried, the hash key, the classifier.
//!
//! A [`BalancePolicy`] answers the request-specific questions the balancer cannot answer for
//! a generic request type:
//!
//! - can this request be replayed on another endpoint ([`BalancePolicy::clone_request`])?
//! - is this error or response worth a retry elsewhere?
//! - what is the consistent-hashing key?
//! - what does a result mean for the endpoint's health (a [`Classify`])?
//!
//! [`HttpPolicy`] is the HTTP answer: requests whose body is replayable ([`ReplayableBody`],
//! e.g. a [`ReplayBody`](crate::ReplayBody) buffered by [`ReplayBodyLayer`](crate::ReplayBodyLayer))
//! are retried when they never reached an endpoint; idempotent methods (RFC 9110 §9.2.2) and
//! requests carrying an `Idempotency-Key` header are also retried on 502, 503, 504, on a 429
//! that carries `Retry-After`, and on transport errors after the request left (a reset before
//! the response). Its [`BalancePolicy::backoff`] reads backpressure from responses
//! ([`http_backoff`]) and its [`BalancePolicy::deadline`] is the request's
//! [`Deadline`] extension. [`ServicePolicy`]
//! serves any `Clone` request type.
//!
//! ```
//! use rampart_balance::{BalancePolicy, HttpPolicy};
//! let policy = HttpPolicy::new();
//! let req = http::Request::get("/").body(String::new()).unwrap();
//! let res = http::Response::builder().status(503).body(()).unwrap();
//! assert!(policy.retry_response(&req, &res));
//! let post = http::Request::post("/").body(String::new()).unwrap();
//! assert!(!policy.retry_response(&post, &res));
//! ```

use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, StatusCode};
use http_body_util::{Empty, Full};
use rampart_health::grpc::{GRPC_STATUS, RetryPushback, is_grpc};
use rampart_health::{
    BoxError, Classify, Deadline, FnClassify, GrpcClassifier, HttpClassifier, Outcome,
    is_never_reached,
};

use crate::endpoint::ServedBy;
use crate::late::LateOutcome;

/// The request-specific decisions of a [`Balance`](crate::Balance).
pub trait BalancePolicy<Req, Res>: Send + Sync + 'static {
    /// A copy of `req` for another attempt, or `None` when it cannot be replayed (then it is
    /// never retried). Called once per request (and once per retry), only when retries are on.
    fn clone_request(&self, req: &Req) -> Option<Req>;

    /// Whether an error from an endpoint is worth a retry elsewhere (default: only when the
    /// request never reached the endpoint, [`rampart_health::NeverReached`] in the chain).
    fn retry_error(&self, req: &Req, error: &BoxError) -> bool {
        let _ = req;
        is_never_reached(&**error)
    }

    /// Whether a response is worth a retry elsewhere (default: never).
    fn retry_response(&self, req: &Req, response: &Res) -> bool {
        let _ = (req, response);
        false
    }

    /// The consistent-hashing key (only asked when the picker hashes).
    fn hash_key(&self, req: &Req) -> Option<u64> {
        let _ = req;
        None
    }

    /// What the result means for the endpoint's health (fed to passive outlier detection).
    /// Not asked for a response whose outcome is [deferred](Self::defers).
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome;

    /// Whether the outcome of `response` is still to come (a gRPC answer whose `grpc-status`
    /// will arrive in the trailers). The balancer then records only the attempt's latency at
    /// the head and hands the response a [`LateOutcome`] through [`defer`](Self::defer); the
    /// outcome counts when it is recorded there (see [`late`](crate::late)). Default: never
    /// (every outcome is judged at the head by [`classify`](Self::classify)).
    ///
    /// ```
    /// use rampart_balance::{BalancePolicy, HttpPolicy};
    /// let streaming = http::Response::builder()
    ///     .header("content-type", "application/grpc")
    ///     .body(())
    ///     .unwrap();
    /// type Req = http::Request<String>;
    /// assert!(!BalancePolicy::<Req, _>::defers(&HttpPolicy::new(), &streaming));
    /// assert!(BalancePolicy::<Req, _>::defers(&HttpPolicy::grpc(), &streaming));
    /// ```
    #[inline]
    fn defers(&self, response: &Res) -> bool {
        let _ = response;
        false
    }

    /// Hands `late` to a response whose outcome is [deferred](Self::defers), for whoever
    /// reads the rest of it to record the outcome. Default: drops it (nothing is recorded).
    /// [`HttpPolicy`] puts it in the response's extensions.
    fn defer(&self, response: &mut Res, late: LateOutcome) {
        let _ = (response, late);
    }

    /// Called on the response that is returned, e.g. to record the endpoint that served it.
    fn on_response(&self, response: &mut Res, served_by: &ServedBy) {
        let _ = (response, served_by);
    }

    /// How long the endpoint that sent `response` asked not to be sent new requests
    /// (backpressure: `429`/`503` with `Retry-After`, `grpc-retry-pushback-ms`). The balancer
    /// takes it out of picking for that long, bounded by its `max_backoff`, without counting it
    /// unhealthy. Default: never.
    fn backoff(&self, response: &Res) -> Option<Duration> {
        let _ = response;
        None
    }

    /// Whether `req` may be sent twice at once (a hedge, see [`Hedge`](crate::Hedge)).
    /// Default: never.
    fn hedgeable(&self, req: &Req) -> bool {
        let _ = req;
        false
    }

    /// The caller's deadline for `req` (default: none). A request past it is never sent
    /// ([`DeadlineExceeded`](rampart_health::DeadlineExceeded)) and never retried.
    fn deadline(&self, req: &Req) -> Option<Deadline> {
        let _ = req;
        None
    }

    /// Called on every attempt of a request with a [`deadline`](Self::deadline) just before it
    /// is sent (retries and hedges included) with the time `remaining` (read from the clock
    /// once, for the balancer's own check and this), to tell the next hop. Default: nothing.
    fn write_deadline(&self, req: &mut Req, remaining: Duration) {
        let _ = (req, remaining);
    }
}

/// The backpressure an HTTP response asks for: `429 Too Many Requests` or
/// `503 Service Unavailable` with `Retry-After` (delta-seconds or an HTTP-date), or a
/// `grpc-retry-pushback-ms` of zero or more milliseconds (on any status, gRPC answers in
/// Trailers-Only form carry it in the headers). `None` when the response asks nothing.
///
/// ```
/// use std::time::Duration;
/// use rampart_balance::policy::http_backoff;
/// let r = http::Response::builder().status(429).header("retry-after", "2").body(()).unwrap();
/// assert_eq!(http_backoff(&r), Some(Duration::from_secs(2)));
/// let r = http::Response::builder().status(429).body(()).unwrap();
/// assert_eq!(http_backoff(&r), None);
/// ```
pub fn http_backoff<B>(response: &http::Response<B>) -> Option<Duration> {
    if let Some(RetryPushback::After(d)) = RetryPushback::from_headers(response.headers()) {
        return Some(d);
    }
    if !matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        return None;
    }
    let value = response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Whether `response` is a gRPC answer whose status is still to come in the trailers: HTTP
/// 200, `content-type: application/grpc`, and no `grpc-status` in its headers (not a
/// Trailers-Only answer).
///
/// ```
/// use rampart_balance::policy::grpc_status_in_trailers;
/// let head = |status: Option<&str>| {
///     let mut b = http::Response::builder().header("content-type", "application/grpc");
///     if let Some(s) = status {
///         b = b.header("grpc-status", s);
///     }
///     b.body(()).unwrap()
/// };
/// assert!(grpc_status_in_trailers(&head(None)));
/// assert!(!grpc_status_in_trailers(&head(Some("14"))));
/// assert!(!grpc_status_in_trailers(&http::Response::new(())));
/// ```
pub fn grpc_status_in_trailers<B>(response: &http::Response<B>) -> bool {
    response.status() == StatusCode::OK
        && !response.headers().contains_key(GRPC_STATUS)
        && is_grpc(response.headers())
}

/// An HTTP body that may be cloned for a replay.
pub trait ReplayableBody: Sized {
    /// A copy of the body, or `None` when it cannot be replayed.
    fn try_clone_body(&self) -> Option<Self>;
}

impl ReplayableBody for String {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayableBody for Full<Bytes> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayableBody for Empty<Bytes> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(*self)
    }
}

/// Clones an HTTP request whose body can be replayed (extensions included).
pub fn clone_http_request<B: ReplayableBody>(req: &http::Request<B>) -> Option<http::Request<B>> {
    let body = req.body().try_clone_body()?;
    let mut out = http::Request::new(body);
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    *out.extensions_mut() = req.extensions().clone();
    Some(out)
}

/// An explicit consistent-hashing key, put in request extensions by the caller. It takes
/// precedence over [`HttpPolicy::hash_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKey(pub u64);

/// The name of the header that makes a non-idempotent request retryable.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The HTTP policy (see the [module docs](self)).
#[derive(Clone, Default)]
pub struct HttpPolicy<C = HttpClassifier> {
    classify: C,
    hash_header: Option<HeaderName>,
    /// gRPC answers whose status comes in the trailers are judged there.
    grpc_trailers: bool,
}

impl<C: fmt::Debug> fmt::Debug for HttpPolicy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPolicy")
            .field("classify", &self.classify)
            .field("hash_header", &self.hash_header)
            .field("grpc_trailers", &self.grpc_trailers)
            .finish()
    }
}

impl HttpPolicy {
    /// 5xx and transport errors are failures ([`HttpClassifier`]); no hash header.
    pub fn new() -> Self {
        Self::default()
    }

    /// The policy for gRPC backends: answers judged by `grpc-status` ([`GrpcClassifier`]),
    /// the status taken from the trailers when it comes there
    /// ([`grpc_trailers`](HttpPolicy::grpc_trailers)). Wrap response bodies with
    /// [`record_trailers`](crate::late::record_trailers) so that those outcomes are recorded.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use rampart_balance::{Balance, HttpEndpoint, HttpPolicy};
    /// use rampart_health::transport::HttpVersion;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap())
    ///     .http_version(HttpVersion::Http2);
    /// let balance = Balance::builder::<HttpEndpoint<Full<Bytes>>>()
    ///     .policy(HttpPolicy::grpc())
    ///     .http_endpoints(["http://127.0.0.1:50051".parse().unwrap()], &template)
    ///     .unwrap()
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(balance.snapshot().total, 1);
    /// # }
    /// ```
    pub fn grpc() -> HttpPolicy<GrpcClassifier> {
        HttpPolicy::new()
            .with_classifier(GrpcClassifier::new())
            .grpc_trailers(true)
    }
}

impl<C> HttpPolicy<C> {
    /// Uses `classify` to judge responses for passive outlier detection.
    pub fn with_classifier<C2>(self, classify: C2) -> HttpPolicy<C2> {
        HttpPolicy {
            classify,
            hash_header: self.hash_header,
            grpc_trailers: self.grpc_trailers,
        }
    }

    /// Whether a gRPC answer whose status comes in the trailers (HTTP 200,
    /// `content-type: application/grpc`, no `grpc-status` in its headers) is judged by its
    /// trailers (default `false`: by its head, where the classifier sees no status yet). On,
    /// the balancer puts a [`LateOutcome`] in such a response's extensions instead of judging
    /// it; [`record_trailers`](crate::late::record_trailers) records the trailers' verdict
    /// through it. A response whose body is never read that way counts for nothing.
    ///
    /// ```
    /// use rampart_balance::HttpPolicy;
    /// use rampart_health::GrpcClassifier;
    /// let policy = HttpPolicy::new()
    ///     .with_classifier(GrpcClassifier::new().resource_exhausted_is_failure(true))
    ///     .grpc_trailers(true);
    /// # let _ = policy;
    /// ```
    pub fn grpc_trailers(mut self, on: bool) -> Self {
        self.grpc_trailers = on;
        self
    }

    /// Hashes the value of `header` for consistent hashing (absent header: random pick).
    pub fn hash_header(mut self, header: HeaderName) -> Self {
        self.hash_header = Some(header);
        self
    }

    /// `true` for idempotent methods (RFC 9110 §9.2.2) or a request with an `Idempotency-Key`.
    pub fn is_idempotent<B>(req: &http::Request<B>) -> bool {
        is_idempotent(req.method(), req.headers())
    }
}

/// `true` for an idempotent method (RFC 9110 §9.2.2) or a request with an `Idempotency-Key`.
pub(crate) fn is_idempotent(method: &Method, headers: &http::HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

impl<B, RB, C> BalancePolicy<http::Request<B>, http::Response<RB>> for HttpPolicy<C>
where
    B: ReplayableBody + 'static,
    RB: 'static,
    C: Classify<http::Response<RB>, BoxError> + Send + Sync + 'static,
{
    fn clone_request(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
        clone_http_request(req)
    }

    fn retry_error(&self, req: &http::Request<B>, error: &BoxError) -> bool {
        // Never reached: always safe. Otherwise (reset before the response, timeout) the
        // request may have been processed, so only idempotent requests go again.
        is_never_reached(&**error) || Self::is_idempotent(req)
    }

    fn retry_response(&self, req: &http::Request<B>, response: &http::Response<RB>) -> bool {
        match response.status() {
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Self::is_idempotent(req),
            // Turned away before any work, and told when to come back: another endpoint may
            // have room now.
            StatusCode::TOO_MANY_REQUESTS => {
                Self::is_idempotent(req) && http_backoff(response).is_some()
            }
            _ => false,
        }
    }

    fn hash_key(&self, req: &http::Request<B>) -> Option<u64> {
        if let Some(HashKey(k)) = req.extensions().get::<HashKey>() {
            return Some(*k);
        }
        let value = req.headers().get(self.hash_header.as_ref()?)?;
        let mut h = std::hash::DefaultHasher::new();
        value.as_bytes().hash(&mut h);
        Some(h.finish())
    }

    fn classify(&self, result: Result<&http::Response<RB>, &BoxError>) -> Outcome {
        self.classify.classify(result)
    }

    #[inline]
    fn defers(&self, response: &http::Response<RB>) -> bool {
        self.grpc_trailers && grpc_status_in_trailers(response)
    }

    fn defer(&self, response: &mut http::Response<RB>, late: LateOutcome) {
        response.extensions_mut().insert(late);
    }

    fn on_response(&self, response: &mut http::Response<RB>, served_by: &ServedBy) {
        response.extensions_mut().insert(served_by.clone());
    }

    fn backoff(&self, response: &http::Response<RB>) -> Option<Duration> {
        http_backoff(response)
    }

    fn hedgeable(&self, req: &http::Request<B>) -> bool {
        Self::is_idempotent(req)
    }

    fn deadline(&self, req: &http::Request<B>) -> Option<Deadline> {
        Deadline::of(req)
    }

    fn write_deadline(&self, req: &mut http::Request<B>, remaining: Duration) {
        Deadline::write_remaining(remaining, req.headers_mut());
    }
}

/// Computes a consistent-hashing key from a request (see [`ServicePolicy::hash_key`]).
pub trait KeyFn<Req>: Send + Sync + 'static {
    /// The key of `req`, if it has one.
    fn key(&self, req: &Req) -> Option<u64>;
}

/// No hashing key.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<Req> KeyFn<Req> for NoKey {
    fn key(&self, _: &Req) -> Option<u64> {
        None
    }
}

impl<Req, F> KeyFn<Req> for F
where
    F: Fn(&Req) -> Option<u64> + Send + Sync + 'static,
{
    fn key(&self, req: &Req) -> Option<u64> {
        self(req)
    }
}

/// A policy for any `Clone` request: requests that never reached an endpoint are replayed
/// (when `retries` is on, the default); `Ok` is success and `Err` failure unless a classifier
/// says otherwise.
#[derive(Clone, Copy)]
pub struct ServicePolicy<C = FnClassify, K = NoKey> {
    classify: C,
    key: K,
    replay: bool,
}

impl<C: fmt::Debug, K> fmt::Debug for ServicePolicy<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServicePolicy")
            .field("classify", &self.classify)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl Default for ServicePolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl ServicePolicy {
    /// Errors are failures, requests are replayed when they never reached an endpoint.
    pub fn new() -> Self {
        Self {
            classify: FnClassify::errors_are_failures(),
            key: NoKey,
            replay: true,
        }
    }
}

impl<C, K> ServicePolicy<C, K> {
    /// Turns replays (retries elsewhere) on or off.
    pub fn replay(mut self, on: bool) -> Self {
        self.replay = on;
        self
    }

    /// Uses `classify` for outcomes.
    pub fn with_classifier<C2>(self, classify: C2) -> ServicePolicy<C2, K> {
        ServicePolicy {
            classify,
            key: self.key,
            replay: self.replay,
        }
    }

    /// Uses `key` for consistent hashing.
    pub fn hash_key<K2>(self, key: K2) -> ServicePolicy<C, K2> {
        ServicePolicy {
            classify: self.classify,
            key,
            replay: self.replay,
        }
    }
}

impl<Req, Res, C, K> BalancePolicy<Req, Res> for ServicePolicy<C, K>
where
    Req: Clone,
    C: Classify<Res, BoxError> + Send + Sync + 'static,
    K: KeyFn<Req>,
{
    #[inline]
    fn clone_request(&self, req: &Req) -> Option<Req> {
        self.replay.then(|| req.clone())
    }

    #[inline]
    fn hash_key(&self, req: &Req) -> Option<u64> {
        self.key.key(req)
    }

    #[inline]
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        self.classify.classify(result)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn idempotency() {
        let get = http::Request::get("/").body(String::new()).unwrap();
        let post = http::Request::post("/").body(String::new()).unwrap();
        let keyed = http::Request::post("/")
            .header("Idempotency-Key", "abc")
            .body(String::new())
            .unwrap();
        assert!(HttpPolicy::<HttpClassifier>::is_idempotent(&get));
        assert!(!HttpPolicy::<HttpClassifier>::is_idempotent(&post));
        assert!(HttpPolicy::<HttpClassifier>::is_idempotent(&keyed));
        let p = HttpPolicy::new();
        let r500 = http::Response::builder().status(500).body(()).unwrap();
        let r502 = http::Response::builder().status(502).body(()).unwrap();
        assert!(!p.retry_response(&get, &r500));
        assert!(p.retry_response(&keyed, &r502));
        let never: BoxError = Box::new(rampart_health::NeverReached::new());
        let other: BoxError = "reset".into();
        assert!(BalancePolicy::<_, http::Response<()>>::retry_error(
            &p, &post, &never
        ));
        assert!(!BalancePolicy::<_, http::Response<()>>::retry_error(
            &p, &post, &other
        ));
        assert!(BalancePolicy::<_, http::Response<()>>::retry_error(
            &p, &get, &other
        ));
    }

    #[test]
    fn clones_requests_with_extensions() {
        let mut req = http::Request::put("http://x/a?b")
            .header("x-a", "1")
            .body(Full::new(Bytes::from_static(b"hi")))
            .unwrap();
        req.extensions_mut().insert(HashKey(7));
        let copy = clone_http_request(&req).unwrap();
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.method(), Method::PUT);
        assert_eq!(copy.headers()["x-a"], "1");
        assert_eq!(copy.extensions().get::<HashKey>(), Some(&HashKey(7)));
        let p = HttpPolicy::new().hash_header(HeaderName::from_static("x-a"));
        assert_eq!(
            BalancePolicy::<_, http::Response<()>>::hash_key(&p, &copy),
            Some(7)
        );
    }
}
