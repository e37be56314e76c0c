//! Deadlines across hops: how long the caller is still willing to wait.
//!
//! A [`Deadline`] travels with a request as an extension. At the ingress it is read from the
//! request's headers — gRPC's `grpc-timeout` and Rampart's [`DEADLINE_HEADER`]
//! (`x-rampart-deadline-ms`, the remaining milliseconds), the earlier of the two — or set to a
//! configured default ([`Deadline::from_headers`], [`DeadlineLayer`]). Every layer below then
//! asks it how much time is left: an attempt's timeout is `min(per-attempt timeout,
//! remaining)`, a request whose deadline has passed is never sent ([`DeadlineExceeded`], which
//! carries the [`NeverReached`] marker), and retries never start past it.
//! At the egress each attempt carries what is left, minus the time already spent, in the same
//! headers ([`Deadline::write_headers`]), so the next hop knows the budget too.
//!
//! ```
//! use std::time::Duration;
//! use rampart_health::Deadline;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let mut req = http::Request::get("/").header("grpc-timeout", "300m").body(()).unwrap();
//! let deadline = Deadline::from_headers(req.headers()).unwrap();
//! assert_eq!(deadline.remaining(), Duration::from_millis(300));
//!
//! tokio::time::advance(Duration::from_millis(100)).await;
//! // The next hop is told what is left.
//! deadline.write_headers(req.headers_mut());
//! assert_eq!(req.headers()["x-rampart-deadline-ms"], "200");
//! assert_eq!(req.headers()["grpc-timeout"], "200000u");
//! // An attempt never outlives the caller.
//! assert_eq!(deadline.attempt_timeout(Some(Duration::from_secs(1))), Duration::from_millis(200));
//! # }
//! ```

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tokio::time::Instant;

use crate::NeverReached;

/// The header that carries the remaining budget in milliseconds between Rampart hops.
pub const DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-rampart-deadline-ms");

/// gRPC's timeout header (`grpc-timeout: 250m`).
pub const GRPC_TIMEOUT_HEADER: HeaderName = HeaderName::from_static("grpc-timeout");

/// The longest deadline taken from a header: longer ones are clamped (a stranger cannot make
/// us hold a request for years, and `Instant` arithmetic cannot overflow).
pub const MAX_HEADER_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// The instant by which a request's answer stops being useful to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline at `at`.
    pub const fn at(at: Instant) -> Self {
        Self { at }
    }

    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        let now = Instant::now();
        Self {
            at: now.checked_add(budget).unwrap_or(now + MAX_HEADER_DEADLINE),
        }
    }

    /// The instant itself.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Self) -> Self {
        if other.at < self.at { other } else { self }
    }

    /// The timeout of one attempt: `min(per_attempt, remaining)`.
    pub fn attempt_timeout(&self, per_attempt: Option<Duration>) -> Duration {
        let remaining = self.remaining();
        per_attempt.map_or(remaining, |p| p.min(remaining))
    }

    /// `Err(DeadlineExceeded)` once the deadline has passed: a request in that state must not
    /// be sent.
    pub fn check(&self) -> Result<(), DeadlineExceeded> {
        if self.is_expired() {
            Err(DeadlineExceeded::new())
        } else {
            Ok(())
        }
    }

    /// The deadline of `req` (its extension), if it has one.
    pub fn of<B>(req: &Request<B>) -> Option<Self> {
        req.extensions().get::<Self>().copied()
    }

    /// Reads a deadline from `grpc-timeout` and [`DEADLINE_HEADER`], taking the earlier when
    /// both are present. Malformed values are ignored; values above
    /// [`MAX_HEADER_DEADLINE`] are clamped to it.
    ///
    /// ```
    /// use rampart_health::Deadline;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let mut h = http::HeaderMap::new();
    /// assert!(Deadline::from_headers(&h).is_none());
    /// h.insert("x-rampart-deadline-ms", "1500".parse().unwrap());
    /// h.insert("grpc-timeout", "2S".parse().unwrap());
    /// assert_eq!(Deadline::from_headers(&h).unwrap().remaining().as_millis(), 1500);
    /// # }
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let grpc = headers
            .get(GRPC_TIMEOUT_HEADER)
            .and_then(parse_grpc_timeout);
        let ours = headers.get(DEADLINE_HEADER).and_then(parse_millis);
        let budget = match (grpc, ours) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(Self::after(budget.min(MAX_HEADER_DEADLINE)))
    }

    /// Writes what is left of the budget into `headers` for the next hop: always
    /// [`DEADLINE_HEADER`], and `grpc-timeout` when the request already had one or is a gRPC
    /// request (`content-type: application/grpc…`).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        Self::write_remaining(self.remaining(), headers);
    }

    /// [`write_headers`](Self::write_headers) with the time left already known (a caller that
    /// has just read the clock to check the deadline need not read it again).
    pub fn write_remaining(remaining: Duration, headers: &mut HeaderMap) {
        let millis = remaining.as_millis().min(u128::from(u64::MAX)) as u64;
        headers.insert(DEADLINE_HEADER, HeaderValue::from(millis));
        let grpc = headers.contains_key(GRPC_TIMEOUT_HEADER)
            || headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            headers.insert(GRPC_TIMEOUT_HEADER, format_grpc_timeout(remaining));
        }
    }
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
///
/// ```
/// use std::time::Duration;
/// use rampart_health::deadline::parse_grpc_timeout;
/// assert_eq!(parse_grpc_timeout(&"250m".parse().unwrap()), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout(&"1H".parse().unwrap()), Some(Duration::from_secs(3600)));
/// assert_eq!(parse_grpc_timeout(&"123456789S".parse().unwrap()), None); // 9 digits
/// assert_eq!(parse_grpc_timeout(&"10x".parse().unwrap()), None);
/// ```
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats `d` as a `grpc-timeout` value: the finest unit whose count fits in 8 digits,
/// truncated so the next hop never gets more time than there is (a duration too long even for
/// hours is clamped to `99999999H`).
///
/// ```
/// use std::time::Duration;
/// use rampart_health::deadline::format_grpc_timeout;
/// assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(600)), "600000m");
/// ```
pub fn format_grpc_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        // Truncated, so the next hop never gets more time than there is.
        let count = nanos / per;
        if count <= MAX {
            return header_value(count, unit);
        }
    }
    header_value(MAX, 'H')
}

