//! TLS termination: [`ServerTls`], a rustls server configuration on the *ring* crypto
//! provider (it builds with a C compiler alone) offering ALPN `h2` then `http/1.1`.
//!
//! The handshake counts towards the header-read timeout: a client must finish it and send
//! its first request head (or the HTTP/2 preface) within that time from the accept.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rampart_health::ConfigError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server certificate chain and its key, ready to terminate TLS (see
/// [`ServerConfigBuilder::tls`](super::ServerConfigBuilder::tls)). Cheap to clone; two
/// values are equal when they are clones of one another.
///
/// ```
/// use rampart_gateway::server::ServerTls;
///
/// let err = ServerTls::from_pem(b"not pem", b"not pem").unwrap_err();
/// assert_eq!(err.field(), "cert");
/// ```
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("alpn", &["h2", "http/1.1"])
            .finish_non_exhaustive()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for ServerTls {}

impl ServerTls {
    /// From a PEM certificate chain (the server's certificate first, then its
    /// intermediates) and a PEM private key (PKCS#8, PKCS#1 or SEC1). Errors name the field
    /// (`cert`, `key`) and say why.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, ConfigError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<_, _>>()
            .map_err(|_| ConfigError::new("cert", "(PEM)", "is not a PEM certificate chain"))?;
        if chain.is_empty() {
            return Err(ConfigError::new(
                "cert",
                "(PEM)",
                "holds no CERTIFICATE block",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|_| ConfigError::new("key", "(PEM)", "holds no PEM private key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| ConfigError::new("tls", "ring", "offers no protocol version"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|_| {
                ConfigError::new("key", "(PEM)", "is not a usable key for the certificate")
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// From PEM files (see [`from_pem`](Self::from_pem)); errors name the field and the path.
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> Result<Self, ConfigError> {
        let read = |field: &'static str, path: &Path| {
            std::fs::read(path).map_err(|_| ConfigError::new(field, path, "cannot be read"))
        };
        let cert_pem = read("cert", cert_chain)?;
        let key_pem = read("key", key)?;
        Self::from_pem(&cert_pem, &key_pem).map_err(|e| {
            let path = if e.field() == "key" { key } else { cert_chain };
            ConfigError::new(e.field(), path, e.reason())
        })
    }

    /// The rustls configuration.
    pub fn rustls_config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}
