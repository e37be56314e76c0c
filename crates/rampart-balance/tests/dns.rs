//! DNS discovery against a real DNS server: hickory-server on 127.0.0.1:0 with an in-memory
//! zone whose records the test changes while the balancer runs.
#![cfg(feature = "dns")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::future::{Ready, ready};
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use rampart_balance::discover::DnsDiscover;
use rampart_balance::{Balance, ServicePolicy};
use rampart_health::BoxError;
use tower::Service;

type Zone = InMemoryZoneHandler<TokioRuntimeProvider>;

#[derive(Clone)]
struct At(SocketAddr);

impl Service<()> for At {
    type Response = SocketAddr;
    type Error = BoxError;
    type Future = Ready<Result<SocketAddr, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, (): ()) -> Self::Future {
        ready(Ok(self.0))
    }
}

fn a(name: &Name, ip: [u8; 4], ttl: u32) -> Record {
    Record::from_rdata(name.clone(), ttl, RData::A(A(Ipv4Addr::from(ip))))
}

/// Replaces the A records of `name` (TTL 0).
async fn set_records(zone: &Zone, name: &Name, ips: &[[u8; 4]], serial: u32) {
    set_records_ttl(zone, name, ips, serial, 0).await;
}

/// Replaces the A records of `name`, with `ttl`.
async fn set_records_ttl(zone: &Zone, name: &Name, ips: &[[u8; 4]], serial: u32, ttl: u32) {
    zone.records_mut()
        .await
        .remove(&RrKey::new(LowerName::new(name), RecordType::A));
    for ip in ips {
        assert!(zone.upsert(a(name, *ip, ttl), serial).await);
    }
}

async fn start_dns(origin: &Name) -> (SocketAddr, Arc<Zone>, Server<Catalog>) {
    let soa = Record::from_rdata(
        origin.clone(),
        60,
        RData::SOA(SOA::new(
            Name::from_str("ns.svc.test.").unwrap(),
            Name::from_str("admin.svc.test.").unwrap(),
            1,
            60,
            60,
            60,
            0,
        )),
    );
    let mut zone = Zone::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    assert!(zone.upsert_mut(soa, 1));
    let zone = Arc::new(zone);
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(origin), vec![zone.clone()]);
    let mut server = Server::new(catalog);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    server.register_socket(udp);
    (addr, zone, server)
}

fn addrs(balance: &Balance<At, ServicePolicy>) -> BTreeSet<String> {
    balance
        .snapshot()
        .endpoints
        .into_iter()
        .map(|e| e.name)
        .collect()
}

async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_changing_mid_test_become_inserts_and_removes() {
    let origin = Name::from_str("svc.test.").unwrap();
    let api = Name::from_str("api.svc.test.").unwrap();
    let (dns, zone, _server) = start_dns(&origin).await;
    set_records(&zone, &api, &[[127, 0, 0, 11], [127, 0, 0, 12]], 2).await;

    let discover = DnsDiscover::builder()
        .name("api.svc.test.", 8080)
        .name_server(dns)
        .unwrap()
        // Records carry TTL 0: the floor paces the lookups.
        .ttl_floor(Duration::from_millis(100))
        .ttl_ceiling(Duration::from_secs(1))
        .build(At)
        .unwrap();
    let balance: Balance<At, ServicePolicy> = Balance::builder()
        .policy(ServicePolicy::new())
        .discover(discover)
        .build()
        .unwrap();
    let want = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<BTreeSet<_>>();
    assert!(
        eventually(Duration::from_secs(5), || addrs(&balance)
            == want(&["127.0.0.11:8080", "127.0.0.12:8080"]))
        .await,
        "{:?}",
        addrs(&balance)
    );
    // Both from the first answer: no slow start.
    assert!(balance.snapshot().endpoints.iter().all(|e| !e.slow_start));

    // .12 leaves, .13 arrives.
    set_records(&zone, &api, &[[127, 0, 0, 11], [127, 0, 0, 13]], 3).await;
    assert!(
        eventually(Duration::from_secs(5), || addrs(&balance)
            == want(&["127.0.0.11:8080", "127.0.0.13:8080"]))
        .await,
        "{:?}",
        addrs(&balance)
    );
    let snap = balance.snapshot();
    let kept = snap.endpoint("127.0.0.11:8080").unwrap().id;
    assert!(
        snap.endpoint("127.0.0.13:8080").unwrap().slow_start,
        "a newcomer ramps up"
    );

    // The surviving endpoint was not re-created by the diff.
    set_records(&zone, &api, &[[127, 0, 0, 11]], 4).await;
    assert!(
        eventually(Duration::from_secs(5), || addrs(&balance)
            == want(&["127.0.0.11:8080"]))
        .await
    );
    assert_eq!(
        balance.snapshot().endpoint("127.0.0.11:8080").unwrap().id,
        kept
    );
}

