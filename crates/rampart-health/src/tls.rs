//! TLS settings for `https://` clients and probes (feature `tls`).
//!
//! A [`TlsConfig`] is a validated rustls client configuration on the *ring* crypto provider
//! (it builds with a C compiler alone; aws-lc-rs would also need cmake). It carries:
//!
//! - the trusted roots: the operating system's store by default (loaded once, when the
//!   configuration is built), or a custom CA bundle in PEM ([`TlsConfigBuilder::ca_pem`],
//!   [`TlsConfigBuilder::ca_pem_file`]), which then replaces the system's roots;
//! - an optional client certificate chain and key in PEM, for mutual TLS
//!   ([`TlsConfigBuilder::client_cert_pem`]);
//! - an optional server name (SNI, and the name the certificate must carry); by default the
//!   host of the URI being dialled.
//!
//! Certificates are always verified: there is no switch to skip verification. A test that
//! needs TLS generates its own CA and trusts it with [`TlsConfigBuilder::ca_pem`].
//!
//! ALPN is not part of this configuration: the client that uses it offers `h2` and/or
//! `http/1.1` according to its [`HttpVersion`](crate::transport::HttpVersion).
//!
//! ```
//! use rampart_health::tls::TlsConfig;
//!
//! // Not a certificate: the builder names the field and says why.
//! let err = TlsConfig::builder().ca_pem(b"not pem".to_vec()).build().unwrap_err();
//! assert_eq!(err.field(), "ca_pem");
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::ConfigError;

