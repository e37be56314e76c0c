//! The apology handler trait and what it is told about the failed request.
//!
//! [`Apologize`] turns an [`ApologyRequest`] into the apology response. The built-in
//! [`ApologyPage`](crate::ApologyPage) implements it; so does every
//! `Fn(&ApologyRequest) -> http::Response<ApologyBody> + Send + Sync + 'static` closure, which
//! is what [`FallbackLayer::custom`](crate::FallbackLayer::custom) takes.
//!
//! The handler is never shown the inner error itself, only a [`Trigger`] (whether the request
//! reached a backend, or which status was judged a failure): internal error text, backend
//! addresses and stacks cannot leak into an apology by accident. The layer logs the error with
//! `tracing` instead.
//!
//! ```
//! use rampart_fallback::{ApologyBody, ApologyRequest, FallbackLayer, Trigger};
//!
//! let layer = FallbackLayer::custom(|req: &ApologyRequest| {
//!     let msg: &'static str = match req.trigger() {
//!         Trigger::Error { never_reached: true } => "our backends are unreachable",
//!         _ => "something went wrong",
//!     };
//!     http::Response::builder()
//!         .status(503)
//!         .body(ApologyBody::from(msg))
//!         .unwrap_or_default()
//! });
//! # let _ = layer;
//! ```

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};

use crate::body::ApologyBody;
use crate::negotiate::{Format, negotiate};

/// Produces the apology response.
///
/// Implemented by [`ApologyPage`](crate::ApologyPage) and, through a blanket impl, by every
/// `Fn(&ApologyRequest) -> http::Response<ApologyBody> + Send + Sync + 'static`.
///
/// Whatever the handler returns, [`Fallback`](crate::Fallback) then sets
/// `Cache-Control: no-store`, sets `Retry-After` when the handler did not and a delay is known,
/// echoes the request id, and empties the body for `HEAD`. The handler must not do I/O or
/// contact a backend: it runs exactly when those are failing.
pub trait Apologize: Send + Sync + 'static {
    /// Builds the apology for one failed request.
    fn apologize(&self, request: &ApologyRequest) -> http::Response<ApologyBody>;
}

impl<F> Apologize for F
where
    F: Fn(&ApologyRequest) -> http::Response<ApologyBody> + Send + Sync + 'static,
{
    fn apologize(&self, request: &ApologyRequest) -> http::Response<ApologyBody> {
        self(request)
    }
}

/// Why the apology is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// The inner service returned an error (breaker open, no healthy endpoint, timeout,
    /// connection error...).
    Error {
        /// The error chain holds a [`rampart_health::NeverReached`] marker: the request never
        /// reached a backend, so this is an availability problem rather than a bug.
        never_reached: bool,
    },
    /// The inner service answered with a status its classifier counts as a failure
    /// (by default 500, 502, 503 or 504; a panic caught by tower-http's `CatchPanicLayer`
    /// arrives here as a 500).
    Status(StatusCode),
}

impl Trigger {
    /// A short lowercase label: `error`, `never_reached` or `status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Error {
                never_reached: false,
            } => "error",
            Trigger::Error {
                never_reached: true,
            } => "never_reached",
            Trigger::Status(_) => "status",
        }
    }
}

/// The parts of the request kept when it was received (cheap reference-counted clones).
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) accept: Option<HeaderValue>,
    pub(crate) request_id: Option<HeaderValue>,
    /// `content-type: application/grpc*`: the apology must be gRPC.
    pub(crate) grpc: bool,
}

impl Captured {
    /// One pass over the request's fields finds both headers (cheaper than two hashed
    /// lookups for the dozen fields a request carries); the first of each is kept.
    pub(crate) fn from_request<B>(req: &Request<B>, request_id: Option<&HeaderName>) -> Self {
        let mut accept = None;
        let mut id = None;
        let mut grpc = false;
        for (name, value) in req.headers() {
            if accept.is_none() && name == http::header::ACCEPT {
                accept = Some(value);
            } else if id.is_none() && request_id == Some(name) {
                id = Some(value);
            } else if name == http::header::CONTENT_TYPE {
                grpc = crate::negotiate::is_grpc_content_type(value.as_bytes());
            }
        }
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            accept: accept.cloned(),
            request_id: id.cloned(),
            grpc,
        }
    }
}

/// What an [`Apologize`] handler knows about the request it apologises for.
#[derive(Debug, Clone)]
pub struct ApologyRequest {
    pub(crate) captured: Captured,
    pub(crate) trigger: Trigger,
    pub(crate) retry_after: Option<u64>,
}

impl ApologyRequest {
    /// A request description, for testing a handler directly.
    ///
    /// ```
    /// use rampart_fallback::{ApologyPage, ApologyRequest, Apologize, Trigger};
    /// let req = ApologyRequest::new(http::Method::GET, http::Uri::from_static("/cart"),
    ///     Trigger::Error { never_reached: true });
    /// let resp = ApologyPage::default().apologize(&req);
    /// assert_eq!(resp.status(), 503);
    /// ```
    pub fn new(method: Method, uri: Uri, trigger: Trigger) -> Self {
        Self {
            captured: Captured {
                method,
                uri,
                accept: None,
                request_id: None,
                grpc: false,
            },
            trigger,
            retry_after: None,
        }
    }

    /// Sets the `Accept` header value (builder style, for tests).
    pub fn with_accept(mut self, accept: HeaderValue) -> Self {
        self.captured.accept = Some(accept);
        self
    }

    /// Marks the request as gRPC (builder style, for tests; the layer sets it from
    /// `content-type: application/grpc*`).
    pub fn with_grpc(mut self, grpc: bool) -> Self {
        self.captured.grpc = grpc;
        self
    }

    /// `true` when the request is gRPC (`content-type: application/grpc`, `+proto`, …): its
    /// apology must be a gRPC status, not a page.
    pub fn is_grpc(&self) -> bool {
        self.captured.grpc
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.captured.method
    }

    /// The request URI.
    pub fn uri(&self) -> &Uri {
        &self.captured.uri
    }

    /// The request's `Accept` header, if any.
    pub fn accept(&self) -> Option<&HeaderValue> {
        self.captured.accept.as_ref()
    }

    /// Picks a [`Format`] from `Accept` (see [`negotiate`]).
    pub fn negotiate(&self, preferred: Format) -> Format {
        negotiate(self.accept(), preferred)
    }

    /// The request id (the configured header, `x-request-id` by default), if the request had
    /// one.
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.captured.request_id.as_ref()
    }

    /// Why the apology is served.
    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    /// The `Retry-After` delay the layer will send (whole seconds, rounded up), if known.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
    }

    /// `true` for `HEAD` (the layer empties the body anyway).
    pub fn is_head(&self) -> bool {
        self.captured.method == Method::HEAD
    }
}

/// Whole seconds for a `Retry-After` header: rounded up, and never 0 (so clients do not retry
/// in a tight loop).
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(7200)), 8);
        assert_eq!(retry_after_secs(Duration::from_secs(8)), 8);
        assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
