//! How Rampart's HTTP clients dial: protocol versions, TLS, HTTP/2 keep-alive.
//!
//! [`HttpProbe`](crate::HttpProbe) and rampart-balance's `HttpEndpoint` share these settings
//! ([`Transport`]) and the [`Connector`] built from them:
//!
//! - [`HttpVersion::Http1`] (the default): HTTP/1.1 only (no ALPN offered over TLS).
//! - [`HttpVersion::Auto`]: over TLS, ALPN offers `h2` then `http/1.1` and the server picks;
//!   over plaintext, HTTP/1.1.
//! - [`HttpVersion::Http2`]: HTTP/2 only: ALPN `h2` over TLS, prior-knowledge h2c over
//!   plaintext (gRPC inside a cluster).
//!
//! Over HTTP/2 every request is a stream on one multiplexed connection per endpoint (hyper's
//! pool shares it); streams beyond the server's `SETTINGS_MAX_CONCURRENT_STREAMS` wait for a
//! free slot on that connection. Keep-alive PINGs (default every 10 s, 5 s to answer, also while
//! idle) notice a dead peer: the connection is closed and the next request dials anew.
//!
//! `https://` needs the `tls` feature; without it [`Connector`] is hyper-util's plaintext
//! `HttpConnector` and an `https` URI is refused by the builders that validate it.
//!
//! ```
//! use std::time::Duration;
//! use rampart_health::transport::{HttpVersion, Transport};
//!
//! let transport = Transport::new()
//!     .http_version(HttpVersion::Http2)
//!     .http2_keep_alive(Duration::from_secs(5), Duration::from_secs(2));
//! assert_eq!(transport.version(), HttpVersion::Http2);
//! let connector = transport.connector(false, Duration::from_millis(250)).unwrap();
//! # let _ = connector;
//! ```

use std::fmt;
use std::time::Duration;

use hyper_util::client::legacy::Builder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::ConfigError;
#[cfg(feature = "tls")]
use crate::tls::TlsConfig;

/// The connector Rampart's clients dial with: with the `tls` feature, hyper-rustls's
/// `HttpsConnector` (which also dials plaintext `http://`), else hyper-util's `HttpConnector`.
#[cfg(feature = "tls")]
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The connector Rampart's clients dial with: with the `tls` feature, hyper-rustls's
/// `HttpsConnector` (which also dials plaintext `http://`), else hyper-util's `HttpConnector`.
#[cfg(not(feature = "tls"))]
pub type Connector = HttpConnector;

/// Which HTTP versions a client speaks (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/1.1 only.
    #[default]
    Http1,
    /// HTTP/2 when the server offers it by ALPN (TLS), else HTTP/1.1.
    Auto,
    /// HTTP/2 only: ALPN `h2` over TLS, prior knowledge (h2c) over plaintext.
    Http2,
}

impl HttpVersion {
    /// A lowercase name: `http1`, `auto` or `http2`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http1 => "http1",
            HttpVersion::Auto => "auto",
            HttpVersion::Http2 => "http2",
        }
    }
}

impl fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default interval between HTTP/2 keep-alive PINGs.
pub const DEFAULT_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// The default time a PING has to be answered before the connection is closed.
pub const DEFAULT_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Transport settings shared by Rampart's HTTP clients (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct Transport {
    version: HttpVersion,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
    keep_alive_interval: Duration,
    keep_alive_timeout: Duration,
}

impl Default for Transport {
    fn default() -> Self {
        Self::new()
    }
}

impl Transport {
    /// HTTP/1.1, system roots for `https`, default HTTP/2 keep-alive.
    pub fn new() -> Self {
        Self {
            version: HttpVersion::Http1,
            #[cfg(feature = "tls")]
            tls: None,
            keep_alive_interval: DEFAULT_H2_KEEP_ALIVE_INTERVAL,
            keep_alive_timeout: DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
        }
    }

    /// The HTTP versions to speak (default [`HttpVersion::Http1`]).
    pub fn http_version(mut self, version: HttpVersion) -> Self {
        self.version = version;
        self
    }

    /// The configured HTTP versions.
    pub fn version(&self) -> HttpVersion {
        self.version
    }

