//! [`HttpProbe`]: an HTTP request on hyper-util's pooled client (feature `http`).
//!
//! ```no_run
//! use std::time::Duration;
//! use rampart_health::{HttpProbe, Probe, ProbeErrorKind};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let probe = HttpProbe::builder("http://127.0.0.1:8080".parse()?)
//!     .path("/healthz")
//!     .expect_status(200..=299)
//!     .body_contains("ok")
//!     .timeout(Duration::from_millis(500))
//!     .build()?;
//! match probe.probe().await {
//!     Ok(()) => println!("passed"),
//!     Err(e) if e.kind() == ProbeErrorKind::Connect => println!("nobody home: {e}"),
//!     Err(e) => println!("failed: {e}"),
//! }
//! # Ok(()) }
//! ```

use std::error::Error as StdError;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;

use super::{DEFAULT_PROBE_TIMEOUT, Probe, ProbeError, ProbeErrorKind, ProbeFuture};
use crate::ConfigError;
use crate::transport::{Connector, HttpVersion, Transport};

/// The default bound on how much of a response body an [`HttpProbe`] reads: 64 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

type ProbeClient = Client<Connector, Empty<Bytes>>;

/// An HTTP health probe on hyper-util's pooled client.
///
/// One attempt sends `method path` (default `GET /healthz`) and passes when the status is in
/// the expected range (default `200..=299`) and, if configured, the body contains the expected
/// substring. The body is always read, but never more than
/// [`max_body_bytes`](HttpProbeBuilder::max_body_bytes) (default 64 KiB): a longer body fails
/// the attempt with [`ProbeErrorKind::Body`]. The whole attempt (connect, request, body) is
/// bounded by the timeout (default 1 s); the connect alone is also bounded by it.
///
/// At most one idle connection is kept between attempts, so a steady probe costs one
/// connection, not one per attempt. `https://` needs the `tls` feature (certificates are
/// always verified: a TLS failure fails the attempt with [`ProbeErrorKind::Connect`]).
///
/// Cloning is cheap and shares the connection pool.
///
/// ```
/// use std::time::Duration;
/// use rampart_health::HttpProbe;
///
/// let probe = HttpProbe::builder("http://10.0.0.7:8080".parse().unwrap())
///     .path("/ready")
///     .host("catalog.internal")
///     .timeout(Duration::from_millis(300))
///     .build()
///     .unwrap();
/// assert_eq!(probe.uri(), "http://10.0.0.7:8080/ready");
/// ```
#[derive(Clone, Debug)]
pub struct HttpProbe {
    client: ProbeClient,
    method: Method,
    uri: Uri,
    expect: RangeInclusive<u16>,
    body_contains: Option<Arc<str>>,
    timeout: Duration,
    host: Option<HeaderValue>,
    max_body_bytes: usize,
}

/// Builds an [`HttpProbe`]; every setting is optional. See [`HttpProbe::builder`].
#[derive(Clone, Debug)]
pub struct HttpProbeBuilder {
    base: Uri,
    method: Method,
    path: String,
    expect: RangeInclusive<u16>,
    body_contains: Option<String>,
    timeout: Duration,
    host: Option<String>,
    max_body_bytes: usize,
    transport: Transport,
}

impl HttpProbe {
    /// Starts a builder for probes of `base` (like `http://127.0.0.1:8080`). A path in `base`
    /// is kept as a prefix of [`path`](HttpProbeBuilder::path).
    pub fn builder(base: Uri) -> HttpProbeBuilder {
        HttpProbeBuilder {
            base,
            method: Method::GET,
            path: "/healthz".to_owned(),
            expect: 200..=299,
            body_contains: None,
            timeout: DEFAULT_PROBE_TIMEOUT,
            host: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            transport: Transport::new(),
        }
    }

    /// The full URI each attempt requests.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn attempt(&self) -> Result<(), ProbeError> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .header(USER_AGENT, HeaderValue::from_static("rampart-health"));
        if let Some(host) = &self.host {
            request = request.header(HOST, host.clone());
        }
        let request = request.body(Empty::new()).map_err(|e| {
            ProbeError::new(ProbeErrorKind::Other, "could not build the probe request")
                .with_source(e)
        })?;

        let response = self.client.request(request).await.map_err(client_error)?;

        let status = response.status();
        if !self.expect.contains(&status.as_u16()) {
            return Err(ProbeError::new(
                ProbeErrorKind::Status,
                format!(
                    "unexpected status {} (expected {}..={})",
                    status.as_u16(),
                    self.expect.start(),
                    self.expect.end()
                ),
            ));
        }

