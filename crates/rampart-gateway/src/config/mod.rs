//! The gateway's configuration file: TOML, read with serde.
//!
//! Every table refuses unknown keys (`#[serde(deny_unknown_fields)]`), durations are
//! humantime strings (`"10s"`, `"500ms"`), and [`GatewayConfig::validate`] names the key path
//! and the bad value of the first problem (`clusters.catalog.retries: 99 is above the maximum
//! of 10`). Every key, its default and its meaning are in the crate's README.
//!
//! ```
//! use rampart_gateway::config::GatewayConfig;
//!
//! let config = GatewayConfig::from_toml(r#"
//!     [server]
//!     listen = "127.0.0.1:0"
//!
//!     [[routes]]
//!     prefix = "/"
//!     cluster = "shop"
//!
//!     [clusters.shop]
//!     endpoints = ["127.0.0.1:8081", "127.0.0.1:8082"]
//! "#).unwrap();
//! assert_eq!(config.clusters["shop"].retries, 2);
//!
//! let err = GatewayConfig::from_toml(r#"
//!     [clusters.shop]
//!     endpoints = ["127.0.0.1:8081"]
//!     retries = 99
//! "#).unwrap_err();
//! assert_eq!(err.to_string(), "clusters.shop.retries: 99 is above the maximum of 10");
//! ```

mod cluster;
mod route;
mod server;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

pub use cluster::{
    BreakerSection, ChecksSection, ClusterSection, EjectionSection, HostMode, MAX_RETRIES,
    TlsSection, UpstreamProtocol,
};
pub use route::RouteSection;
pub use server::{AccessLogSection, AdminSection, ServerSection, ServerTlsSection};
pub(crate) use validate::{authority, dns_name, resolve};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// `[server]`: the listener and its limits.
    pub server: ServerSection,
    /// `[admin]`: the admin listener.
    pub admin: AdminSection,
    /// `[access_log]`: one line per request.
    pub access_log: AccessLogSection,
    /// `[[routes]]`: host and path prefix to a cluster, first match wins.
    pub routes: Vec<RouteSection>,
    /// `[clusters.<name>]`: the upstream clusters.
    pub clusters: BTreeMap<String, ClusterSection>,
}

/// A configuration the gateway refuses: the key path, the value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// `key: value reason`.
    pub fn new(
        key: impl fmt::Display,
        value: impl fmt::Display,
        reason: impl fmt::Display,
    ) -> Self {
        Self {
            message: format!("{key}: {value} {reason}"),
        }
    }

    pub(crate) fn wrap(prefix: &str, e: &dyn fmt::Display) -> Self {
        Self {
            message: format!("{prefix}: {e}"),
        }
    }

    fn plain(message: String) -> Self {
        Self { message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl GatewayConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            // toml's own message spans several lines with the offending source; keep the
            // reason and name the key path instead (the table header above, then the key).
            let msg = e.message().trim().to_owned();
            ConfigError::plain(
                match e.span().and_then(|span| key_path_at(text, span.start)) {
                    Some((line, path)) => format!("{path}: {msg} (line {line})"),
                    None => msg,
                },
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::plain(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }
}

/// The 1-based line of `offset` and the dotted key path written there (`clusters.a.retries`,
/// `routes[1].prefix`), reconstructed from the nearest table header above it.
fn key_path_at(text: &str, offset: usize) -> Option<(usize, String)> {
    let offset = offset.min(text.len());
    let before = text.get(..offset)?;
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..)?.lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let mut header: Option<String> = None;
    for l in text.get(..line_start)?.lines().rev() {
        let l = l.trim();
        if let Some(name) = l
            .strip_prefix("[[")
            .and_then(|r| r.split_once("]]"))
            .map(|(n, _)| n.trim())
        {
            let heading = format!("[[{name}]]");
            let index = text
                .get(..line_start)?
                .lines()
                .filter(|x| x.trim().starts_with(&heading))
                .count()
                .saturating_sub(1);
            header = Some(format!("{name}[{index}]"));
            break;
        }
        if let Some(name) = l
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map(|(n, _)| n.trim())
        {
            header = Some(name.to_owned());
            break;
        }
    }
    let path = match (header, key) {
        (Some(h), Some(k)) => format!("{h}.{k}"),
        (None, Some(k)) => k,
        (Some(h), None) => h,
        (None, None) => return None,
    };
    Some((line_no, path))
}

/// serde helpers for humantime strings.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write e.g. \"10s\" or \"500ms\""
            ))
        })
    }
}
