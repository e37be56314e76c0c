//! The responder's configuration: names, TTL, answer count, the client-subnet → region table,
//! SRV names and transport limits. [`DnsConfigBuilder::build`] validates every field.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::rr::Name;
use rampart_health::ConfigError;

use super::query::{Addresses, DnsQuery};
use crate::Gslb;

/// The selector a DNS name answers from: sites whose services are their [`Addresses`].
pub type DnsGslb = Gslb<Addresses, DnsQuery>;

/// The longest TTL accepted (one day): answers from a GSLB must expire.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);

/// A configured name: what it answers from.
#[derive(Clone)]
pub(crate) struct NameConfig {
    pub(crate) name: Name,
    pub(crate) gslb: DnsGslb,
}

/// A configured SRV name.
#[derive(Debug, Clone)]
pub(crate) struct SrvConfig {
    pub(crate) name: Name,
    /// Index of the target in `names`.
    pub(crate) target: usize,
    pub(crate) port: u16,
}

/// Validated responder settings. Build with [`DnsConfig::builder`].
#[derive(Clone)]
pub struct DnsConfig {
    pub(crate) names: Vec<NameConfig>,
    pub(crate) srv: Vec<SrvConfig>,
    pub(crate) subnets: Vec<(IpAddr, u8, Arc<str>)>,
    pub(crate) ttl: u32,
    pub(crate) max_answers: usize,
    pub(crate) udp_payload: u16,
    pub(crate) udp_workers: usize,
    pub(crate) tcp_timeout: Duration,
    pub(crate) label: Arc<str>,
}

impl fmt::Debug for DnsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsConfig")
            .field(
                "names",
                &self
                    .names
                    .iter()
                    .map(|n| (n.name.to_string(), n.gslb.handle().name().to_owned()))
                    .collect::<Vec<_>>(),
            )
            .field("srv", &self.srv)
            .field("subnets", &self.subnets)
            .field("ttl", &self.ttl)
            .field("max_answers", &self.max_answers)
            .field("udp_payload", &self.udp_payload)
            .field("udp_workers", &self.udp_workers)
            .field("tcp_timeout", &self.tcp_timeout)
            .field("label", &self.label)
            .finish()
    }
}

impl DnsConfig {
    /// A builder with the defaults: TTL 5 s, at most 8 answers, EDNS UDP payload 1232 bytes,
    /// 2 UDP workers, TCP idle timeout 5 s, label `dns`.
    pub fn builder() -> DnsConfigBuilder {
        DnsConfigBuilder {
            names: Vec::new(),
            srv: Vec::new(),
            subnets: Vec::new(),
            ttl: Duration::from_secs(5),
            max_answers: 8,
            udp_payload: 1232,
            udp_workers: 2,
            tcp_timeout: Duration::from_secs(5),
            label: None,
        }
    }

    /// The TTL of every answer, in seconds.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The most address records in one answer.
    pub fn max_answers(&self) -> usize {
        self.max_answers
    }

    /// The label of metrics and events that belong to no configured name.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Builds a [`DnsConfig`]; [`build`](Self::build) validates.
pub struct DnsConfigBuilder {
    names: Vec<(String, DnsGslb)>,
    srv: Vec<(String, String, u16)>,
    subnets: Vec<(String, Arc<str>)>,
    ttl: Duration,
    max_answers: usize,
    udp_payload: u16,
    udp_workers: usize,
    tcp_timeout: Duration,
    label: Option<Arc<str>>,
}

impl fmt::Debug for DnsConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsConfigBuilder")
            .field(
                "names",
                &self.names.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("srv", &self.srv)
            .field("subnets", &self.subnets)
            .field("ttl", &self.ttl)
            .field("max_answers", &self.max_answers)
            .finish_non_exhaustive()
    }
}

impl DnsConfigBuilder {
    /// Answers `A`/`AAAA` queries for `name` (a DNS name; the final dot is optional) from
    /// `gslb`'s live decision. Several names may share one selector (clone it).
    pub fn name(mut self, name: impl Into<String>, gslb: DnsGslb) -> Self {
        self.names.push((name.into(), gslb));
        self
    }

    /// Answers `SRV` queries for `srv_name` (such as `_https._tcp.shop.example.`) with one
    /// record pointing at `target` (a configured [`name`](Self::name)) on `port`, and the
    /// target's selected `A`/`AAAA` records in the additional section.
    pub fn srv(
        mut self,
        srv_name: impl Into<String>,
        target: impl Into<String>,
        port: u16,
    ) -> Self {
        self.srv.push((srv_name.into(), target.into(), port));
        self
    }

    /// Maps clients in `cidr` (such as `10.1.0.0/16` or `2001:db8::/32`) to `region`; the
    /// longest matching prefix wins. The client is the EDNS Client Subnet address when the
    /// query carries one, else the resolver's address.
    pub fn client_subnet(mut self, cidr: impl Into<String>, region: impl Into<Arc<str>>) -> Self {
        self.subnets.push((cidr.into(), region.into()));
        self
    }

    /// The TTL of every answer (default 5 s, like hosted GSLBs; whole seconds, at most one
    /// day; 0 asks resolvers not to cache).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The most address records in one answer (default 8, 1..=255): the chosen site's
    /// addresses first, then the other routable sites'.
    pub fn max_answers(mut self, max: usize) -> Self {
        self.max_answers = max;
        self
    }

    /// The largest UDP answer offered to EDNS clients (default 1232 bytes, the DNS flag day
    /// 2020 figure; 512..=4096). Clients without EDNS get 512 bytes (RFC 1035). A larger
    /// answer is truncated (TC bit) and the client retries over TCP.
    pub fn udp_payload(mut self, bytes: u16) -> Self {
        self.udp_payload = bytes;
        self
    }

