//! The edge gateway's configuration: embedded defaults, an `edge.toml` file, then flags.
//!
//! Durations are written the humantime way (`"250ms"`, `"5s"`). Unknown keys are refused and
//! [`EdgeConfig::validate`] names the key of any bad value.
//!
//! ```
//! use storefront::edge::EdgeConfig;
//!
//! let cfg = EdgeConfig::from_toml_str(
//!     "listen = \"127.0.0.1:0\"\nupstreams = [\"http://127.0.0.1:8081\", \"127.0.0.1:8082\"]\ntimeout = \"3s\"\n",
//! )
//! .unwrap();
//! assert_eq!(cfg.upstreams.len(), 2);
//! assert_eq!(cfg.timeout, std::time::Duration::from_secs(3));
//! let err = EdgeConfig::from_toml_str("upstreams = []\n").unwrap_err();
//! assert!(err.to_string().contains("upstreams"));
//! let err = EdgeConfig::from_toml_str("upstreams = [\"127.0.0.1:1\"]\nfal = 3\n").unwrap_err();
//! assert!(err.to_string().contains("fal"));
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart::health::ConfigError;
use serde::{Deserialize, Deserializer};

use crate::config::ServerSettings;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration \"{s}\": {e}")))
}

/// Settings of `storefront edge` (every key optional in `edge.toml` except `upstreams`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Where the edge listens (port 0: any free port, printed on stdout).
    pub listen: SocketAddr,
    /// The shop instances: `http://127.0.0.1:8081` or `127.0.0.1:8081`.
    pub upstreams: Vec<String>,
    /// Timeout of one upstream attempt, from sending the request to the response head.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Timeout of opening an upstream connection (a timeout counts as never reached).
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Active check interval (`GET /healthz` on every upstream).
    #[serde(deserialize_with = "duration")]
    pub check_interval: Duration,
    /// Timeout of one active check.
    #[serde(deserialize_with = "duration")]
    pub check_timeout: Duration,
    /// Consecutive failed checks that mark an upstream down.
    pub fall: u32,
    /// Consecutive passed checks that bring it back.
    pub rise: u32,
    /// Consecutive failed requests (refused connections, 5xx) that eject an upstream at once.
    pub eject_after: u32,
    /// How long the first ejection lasts (doubles with each ejection, capped at 30 s).
    #[serde(deserialize_with = "duration")]
    pub eject_for: Duration,
    /// Retries of one request on another upstream (when it never reached the first, or when
    /// it is idempotent or carries an `Idempotency-Key`).
    pub max_retries: u32,
    /// `Retry-After` of the edge's own apology when nothing better is known.
    #[serde(deserialize_with = "duration")]
    pub retry_after: Duration,
    /// An HTML file served as the apology page (else the built-in page).
    pub apology_file: Option<PathBuf>,
    /// Worker threads, each with its own runtime and `SO_REUSEPORT` listener; 0 means one per
    /// core.
    pub workers: usize,
    /// Limits of the edge's HTTP server: the `[server]` table (header-read, keep-alive and
    /// body timeouts, connection cap, header size, shutdown grace).
    pub server: ServerSettings,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8000),
            upstreams: Vec::new(),
            timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(1),
            check_interval: Duration::from_secs(1),
            check_timeout: Duration::from_millis(500),
            fall: 2,
            rise: 2,
            eject_after: 3,
            eject_for: Duration::from_secs(2),
            max_retries: 1,
            retry_after: Duration::from_secs(5),
            apology_file: None,
            workers: 0,
            server: ServerSettings::default(),
        }
    }
}

/// Why an edge configuration could not be loaded.
#[derive(Debug)]
pub enum EdgeConfigError {
    /// The file could not be read.
    Read(PathBuf, std::io::Error),
    /// Malformed TOML, an unknown key or a value of the wrong type.
    Parse(toml::de::Error),
    /// A value is out of range.
    Invalid(ConfigError),
}

impl std::fmt::Display for EdgeConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EdgeConfigError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            EdgeConfigError::Parse(e) => write!(f, "invalid edge configuration: {e}"),
            EdgeConfigError::Invalid(e) => write!(f, "invalid edge configuration: {e}"),
        }
    }
}

impl std::error::Error for EdgeConfigError {}

impl From<ConfigError> for EdgeConfigError {
    fn from(e: ConfigError) -> Self {
        EdgeConfigError::Invalid(e)
    }
}

