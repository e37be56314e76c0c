//! An authoritative DNS responder that answers from the live decision of a [`Gslb`](crate::Gslb)
//! (feature `dns`), built on hickory-server.
//!
//! The first line of defense of a multi-region service is DNS: each resolver gets the address
//! of a data center that is up. [`DnsResponder`] answers `A`/`AAAA` queries for configured
//! names from a `Gslb<Addresses, DnsQuery>`, the same selector the crate offers to HTTP, so
//! priority failover, weights, geo steering, failback hold, drains and the fallback site all
//! apply unchanged:
//!
//! - **Only routable sites.** The selector picks the first site for each query (weighted by
//!   its split, or steered by region); its addresses come first, shuffled, then the other
//!   routable sites' (in a random order weighted by their planned share, then standby
//!   priorities in failover order), up to `max_answers` records. A client that cannot connect
//!   to the first address tries the next one, as browsers do.
//! - **Fallback, never SERVFAIL while a site exists.** When nothing is healthy, the fallback
//!   site's addresses are the answer. Only a selector with no fallback and no healthy site
//!   answers `SERVFAIL`.
//! - **Short TTL**, 5 s by default (like hosted GSLBs), so resolvers follow a failover soon.
//! - **Geo from the query.** The client is the EDNS Client Subnet address (RFC 7871) when the
//!   query carries one, else the resolver's source address; a CIDR table
//!   ([`DnsConfigBuilder::client_subnet`]) maps it to a region, which the selector's geo
//!   steering reads with [`DnsQuery::region`] (the existing [`IpTable`](crate::extract::IpTable)
//!   lookup and [`Steering::Geo`](crate::Steering::Geo), not a second implementation). The
//!   answer echoes the option with the source prefix as its scope.
//! - **Other names `REFUSED`**; a configured name asked for another type gets an empty
//!   authoritative answer; `SRV` names are optional ([`DnsConfigBuilder::srv`]).
//! - **UDP and TCP.** A UDP answer larger than 512 bytes (or the client's EDNS size, at most
//!   `udp_payload`) is truncated with the TC bit set and the client retries over TCP.
//! - **Bounded work.** A fixed number of UDP workers each answer one datagram at a time into
//!   reused buffers, so a flood costs queue space in the kernel, not tasks or memory here;
//!   records are built once at start. Malformed queries get `FORMERR` (or are dropped when not
//!   even a header can be read); nothing a client sends can panic the responder.
//! - **Metrics and events**: `rampart_gslb_dns_*` counters (feature `metrics`, see below) and
//!   `tracing` events on target `rampart_gslb::dns` (debug per query, info at start).
//!
//! The responder's tasks belong to the [`DnsResponder`]: dropping it stops them.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use rampart_gslb::{Gslb, GslbConfig, Site, Sites};
//! use rampart_gslb::dns::{Addresses, DnsConfig, DnsQuery, DnsResponder};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sites = Sites::builder()
//!     .site(Site::new("eu-west", Addresses::new(["192.0.2.10".parse()?])).region("eu"))
//!     .site(Site::new("us-east", Addresses::new(["198.51.100.10".parse()?])).region("us"))
//!     .fallback(Site::new("sorry", Addresses::new(["203.0.113.1".parse()?])))
//!     .build()?;
//! let gslb = Gslb::new(GslbConfig::builder().geo(DnsQuery::region).build()?, sites);
//!
//! let config = DnsConfig::builder()
//!     .name("shop.example.", gslb.clone())
//!     .ttl(Duration::from_secs(5))
//!     .client_subnet("10.1.0.0/16", "eu")
//!     .client_subnet("10.2.0.0/16", "us")
//!     .build()?;
//! let responder = DnsResponder::bind(config, "127.0.0.1:0".parse()?).await?;
//! println!("answering on {} (udp and tcp)", responder.local_addr());
//!
//! // Bad settings are refused with the field and the value.
//! let err = DnsConfig::builder().name("shop.example.", gslb).client_subnet("10.0.0.0/40", "eu").build();
//! assert_eq!(err.unwrap_err().field(), "client_subnet");
//! # Ok(()) }
//! ```
//!
//! # Metrics
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `rampart_gslb_dns_queries_total` | counter | `gslb`, `transport`, `rcode` | queries answered, by response code |
//! | `rampart_gslb_dns_answers_total` | counter | `gslb`, `site` | answers whose first address is this site's (fallback included) |
//! | `rampart_gslb_dns_truncated_total` | counter | `gslb` | UDP answers sent truncated (the client retries over TCP) |
//! | `rampart_gslb_dns_dropped_total` | counter | `gslb` | datagrams dropped unanswered (shorter than a header, or a response) |
//! | `rampart_gslb_dns_client_subnet_total` | counter | `gslb` | queries steered by their EDNS Client Subnet option |
//!
//! `gslb` is the name of the selector behind the queried name, or the responder's
//! [`label`](DnsConfigBuilder::label) for queries that match no name.

