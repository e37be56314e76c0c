//! What the responder hands the selector for each query ([`DnsQuery`]), and what a site's
//! service answers ([`Addresses`]).

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

/// The transport a query arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// A TCP connection (RFC 7766), usually a retry after a truncated UDP answer.
    Tcp,
}

impl Transport {
    /// A lowercase name (`udp`, `tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One DNS question as the selector sees it: the request type of a
/// `Gslb<Addresses, DnsQuery>`.
///
/// The client is the address in the query's EDNS Client Subnet option (RFC 7871) when there
/// is one, else the resolver's source address; its region comes from the responder's CIDR
/// table ([`DnsConfigBuilder::client_subnet`](super::DnsConfigBuilder::client_subnet)). Geo
/// steering reads it with [`DnsQuery::region`]:
///
/// ```
/// use rampart_gslb::GslbConfig;
/// use rampart_gslb::dns::DnsQuery;
///
/// let config = GslbConfig::<DnsQuery>::builder().geo(DnsQuery::region).build().unwrap();
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct DnsQuery {
    pub(crate) name: Arc<str>,
    pub(crate) client: IpAddr,
    pub(crate) source: SocketAddr,
    pub(crate) client_subnet: bool,
    pub(crate) region: Option<Arc<str>>,
    pub(crate) transport: Transport,
}

impl DnsQuery {
    /// A query for `name` from `source` (no client subnet, no region): for tests of
    /// extractors and custom site services.
    pub fn new(name: impl Into<Arc<str>>, source: SocketAddr) -> Self {
        Self {
            name: name.into(),
            client: source.ip(),
            source,
            client_subnet: false,
            region: None,
            transport: Transport::Udp,
        }
    }

    /// Sets the client region (what the responder's CIDR table would have found).
    pub fn with_region(mut self, region: impl Into<Arc<str>>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The configured name asked for (lowercase, fully qualified).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client's address: the EDNS Client Subnet address when present (already masked to
    /// its source prefix), else the resolver's source address.
    pub fn client_ip(&self) -> IpAddr {
        self.client
    }

    /// The address and port the query came from (the resolver).
    pub fn source(&self) -> SocketAddr {
        self.source
    }

    /// Whether [`client_ip`](Self::client_ip) came from an EDNS Client Subnet option.
    pub fn used_client_subnet(&self) -> bool {
        self.client_subnet
    }

    /// The client's region from the responder's CIDR table, if an entry matched. Usable as a
    /// geo-steering extractor: `GslbConfig::builder().geo(DnsQuery::region)`.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The transport the query arrived on.
    pub fn transport(&self) -> Transport {
        self.transport
    }
}

/// A site's public addresses: the inner service of each site of a `Gslb<Addresses, DnsQuery>`.
///
/// As a service it answers every query with itself, at once: the selector's choice of site
/// *is* the answer. IPv4 addresses answer `A` queries, IPv6 ones `AAAA`. Cheap to clone.
///
/// ```
/// use rampart_gslb::dns::Addresses;
///
/// let eu = Addresses::new(["192.0.2.10".parse().unwrap(), "2001:db8::10".parse().unwrap()]);
/// assert_eq!(eu.ips().len(), 2);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Addresses {
    ips: Arc<[IpAddr]>,
}

impl fmt::Debug for Addresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ips.iter()).finish()
    }
}

impl Addresses {
    /// The addresses `ips` (duplicates are kept once; order does not matter, answers are
    /// shuffled per query).
    pub fn new(ips: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut list: Vec<IpAddr> = Vec::new();
        for ip in ips {
            if !list.contains(&ip) {
                list.push(ip);
            }
        }
        Self { ips: list.into() }
    }

    /// The addresses.
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// Whether both values share one allocation (the same site's service, cloned).
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ips, &other.ips)
    }
}

impl Service<DnsQuery> for Addresses {
    type Response = Addresses;
    type Error = Infallible;
    type Future = Ready<Result<Addresses, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _query: DnsQuery) -> Self::Future {
        ready(Ok(self.clone()))
    }
}
