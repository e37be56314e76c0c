//! What the gateway refuses: the checks of every table, each error naming its key path, and
//! the endpoint and DNS strings they parse.

use std::net::{SocketAddr, ToSocketAddrs};

use super::{
    ClusterSection, ConfigError, GatewayConfig, MAX_RETRIES, TlsSection, UpstreamProtocol,
};

impl GatewayConfig {
    /// Checks every value; the first problem names its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.to_server_config("gateway")?;
        for (i, route) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if !route.prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{key}.prefix"),
                    format!("{:?}", route.prefix),
                    "must start with /",
                ));
            }
            if let Some(host) = &route.host
                && (host.is_empty() || host.contains(['/', ' ']))
            {
                return Err(ConfigError::new(
                    format!("{key}.host"),
                    format!("{host:?}"),
                    "is not a host name",
                ));
            }
            if !self.clusters.contains_key(&route.cluster) {
                return Err(ConfigError::new(
                    format!("{key}.cluster"),
                    format!("{:?}", route.cluster),
                    "names no [clusters] table",
                ));
            }
        }
        for (name, c) in &self.clusters {
            c.validate(name)?;
        }
        Ok(())
    }
}

impl ClusterSection {
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("clusters.{name}.{k}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::new(
                "clusters",
                format!("{name:?}"),
                "is not a valid cluster name (letters, digits, - and _)",
            ));
        }
        match &self.dns {
            Some(dns) if !self.endpoints.is_empty() => {
                return Err(ConfigError::new(
                    key("dns"),
                    format!("{dns:?}"),
                    "cannot be combined with endpoints (use one or the other)",
                ));
            }
            Some(dns) => {
                dns_name(dns)
                    .map_err(|why| ConfigError::new(key("dns"), format!("{dns:?}"), why))?;
            }
            None if self.endpoints.is_empty() => {
                return Err(ConfigError::new(
                    key("endpoints"),
                    "[]",
                    "must name at least one endpoint (or set dns)",
                ));
            }
            None => {}
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let ekey = format!("clusters.{name}.endpoints[{i}]");
            let https = e.starts_with("https://");
            if https != (self.protocol == UpstreamProtocol::Https) && e.contains("://") {
                return Err(ConfigError::new(
                    ekey,
                    format!("{e:?}"),
                    format!(
                        "does not match protocol = \"{}\" (write host:port)",
                        self.protocol.as_str()
                    ),
                ));
            }
            resolve(e).map_err(|why| ConfigError::new(ekey, format!("{e:?}"), why))?;
        }
        if self.dns_ttl_ceiling < self.dns_ttl_floor {
            return Err(ConfigError::new(
                key("dns_ttl_ceiling"),
                format!("\"{}\"", humantime::format_duration(self.dns_ttl_ceiling)),
                "must be at least dns_ttl_floor",
            ));
        }
        if self.grpc && self.protocol == UpstreamProtocol::Http1 {
            return Err(ConfigError::new(
                key("grpc"),
                true,
                "needs protocol = \"h2c\" or \"https\" (gRPC runs over HTTP/2)",
            ));
        }
        if self.protocol != UpstreamProtocol::Https && self.tls != TlsSection::default() {
            return Err(ConfigError::new(
                key("tls"),
                "(a table)",
                "applies only to protocol = \"https\"",
            ));
        }
        self.tls_config(name)?;
        if self.retries > MAX_RETRIES {
            return Err(ConfigError::new(
                key("retries"),
                self.retries,
                format!("is above the maximum of {MAX_RETRIES}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.retry_budget_ratio) {
            return Err(ConfigError::new(
                key("retry_budget_ratio"),
                self.retry_budget_ratio,
                "must be between 0 and 1",
            ));
        }
        for (k, d) in [
            ("connect_timeout", self.connect_timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("total_timeout", self.total_timeout),
            ("retry_after", self.retry_after),
            ("dns_ttl_floor", self.dns_ttl_floor),
            ("checks.interval", self.checks.interval),
            ("checks.timeout", self.checks.timeout),
            (
                "ejection.base_ejection_time",
                self.ejection.base_ejection_time,
            ),
            ("breaker.open_duration", self.breaker.open_duration),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key(k), "\"0s\"", "must be above zero"));
            }
        }
        if self.total_timeout < self.attempt_timeout {
            return Err(ConfigError::new(
                key("total_timeout"),
                format!("\"{}\"", humantime::format_duration(self.total_timeout)),
                "must be at least attempt_timeout",
            ));
        }
        if !self.checks.path.starts_with('/') {
            return Err(ConfigError::new(
                key("checks.path"),
                format!("{:?}", self.checks.path),
                "must start with /",
            ));
        }
        for (k, n) in [
            ("checks.rise", self.checks.rise),
            ("checks.fall", self.checks.fall),
            ("breaker.window", self.breaker.window),
            ("breaker.minimum_calls", self.breaker.minimum_calls),
            (
                "ejection.consecutive_failures",
                self.ejection.consecutive_failures,
            ),
        ] {
            if n == 0 {
                return Err(ConfigError::new(key(k), 0, "must be at least 1"));
            }
        }
        if !(0.0..=100.0).contains(&self.breaker.failure_rate) || self.breaker.failure_rate == 0.0 {
            return Err(ConfigError::new(
                key("breaker.failure_rate"),
                self.breaker.failure_rate,
                "must be above 0 and at most 100",
            ));
        }
        if !(0.0..=100.0).contains(&self.ejection.max_ejection_percent) {
            return Err(ConfigError::new(
                key("ejection.max_ejection_percent"),
                self.ejection.max_ejection_percent,
                "must be between 0 and 100",
            ));
        }
        if let Some(page) = &self.apology_page
            && let Err(e) = std::fs::metadata(page)
        {
            return Err(ConfigError::new(
                key("apology_page"),
                format!("{:?}", page.display().to_string()),
                format!("cannot be read: {e}"),
            ));
        }
        self.parts(name)?;
        Ok(())
    }
}

/// `host:port` (an optional `http://` in front) to its first socket address.
pub(crate) fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    let hostport = authority(endpoint);
    if hostport.contains('/') || hostport.is_empty() {
        return Err("is not host:port".to_owned());
    }
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("does not resolve: {e}"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_owned())
}

/// The `host:port` part of an endpoint string.
pub(crate) fn authority(endpoint: &str) -> &str {
    endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint)
        .trim_end_matches('/')
}

/// A `dns` value, `"name:port"`, split into the name and the port.
pub(crate) fn dns_name(value: &str) -> Result<(String, u16), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("is not name:port".to_owned());
    };
    if host.is_empty()
        || host.contains(['/', ' ', '[', ']', ':'])
        || host.starts_with('.')
        || host.contains("..")
    {
        return Err("is not name:port (a DNS name and a port)".to_owned());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(format!("has no valid port ({port:?})")),
    }
}
