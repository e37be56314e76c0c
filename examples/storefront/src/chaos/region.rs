//! The shop's name in DNS: two edges as two regions, rampart-gslb's authoritative responder
//! in front of them, and a client that resolves the name the way a browser does.
//!
//! The run starts the edges on two loopback addresses with one port (`127.0.0.2:P` is the
//! primary region `us-east`, `127.0.0.3:P` the standby `eu-west`), both in front of both
//! shops, and the responder of `storefront dns` (in this process) answering `A` queries for
//! [`SHOP_NAME`] with the addresses of the edges that are up, primary first, with a TTL of
//! [`DNS_TTL`]. It checks each edge with a TCP connect every [`DNS_CHECK_INTERVAL`], on an
//! exact schedule; one failed check (a refused connect, or no connection within the
//! interval) takes an edge out, so a dead edge leaves the answers within one interval; two
//! passed checks and a failback hold of three intervals bring it back. (On a machine so
//! loaded that a loopback connect takes longer than the interval, the primary may leave the
//! answers for a moment: the clients then go to the standby, without an error.)
//!
//! The load resolves the name through the responder with hickory-resolver ([`ShopResolver`]),
//! keeps the answer until its TTL runs out and then asks again, and sends each request to the
//! first address. When the connection is refused it tries the next address, as browsers do;
//! when a connection breaks before the answer arrives (the edge died with the request in
//! flight), a request that may be repeated (a `GET`, or a checkout carrying its
//! `Idempotency-Key`) is sent once more to the next address, as browsers repeat a request
//! whose connection closed before any answer, and as the edge does with its shops.
//!
//! The phase [`PHASE`] SIGKILLs the primary edge at 20 % of the phase and restarts it on the
//! same address at 90 %. What it measures ([`EdgeRegionFacts`]): when the responder's answer
//! stopped naming the dead edge (queried every 20 ms, no cache), when the load's own cached
//! answer did, against the target of TTL + one check interval.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::topology::Topology;
use crate::dns::{DnsArgs, DnsFront};

/// The phase that kills the primary region's edge.
pub(crate) const PHASE: &str = "edge-region-down";
/// The name the load resolves (fully qualified).
pub(crate) const SHOP_NAME: &str = "shop.example.";
/// The host in the load's URLs and `Host` headers.
pub(crate) const SHOP_HOST: &str = "shop.example";
/// Time to live of the responder's answers in a chaos run (short, so that even the quick
/// run's 5 s phases see the clients move).
pub(crate) const DNS_TTL: Duration = Duration::from_secs(2);
/// Interval of the responder's TCP checks of the edges.
pub(crate) const DNS_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// The edges' regions, primary first, and their loopback addresses.
pub(crate) const EDGE_REGIONS: [(&str, [u8; 4]); 2] =
    [("us-east", [127, 0, 0, 2]), ("eu-west", [127, 0, 0, 3])];

/// What the `edge-region-down` phase measured (in the facts side file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeRegionFacts {
    /// The killed edge (the primary region's).
    pub killed_edge: String,
    /// Seconds from the start of the load when it got SIGKILL.
    pub killed_at_s: f64,
    /// Seconds from the start of the load when it was restarted on the same address.
    pub restarted_at_s: f64,
    /// The answers' time to live, seconds.
    pub ttl_s: f64,
    /// The responder's check interval, seconds.
    pub check_interval_s: f64,
    /// The target: answers move within TTL + one check interval, seconds.
    pub target_s: f64,
    /// Seconds from the kill until the responder's answer no longer named the dead edge
    /// (`None`: it still did when the phase ended).
    pub answers_moved_s: Option<f64>,
    /// Seconds from the kill until the load's cached answer (refreshed when its TTL ran out)
    /// no longer named the dead edge (`None`: it still did at the end of the phase).
    pub clients_moved_s: Option<f64>,
    /// `clients_moved_s` is within the target.
    pub within_target: bool,
    /// Requests the load sent to the next address after a refused connection (whole run).
    pub next_address_after_refused: u64,
    /// Requests the load sent again to the next address after their connection broke
    /// before the answer (whole run).
    pub next_address_after_reset: u64,
    /// Answers the load's resolver got from the responder (whole run).
    pub resolutions: u64,
    /// Resolutions that failed (the last answer was kept; whole run).
    pub resolve_errors: u64,
}

/// Two addresses on two loopback IPs with the same free port, primary first.
pub(crate) fn edge_addrs() -> Result<[SocketAddr; 2], String> {
    let [(_, a), (_, b)] = EDGE_REGIONS;
    for _ in 0..64 {
        let first = std::net::TcpListener::bind((IpAddr::from(a), 0))
            .map_err(|e| format!("cannot bind {}: {e}", IpAddr::from(a)))?;
        let port = first.local_addr().map_err(|e| e.to_string())?.port();
        if std::net::TcpListener::bind((IpAddr::from(b), port)).is_ok() {
            return Ok([SocketAddr::from((a, port)), SocketAddr::from((b, port))]);
        }
    }
    Err("no port free on both 127.0.0.2 and 127.0.0.3".into())
}

