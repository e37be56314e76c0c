//! The `[[routes]]` entries: which host and path prefix go to which cluster.

use serde::Deserialize;

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteSection {
    /// `host`, default: any host. Compared with the request's `Host` without its port,
    /// ignoring case.
    #[serde(default)]
    pub host: Option<String>,
    /// `prefix`, default `"/"`: the path must start with it.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// `cluster` (required): the name of a `[clusters.<name>]` table.
    pub cluster: String,
}

fn default_prefix() -> String {
    "/".to_owned()
}