    /// UDP worker tasks sharing the socket (default 2, 1..=64): at most this many queries are
    /// in progress at once; under a flood the rest wait in the socket's buffer or are dropped
    /// by the kernel.
    pub fn udp_workers(mut self, workers: usize) -> Self {
        self.udp_workers = workers;
        self
    }

    /// How long a TCP connection may stay idle (default 5 s, must be positive).
    pub fn tcp_timeout(mut self, timeout: Duration) -> Self {
        self.tcp_timeout = timeout;
        self
    }

    /// The `gslb` label of metrics and events for queries that match no configured name
    /// (default `dns`).
    pub fn label(mut self, label: impl Into<Arc<str>>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Validates every field; an error names the field and the value.
    pub fn build(self) -> Result<DnsConfig, ConfigError> {
        if self.names.is_empty() {
            return Err(ConfigError::new("name", "[]", "add at least one name"));
        }
        let mut names: Vec<NameConfig> = Vec::with_capacity(self.names.len());
        for (raw, gslb) in self.names {
            let name = parse_name("name", &raw)?;
            if names.iter().any(|n| n.name == name) {
                return Err(ConfigError::new("name", raw, "duplicate name"));
            }
            let services = gslb.get_ref();
            let handle = gslb.handle();
            let snapshot = handle.snapshot();
            for (site, addrs) in snapshot.sites.iter().zip(services) {
                if addrs.ips().is_empty() {
                    return Err(ConfigError::new(
                        "site.addresses",
                        &*site.name,
                        "a site needs at least one address",
                    ));
                }
            }
            if let (Some(f), Some(addrs)) = (&snapshot.fallback, gslb.fallback_ref())
                && addrs.ips().is_empty()
            {
                return Err(ConfigError::new(
                    "site.addresses",
                    &**f,
                    "a site needs at least one address",
                ));
            }
            names.push(NameConfig { name, gslb });
        }
        let mut srv = Vec::with_capacity(self.srv.len());
        for (raw, target, port) in self.srv {
            let name = parse_name("srv", &raw)?;
            if names.iter().any(|n| n.name == name) {
                return Err(ConfigError::new(
                    "srv",
                    raw,
                    "an SRV name must differ from the address names",
                ));
            }
            let target_name = parse_name("srv.target", &target)?;
            let Some(target) = names.iter().position(|n| n.name == target_name) else {
                return Err(ConfigError::new(
                    "srv.target",
                    target,
                    "must be one of the configured names",
                ));
            };
            srv.push(SrvConfig { name, target, port });
        }
        let mut subnets = Vec::with_capacity(self.subnets.len());
        for (cidr, region) in self.subnets {
            let (net, len) = parse_cidr(&cidr).ok_or_else(|| {
                ConfigError::new(
                    "client_subnet",
                    &*cidr,
                    "expected ADDRESS/PREFIX, such as 10.0.0.0/8",
                )
            })?;
            if region.is_empty() {
                return Err(ConfigError::new(
                    "client_subnet.region",
                    cidr,
                    "region must not be empty",
                ));
            }
            subnets.push((net, len, region));
        }
        if self.ttl > MAX_TTL || self.ttl.subsec_nanos() != 0 {
            return Err(ConfigError::new(
                "ttl",
                self.ttl,
                "must be whole seconds, at most one day",
            ));
        }
        if !(1..=255).contains(&self.max_answers) {
            return Err(ConfigError::new(
                "max_answers",
                self.max_answers,
                "must be between 1 and 255",
            ));
        }
        if !(512..=4096).contains(&self.udp_payload) {
            return Err(ConfigError::new(
                "udp_payload",
                self.udp_payload,
                "must be between 512 and 4096 bytes",
            ));
        }
        if !(1..=64).contains(&self.udp_workers) {
            return Err(ConfigError::new(
                "udp_workers",
                self.udp_workers,
                "must be between 1 and 64",
            ));
        }
        if self.tcp_timeout.is_zero() {
            return Err(ConfigError::new(
                "tcp_timeout",
                self.tcp_timeout,
                "must be positive",
            ));
        }
        let label = self.label.unwrap_or_else(|| Arc::from("dns"));
        if label.is_empty() {
            return Err(ConfigError::new("label", "", "must not be empty"));
        }
        Ok(DnsConfig {
            names,
            srv,
            subnets,
            ttl: self.ttl.as_secs() as u32,
            max_answers: self.max_answers,
            udp_payload: self.udp_payload,
            udp_workers: self.udp_workers,
            tcp_timeout: self.tcp_timeout,
            label,
        })
    }
}

/// A DNS name, lowercase and fully qualified.
fn parse_name(field: &'static str, raw: &str) -> Result<Name, ConfigError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed == "." {
        return Err(ConfigError::new(field, raw, "must be a DNS name"));
    }
    let mut name =
        Name::from_ascii(trimmed).map_err(|_| ConfigError::new(field, raw, "not a DNS name"))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// `ADDRESS/PREFIX`; the prefix may not exceed the address length.
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.trim().split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("10.0.0.0/8"),
            Some(("10.0.0.0".parse().unwrap(), 8))
        );
        assert_eq!(
            parse_cidr("2001:db8::/32"),
            Some(("2001:db8::".parse().unwrap(), 32))
        );
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("10.0.0.0"), None);
        assert_eq!(parse_cidr("nope/8"), None);
    }

    #[test]
    fn names_are_lowercase_and_fully_qualified() {
        let n = parse_name("name", "Shop.Example").unwrap();
        assert!(n.is_fqdn());
        assert_eq!(n.to_string(), "shop.example.");
        assert_eq!(parse_name("name", "").unwrap_err().field(), "name");
        assert_eq!(parse_name("name", "a..b").unwrap_err().field(), "name");
    }
}
