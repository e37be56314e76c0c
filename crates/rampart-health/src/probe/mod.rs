//! Active probes: one attempt at asking "are you alive?".
//!
//! A [`Probe`] makes one attempt and answers `Ok(())` (passed) or a [`ProbeError`] whose
//! [`ProbeErrorKind`] says what went wrong. A [`Checker`](crate::Checker) runs a probe on a
//! schedule and turns the answers into [`Health`](crate::Health).
//!
//! - `HttpProbe` (feature `http`, on by default): an HTTP request on hyper-util's client
//!   (method, path, expected status range, optional body substring, `Host` override, timeout),
//!   over HTTP/1.1 or HTTP/2 and, with the `tls` feature, over `https://` (see `transport`).
//!   It reads at most `max_body_bytes` of the body (64 KiB by default), so a server that
//!   answers with a huge, endless or garbage response fails the probe instead of hanging it or
//!   filling memory; the whole attempt, connect included, is bounded by its timeout.
//! - [`TcpProbe`]: a TCP connect, bounded by its timeout.
//! - [`probe_fn`]: any async closure.
//!
//! `Arc<P>` and `Box<P>` are probes when `P` is, so probes can be shared and type-erased
//! (`Box<dyn Probe>`).
//!
//! # Example
//!
//! A closure probe:
//!
//! ```
//! use rampart_health::{Probe, ProbeError, ProbeErrorKind, probe_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let probe = probe_fn(|| async { Err(ProbeError::new(ProbeErrorKind::Other, "disk full")) });
//! let err = probe.probe().await.unwrap_err();
//! assert_eq!(err.kind(), ProbeErrorKind::Other);
//! assert_eq!(err.to_string(), "disk full");
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::ConfigError;

#[cfg(feature = "http")]
pub(crate) mod http;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::http::{DEFAULT_MAX_BODY_BYTES, HttpProbe, HttpProbeBuilder};

const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The boxed future a [`Probe`] returns.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ProbeError>> + Send + 'a>>;

/// One health probe attempt.
///
/// Implementations should bound their own work (the built-in probes have a timeout), but they
/// need not: the [`Checker`](crate::Checker) applies its own timeout around every attempt and
/// counts an attempt that exceeds it as a failure.
///
/// ```
/// use rampart_health::{Probe, ProbeError, probe::ProbeFuture};
///
/// struct AlwaysUp;
/// impl Probe for AlwaysUp {
///     fn probe(&self) -> ProbeFuture<'_> {
///         Box::pin(async { Ok(()) })
///     }
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let boxed: Box<dyn Probe> = Box::new(AlwaysUp);
/// assert!(boxed.probe().await.is_ok());
/// # }
/// ```
pub trait Probe: Send + Sync + 'static {
    /// One probe attempt; `Ok(())` means it passed. The Checker applies its own timeout
    /// around it.
    fn probe(&self) -> Pin<Box<dyn Future<Output = Result<(), ProbeError>> + Send + '_>>;
}

impl<P: Probe + ?Sized> Probe for Arc<P> {
    fn probe(&self) -> ProbeFuture<'_> {
        (**self).probe()
    }
}

impl<P: Probe + ?Sized> Probe for Box<P> {
    fn probe(&self) -> ProbeFuture<'_> {
        (**self).probe()
    }
}

/// What kind of failure a [`ProbeError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbeErrorKind {
    /// The attempt did not finish within its timeout.
    Timeout,
    /// The connection could not be established (refused, unreachable, connect timeout).
    Connect,
    /// The response status was outside the expected range.
    Status,
    /// The response body was unreadable, too large, or lacked the expected substring.
    Body,
    /// Anything else (a protocol error such as a garbage response, a closure's own failure).
    Other,
}

impl ProbeErrorKind {
    /// A lowercase name: `timeout`, `connect`, `status`, `body` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeErrorKind::Timeout => "timeout",
            ProbeErrorKind::Connect => "connect",
            ProbeErrorKind::Status => "status",
            ProbeErrorKind::Body => "body",
            ProbeErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ProbeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed probe attempt: a [`ProbeErrorKind`], a lowercase message, and optionally the
/// underlying error as [`source`](std::error::Error::source).
///
/// ```
/// use rampart_health::{ProbeError, ProbeErrorKind};
/// let e = ProbeError::timeout();
/// assert_eq!(e.kind(), ProbeErrorKind::Timeout);
/// assert_eq!(e.to_string(), "probe timed out");
/// ```
#[derive(Clone)]
pub struct ProbeError {
    kind: ProbeErrorKind,
    message: String,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl ProbeError {
    /// A failure of `kind` described by `msg` (write it in lowercase).
    pub fn new(kind: ProbeErrorKind, msg: impl Into<String>) -> Self {
        Self {
            kind,
            message: msg.into(),
            source: None,
        }
    }

    /// The attempt exceeded its timeout.
    pub fn timeout() -> Self {
        Self::new(ProbeErrorKind::Timeout, "probe timed out")
    }

    /// Attaches the underlying error, reachable through `source()`.
    pub fn with_source(mut self, source: impl Into<crate::BoxError>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ProbeErrorKind {
        self.kind
    }

    /// The message, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ProbeError");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ProbeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// A TCP connect probe: passes when a connection to the address is established within the
/// timeout (default 1 s). The connection is closed at once.
///
/// [`TcpProbe::new`] uses the default timeout; [`TcpProbe::builder`] sets another one and
/// validates it.
///
/// ```
/// use std::time::Duration;
/// use rampart_health::TcpProbe;
/// let probe = TcpProbe::builder("127.0.0.1:5432".parse().unwrap())
///     .timeout(Duration::from_millis(200))
///     .build()
///     .unwrap();
/// assert_eq!(probe.addr().port(), 5432);
/// assert_eq!(probe.timeout(), Duration::from_millis(200));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TcpProbe {
    addr: SocketAddr,
    timeout: Duration,
}

/// Builds a [`TcpProbe`]; see [`TcpProbe::builder`].
#[derive(Clone, Copy, Debug)]
pub struct TcpProbeBuilder {
    addr: SocketAddr,
    timeout: Duration,
}

impl TcpProbe {
    /// A probe of `addr` with the default 1 s timeout.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            timeout: DEFAULT_PROBE_TIMEOUT,
        }
    }