        // Read the body, bounded: keep it only when we have to search it.
        let mut body = response.into_body();
        let mut kept: Vec<u8> = Vec::new();
        let mut seen: usize = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ProbeError::new(ProbeErrorKind::Body, "could not read the response body")
                    .with_source(e)
            })?;
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > self.max_body_bytes {
                    return Err(ProbeError::new(
                        ProbeErrorKind::Body,
                        format!("response body exceeds {} bytes", self.max_body_bytes),
                    ));
                }
                if self.body_contains.is_some() {
                    kept.extend_from_slice(&data);
                }
            }
        }
        if let Some(needle) = &self.body_contains
            && !contains(&kept, needle.as_bytes())
        {
            return Err(ProbeError::new(
                ProbeErrorKind::Body,
                format!("response body does not contain {needle:?}"),
            ));
        }
        Ok(())
    }
}

impl Probe for HttpProbe {
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.attempt()).await {
                Ok(result) => result,
                Err(_) => Err(ProbeError::timeout()),
            }
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Maps a hyper-util client error to a probe error, keeping the whole chain in the message.
fn client_error(err: hyper_util::client::legacy::Error) -> ProbeError {
    let (kind, message) = client_error_parts(&err);
    ProbeError::new(kind, message).with_source(err)
}

/// The kind and message of a failed request on hyper-util's client, shared by every probe on
/// it (HTTP and gRPC): a connection that could not be made is [`ProbeErrorKind::Connect`]
/// (`connect failed: …`), or [`ProbeErrorKind::Timeout`] when the connect timed out
/// (`connect timed out: …`); anything else is [`ProbeErrorKind::Other`] (`request failed:
/// …`). The message carries the chain of causes.
pub(crate) fn client_error_parts(
    err: &hyper_util::client::legacy::Error,
) -> (ProbeErrorKind, String) {
    let mut causes = String::new();
    let mut timed_out = false;
    let mut current: Option<&(dyn StdError + 'static)> = err.source();
    let mut depth = 0;
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            timed_out = true;
        }
        if !causes.is_empty() {
            causes.push_str(": ");
        }
        causes.push_str(&e.to_string());
        depth += 1;
        if depth > 16 {
            break;
        }
        current = e.source();
    }
    let (kind, what) = if err.is_connect() {
        if timed_out {
            (ProbeErrorKind::Timeout, "connect timed out")
        } else {
            (ProbeErrorKind::Connect, "connect failed")
        }
    } else {
        (ProbeErrorKind::Other, "request failed")
    };
    let message = if causes.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {causes}")
    };
    (kind, message)
}

