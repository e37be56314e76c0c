//! The DNS responder over real UDP and TCP on 127.0.0.1, queried with hickory-resolver (and
//! with hand-built messages where a resolver cannot say what the test needs: client subnets,
//! garbage, the TC bit).
#![cfg(feature = "dns")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::{Name, RData, RecordType};
use rampart_gslb::dns::{Addresses, DnsConfig, DnsGslb, DnsQuery, DnsResponder};
use rampart_gslb::{Gslb, GslbConfig, Site, Sites};
use rampart_health::{HealthReport, HealthReporter};
use tokio::net::UdpSocket;

const NAME: &str = "shop.example.";

fn ips(list: &[&str]) -> Addresses {
    Addresses::new(list.iter().map(|s| s.parse::<IpAddr>().unwrap()))
}

fn resolver(addr: SocketAddr) -> TokioResolver {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(1);
    opts.attempts = 3;
    opts.cache_size = 0;
    hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .unwrap()
}

/// The addresses of an `A` or `AAAA` lookup, in answer order (the cache is cleared first).
async fn lookup(resolver: &TokioResolver, name: &str, rtype: RecordType) -> Vec<IpAddr> {
    resolver.clear_cache();
    let lookup = resolver.lookup(name, rtype).await.unwrap();
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn query(name: &str, rtype: RecordType, edns: Option<u16>, ecs: Option<&str>) -> Message {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        if let Some(subnet) = ecs {
            let subnet: ClientSubnet = subnet.parse().unwrap();
            e.options_mut().insert(EdnsOption::Subnet(subnet));
        }
        m.set_edns(e);
    }
    m
}

/// Sends `bytes` over UDP and waits (at most 2 s) for the reply with `id`; returns it with its
/// size in bytes.
async fn exchange_raw(addr: SocketAddr, bytes: &[u8], id: u16) -> (Message, usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, addr).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .expect("no reply within 2 s")
            .unwrap();
        let reply = Message::from_vec(&buf[..n]).unwrap();
        if reply.metadata.id == id {
            return (reply, n);
        }
    }
}

async fn exchange(addr: SocketAddr, message: &Message) -> (Message, usize) {
    exchange_raw(addr, &message.to_vec().unwrap(), message.metadata.id).await
}

