//! DNS answers per second and latency percentiles under a query flood: the GSLB responder
//! against a plain hickory-server authority serving the same two static `A` records (the
//! anchor), in one run, on loopback.
//!
//! The flood is a bounded client loop: one thread keeps `WINDOW` queries in flight on one UDP
//! socket, sends a new query for each answer, and measures each query from its send to its
//! answer. A query unanswered after 200 ms counts as lost and its slot is reused.
//!
//! `cargo bench -p rampart-gslb --features dns --bench dns` (`DNS_BENCH_SECS`, default 3, per
//! server; `DNS_BENCH_WINDOW`, default 32).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use rampart_gslb::dns::{Addresses, DnsConfig, DnsGslb, DnsResponder};
use rampart_gslb::{Gslb, GslbConfig, Site, Sites};

const NAME: &str = "shop.example.";
const EU: [u8; 4] = [192, 0, 2, 1];
const US: [u8; 4] = [198, 51, 100, 1];

struct Figures {
    answers_per_sec: f64,
    p50: Duration,
    p99: Duration,
    lost: u64,
}

/// Floods `server` for `secs` with `window` queries in flight.
fn flood(server: SocketAddr, secs: f64, window: usize) -> Figures {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_str(NAME).unwrap(), RecordType::A));
    let mut packet = query.to_vec().unwrap();
    let mut sent: Vec<Option<Instant>> = vec![None; 65_536];
    let mut latencies: Vec<u64> = Vec::with_capacity(4_000_000);
    let mut buf = [0u8; 4096];
    let (mut in_flight, mut next_id, mut lost) = (0usize, 0u16, 0u64);
    // Warm-up: one answered query.
    socket.send(&packet).unwrap();
    let _ = socket.recv(&mut buf).unwrap();

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut answers = 0u64;
    while Instant::now() < end {
        while in_flight < window {
            next_id = next_id.wrapping_add(1);
            packet[..2].copy_from_slice(&next_id.to_be_bytes());
            sent[usize::from(next_id)] = Some(Instant::now());
            socket.send(&packet).unwrap();
            in_flight += 1;
        }
        match socket.recv(&mut buf) {
            Ok(n) if n >= 12 => {
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                if let Some(t) = sent[usize::from(id)].take() {
                    latencies.push(t.elapsed().as_nanos() as u64);
                    answers += 1;
                    in_flight -= 1;
                }
            }
            Ok(_) => {}
            Err(_) => {
                // Nothing for 200 ms: what is in flight is lost.
                lost += in_flight as u64;
                sent.iter_mut().for_each(|s| *s = None);
                in_flight = 0;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        Duration::from_nanos(latencies.get(i).copied().unwrap_or(0))
    };
    Figures {
        answers_per_sec: answers as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        lost,
    }
}

/// The anchor: hickory-server's in-memory authority with the same two `A` records.
async fn anchor() -> (SocketAddr, Server<Catalog>) {
    let origin = Name::from_str("example.").unwrap();
    let name = Name::from_str(NAME).unwrap();
    let soa = Record::from_rdata(
        origin.clone(),
        60,
        RData::SOA(SOA::new(
            Name::from_str("ns.example.").unwrap(),
            Name::from_str("admin.example.").unwrap(),
            1,
            60,
            60,
            60,
            5,
        )),
    );
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    assert!(zone.upsert_mut(soa, 1));
    for ip in [EU, US] {
        let a = Record::from_rdata(name.clone(), 5, RData::A(A(Ipv4Addr::from(ip))));
        assert!(zone.upsert_mut(a, 1));
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
    let mut server = Server::new(catalog);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    server.register_socket(udp);
    (addr, server)
}

async fn responder() -> DnsResponder {
    let sites = Sites::builder()
        .site(Site::new("eu", Addresses::new([IpAddr::from(EU)])).weight(3.0))
        .site(Site::new("us", Addresses::new([IpAddr::from(US)])).weight(1.0))
        .build()
        .unwrap();
    let gslb: DnsGslb = Gslb::new(GslbConfig::default(), sites);
    let config = DnsConfig::builder().name(NAME, gslb).build().unwrap();
    DnsResponder::bind(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, briefly.
    let testing =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("DNS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if testing { 0.2 } else { 3.0 });
    let window: usize = std::env::var("DNS_BENCH_WINDOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let (anchor_addr, anchor_server) = rt.block_on(anchor());
    let dns = rt.block_on(responder());
    let ours_addr = dns.local_addr();

    // Interleaved halves, so a noisy neighbour hurts both alike.
    let half = secs / 2.0;
    let a1 = flood(anchor_addr, half, window);
    let o1 = flood(ours_addr, half, window);
    let o2 = flood(ours_addr, half, window);
    let a2 = flood(anchor_addr, half, window);
    let merge = |x: Figures, y: Figures| Figures {
        answers_per_sec: (x.answers_per_sec + y.answers_per_sec) / 2.0,
        p50: (x.p50 + y.p50) / 2,
        p99: x.p99.max(y.p99),
        lost: x.lost + y.lost,
    };
    let anchor = merge(a1, a2);
    let ours = merge(o1, o2);
    println!(
        "dns flood: {secs:.1} s per server, {window} queries in flight, one client thread, 2 runtime workers"
    );
    for (name, f) in [
        ("hickory-server static authority (anchor)", &anchor),
        ("rampart-gslb responder", &ours),
    ] {
        println!(
            "{name:42} {:>9.0} answers/s   p50 {:>7.1} µs   p99 {:>7.1} µs   lost {}",
            f.answers_per_sec,
            f.p50.as_secs_f64() * 1e6,
            f.p99.as_secs_f64() * 1e6,
            f.lost
        );
    }
    println!(
        "ratio (responder / anchor): answers/s {:.2}×, p99 {:.2}×",
        ours.answers_per_sec / anchor.answers_per_sec.max(1.0),
        ours.p99.as_secs_f64() / anchor.p99.as_secs_f64().max(1e-9)
    );
    drop(dns);
    drop(anchor_server);
    drop(rt);
}