/// A validated TLS client configuration (see the [module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    roots: RootsKind,
    client_auth: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RootsKind {
    System,
    Custom,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("roots", &self.roots)
            .field("client_auth", &self.client_auth)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum CaSource {
    System,
    Pem(Vec<u8>),
    File(PathBuf),
}

/// Builds a [`TlsConfig`]; see [`TlsConfig::builder`].
#[derive(Clone)]
pub struct TlsConfigBuilder {
    ca: CaSource,
    client_cert: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl fmt::Debug for TlsConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ca = match &self.ca {
            CaSource::System => "system".to_owned(),
            CaSource::Pem(b) => format!("{} bytes of PEM", b.len()),
            CaSource::File(p) => p.display().to_string(),
        };
        f.debug_struct("TlsConfigBuilder")
            .field("ca", &ca)
            .field("client_cert", &self.client_cert.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsConfig {
    /// A builder: system roots, no client certificate, SNI from the dialled host.
    pub fn builder() -> TlsConfigBuilder {
        TlsConfigBuilder {
            ca: CaSource::System,
            client_cert: None,
            server_name: None,
        }
    }

    /// The operating system's roots, nothing else: loaded on the first call and shared by
    /// every later one (a pool of endpoints does not parse the store once per endpoint).
    ///
    /// Fails when the system store holds no usable certificate (a minimal container without
    /// a CA bundle): then configure a bundle with [`TlsConfigBuilder::ca_pem_file`].
    pub fn system() -> Result<Self, ConfigError> {
        static SYSTEM: std::sync::OnceLock<Result<TlsConfig, ConfigError>> =
            std::sync::OnceLock::new();
        SYSTEM.get_or_init(|| Self::builder().build()).clone()
    }

    /// The rustls client configuration, without ALPN (the client sets it).
    pub fn rustls_config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The configured server name, if any (otherwise the dialled host is used).
    pub fn server_name(&self) -> Option<&ServerName<'static>> {
        self.server_name.as_ref()
    }

    /// Whether a client certificate is presented (mutual TLS).
    pub fn has_client_cert(&self) -> bool {
        self.client_auth
    }
}

impl TlsConfigBuilder {
    /// Trusts the CA certificates of this PEM bundle instead of the system's roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = CaSource::Pem(pem.into());
        self
    }

    /// Trusts the CA certificates of the PEM file at `path` instead of the system's roots
    /// (read when the configuration is built).
    pub fn ca_pem_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca = CaSource::File(path.as_ref().to_path_buf());
        self
    }

    /// Presents this client certificate chain (PEM, leaf first) and private key (PEM: PKCS#8,
    /// PKCS#1 or SEC1) to servers that ask for one (mutual TLS).
    pub fn client_cert_pem(mut self, chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_cert = Some((chain.into(), key.into()));
        self
    }

    /// Sends this server name (SNI) and requires the certificate to carry it, whatever host
    /// is dialled (useful when dialling an IP address).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Validates and builds. Errors name the field (`ca_pem`, `ca_pem_file`, `roots`,
    /// `client_cert_pem`, `server_name`) and the value.
    pub fn build(self) -> Result<TlsConfig, ConfigError> {
        let (roots, kind) = match self.ca {
            CaSource::System => (system_roots()?, RootsKind::System),
            CaSource::Pem(pem) => (
                roots_from_pem(&pem).map_err(|reason| {
                    ConfigError::new("ca_pem", format!("{} bytes", pem.len()), reason)
                })?,
                RootsKind::Custom,
            ),
            CaSource::File(path) => {
                let pem = std::fs::read(&path).map_err(|_| {
                    ConfigError::new("ca_pem_file", path.display(), "could not be read")
                })?;
                (
                    roots_from_pem(&pem).map_err(|reason| {
                        ConfigError::new("ca_pem_file", path.display(), reason)
                    })?,
                    RootsKind::Custom,
                )
            }
        };
        let server_name = match self.server_name {
            None => None,
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                ConfigError::new("server_name", &name, "not a valid DNS name or IP address")
            })?),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| {
                ConfigError::new(
                    "protocol_versions",
                    "TLS 1.2, TLS 1.3",
                    "not supported by the crypto provider",
                )
            })?
            .with_root_certificates(roots);
        let client_auth = self.client_cert.is_some();
        let config = match self.client_cert {
            None => builder.with_no_client_auth(),
            Some((chain_pem, key_pem)) => {
                let value = format!(
                    "{} bytes of chain, {} bytes of key",
                    chain_pem.len(),
                    key_pem.len()
                );
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(&chain_pem)
                        .collect::<Result<_, _>>()
                        .map_err(|_| {
                            ConfigError::new(
                                "client_cert_pem",
                                &value,
                                "the chain is not valid PEM",
                            )
                        })?;
                if chain.is_empty() {
                    return Err(ConfigError::new(
                        "client_cert_pem",
                        &value,
                        "the chain holds no certificate",
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                    ConfigError::new(
                        "client_cert_pem",
                        &value,
                        "the key is not a PEM private key",
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|_| {
                    ConfigError::new(
                        "client_cert_pem",
                        &value,
                        "the key does not match the certificate or is not supported",
                    )
                })?
            }
        };
        Ok(TlsConfig {
            config: Arc::new(config),
            server_name,
            roots: kind,
            client_auth,
        })
    }
}

fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, &'static str> {
    let mut roots = RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|_| "not valid PEM")?;
        roots
            .add(cert)
            .map_err(|_| "holds a certificate that is not a usable trust anchor")?;
        any = true;
    }
    if any {
        Ok(roots)
    } else {
        Err("holds no PEM certificate")
    }
}

fn system_roots() -> Result<RootCertStore, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(error = %error, "could not load part of the system's certificate store");
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(ConfigError::new(
            "roots",
            "system",
            "the system's certificate store holds no usable certificate (configure a CA bundle)",
        ));
    }
    Ok(roots)
}

/// An empty configuration for connectors that only ever dial plaintext (never used for a
/// handshake: a plaintext client has no `https` URI to dial).
pub(crate) fn plaintext_only() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(b) => Arc::new(
            b.with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        ),
        // Unreachable with ring (it supports both versions); stay total anyway.
        Err(_) => Arc::new(
            ClientConfig::builder()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        ),
    }
}