    /// Starts a builder for probes of `addr`.
    pub fn builder(addr: SocketAddr) -> TcpProbeBuilder {
        TcpProbeBuilder {
            addr,
            timeout: DEFAULT_PROBE_TIMEOUT,
        }
    }

    /// The probed address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connect timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl TcpProbeBuilder {
    /// Bounds the connect (default 1 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Validates the settings and builds the probe.
    ///
    /// Rejects a zero `timeout` with a [`ConfigError`] naming the field and the value.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rampart_health::TcpProbe;
    /// let err = TcpProbe::builder("127.0.0.1:1".parse().unwrap())
    ///     .timeout(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `timeout` = 0ns: must be greater than zero");
    /// ```
    pub fn build(self) -> Result<TcpProbe, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                "timeout",
                self.timeout,
                "must be greater than zero",
            ));
        }
        Ok(TcpProbe {
            addr: self.addr,
            timeout: self.timeout,
        })
    }
}

impl Probe for TcpProbe {
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(self.addr))
                .await
            {
                Ok(Ok(_stream)) => Ok(()),
                Ok(Err(e)) => Err(ProbeError::new(
                    ProbeErrorKind::Connect,
                    format!("connect to {} failed: {e}", self.addr),
                )
                .with_source(e)),
                Err(_) => Err(ProbeError::timeout()),
            }
        })
    }
}

/// A probe made from an async closure; see [`probe_fn`].
#[derive(Clone, Copy)]
pub struct FnProbe<F> {
    f: F,
}

impl<F> fmt::Debug for FnProbe<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnProbe").finish_non_exhaustive()
    }
}

/// Makes a [`Probe`] from an async closure; each attempt calls it once.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use rampart_health::{Probe, probe_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let calls = Arc::new(AtomicU32::new(0));
/// let counted = calls.clone();
/// let probe = probe_fn(move || {
///     counted.fetch_add(1, Ordering::Relaxed);
///     async { Ok(()) }
/// });
/// probe.probe().await.unwrap();
/// assert_eq!(calls.load(Ordering::Relaxed), 1);
/// # }
/// ```
pub fn probe_fn<F, Fut>(f: F) -> FnProbe<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProbeError>> + Send + 'static,
{
    FnProbe { f }
}

impl<F, Fut> Probe for FnProbe<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProbeError>> + Send + 'static,
{
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin((self.f)())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_builder_rejects_a_zero_timeout() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let err = TcpProbe::builder(addr)
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!((err.field(), err.value()), ("timeout", "0ns"));
        let probe = TcpProbe::builder(addr)
            .timeout(Duration::from_millis(1))
            .build()
            .unwrap();
        assert_eq!(probe.timeout(), Duration::from_millis(1));
        assert_eq!(TcpProbe::new(addr).timeout(), Duration::from_secs(1));
    }

    #[test]
    fn error_display_and_source() {
        let e = ProbeError::new(ProbeErrorKind::Connect, "connect failed")
            .with_source(std::io::Error::other("refused"));
        assert_eq!(e.to_string(), "connect failed");
        assert_eq!(e.source().unwrap().to_string(), "refused");
        assert_eq!(ProbeErrorKind::Body.to_string(), "body");
        let copy = e.clone();
        assert_eq!(copy.kind(), ProbeErrorKind::Connect);
        assert_eq!(e.message(), "connect failed");
    }

    #[tokio::test(start_paused = true)]
    async fn arc_and_box_are_probes() {
        let p: Arc<dyn Probe> = Arc::new(probe_fn(|| async { Ok(()) }));
        assert!(p.probe().await.is_ok());
        let b: Box<dyn Probe> = Box::new(probe_fn(|| async { Err(ProbeError::timeout()) }));
        assert_eq!(b.probe().await.unwrap_err().kind(), ProbeErrorKind::Timeout);
    }
}
