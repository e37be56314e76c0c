//! How the catalog service is spoken: HTTP/1.1 (the default), HTTP/2 with prior knowledge
//! over plaintext (`h2c`, as gRPC inside a cluster), or HTTPS (TLS with ALPN `h2` then
//! `http/1.1`, certificates made at start-up).
//!
//! The fleet's catalog replicas serve the protocol of `[fleet] catalog_protocol` (or
//! `--catalog-protocol`); the shop's catalog balancer dials them the same way
//! ([`UpstreamDial`]): rampart-balance's `HttpEndpoint` over h2c, or over `https://` trusting
//! the fleet's CA, with the active health checks dialing as the endpoints do. For `https` the
//! fleet generates a CA and a certificate for its bind address, `127.0.0.1` and `localhost`
//! signed by it (rcgen, on the ring provider); `storefront fleet` writes the CA to
//! `<data-dir>/catalog-ca.pem` and names it in `fleet.toml` (`[fleet] catalog_ca_file`), so a
//! shop started over that file trusts it, and nothing else.
//!
//! ```
//! use storefront::fleet::{CatalogProtocol, FleetPki, UpstreamDial};
//!
//! let pki = FleetPki::generate(&["127.0.0.1".parse().unwrap()]).unwrap();
//! assert!(pki.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! let dial = UpstreamDial::new(CatalogProtocol::Https, Some(pki.ca_pem().to_owned()));
//! assert_eq!(dial.scheme(), "https");
//! assert_eq!("h2c".parse::<CatalogProtocol>().unwrap(), CatalogProtocol::H2c);
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use http::Uri;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rampart::balance::HttpEndpoint;
use rampart::health::ConfigError;
use rampart_balance::HttpEndpointBuilder;
use rampart_health::tls::TlsConfig;
use rampart_health::transport::HttpVersion;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// How the catalog service is spoken (`[fleet] catalog_protocol`, `--catalog-protocol`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum CatalogProtocol {
    /// Plaintext HTTP/1.1.
    #[default]
    Http1,
    /// Plaintext HTTP/2 with prior knowledge: every request a stream on one connection.
    H2c,
    /// TLS with a certificate made at start-up; ALPN `h2` (then `http/1.1`).
    Https,
}

impl CatalogProtocol {
    /// `http1`, `h2c` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogProtocol::Http1 => "http1",
            CatalogProtocol::H2c => "h2c",
            CatalogProtocol::Https => "https",
        }
    }
}

impl fmt::Display for CatalogProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`CatalogProtocol`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProtocol(String);

impl fmt::Display for UnknownProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown protocol {:?}: expected http1, h2c or https",
            self.0
        )
    }
}

impl std::error::Error for UnknownProtocol {}

impl FromStr for CatalogProtocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http1" => Ok(CatalogProtocol::Http1),
            "h2c" => Ok(CatalogProtocol::H2c),
            "https" => Ok(CatalogProtocol::Https),
            other => Err(UnknownProtocol(other.to_owned())),
        }
    }
}

/// Why certificates could not be made or loaded.
#[derive(Debug)]
pub struct PkiError(String);

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificates: {}", self.0)
    }
}

impl std::error::Error for PkiError {}

/// A CA and a server certificate signed by it, made at start-up (rcgen).
#[derive(Clone)]
pub struct FleetPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for FleetPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetPki").finish_non_exhaustive()
    }
}

impl FleetPki {
    /// A fresh CA, and a certificate for `localhost`, `127.0.0.1` and `hosts` signed by it.
    pub fn generate(hosts: &[IpAddr]) -> Result<Self, PkiError> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let err = |e: rcgen::Error| PkiError(e.to_string());
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "storefront fleet ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer =
            CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(err)?).map_err(err)?;
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        for h in hosts {
            let h = h.to_string();
            if !names.contains(&h) {
                names.push(h);
            }
        }
        let key = KeyPair::generate().map_err(err)?;
        let cert = CertificateParams::new(names)
            .map_err(err)?
            .signed_by(&key, &issuer)
            .map_err(err)?;
        Ok(Self {
            ca_pem: issuer.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA certificate (PEM) clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The servers' TLS settings: the certificate, ALPN `h2` then `http/1.1`.
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, PkiError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let err = |e: &dyn fmt::Display| PkiError(e.to_string());
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(&e))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| err(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(&e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| err(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// How a replica serves its connections.
#[derive(Clone)]
pub(crate) enum Wire {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (an HTTP/1 request is refused).
    H2c,
    /// TLS, then HTTP/2 or HTTP/1.1 as ALPN chose.
    Tls(TlsAcceptor),
}

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wire::Http1 => "http1",
            Wire::H2c => "h2c",
            Wire::Tls(_) => "https",
        })
    }
}

