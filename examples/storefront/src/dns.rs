//! `storefront dns`: the GSLB's authoritative DNS responder in front of edges in several
//! regions.
//!
//! Each `--edge REGION=IP:PORT` is one region's front door (a `storefront edge` listening on
//! its own loopback address, say `127.0.0.2:8080` and `127.0.0.3:8080`). The responder answers
//! `A` queries for `--name` (default `shop.example.`) with the addresses of the regions that are
//! up: the first edge is the primary region, the next ones take over in order (priority
//! failover), or, with `--weighted`, they share the traffic. Every edge is health-checked with
//! a TCP connect every `--check-interval` (default 1 s; down after `--fall` failures, default
//! 2, up after 2 successes); answers carry a `--ttl` (default 5 s). A client that resolves the name, and on
//! a refused connection tries the next address, keeps reaching a live region when one dies.
//!
//! ```text
//! storefront dns --listen 127.0.0.1:5353 --edge us=127.0.0.2:8080 --edge eu=127.0.0.3:8080
//! dig @127.0.0.1 -p 5353 shop.example A
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use rampart_gslb::dns::{Addresses, DnsConfig, DnsGslb, DnsQuery, DnsResponder};
use rampart_gslb::{Gslb, GslbConfig, GslbHandle, Site, Sites};
use rampart_health::probe::TcpProbe;
use rampart_health::{Checker, CheckerConfig};

/// Flags of `storefront dns` (`--listen` is the global flag: where the responder answers,
/// UDP and TCP; default `127.0.0.1:5353`).
#[derive(clap::Args, Debug, Clone)]
pub struct DnsArgs {
    /// The name answered.
    #[arg(long, default_value = "shop.example.")]
    pub name: String,
    /// One region's edge, `REGION=IP:PORT` (repeat). The first is the primary region; the
    /// answer for a region is its IP; IP:PORT is health-checked.
    #[arg(long = "edge", required = true)]
    pub edges: Vec<String>,
    /// Time to live of the answers.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Interval of the edges' health checks.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub check_interval: Duration,
    /// Failed checks in a row that take an edge out of the answers (1 to 10; two passed
    /// checks bring it back).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub fall: u32,
    /// All edges in one priority, sharing the traffic (default: the first edge takes it all
    /// while it is up).
    #[arg(long)]
    pub weighted: bool,
    /// Where to answer (filled from the global `--listen`).
    #[arg(skip)]
    pub listen: Option<SocketAddr>,
}

/// A running responder and the selector it answers from.
#[derive(Debug)]
pub struct DnsFront {
    responder: DnsResponder,
    gslb: GslbHandle,
}

impl DnsFront {
    /// Where the responder answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.responder.local_addr()
    }

    /// The selector's operator handle (snapshot, drain).
    pub fn gslb(&self) -> &GslbHandle {
        &self.gslb
    }
}

/// Parses `REGION=IP:PORT`.
fn parse_edge(s: &str) -> Result<(String, SocketAddr), String> {
    let (region, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("--edge {s:?}: expected REGION=IP:PORT"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("--edge {s:?}: {addr:?} is not IP:PORT"))?;
    if region.is_empty() {
        return Err(format!("--edge {s:?}: the region is empty"));
    }
    Ok((region.to_owned(), addr))
}

/// Starts the health checks and the responder.
pub async fn start(args: &DnsArgs) -> Result<DnsFront, String> {
    let checks = CheckerConfig::builder()
        .interval(args.check_interval)
        .unhealthy_interval(args.check_interval)
        .timeout(args.check_interval.min(Duration::from_millis(500)))
        // An exact schedule: a dead edge leaves the answers within `fall` intervals.
        .jitter(0.0)
        .fall(args.fall)
        .rise(2)
        .build()
        .map_err(|e| format!("--check-interval, --fall: {e}"))?;
    let mut sites = Sites::builder();
    for (i, edge) in args.edges.iter().enumerate() {
        let (region, addr) = parse_edge(edge)?;
        let checker = Checker::spawn(
            format!("edge-{region}"),
            TcpProbe::new(addr),
            checks.clone(),
        );
        let priority = if args.weighted { 0 } else { i as u32 };
        sites = sites.site(
            Site::new(region.clone(), Addresses::new([addr.ip()]))
                .region(region)
                .priority(priority)
                .checker(checker),
        );
    }
    let sites = sites.build().map_err(|e| format!("--edge: {e}"))?;
    let config = GslbConfig::builder()
        .name("edges")
        // Back to the primary region once it stayed up for three checks.
        .failback_hold(args.check_interval * 3)
        .geo(DnsQuery::region)
        .build()
        .map_err(|e| e.to_string())?;
    let gslb: DnsGslb = Gslb::new(config, sites);
    let handle = gslb.handle();
    let config = DnsConfig::builder()
        .name(args.name.clone(), gslb)
        .ttl(args.ttl)
        .label("storefront-dns")
        .build()
        .map_err(|e| e.to_string())?;
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5353)));
    let responder = DnsResponder::bind(config, listen)
        .await
        .map_err(|e| format!("cannot answer DNS on {listen}: {e}"))?;
    Ok(DnsFront {
        responder,
        gslb: handle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_region_equals_address() {
        assert_eq!(
            parse_edge("eu=127.0.0.3:8080").unwrap(),
            ("eu".to_owned(), "127.0.0.3:8080".parse().unwrap())
        );
        assert!(parse_edge("127.0.0.3:8080").is_err());
        assert!(parse_edge("=127.0.0.3:8080").is_err());
        assert!(parse_edge("eu=localhost:80").is_err());
    }
}
