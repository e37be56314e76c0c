//! DNS discovery (feature `dns`): names re-resolved on their TTL, records diffed into inserts
//! and removes.
//!
//! Each `(name, port)` is resolved with hickory-resolver; the union of the A/AAAA answers is
//! the endpoint set. After each round the next one is scheduled at the smallest answer TTL,
//! clamped to `[ttl_floor, ttl_ceiling]` (a TTL of 0 would otherwise mean a busy loop, and a
//! day-long TTL would hide a move). A failed lookup keeps the endpoints known so far and is
//! retried after `ttl_floor`; an answer with no records removes them (that is what the name
//! says). This covers Kubernetes headless services and Consul, which publish DNS.
//!
//! ```no_run
//! use std::time::Duration;
//! use rampart_balance::{Balance, HttpEndpoint, ReplayBody};
//! use rampart_balance::discover::DnsDiscover;
//! use http_body_util::Empty;
//! use bytes::Bytes;
//!
//! # #[tokio::main] async fn main() {
//! let dns = DnsDiscover::builder()
//!     .name("catalog.default.svc.cluster.local.", 8080)
//!     .ttl_floor(Duration::from_secs(1))
//!     .ttl_ceiling(Duration::from_secs(30))
//!     .build(|addr| {
//!         HttpEndpoint::builder(format!("http://{addr}").parse().unwrap())
//!             .build::<ReplayBody<Empty<Bytes>>>()
//!             .unwrap()
//!     })
//!     .unwrap();
//! let balance = Balance::builder().discover(dns).http_health_checks("/healthz").build().unwrap();
//! # let _ = balance;
//! # }
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use rampart_health::{BoxError, ConfigError};
use tower::discover::Change;

type ChangeStream<S> = Pin<Box<dyn Stream<Item = Result<Change<SocketAddr, S>, BoxError>> + Send>>;

/// A tower `Discover` stream of endpoints behind DNS names (see the [module docs](self)).
pub struct DnsDiscover<S> {
    inner: ChangeStream<S>,
}

impl<S> fmt::Debug for DnsDiscover<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscover").finish_non_exhaustive()
    }
}

impl<S> Stream for DnsDiscover<S> {
    type Item = Result<Change<SocketAddr, S>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl DnsDiscover<()> {
    /// A builder; add at least one name.
    pub fn builder() -> DnsDiscoverBuilder {
        DnsDiscoverBuilder {
            names: Vec::new(),
            floor: Duration::from_secs(1),
            ceiling: Duration::from_secs(60),
            resolver: None,
        }
    }
}

/// Builds a [`DnsDiscover`].
pub struct DnsDiscoverBuilder {
    names: Vec<(String, u16)>,
    floor: Duration,
    ceiling: Duration,
    resolver: Option<TokioResolver>,
}

impl fmt::Debug for DnsDiscoverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscoverBuilder")
            .field("names", &self.names)
            .field("ttl_floor", &self.floor)
            .field("ttl_ceiling", &self.ceiling)
            .finish_non_exhaustive()
    }
}

impl DnsDiscoverBuilder {
    /// Resolves `host` (fully qualified names end with a dot) and serves its addresses on
    /// `port`.
    pub fn name(mut self, host: impl Into<String>, port: u16) -> Self {
        self.names.push((host.into(), port));
        self
    }

    /// The shortest time between two lookups (default 1 s).
    pub fn ttl_floor(mut self, d: Duration) -> Self {
        self.floor = d;
        self
    }

    /// The longest time between two lookups, whatever the TTL (default 60 s).
    pub fn ttl_ceiling(mut self, d: Duration) -> Self {
        self.ceiling = d;
        self
    }

    /// Uses this resolver (default: one that asks the name servers given by
    /// [`name_server`](Self::name_server), or else the system's configuration).
    pub fn resolver(mut self, resolver: TokioResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Asks only the DNS server at `addr` (UDP, then TCP).
    pub fn name_server(self, addr: SocketAddr) -> Result<Self, ConfigError> {
        let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
        for c in &mut ns.connections {
            c.port = addr.port();
        }
        let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
        let resolver = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        )
        .build()
        .map_err(|e| ConfigError::new("name_server", e.to_string(), "resolver failed"))?;
        Ok(self.resolver(resolver))
    }