/// Starts the responder in front of `edges` (primary first) on a free port of 127.0.0.1.
pub(crate) async fn start_responder(edges: &[SocketAddr]) -> Result<DnsFront, String> {
    let args = DnsArgs {
        name: SHOP_NAME.into(),
        edges: edges
            .iter()
            .zip(EDGE_REGIONS)
            .map(|(addr, (region, _))| format!("{region}={addr}"))
            .collect(),
        ttl: DNS_TTL,
        check_interval: DNS_CHECK_INTERVAL,
        fall: 1,
        weighted: false,
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    };
    crate::dns::start(&args).await
}

/// A hickory resolver asking only `server`, without a cache of its own (the callers keep
/// answers for their TTL).
fn resolver(server: SocketAddr) -> Result<TokioResolver, String> {
    let mut ns = NameServerConfig::udp_and_tcp(server.ip());
    for c in &mut ns.connections {
        c.port = server.port();
    }
    let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(1);
    opts.attempts = 2;
    opts.ip_strategy = LookupIpStrategy::Ipv4Only;
    hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| format!("cannot build a resolver: {e}"))
}

/// One answer: the addresses, in order, until when they may be used.
async fn lookup(r: &TokioResolver) -> Result<(Vec<IpAddr>, std::time::Instant), String> {
    r.clear_cache();
    let answer = r.lookup_ip(SHOP_NAME).await.map_err(|e| e.to_string())?;
    Ok((answer.iter().collect(), answer.valid_until()))
}

/// The load's view of the shop's name: a resolver pointed at the responder, one cached
/// answer kept until its TTL runs out, and requests that try the next address when a
/// connection is refused (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct ShopResolver {
    resolver: TokioResolver,
    port: u16,
    host: HeaderValue,
    /// The answer in use and when it expires; the async lock makes one resolution serve
    /// every request that finds the answer expired.
    cache: tokio::sync::Mutex<Option<(Vec<IpAddr>, std::time::Instant)>>,
    /// Every fresh answer: when it arrived, and the addresses.
    refreshes: Mutex<Vec<(Instant, Vec<IpAddr>)>>,
    after_refused: AtomicU64,
    after_reset: AtomicU64,
    resolve_errors: AtomicU64,
}

impl ShopResolver {
    /// Resolves through the responder at `server`; the edges listen on `port`.
    pub(crate) fn new(server: SocketAddr, port: u16) -> Result<Self, String> {
        let host = HeaderValue::from_str(&format!("{SHOP_HOST}:{port}"))
            .map_err(|e| format!("host header: {e}"))?;
        Ok(Self {
            resolver: resolver(server)?,
            port,
            host,
            cache: tokio::sync::Mutex::new(None),
            refreshes: Mutex::new(Vec::new()),
            after_refused: AtomicU64::new(0),
            after_reset: AtomicU64::new(0),
            resolve_errors: AtomicU64::new(0),
        })
    }

    /// The base URL the load builds its requests on (`http://shop.example:P`).
    pub(crate) fn base(&self) -> String {
        format!("http://{SHOP_HOST}:{}", self.port)
    }

    /// The cached answer, re-resolved when its TTL has run out (on a failed resolution the
    /// last answer is kept for another second).
    async fn addresses(&self) -> Vec<IpAddr> {
        let mut cache = self.cache.lock().await;
        let now = std::time::Instant::now();
        if let Some((addrs, until)) = cache.as_ref()
            && *until > now
        {
            return addrs.clone();
        }
        match lookup(&self.resolver).await {
            Ok((addrs, until)) if !addrs.is_empty() => {
                self.refreshes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((Instant::now(), addrs.clone()));
                *cache = Some((addrs.clone(), until));
                addrs
            }
            _ => {
                self.resolve_errors.fetch_add(1, Ordering::Relaxed);
                let keep = cache.as_ref().map(|c| c.0.clone()).unwrap_or_default();
                *cache = Some((keep.clone(), now + Duration::from_secs(1)));
                keep
            }
        }
    }