fn addresses_of(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

async fn start(config: DnsConfig) -> DnsResponder {
    DnsResponder::bind(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_answers_follow_the_split_over_ten_thousand_queries() {
    let sites = Sites::builder()
        .site(Site::new("eu", ips(&["192.0.2.1"])).weight(3.0))
        .site(Site::new("us", ips(&["198.51.100.1"])).weight(1.0))
        .build()
        .unwrap();
    let gslb: DnsGslb = Gslb::new(GslbConfig::default(), sites);
    let config = DnsConfig::builder()
        .name(NAME, gslb)
        .ttl(Duration::ZERO)
        .build()
        .unwrap();
    let dns = start(config).await;

    const TASKS: usize = 8;
    const PER_TASK: usize = 1250;
    let mut joins = Vec::new();
    for _ in 0..TASKS {
        let addr = dns.local_addr();
        joins.push(tokio::spawn(async move {
            let r = resolver(addr);
            let mut firsts = HashMap::<IpAddr, usize>::new();
            for _ in 0..PER_TASK {
                let answers = lookup(&r, NAME, RecordType::A).await;
                assert_eq!(answers.len(), 2, "both sites are routable: {answers:?}");
                *firsts.entry(answers[0]).or_default() += 1;
            }
            firsts
        }));
    }
    let mut firsts = HashMap::<IpAddr, usize>::new();
    for j in joins {
        for (k, v) in j.await.unwrap() {
            *firsts.entry(k).or_default() += v;
        }
    }
    let total = (TASKS * PER_TASK) as f64;
    let eu = firsts.get(&ip("192.0.2.1")).copied().unwrap_or(0) as f64 / total * 100.0;
    let us = firsts.get(&ip("198.51.100.1")).copied().unwrap_or(0) as f64 / total * 100.0;
    assert!(
        (eu - 75.0).abs() <= 2.0,
        "eu first in {eu:.2} % of answers (split 75 %)"
    );
    assert!(
        (us - 25.0).abs() <= 2.0,
        "us first in {us:.2} % of answers (split 25 %)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_move_to_the_standby_when_the_primary_turns_unhealthy() {
    let eu_health = HealthReporter::new(HealthReport::new(4, 4));
    let sites = Sites::builder()
        .site(
            Site::new("eu", ips(&["192.0.2.1", "192.0.2.2"]))
                .priority(0)
                .health_report(eu_health.subscribe()),
        )
        .site(Site::new("us", ips(&["198.51.100.1"])).priority(1))
        .build()
        .unwrap();
    let gslb: DnsGslb = Gslb::new(GslbConfig::default(), sites);
    let mut handle = gslb.handle();
    let dns = start(DnsConfig::builder().name(NAME, gslb).build().unwrap()).await;
    let r = resolver(dns.local_addr());

    // Healthy: eu's two addresses first (in either order), the standby after them.
    for _ in 0..20 {
        let answers = lookup(&r, NAME, RecordType::A).await;
        assert_eq!(answers.len(), 3, "{answers:?}");
        assert!(answers[..2].contains(&ip("192.0.2.1")) && answers[..2].contains(&ip("192.0.2.2")));
        assert_eq!(answers[2], ip("198.51.100.1"));
    }

    // The health input flips: the very next answer (no check interval, no TTL on our side)
    // leaves eu out.
    eu_health.publish(HealthReport::new(0, 4));
    let snap = handle.changed().await;
    assert_eq!(snap.active_priority, Some(1));
    for _ in 0..20 {
        assert_eq!(
            lookup(&r, NAME, RecordType::A).await,
            vec![ip("198.51.100.1")]
        );
    }

    // An operator drains us as well: nothing is healthy and there is no fallback → SERVFAIL.
    handle.drain("us").unwrap();
    let (reply, _) = exchange(dns.local_addr(), &query(NAME, RecordType::A, None, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    handle.restore("us").unwrap();
    assert_eq!(
        lookup(&r, NAME, RecordType::A).await,
        vec![ip("198.51.100.1")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_site_leaves_the_answers_at_once_and_returns_when_restored() {
    let sites = Sites::builder()
        .site(Site::new("eu", ips(&["192.0.2.1"])))
        .site(Site::new("us", ips(&["198.51.100.1"])))
        .build()
        .unwrap();
    let gslb: DnsGslb = Gslb::new(GslbConfig::default(), sites);
    let handle = gslb.handle();
    let dns = start(DnsConfig::builder().name(NAME, gslb).build().unwrap()).await;
    let r = resolver(dns.local_addr());
    handle.drain("eu").unwrap();
    for _ in 0..20 {
        assert_eq!(
            lookup(&r, NAME, RecordType::A).await,
            vec![ip("198.51.100.1")]
        );
    }
    handle.restore("eu").unwrap();
    let mut seen = Vec::new();
    for _ in 0..20 {
        let answers = lookup(&r, NAME, RecordType::A).await;
        assert_eq!(answers.len(), 2);
        seen.push(answers[0]);
    }
    assert!(
        seen.contains(&ip("192.0.2.1")),
        "eu leads again sometimes: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_site_answers_when_every_site_is_down() {
    let down = HealthReporter::new(HealthReport::new(0, 3));
    let sites = Sites::builder()
        .site(Site::new("eu", ips(&["192.0.2.1"])).health_report(down.subscribe()))
        .site(Site::new("us", ips(&["198.51.100.1"])).health_report(down.subscribe()))
        .fallback(Site::new("sorry", ips(&["203.0.113.9", "2001:db8::9"])))
        .build()
        .unwrap();
    let gslb: DnsGslb = Gslb::new(GslbConfig::default(), sites);
    let dns = start(DnsConfig::builder().name(NAME, gslb).build().unwrap()).await;
    let r = resolver(dns.local_addr());
    for _ in 0..10 {
        assert_eq!(
            lookup(&r, NAME, RecordType::A).await,
            vec![ip("203.0.113.9")]
        );
        assert_eq!(
            lookup(&r, NAME, RecordType::AAAA).await,
            vec![ip("2001:db8::9")]
        );
    }
    // Never SERVFAIL while a fallback exists; answers are authoritative with the default TTL.
    let (reply, _) = exchange(dns.local_addr(), &query(NAME, RecordType::A, None, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(reply.answers[0].ttl, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_subnet_steers_to_the_clients_region_else_the_resolvers() {
    let sites = Sites::builder()
        .site(Site::new("eu-west", ips(&["192.0.2.1"])).region("eu"))
        .site(Site::new("us-east", ips(&["198.51.100.1"])).region("us"))
        .build()
        .unwrap();
    let config = GslbConfig::builder().geo(DnsQuery::region).build().unwrap();
    let gslb: DnsGslb = Gslb::new(config, sites);
    let dns = start(
        DnsConfig::builder()
            .name(NAME, gslb)
            .client_subnet("10.1.0.0/16", "eu")
            .client_subnet("10.2.0.0/16", "us")
            .client_subnet("2001:db8:e::/48", "eu")
            .client_subnet("127.0.0.0/8", "us")
            .build()
            .unwrap(),
    )
    .await;
    let addr = dns.local_addr();

    for _ in 0..20 {
        let (reply, _) = exchange(
            addr,
            &query(NAME, RecordType::A, Some(1232), Some("10.1.7.0/24")),
        )
        .await;
        assert_eq!(addresses_of(&reply)[0], ip("192.0.2.1"));
        // The option comes back with the scope of the answer.
        let edns = reply.edns.as_ref().expect("edns in the reply");
        match edns.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => {
                assert_eq!(s.source_prefix(), 24);
                assert_eq!(s.scope_prefix(), 24);
            }
            other => panic!("no client subnet in the reply: {other:?}"),
        }
        let (reply, _) = exchange(
            addr,
            &query(NAME, RecordType::A, Some(1232), Some("10.2.0.0/24")),
        )
        .await;
        assert_eq!(addresses_of(&reply)[0], ip("198.51.100.1"));
        let (reply, _) = exchange(
            addr,
            &query(NAME, RecordType::A, Some(1232), Some("2001:db8:e::/56")),
        )
        .await;
        assert_eq!(addresses_of(&reply)[0], ip("192.0.2.1"));
    }
    // Without the option, the resolver's own address (127.0.0.1 → us) decides.
    let r = resolver(addr);
    for _ in 0..20 {
        assert_eq!(lookup(&r, NAME, RecordType::A).await[0], ip("198.51.100.1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_are_truncated_over_udp_and_complete_over_tcp() {
    let many: Vec<IpAddr> = (0..100u8).map(|i| IpAddr::from([192, 0, 2, i])).collect();
    let sites = Sites::builder()
        .site(Site::new("big", Addresses::new(many.clone())))
        .build()
        .unwrap();
    let gslb: DnsGslb = Gslb::new(GslbConfig::default(), sites);
    let dns = start(
        DnsConfig::builder()
            .name(NAME, gslb)
            .max_answers(100)
            .build()
            .unwrap(),
    )
    .await;

    // No EDNS: 512 bytes at most, TC set.
    let (reply, size) = exchange(dns.local_addr(), &query(NAME, RecordType::A, None, None)).await;
    assert!(
        reply.metadata.truncation,
        "100 records do not fit 512 bytes"
    );
    assert!(size <= 512, "{size} bytes");
    // EDNS asking for 4096: capped at our 1232.
    let (reply, size) = exchange(
        dns.local_addr(),
        &query(NAME, RecordType::A, Some(4096), None),
    )
    .await;
    assert!(reply.metadata.truncation);
    assert!(size <= 1232, "{size} bytes");

    // A resolver sees the TC bit, retries over TCP and gets all of them.
    let r = resolver(dns.local_addr());
    let mut answers = lookup(&r, NAME, RecordType::A).await;
    answers.sort();
    let mut expected = many;
    expected.sort();
    assert_eq!(answers, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_are_refused_and_other_types_get_an_empty_answer() {
    let sites = Sites::builder()
        .site(Site::new("eu", ips(&["192.0.2.1"])))
        .build()
        .unwrap();
    let gslb: DnsGslb = Gslb::new(GslbConfig::default(), sites);
    let dns = start(
        DnsConfig::builder()
            .name(NAME, gslb)
            .srv("_https._tcp.shop.example.", NAME, 8443)
            .build()
            .unwrap(),
    )
    .await;
    let addr = dns.local_addr();
    for name in ["other.example.", "www.shop.example.", "example."] {
        let (reply, _) = exchange(addr, &query(name, RecordType::A, None, None)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(reply.answers.is_empty());
    }
    let r = resolver(addr);
    r.clear_cache();
    assert!(r.lookup("other.example.", RecordType::A).await.is_err());

    let (reply, _) = exchange(addr, &query(NAME, RecordType::MX, None, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert!(reply.answers.is_empty());

    // Case does not matter.
    let (reply, _) = exchange(addr, &query("SHOP.Example.", RecordType::A, None, None)).await;
    assert_eq!(addresses_of(&reply), vec![ip("192.0.2.1")]);

    // SRV: one record to the name and port, the addresses alongside.
    let (reply, _) = exchange(
        addr,
        &query("_https._tcp.shop.example.", RecordType::SRV, None, None),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    match &reply.answers[0].data {
        RData::SRV(srv) => {
            assert_eq!(srv.port, 8443);
            assert_eq!(srv.target.to_string(), NAME);
        }
        other => panic!("not an SRV answer: {other:?}"),
    }
    assert!(
        reply.additionals.iter().any(
            |r| matches!(&r.data, RData::A(a) if a.0 == std::net::Ipv4Addr::new(192, 0, 2, 1))
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_formerr_or_nothing_and_the_responder_keeps_answering() {
    let sites = Sites::builder()
        .site(Site::new("eu", ips(&["192.0.2.1"])))
        .build()
        .unwrap();
    let gslb: DnsGslb = Gslb::new(GslbConfig::default(), sites);
    let dns = start(DnsConfig::builder().name(NAME, gslb).build().unwrap()).await;
    let addr = dns.local_addr();

    // A header promising one question, then nothing: FORMERR with the same id.
    let header_only = [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let (reply, _) = exchange_raw(addr, &header_only, 0x1234).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    // Two questions in one query: FORMERR.
    let mut two = query(NAME, RecordType::A, None, None);
    two.add_query(Query::query(
        Name::from_ascii(NAME).unwrap(),
        RecordType::AAAA,
    ));
    let (reply, _) = exchange(addr, &two).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // The question cut off in the middle of the name: FORMERR.
    let whole = query(NAME, RecordType::A, None, None).to_vec().unwrap();
    let id = u16::from_be_bytes([whole[0], whole[1]]);
    let (reply, _) = exchange_raw(addr, &whole[..whole.len() - 6], id).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    // Rounds of random bytes and short headers from one socket, each followed by a real
    // query: every reply that comes back for garbage is an error (never SERVFAIL, never an
    // answer), and every real query is answered. (Rounds of 50 keep the kernel's socket
    // buffer from dropping the real query.)
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = fastrand::Rng::with_seed(19);
    let mut buf = vec![0u8; 65_535];
    let mut errors = 0;
    for round in 0..12u16 {
        for i in 0..50 {
            let len = if i % 3 == 0 {
                rng.usize(0..12)
            } else {
                rng.usize(12..300)
            };
            let mut packet: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if packet.len() >= 2 {
                // Never the id of a real query below.
                packet[0] = 0;
                packet[1] = 0;
            }
            socket.send_to(&packet, addr).await.unwrap();
        }
        let mut real = query(NAME, RecordType::A, None, None);
        let real_id = 0x8000 | round;
        real.metadata.id = real_id;
        socket.send_to(&real.to_vec().unwrap(), addr).await.unwrap();
        loop {
            let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
                .await
                .expect("the real query is answered within 2 s")
                .unwrap();
            let reply = Message::from_vec(&buf[..n]).expect("replies parse");
            if reply.metadata.id == real_id {
                assert_eq!(addresses_of(&reply), vec![ip("192.0.2.1")]);
                break;
            }
            assert!(
                matches!(
                    reply.metadata.response_code,
                    ResponseCode::FormErr | ResponseCode::NotImp | ResponseCode::Refused
                ),
                "garbage got {:?}",
                reply.metadata.response_code
            );
            assert!(reply.answers.is_empty());
            errors += 1;
        }
    }
    assert!(errors > 0, "some garbage has a header and gets FORMERR");
    // And a resolver still gets its answer (UDP and the TCP listener are alive).
    let r = resolver(addr);
    assert_eq!(lookup(&r, NAME, RecordType::A).await, vec![ip("192.0.2.1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_responder_frees_its_port() {
    let sites = Sites::builder()
        .site(Site::new("eu", ips(&["192.0.2.1"])))
        .build()
        .unwrap();
    let gslb: DnsGslb = Gslb::new(GslbConfig::default(), sites);
    let dns = start(DnsConfig::builder().name(NAME, gslb).build().unwrap()).await;
    let addr = dns.local_addr();
    drop(dns);
    // The tasks are aborted; their sockets close as soon as the runtime drops them.
    let mut freed = false;
    for _ in 0..200 {
        if std::net::UdpSocket::bind(addr).is_ok() && std::net::TcpListener::bind(addr).is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed, "{addr} still bound 2 s after the drop");
}

#[test]
fn bad_settings_are_refused_naming_field_and_value() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let gslb = || -> DnsGslb {
        let sites = Sites::builder()
            .site(Site::new("eu", ips(&["192.0.2.1"])))
            .build()
            .unwrap();
        Gslb::new(GslbConfig::default(), sites)
    };
    let err = |b: rampart_gslb::dns::DnsConfigBuilder| b.build().unwrap_err();

    let e = err(DnsConfig::builder());
    assert_eq!(e.field(), "name");
    let e = err(DnsConfig::builder().name("", gslb()));
    assert_eq!((e.field(), e.value()), ("name", "\"\""));
    let e = err(DnsConfig::builder().name("a..b", gslb()));
    assert_eq!((e.field(), e.value()), ("name", "\"a..b\""));
    let e = err(DnsConfig::builder()
        .name(NAME, gslb())
        .name("SHOP.example", gslb()));
    assert_eq!((e.field(), e.value()), ("name", "\"SHOP.example\""));
    assert!(e.to_string().contains("duplicate"), "{e}");
    let e = err(DnsConfig::builder()
        .name(NAME, gslb())
        .client_subnet("10.0.0.0/33", "eu"));
    assert_eq!((e.field(), e.value()), ("client_subnet", "\"10.0.0.0/33\""));
    let e = err(DnsConfig::builder()
        .name(NAME, gslb())
        .ttl(Duration::from_secs(86_401)));
    assert_eq!((e.field(), e.value()), ("ttl", "86401s"));
    let e = err(DnsConfig::builder()
        .name(NAME, gslb())
        .ttl(Duration::from_millis(1500)));
    assert_eq!(e.field(), "ttl");
    let e = err(DnsConfig::builder().name(NAME, gslb()).max_answers(0));
    assert_eq!((e.field(), e.value()), ("max_answers", "0"));
    let e = err(DnsConfig::builder().name(NAME, gslb()).udp_payload(100));
    assert_eq!((e.field(), e.value()), ("udp_payload", "100"));
    let e = err(DnsConfig::builder().name(NAME, gslb()).udp_workers(0));
    assert_eq!((e.field(), e.value()), ("udp_workers", "0"));
    let e = err(DnsConfig::builder()
        .name(NAME, gslb())
        .tcp_timeout(Duration::ZERO));
    assert_eq!(e.field(), "tcp_timeout");
    let e = err(DnsConfig::builder().name(NAME, gslb()).srv(
        "_x._tcp.shop.example.",
        "nowhere.example.",
        1,
    ));
    assert_eq!(
        (e.field(), e.value()),
        ("srv.target", "\"nowhere.example.\"")
    );

    let empty: DnsGslb = Gslb::new(
        GslbConfig::default(),
        Sites::builder()
            .site(Site::new("eu", Addresses::new([])))
            .build()
            .unwrap(),
    );
    let e = err(DnsConfig::builder().name(NAME, empty));
    assert_eq!((e.field(), e.value()), ("site.addresses", "\"eu\""));

    let ok = DnsConfig::builder()
        .name("Shop.Example", gslb())
        .build()
        .unwrap();
    assert_eq!(ok.ttl(), 5);
    assert_eq!(ok.max_answers(), 8);
}