    /// Validates and returns the stream; `make` builds an endpoint service for an address.
    pub fn build<S, F>(self, make: F) -> Result<DnsDiscover<S>, ConfigError>
    where
        F: Fn(SocketAddr) -> S + Send + 'static,
        S: Send + 'static,
    {
        if self.names.is_empty() {
            return Err(ConfigError::new("names", "[]", "add at least one name"));
        }
        if self.floor.is_zero() {
            return Err(ConfigError::new(
                "ttl_floor",
                self.floor,
                "must be positive",
            ));
        }
        if self.ceiling < self.floor {
            return Err(ConfigError::new(
                "ttl_ceiling",
                self.ceiling,
                "must not be below ttl_floor",
            ));
        }
        let resolver = match self.resolver {
            Some(r) => r,
            None => TokioResolver::builder_tokio()
                .and_then(hickory_resolver::ResolverBuilder::build)
                .map_err(|e| {
                    ConfigError::new("resolver", e.to_string(), "system resolver unavailable")
                })?,
        };
        let state = State {
            resolver,
            names: self.names,
            floor: self.floor,
            ceiling: self.ceiling,
            known: BTreeSet::new(),
            pending: VecDeque::new(),
            next: None,
            make,
        };
        Ok(DnsDiscover {
            inner: Box::pin(futures_util::stream::unfold(state, next_change)),
        })
    }
}

struct State<F> {
    resolver: TokioResolver,
    names: Vec<(String, u16)>,
    floor: Duration,
    ceiling: Duration,
    known: BTreeSet<SocketAddr>,
    pending: VecDeque<Change<SocketAddr, ()>>,
    next: Option<tokio::time::Instant>,
    make: F,
}

async fn next_change<S, F>(
    mut st: State<F>,
) -> Option<(Result<Change<SocketAddr, S>, BoxError>, State<F>)>
where
    F: Fn(SocketAddr) -> S,
{
    loop {
        if let Some(change) = st.pending.pop_front() {
            let change = match change {
                Change::Insert(addr, ()) => Change::Insert(addr, (st.make)(addr)),
                Change::Remove(addr) => Change::Remove(addr),
            };
            return Some((Ok(change), st));
        }
        if let Some(at) = st.next {
            tokio::time::sleep_until(at).await;
        }
        let wait = resolve_round(&mut st).await;
        st.next = Some(tokio::time::Instant::now() + wait);
    }
}

/// One lookup round: diff the answers into `pending`; returns the wait before the next one.
async fn resolve_round<F>(st: &mut State<F>) -> Duration {
    let mut found = BTreeSet::new();
    let mut min_ttl: Option<u32> = None;
    // Ask the servers, not a cache: we schedule by TTL ourselves.
    st.resolver.clear_cache();
    for (host, port) in &st.names {
        match st.resolver.lookup_ip(host.as_str()).await {
            Ok(lookup) => {
                for record in lookup.as_lookup().answers() {
                    if let Some(ip) = record.data.ip_addr() {
                        found.insert(SocketAddr::new(ip, *port));
                        min_ttl = Some(min_ttl.map_or(record.ttl, |t| t.min(record.ttl)));
                    }
                }
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                tracing::info!(name = %host, "DNS: no records");
            }
            Err(e) => {
                tracing::warn!(name = %host, error = %e, "DNS lookup failed; keeping known endpoints");
                return st.floor;
            }
        }
    }
    for gone in st.known.difference(&found) {
        tracing::info!(addr = %gone, "DNS: endpoint gone");
        st.pending.push_back(Change::Remove(*gone));
    }
    for new in found.difference(&st.known) {
        tracing::info!(addr = %new, "DNS: endpoint found");
        st.pending.push_back(Change::Insert(*new, ()));
    }
    st.known = found;
    next_lookup_in(min_ttl, st.floor, st.ceiling)
}

/// The wait before the next lookup: the smallest answer TTL clamped to `[floor, ceiling]`;
/// no records (no TTL) waits the floor.
fn next_lookup_in(min_ttl: Option<u32>, floor: Duration, ceiling: Duration) -> Duration {
    let ttl = Duration::from_secs(u64::from(min_ttl.unwrap_or(0)));
    ttl.clamp(floor, ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_is_clamped_to_the_floor_and_the_ceiling() {
        let (floor, ceiling) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(next_lookup_in(Some(0), floor, ceiling), floor);
        assert_eq!(next_lookup_in(None, floor, ceiling), floor);
        assert_eq!(
            next_lookup_in(Some(30), floor, ceiling),
            Duration::from_secs(30)
        );
        assert_eq!(next_lookup_in(Some(86_400), floor, ceiling), ceiling);
    }
}