fn header_value(count: u128, unit: char) -> HeaderValue {
    let mut s = count.to_string();
    s.push(unit);
    // Digits and an ASCII letter: always a valid header value.
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("0n"))
}

fn parse_millis(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 12 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = bytes
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(Duration::from_millis(n))
}

/// The error of a request whose deadline passed before it could be sent. Its source is the
/// [`NeverReached`] marker: the request did not reach a backend. A fallback answers it with
/// `504 Gateway Timeout`, the truthful status.
#[derive(Debug)]
pub struct DeadlineExceeded {
    marker: NeverReached,
}

impl DeadlineExceeded {
    /// A new error.
    pub const fn new() -> Self {
        Self {
            marker: NeverReached::new(),
        }
    }
}

impl Default for DeadlineExceeded {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline exceeded before the request was sent")
    }
}

impl std::error::Error for DeadlineExceeded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.marker)
    }
}

/// Ingress middleware: gives every request a [`Deadline`] extension, from its headers or a
/// default budget. A deadline already in the extensions is kept (and tightened by the headers).
///
/// ```
/// use std::time::Duration;
/// use rampart_health::{Deadline, DeadlineLayer};
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let svc = DeadlineLayer::new(Some(Duration::from_secs(2))).layer(service_fn(
///     |req: http::Request<()>| async move {
///         Ok::<_, std::convert::Infallible>(Deadline::of(&req).unwrap().remaining())
///     },
/// ));
/// let left = svc.oneshot(http::Request::new(())).await.unwrap();
/// assert_eq!(left, Duration::from_secs(2));
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer {
    default: Option<Duration>,
}

impl DeadlineLayer {
    /// Deadlines from the headers, else `default` from now (`None`: no deadline).
    pub const fn new(default: Option<Duration>) -> Self {
        Self { default }
    }
}

impl<S> tower_layer::Layer<S> for DeadlineLayer {
    type Service = SetDeadline<S>;

    fn layer(&self, inner: S) -> SetDeadline<S> {
        SetDeadline {
            inner,
            default: self.default,
        }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct SetDeadline<S> {
    inner: S,
    default: Option<Duration>,
}

impl<S> SetDeadline<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, by value.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> tower_service::Service<Request<B>> for SetDeadline<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let from_headers = Deadline::from_headers(req.headers());
        let existing = Deadline::of(&req);
        let deadline = match (existing, from_headers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b).or_else(|| self.default.map(Deadline::after)),
        };
        if let Some(d) = deadline {
            req.extensions_mut().insert(d);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn grpc_timeout_round_trips_without_gaining_time() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_micros(1500),
            Duration::from_millis(99_999_999),
            Duration::from_secs(7200),
            Duration::from_secs(200_000_000),
        ] {
            let back = parse_grpc_timeout(&format_grpc_timeout(d)).unwrap();
            assert!(back <= d, "{d:?} came back as {back:?}");
        }
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in ["", "m", "-5m", "5", "5 m", "1.5S", "999999999m"] {
            assert_eq!(parse_grpc_timeout(&hv(bad)), None, "{bad:?}");
        }
        for bad in ["", "-1", "1.5", "abc", "9999999999999"] {
            assert_eq!(parse_millis(&hv(bad)), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn header_deadlines_are_clamped() {
        let mut h = HeaderMap::new();
        h.insert(DEADLINE_HEADER, hv("999999999999"));
        let d = Deadline::from_headers(&h).unwrap();
        assert_eq!(d.remaining(), MAX_HEADER_DEADLINE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_deadline_refuses_with_never_reached() {
        let d = Deadline::after(Duration::from_millis(10));
        assert!(d.check().is_ok());
        tokio::time::advance(Duration::from_millis(10)).await;
        let err = d.check().unwrap_err();
        assert!(crate::is_never_reached(&err));
        assert_eq!(
            d.attempt_timeout(Some(Duration::from_secs(1))),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn egress_sets_grpc_timeout_only_for_grpc() {
        let d = Deadline::after(Duration::from_millis(300));
        let mut plain = HeaderMap::new();
        d.write_headers(&mut plain);
        assert_eq!(plain[DEADLINE_HEADER], "300");
        assert!(!plain.contains_key(GRPC_TIMEOUT_HEADER));
        let mut grpc = HeaderMap::new();
        grpc.insert(http::header::CONTENT_TYPE, hv("application/grpc+proto"));
        d.write_headers(&mut grpc);
        assert_eq!(grpc[GRPC_TIMEOUT_HEADER], "300000u");
    }
}