    /// Sends `req` (built on [`ShopResolver::base`]) to the first address of the answer;
    /// on a refused connection to the next one; when the connection broke before the answer,
    /// a repeatable request (a `GET`, or one with an `Idempotency-Key`) also goes to the next
    /// address. The error is the last attempt's.
    pub(crate) async fn request(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let addrs = self.addresses().await;
        let (mut parts, body) = req.into_parts();
        let repeatable = parts.method == Method::GET
            || parts.method == Method::HEAD
            || parts.headers.contains_key("idempotency-key");
        parts.headers.insert(HOST, self.host.clone());
        let path = parts.uri.path_and_query().cloned();
        let mut last = None;
        for (i, ip) in addrs.iter().enumerate() {
            let mut uri = Uri::builder().scheme(Scheme::HTTP);
            if let Ok(a) = Authority::try_from(SocketAddr::new(*ip, self.port).to_string()) {
                uri = uri.authority(a);
            }
            if let Some(pq) = &path {
                uri = uri.path_and_query(pq.clone());
            }
            let mut attempt = Request::from_parts(parts.clone(), body.clone());
            if let Ok(u) = uri.build() {
                *attempt.uri_mut() = u;
            }
            match client.request(attempt).await {
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    let next = i + 1 < addrs.len();
                    if next && e.is_connect() {
                        self.after_refused.fetch_add(1, Ordering::Relaxed);
                    } else if next && repeatable {
                        self.after_reset.fetch_add(1, Ordering::Relaxed);
                    } else {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) => Err(e),
            // No address at all: let the client fail on the name itself.
            None => client.request(Request::from_parts(parts, body)).await,
        }
    }

    /// When the load stopped using `dead` after `since`: `since` itself when the answer in
    /// use then did not name it, else the first fresh answer after it that does not.
    fn moved_after(&self, since: Instant, dead: IpAddr) -> Option<Instant> {
        let refreshes = self
            .refreshes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let in_use = refreshes.iter().rev().find(|(at, _)| *at < since);
        if in_use.is_some_and(|(_, addrs)| !addrs.contains(&dead)) {
            return Some(since);
        }
        refreshes
            .iter()
            .find(|(at, addrs)| *at >= since && !addrs.contains(&dead))
            .map(|(at, _)| *at)
    }
}

/// The phase's timeline: SIGKILL the primary edge at 20 % of the phase, watch the
/// responder's answer move, restart the edge at 90 %.
pub(crate) struct RegionDown {
    /// What was measured so far (the clients' move is filled in by [`RegionDown::finish`]).
    pub(crate) facts: EdgeRegionFacts,
    killed: Instant,
    restarted: Instant,
}

impl RegionDown {
    /// Runs the phase's events; `start` is the start of the load.
    pub(crate) async fn run(
        topo: &mut Topology,
        front: &DnsFront,
        start: Instant,
        phase_start: Instant,
        phase_len: Duration,
    ) -> Result<RegionDown, String> {
        let ttl = DNS_TTL.as_secs_f64();
        let interval = DNS_CHECK_INTERVAL.as_secs_f64();
        let mut facts = EdgeRegionFacts {
            ttl_s: ttl,
            check_interval_s: interval,
            target_s: ttl + interval,
            ..EdgeRegionFacts::default()
        };
        let dead = topo.edge_addr(0)?;
        facts.killed_edge = format!("{} {dead}", EDGE_REGIONS[0].0);
        let watcher = resolver(front.addr())?;
        tokio::time::sleep_until(phase_start + phase_len.mul_f64(0.2)).await;
        topo.kill_edge(0);
        let killed = Instant::now();
        facts.killed_at_s = killed.duration_since(start).as_secs_f64();
        let restart_at = phase_start + phase_len.mul_f64(0.9);
        while Instant::now() < restart_at {
            if let Ok((addrs, _)) = lookup(&watcher).await
                && !addrs.is_empty()
                && !addrs.contains(&dead.ip())
            {
                facts.answers_moved_s = Some(killed.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep_until(restart_at).await;
        let restarted = Instant::now();
        facts.restarted_at_s = restarted.duration_since(start).as_secs_f64();
        topo.restart_edge(0).await?;
        Ok(RegionDown {
            facts,
            killed,
            restarted,
        })
    }

    /// Adds what the load saw: when its cached answer moved, and its counters.
    pub(crate) fn finish(mut self, load: &ShopResolver, dead: IpAddr) -> EdgeRegionFacts {
        let f = &mut self.facts;
        f.clients_moved_s = load
            .moved_after(self.killed, dead)
            .filter(|at| *at <= self.restarted)
            .map(|at| at.duration_since(self.killed).as_secs_f64());
        f.within_target = f.clients_moved_s.is_some_and(|s| s <= f.target_s);
        f.next_address_after_refused = load.after_refused.load(Ordering::Relaxed);
        f.next_address_after_reset = load.after_reset.load(Ordering::Relaxed);
        f.resolutions = load
            .refreshes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64;
        f.resolve_errors = load.resolve_errors.load(Ordering::Relaxed);
        self.facts
    }
}