mod answer;
mod config;
mod query;
mod server;
mod stats;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::task::AbortOnDropHandle;

pub use self::config::{DnsConfig, DnsConfigBuilder, DnsGslb, MAX_TTL};
pub use self::query::{Addresses, DnsQuery, Transport};

use self::answer::Authority;
use self::server::{TcpHandler, udp_worker};

/// Bytes of outgoing answers buffered per TCP connection (hickory-server's setting).
const TCP_BUFFER: usize = 32;

/// A running authoritative responder. Dropping it stops every task it started.
pub struct DnsResponder {
    udp: SocketAddr,
    tcp: Option<SocketAddr>,
    label: Arc<str>,
    _udp: Vec<AbortOnDropHandle<()>>,
    _tcp: Option<AbortOnDropHandle<()>>,
}

impl fmt::Debug for DnsResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsResponder")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl DnsResponder {
    /// Binds UDP and TCP on `addr` (with port 0, one free port for both) and starts answering
    /// on the current tokio runtime.
    pub async fn bind(config: DnsConfig, addr: SocketAddr) -> io::Result<Self> {
        let mut last = None;
        // With port 0 the UDP port may be taken for TCP: try a few.
        for _ in 0..16 {
            let udp = UdpSocket::bind(addr).await?;
            let local = udp.local_addr()?;
            match TcpListener::bind(local).await {
                Ok(tcp) => return Self::serve(config, udp, Some(tcp)),
                Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free port")))
    }

    /// Starts answering on sockets bound by the caller (TCP is optional, though clients need
    /// it for truncated answers). Must be called inside a tokio runtime.
    pub fn serve(config: DnsConfig, udp: UdpSocket, tcp: Option<TcpListener>) -> io::Result<Self> {
        let udp_addr = udp.local_addr()?;
        let tcp_addr = tcp.as_ref().map(TcpListener::local_addr).transpose()?;
        let workers = config.udp_workers;
        let tcp_timeout = config.tcp_timeout;
        let label = config.label.clone();
        let ttl = config.ttl;
        let auth = Arc::new(Authority::new(config));
        let socket = Arc::new(udp);
        let udp_tasks = (0..workers)
            .map(|_| AbortOnDropHandle::new(tokio::spawn(udp_worker(auth.clone(), socket.clone()))))
            .collect();
        let tcp_task = tcp.map(|listener| {
            let mut server = Server::new(TcpHandler::new(auth.clone()));
            server.register_listener(listener, tcp_timeout, TCP_BUFFER);
            // The server's own tasks live in its join set, which aborts them when the server
            // is dropped: with this task.
            AbortOnDropHandle::new(tokio::spawn(async move {
                if let Err(error) = server.block_until_done().await {
                    tracing::warn!(target: "rampart_gslb::dns", %error, "dns tcp listener stopped");
                }
            }))
        });
        tracing::info!(
            target: "rampart_gslb::dns",
            gslb = %label,
            udp = %udp_addr,
            tcp = ?tcp_addr,
            names = ?auth.names().collect::<Vec<_>>(),
            ttl,
            workers,
            "dns responder started"
        );
        Ok(Self {
            udp: udp_addr,
            tcp: tcp_addr,
            label,
            _udp: udp_tasks,
            _tcp: tcp_task,
        })
    }

    /// The UDP address (with [`bind`](Self::bind), TCP listens on the same one).
    pub fn local_addr(&self) -> SocketAddr {
        self.udp
    }

    /// The TCP address, if TCP is served.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        tracing::info!(target: "rampart_gslb::dns", gslb = %self.label, udp = %self.udp, "dns responder stopped");
    }
}