impl Wire {
    /// Serves `app` on one accepted connection until it closes.
    pub(crate) async fn serve(self, stream: TcpStream, app: Router) {
        let svc = TowerToHyperService::new(app);
        match self {
            Wire::Http1 => {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
            Wire::H2c => {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
            Wire::Tls(acceptor) => {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                }
            }
        }
    }
}

/// How the shop dials a service's replicas: the protocol, and for `https` the CA it trusts.
/// The shop takes it from the fleet's settings when it starts (the demo from its own fleet,
/// `storefront shop` from `[fleet]` in the file `storefront fleet` wrote); it is not a key of
/// `[shop]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamDial {
    protocol: CatalogProtocol,
    ca_pem: Option<String>,
}

impl UpstreamDial {
    /// Dials with `protocol`, trusting `ca_pem` (PEM) for `https`.
    pub fn new(protocol: CatalogProtocol, ca_pem: Option<String>) -> Self {
        Self { protocol, ca_pem }
    }

    /// The dial a shop over a fleet configured with `fleet` uses for the catalog: for
    /// `https`, the CA is read from `catalog_ca_file`.
    pub fn for_catalog(fleet: &crate::config::FleetConfig) -> Result<Self, ConfigError> {
        let ca_pem = match (fleet.catalog_protocol, &fleet.catalog_ca_file) {
            (CatalogProtocol::Https, Some(path)) => {
                Some(std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        "fleet.catalog_ca_file",
                        format!("{} ({e})", path.display()),
                        "cannot be read",
                    )
                })?)
            }
            (CatalogProtocol::Https, None) => {
                return Err(ConfigError::new(
                    "fleet.catalog_ca_file",
                    "none",
                    "is needed with catalog_protocol = \"https\"",
                ));
            }
            _ => None,
        };
        Ok(Self::new(fleet.catalog_protocol, ca_pem))
    }

    /// The protocol.
    pub fn protocol(&self) -> CatalogProtocol {
        self.protocol
    }

    /// The CA (PEM) trusted for `https`.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        match self.protocol {
            CatalogProtocol::Https => "https",
            CatalogProtocol::Http1 | CatalogProtocol::H2c => "http",
        }
    }

    /// An endpoint builder for the replica at `base` that speaks the protocol: HTTP/2 with
    /// prior knowledge for `h2c`; for `https`, ALPN `h2` then `http/1.1` and the CA.
    pub fn endpoint(&self, base: Uri) -> Result<HttpEndpointBuilder, ConfigError> {
        let builder = HttpEndpoint::builder(base);
        Ok(match self.protocol {
            CatalogProtocol::Http1 => builder,
            CatalogProtocol::H2c => builder.http_version(HttpVersion::Http2),
            CatalogProtocol::Https => {
                let mut tls = TlsConfig::builder();
                if let Some(pem) = &self.ca_pem {
                    tls = tls.ca_pem(pem.clone());
                }
                builder.http_version(HttpVersion::Auto).tls(tls.build()?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_and_print() {
        for p in [
            CatalogProtocol::Http1,
            CatalogProtocol::H2c,
            CatalogProtocol::Https,
        ] {
            assert_eq!(p.as_str().parse::<CatalogProtocol>().unwrap(), p);
        }
        assert!("http2".parse::<CatalogProtocol>().is_err());
    }

    #[test]
    fn https_without_a_ca_file_is_refused_naming_the_key() {
        let fleet = crate::config::FleetConfig {
            catalog_protocol: CatalogProtocol::Https,
            ..Default::default()
        };
        let e = UpstreamDial::for_catalog(&fleet).unwrap_err();
        assert!(e.to_string().contains("fleet.catalog_ca_file"), "{e}");
    }
}