/// Follows `api.svc.test.` on a fresh server whose records carry `ttl`, with the given
/// floor and ceiling; changes the records once they are seen; returns whether the change
/// showed up within `limit`.
async fn change_seen(ttl: u32, floor: Duration, ceiling: Duration, limit: Duration) -> bool {
    let origin = Name::from_str("svc.test.").unwrap();
    let api = Name::from_str("api.svc.test.").unwrap();
    let (dns, zone, _server) = start_dns(&origin).await;
    set_records_ttl(&zone, &api, &[[127, 0, 0, 21]], 2, ttl).await;
    let discover = DnsDiscover::builder()
        .name("api.svc.test.", 80)
        .name_server(dns)
        .unwrap()
        .ttl_floor(floor)
        .ttl_ceiling(ceiling)
        .build(At)
        .unwrap();
    let balance: Balance<At, ServicePolicy> = Balance::builder()
        .policy(ServicePolicy::new())
        .discover(discover)
        .build()
        .unwrap();
    let first: BTreeSet<String> = ["127.0.0.21:80".to_string()].into();
    let second: BTreeSet<String> = ["127.0.0.22:80".to_string()].into();
    assert!(eventually(Duration::from_secs(5), || addrs(&balance) == first).await);
    set_records_ttl(&zone, &api, &[[127, 0, 0, 22]], 3, ttl).await;
    eventually(limit, || addrs(&balance) == second).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_names_are_re_resolved_on_their_ttl() {
    // TTL 1 s under a 1 h ceiling: the change shows up after about a second.
    assert!(
        change_seen(
            1,
            Duration::from_millis(50),
            Duration::from_secs(3600),
            Duration::from_secs(10)
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_ceiling_caps_a_long_ttl() {
    // TTL 1 h under a 200 ms ceiling: the change shows up long before the TTL.
    assert!(
        change_seen(
            3600,
            Duration::from_millis(50),
            Duration::from_millis(200),
            Duration::from_secs(10)
        )
        .await
    );
    // And the other way round: the same TTL with a 1 h ceiling is not re-resolved in 1.5 s.
    assert!(
        !change_seen(
            3600,
            Duration::from_millis(50),
            Duration::from_secs(3600),
            Duration::from_millis(1500)
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_floor_holds_back_a_zero_ttl() {
    // TTL 0 would mean asking again at once; a 1 h floor holds the next lookup back.
    assert!(
        !change_seen(
            0,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            Duration::from_millis(1500)
        )
        .await
    );
}

#[test]
fn dns_builder_validates() {
    let e = DnsDiscover::builder()
        .build(|_| ())
        .map(|_: DnsDiscover<()>| ())
        .unwrap_err();
    assert_eq!(e.field(), "names");
    let e = DnsDiscover::builder()
        .name("x.", 80)
        .ttl_floor(Duration::from_secs(5))
        .ttl_ceiling(Duration::from_secs(1))
        .build(|_| ())
        .map(|_: DnsDiscover<()>| ())
        .unwrap_err();
    assert_eq!(e.field(), "ttl_ceiling");
}