    /// TLS settings for `https` (default: the system's roots, SNI from the host).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The configured TLS settings, if any.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_config(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// HTTP/2 keep-alive: a PING every `interval` (also while idle); the connection is closed
    /// when one is not answered within `timeout`. Defaults: 10 s and 5 s.
    pub fn http2_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive_interval = interval;
        self.keep_alive_timeout = timeout;
        self
    }

    /// Checks the settings against a base URI's scheme; `field` names the URI field in errors.
    pub fn validate(&self, field: &'static str, base: &http::Uri) -> Result<bool, ConfigError> {
        let https = match base.scheme_str() {
            Some("http") => false,
            Some("https") if cfg!(feature = "tls") => true,
            Some("https") => {
                return Err(ConfigError::new(
                    field,
                    base.to_string(),
                    "https needs the `tls` feature",
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    field,
                    base.to_string(),
                    "must be an http:// or https:// URI",
                ));
            }
        };
        if self.keep_alive_interval.is_zero() {
            return Err(ConfigError::new(
                "http2_keep_alive.interval",
                self.keep_alive_interval,
                "must be positive",
            ));
        }
        if self.keep_alive_timeout.is_zero() {
            return Err(ConfigError::new(
                "http2_keep_alive.timeout",
                self.keep_alive_timeout,
                "must be positive",
            ));
        }
        Ok(https)
    }

    /// The connector for a client of an `http` (`https == false`) or `https` base, with
    /// `connect_timeout` on the TCP connect. For `https` without configured TLS settings the
    /// system's roots are loaded here (and the call fails when there are none).
    #[cfg_attr(not(feature = "tls"), allow(clippy::unnecessary_wraps))]
    pub fn connector(
        &self,
        https: bool,
        connect_timeout: Duration,
    ) -> Result<Connector, ConfigError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        #[cfg(feature = "tls")]
        {
            http.enforce_http(false);
            let (config, server_name) = if https {
                let tls = match &self.tls {
                    Some(tls) => tls.clone(),
                    None => TlsConfig::system()?,
                };
                (
                    rustls::ClientConfig::clone(tls.rustls_config()),
                    tls.server_name().cloned(),
                )
            } else {
                (
                    rustls::ClientConfig::clone(&crate::tls::plaintext_only()),
                    None,
                )
            };
            // hyper-rustls sets ALPN itself (and refuses a configuration that has it set).
            let mut config = config;
            config.alpn_protocols.clear();
            let builder = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http();
            let builder = match server_name {
                Some(name) => builder
                    .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name)),
                None => builder,
            };
            Ok(match self.version {
                HttpVersion::Http1 => builder.enable_http1().wrap_connector(http),
                HttpVersion::Auto => builder.enable_all_versions().wrap_connector(http),
                HttpVersion::Http2 => builder.enable_http2().wrap_connector(http),
            })
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = https;
            Ok(http)
        }
    }

    /// A hyper-util client builder with the protocol and keep-alive settings applied (Tokio
    /// executor and timers).
    pub fn client_builder(&self) -> Builder {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(self.keep_alive_interval)
            .http2_keep_alive_timeout(self.keep_alive_timeout)
            .http2_keep_alive_while_idle(true);
        if self.version == HttpVersion::Http2 {
            builder.http2_only(true);
        }
        builder
    }
}

/// `true` when `err`'s chain says an HTTP/2 stream was refused before the server processed
/// it: a `REFUSED_STREAM` reset (RFC 9113 §8.7), or a stream above the last-stream-id of a
/// graceful `GOAWAY` (§6.8). Such a request never reached the application.
pub fn is_refused_stream(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    let mut depth = 0;
    while let Some(e) = current {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away()
                    && h2.is_remote()
                    && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        depth += 1;
        if depth > 32 {
            break;
        }
        current = e.source();
    }
    false
}

/// `true` when `err`'s chain holds a TLS handshake failure: a certificate the client rejected
/// (unknown CA, expired, wrong name), or an alert the server sent because it rejected the
/// handshake (for example `certificate_required` when mutual TLS lacks a client certificate;
/// with TLS 1.3 that alert can arrive after the client sent its request, but the server's
/// TLS layer dropped it before any application saw it). Always `false` without the `tls`
/// feature.
pub fn is_tls_handshake_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    #[cfg(feature = "tls")]
    {
        let mut current = Some(err);
        let mut depth = 0;
        while let Some(e) = current {
            let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
                e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(tls) = tls {
                return is_handshake_error(tls);
            }
            // HTTP/2 (the h2 crate) keeps only the text of an I/O error: recognise rustls's
            // wording of a handshake alert there.
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && let Some(inner) = io.get_ref()
                && inner.downcast_ref::<rustls::Error>().is_none()
            {
                let text = inner.to_string();
                if let Some(alert) = text.strip_prefix("received fatal alert: ") {
                    return HANDSHAKE_ALERTS.contains(&alert.trim());
                }
            }
            depth += 1;
            if depth > 32 {
                break;
            }
            current = e.source();
        }
        false
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = err;
        false
    }
}

/// The names (rustls's `Debug` of `AlertDescription`) of the alerts a server sends when it
/// rejects a handshake.
#[cfg(feature = "tls")]
const HANDSHAKE_ALERTS: [&str; 13] = [
    "HandshakeFailure",
    "BadCertificate",
    "UnsupportedCertificate",
    "CertificateRevoked",
    "CertificateExpired",
    "CertificateUnknown",
    "UnknownCA",
    "AccessDenied",
    "CertificateRequired",
    "ProtocolVersion",
    "InsufficientSecurity",
    "NoApplicationProtocol",
    "UnrecognisedName",
];

#[cfg(feature = "tls")]
fn is_handshake_error(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::PeerIncompatible(_)
        | rustls::Error::NoApplicationProtocol
        | rustls::Error::UnsupportedNameType => true,
        rustls::Error::AlertReceived(alert) => {
            HANDSHAKE_ALERTS.contains(&format!("{alert:?}").as_str())
        }
        _ => false,
    }
}

/// `true` when a client transport error means the request never reached the server's
/// application: the connection could not be made (refused, unreachable, connect timeout, a
/// failed TLS handshake), the TLS handshake was rejected by the server, or the HTTP/2 stream
/// was refused ([`is_refused_stream`]). A reset after the request was sent is not.
pub fn is_never_reached_error(err: &hyper_util::client::legacy::Error) -> bool {
    err.is_connect() || is_refused_stream(err) || is_tls_handshake_failure(err)
}