impl HttpProbeBuilder {
    /// The request method (default `GET`).
    pub fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }

    /// The request path, starting with `/` (default `/healthz`). May carry a query.
    pub fn path(mut self, p: impl Into<String>) -> Self {
        self.path = p.into();
        self
    }

    /// The statuses that pass (default `200..=299`).
    pub fn expect_status(mut self, r: RangeInclusive<u16>) -> Self {
        self.expect = r;
        self
    }

    /// The body must contain this substring (searched in the first
    /// [`max_body_bytes`](Self::max_body_bytes) bytes).
    pub fn body_contains(mut self, s: impl Into<String>) -> Self {
        self.body_contains = Some(s.into());
        self
    }

    /// Bounds the whole attempt, connect included (default 1 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Overrides the `Host` header (default: the authority of the base URI).
    pub fn host(mut self, h: impl Into<String>) -> Self {
        self.host = Some(h.into());
        self
    }

    /// The HTTP versions to speak (default [`HttpVersion::Http1`]; see
    /// [`transport`](crate::transport)).
    pub fn http_version(mut self, version: HttpVersion) -> Self {
        self.transport = self.transport.http_version(version);
        self
    }

    /// TLS settings for an `https://` base (default: the system's roots, SNI from the host).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.transport = self.transport.tls(tls);
        self
    }

    /// HTTP/2 keep-alive (see [`Transport::http2_keep_alive`]).
    pub fn http2_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.transport = self.transport.http2_keep_alive(interval, timeout);
        self
    }

    /// All transport settings at once (versions, TLS, keep-alive), for instance those of the
    /// client whose backend this probe checks.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The most body bytes an attempt reads (default [`DEFAULT_MAX_BODY_BYTES`], 64 KiB); a
    /// longer body fails the attempt with [`ProbeErrorKind::Body`].
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Validates the settings and builds the probe.
    ///
    /// Rejects (with a [`ConfigError`] naming the field): a base that is not
    /// `http://host[:port]` (or `https://…` with the `tls` feature),
    /// a path not starting with `/` or not valid in a URI, an empty or inverted status range or
    /// one outside `100..=999`, a zero timeout, a `Host` value that is not a valid header, and
    /// a zero `max_body_bytes`.
    ///
    /// ```
    /// use rampart_health::HttpProbe;
    /// let err = HttpProbe::builder("http://127.0.0.1:1".parse().unwrap())
    ///     .expect_status(300..=200)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "expect_status");
    /// ```
    pub fn build(self) -> Result<HttpProbe, ConfigError> {
        let https = self.transport.validate("base", &self.base)?;
        let Some(authority) = self.base.authority() else {
            return Err(ConfigError::new(
                "base",
                self.base.to_string(),
                "must name a host",
            ));
        };
        if !self.path.starts_with('/') {
            return Err(ConfigError::new("path", &self.path, "must start with `/`"));
        }
        let prefix = self.base.path().trim_end_matches('/');
        let scheme = if https { "https" } else { "http" };
        let uri: Uri = format!("{scheme}://{authority}{prefix}{}", self.path)
            .parse()
            .map_err(|_| ConfigError::new("path", &self.path, "not a valid URI path"))?;

        let (lo, hi) = (*self.expect.start(), *self.expect.end());
        if lo > hi || lo < 100 || hi > 999 {
            return Err(ConfigError::new(
                "expect_status",
                &self.expect,
                "must be a non-empty range within 100..=999",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout",
                self.timeout,
                "must be greater than zero",
            ));
        }
        let host = match self.host {
            None => None,
            Some(h) => Some(
                HeaderValue::from_str(&h)
                    .map_err(|_| ConfigError::new("host", &h, "not a valid Host header value"))?,
            ),
        };
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new(
                "max_body_bytes",
                self.max_body_bytes,
                "must be at least 1",
            ));
        }

        let connector = self.transport.connector(https, self.timeout)?;
        let client = self
            .transport
            .client_builder()
            .pool_max_idle_per_host(1)
            .build(connector);

        Ok(HttpProbe {
            client,
            method: self.method,
            uri,
            expect: self.expect,
            body_contains: self.body_contains.map(Arc::from),
            timeout: self.timeout,
            host,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Uri {
        "http://127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn builder_defaults_and_uri_join() {
        let p = HttpProbe::builder(base()).build().unwrap();
        assert_eq!(p.uri(), "http://127.0.0.1:9/healthz");
        assert_eq!(p.timeout(), Duration::from_secs(1));
        let p = HttpProbe::builder("http://127.0.0.1:9/api/".parse().unwrap())
            .path("/ready?deep=1")
            .build()
            .unwrap();
        assert_eq!(p.uri(), "http://127.0.0.1:9/api/ready?deep=1");
    }

    #[test]
    #[allow(clippy::reversed_empty_ranges)]
    fn builder_rejects_bad_values() {
        let cases: Vec<(HttpProbeBuilder, &str, &str)> = vec![
            (
                HttpProbe::builder("ftp://x:1".parse().unwrap()),
                "base",
                "\"ftp://x:1/\"",
            ),
            (
                HttpProbe::builder("/relative".parse().unwrap()),
                "base",
                "\"/relative\"",
            ),
            (
                HttpProbe::builder(base()).path("healthz"),
                "path",
                "\"healthz\"",
            ),
            (HttpProbe::builder(base()).path("/a b"), "path", "\"/a b\""),
            (
                HttpProbe::builder(base()).expect_status(299..=200),
                "expect_status",
                "299..=200",
            ),
            (
                HttpProbe::builder(base()).expect_status(0..=200),
                "expect_status",
                "0..=200",
            ),
            (
                HttpProbe::builder(base()).expect_status(200..=1000),
                "expect_status",
                "200..=1000",
            ),
            (
                HttpProbe::builder(base()).timeout(Duration::ZERO),
                "timeout",
                "0ns",
            ),
            (
                HttpProbe::builder(base()).host("bad\nhost"),
                "host",
                "\"bad\\nhost\"",
            ),
            (
                HttpProbe::builder(base()).max_body_bytes(0),
                "max_body_bytes",
                "0",
            ),
        ];
        for (builder, field, value) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!((err.field(), err.value()), (field, value), "{err}");
            assert!(err.to_string().contains(value), "{err}");
        }
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"status: ok", b"ok"));
        assert!(contains(b"anything", b""));
        assert!(!contains(b"o", b"ok"));
    }
}