/// Parses `http://host:port`, `http://host:port/` or `host:port` into socket addresses.
pub(crate) fn upstream_addr(s: &str) -> Result<SocketAddr, ConfigError> {
    let rest = s.strip_prefix("http://").unwrap_or(s);
    if rest.contains("://") {
        return Err(ConfigError::new(
            "upstreams",
            s,
            "only http:// upstreams are supported",
        ));
    }
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') {
        return Err(ConfigError::new(
            "upstreams",
            s,
            "must be a base URL without a path",
        ));
    }
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConfigError::new("upstreams", s, "is not a reachable host:port"))
}

impl EdgeConfig {
    /// Parses and validates TOML.
    pub fn from_toml_str(s: &str) -> Result<EdgeConfig, EdgeConfigError> {
        let cfg: EdgeConfig = toml::from_str(s).map_err(EdgeConfigError::Parse)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<EdgeConfig, EdgeConfigError> {
        let s = std::fs::read_to_string(path).map_err(|e| EdgeConfigError::Read(path.into(), e))?;
        Self::from_toml_str(&s)
    }

    /// The upstreams' socket addresses (validated by [`validate`](Self::validate)).
    pub fn upstream_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.upstreams.iter().map(|u| upstream_addr(u)).collect()
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.upstreams.is_empty() {
            return Err(ConfigError::new(
                "upstreams",
                0,
                "needs at least one upstream (--upstream http://127.0.0.1:PORT)",
            ));
        }
        self.upstream_addrs()?;
        for (key, d) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("check_interval", self.check_interval),
            ("check_timeout", self.check_timeout),
            ("eject_for", self.eject_for),
            ("retry_after", self.retry_after),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, d, "must be greater than zero"));
            }
        }
        for (key, n) in [
            ("fall", self.fall),
            ("rise", self.rise),
            ("eject_after", self.eject_after),
        ] {
            if !(1..=100).contains(&n) {
                return Err(ConfigError::new(key, n, "must be 1 to 100"));
            }
        }
        if self.max_retries > 6 {
            return Err(ConfigError::new(
                "max_retries",
                self.max_retries,
                "must be at most 6",
            ));
        }
        if self.workers > 256 {
            return Err(ConfigError::new(
                "workers",
                self.workers,
                "must be at most 256",
            ));
        }
        self.server.to_server_config("edge")?;
        if let Some(p) = &self.apology_file
            && !p.is_file()
        {
            return Err(ConfigError::new(
                "apology_file",
                p.display(),
                "is not a readable file",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        for (toml, key) in [
            ("upstreams = []\n", "upstreams"),
            ("upstreams = [\"https://127.0.0.1:1\"]\n", "upstreams"),
            ("upstreams = [\"http://127.0.0.1:1/shop\"]\n", "upstreams"),
            (
                "upstreams = [\"127.0.0.1:1\"]\ntimeout = \"0s\"\n",
                "timeout",
            ),
            ("upstreams = [\"127.0.0.1:1\"]\nfall = 0\n", "fall"),
            (
                "upstreams = [\"127.0.0.1:1\"]\nmax_retries = 9\n",
                "max_retries",
            ),
            (
                "upstreams = [\"127.0.0.1:1\"]\napology_file = \"/nonexistent/x.html\"\n",
                "apology_file",
            ),
            (
                "upstreams = [\"127.0.0.1:1\"]\ncheck_interval = \"soon\"\n",
                "check_interval",
            ),
            ("upstreams = [\"127.0.0.1:1\"]\nlisten = 5\n", "listen"),
            (
                "upstreams = [\"127.0.0.1:1\"]\n[server]\nkeep_alive_timeout = \"0s\"\n",
                "server.keep_alive_timeout",
            ),
        ] {
            let e = EdgeConfig::from_toml_str(toml).unwrap_err().to_string();
            assert!(e.contains(key), "{toml:?}: {e}");
        }
    }

    #[test]
    fn upstream_forms() {
        let a: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        assert_eq!(upstream_addr("http://127.0.0.1:8081").unwrap(), a);
        assert_eq!(upstream_addr("http://127.0.0.1:8081/").unwrap(), a);
        assert_eq!(upstream_addr("127.0.0.1:8081").unwrap(), a);
        assert!(upstream_addr("127.0.0.1").is_err());
    }
}
