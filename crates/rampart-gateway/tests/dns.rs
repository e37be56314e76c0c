//! DNS-discovered clusters: a real DNS server (hickory-server on 127.0.0.1:0, an in-memory
//! zone the test changes) names the endpoints; the proxy follows the records, checks what it
//! finds, spreads requests over every address, and keeps following them across a reload.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxy_support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use proxy_support::{BOUND, Client};
use rampart_gateway::config::GatewayConfig;
use rampart_gateway::proxy::{Proxy, ProxyBalance};
use rampart_gateway::server::{self, Serving};
use tokio::task::JoinHandle;

type Zone = InMemoryZoneHandler<TokioRuntimeProvider>;

/// A DNS server for `svc.test.` on 127.0.0.1 (UDP), whose `shop.svc.test.` A records the test
/// sets. Served until dropped.
struct Dns {
    addr: SocketAddr,
    zone: Arc<Zone>,
    serial: u32,
    _server: Server<Catalog>,
}

impl Dns {
    async fn start() -> Self {
        let origin = Name::from_str("svc.test.").unwrap();
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
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        let mut server = Server::new(catalog);
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        Self {
            addr,
            zone,
            serial: 1,
            _server: server,
        }
    }

    /// Replaces the A records of `shop.svc.test.` (TTL 0: the cluster's floor paces lookups).
    async fn set(&mut self, ips: &[Ipv4Addr]) {
        let name = Name::from_str("shop.svc.test.").unwrap();
        self.serial += 1;
        self.zone
            .records_mut()
            .await
            .remove(&RrKey::new(LowerName::new(&name), RecordType::A));
        for ip in ips {
            let record = Record::from_rdata(name.clone(), 0, RData::A(A(*ip)));
            assert!(self.zone.upsert(record, self.serial).await);
        }
    }
}

/// A backend on `ip:port` that answers every path with its name in `x-backend` after `delay`
/// (so that a newcomer's default latency estimate is not above its sibling's).
struct Backend {
    _task: JoinHandle<()>,
}

fn backend(listener: tokio::net::TcpListener, name: &'static str, delay: Duration) -> Backend {
    let app = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(move || async move {
            tokio::time::sleep(delay).await;
            ([("x-backend", name)], name)
        });
    Backend {
        _task: tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }),
    }
}

/// Two listeners on one port: 127.0.0.1:P and 127.0.0.2:P (DNS gives addresses, the cluster
/// one port).
async fn two_listeners() -> (u16, tokio::net::TcpListener, tokio::net::TcpListener) {
    for _ in 0..50 {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        if let Ok(second) = tokio::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), port)).await
        {
            return (port, first, second);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn config(dns: SocketAddr, port: u16) -> String {
    format!(
        "[[routes]]\ncluster = \"shop\"\n\
         [clusters.shop]\n\
         dns = \"shop.svc.test:{port}\"\n\
         dns_server = \"{dns}\"\n\
         dns_ttl_floor = \"100ms\"\n\
         dns_ttl_ceiling = \"200ms\"\n\
         [clusters.shop.checks]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n"
    )
}

async fn serve(toml: &str) -> (Serving, Proxy<impl ProxyBalance>) {
    let config = GatewayConfig::from_toml(toml).unwrap();
    let proxy = Proxy::build(&config).unwrap();
    let server = config.server.to_server_config("test").unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap(), &server).unwrap();
    (
        server::spawn(listener, &server, proxy.clone()).unwrap(),
        proxy,
    )
}

/// The cluster's endpoints by name, with their health.
fn endpoints<B: ProxyBalance>(proxy: &Proxy<B>) -> BTreeMap<String, String> {
    let status = proxy.status();
    status["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["health"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + BOUND;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Sends `n` GETs over `conns` concurrent connections; how many each backend answered.
async fn spread(gateway: SocketAddr, conns: usize, n: usize) -> BTreeMap<String, usize> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        tasks.spawn(async move {
            let mut client = Client::connect(gateway).await;
            let mut seen = Vec::new();
            for _ in 0..n / conns {
                let (status, headers, _) = client.get("shop.test", "/item").await;
                assert_eq!(status, 200);
                seen.push(headers["x-backend"].to_str().unwrap().to_owned());
            }
            seen
        });
    }
    let mut counts = BTreeMap::new();
    while let Some(seen) = tasks.join_next().await {
        for name in seen.unwrap() {
            *counts.entry(name).or_default() += 1;
        }
    }
    counts
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_cluster_follows_its_name_and_spreads_requests_over_every_address() {
    let mut dns = Dns::start().await;
    dns.set(&[ip(1)]).await;
    let (port, l1, l2) = two_listeners().await;
    let _a = backend(l1, "a", Duration::from_millis(5));
    let _b = backend(l2, "b", Duration::from_millis(5));
    let (serving, proxy) = serve(&config(dns.addr, port)).await;
    let a = format!("127.0.0.1:{port}");
    let b = format!("127.0.0.2:{port}");

    // One address: every request goes there, and the discovered endpoint is checked.
    assert!(
        eventually(|| endpoints(&proxy).get(&a).map(String::as_str) == Some("healthy")).await,
        "{:?}",
        endpoints(&proxy)
    );
    let counts = spread(serving.local_addr(), 4, 20).await;
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");

    // The name now has two addresses: the second one is found, checked and served.
    dns.set(&[ip(1), ip(2)]).await;
    assert!(
        eventually(|| {
            let e = endpoints(&proxy);
            e.len() == 2 && e.values().all(|h| h == "healthy")
        })
        .await,
        "{:?}",
        endpoints(&proxy)
    );
    assert!(endpoints(&proxy).contains_key(&b));
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    let mut rounds = 0;
    while total.len() < 2 {
        rounds += 1;
        assert!(
            rounds <= 20,
            "requests never reached both backends: {total:?}"
        );
        for (k, v) in spread(serving.local_addr(), 16, 64).await {
            *total.entry(k).or_default() += v;
        }
    }

    // Back to one address: the other endpoint leaves and takes no more requests.
    dns.set(&[ip(2)]).await;
    assert!(
        eventually(|| endpoints(&proxy).keys().collect::<Vec<_>>() == [&b]).await,
        "{:?}",
        endpoints(&proxy)
    );
    let counts = spread(serving.local_addr(), 4, 20).await;
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_dns_cluster_and_it_keeps_following_the_name() {
    let mut dns = Dns::start().await;
    dns.set(&[ip(1)]).await;
    let (port, l1, l2) = two_listeners().await;
    let _a = backend(l1, "a", Duration::ZERO);
    let _b = backend(l2, "b", Duration::ZERO);
    let toml = config(dns.addr, port);
    let (serving, proxy) = serve(&toml).await;
    let a = format!("127.0.0.1:{port}");
    let b = format!("127.0.0.2:{port}");
    assert!(eventually(|| endpoints(&proxy).get(&a).map(String::as_str) == Some("healthy")).await);

    let summary = proxy
        .reload(&GatewayConfig::from_toml(&toml).unwrap())
        .unwrap();
    assert_eq!(summary.kept, ["shop"]);
    // Kept: its endpoint and its health are still there, without a new lookup or check.
    assert_eq!(
        endpoints(&proxy).get(&a).map(String::as_str),
        Some("healthy")
    );

    dns.set(&[ip(2)]).await;
    assert!(
        eventually(
            || endpoints(&proxy).get(&b).map(String::as_str) == Some("healthy")
                && endpoints(&proxy).len() == 1
        )
        .await,
        "{:?}",
        endpoints(&proxy)
    );
    let mut client = Client::connect(serving.local_addr()).await;
    let (status, headers, _) = client.get("shop.test", "/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-backend"], "b");

    // A changed refresh interval rebuilds the cluster, which finds the name again.
    let changed = toml.replace("dns_ttl_ceiling = \"200ms\"", "dns_ttl_ceiling = \"300ms\"");
    let summary = proxy
        .reload(&GatewayConfig::from_toml(&changed).unwrap())
        .unwrap();
    assert_eq!(summary.rebuilt, ["shop"]);
    assert!(eventually(|| endpoints(&proxy).contains_key(&b)).await);
}

#[test]
fn dns_keys_are_validated_naming_the_key() {
    let base = "[[routes]]\ncluster = \"shop\"\n[clusters.shop]\n";
    let err = |extra: &str| {
        GatewayConfig::from_toml(&format!("{base}{extra}"))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("dns = \"shop.internal\"\n"),
        "clusters.shop.dns: \"shop.internal\" is not name:port"
    );
    assert_eq!(
        err("dns = \"shop.internal:0\"\n"),
        "clusters.shop.dns: \"shop.internal:0\" has no valid port (\"0\")"
    );
    assert_eq!(
        err("dns = \"shop.internal:80\"\nendpoints = [\"127.0.0.1:80\"]\n"),
        "clusters.shop.dns: \"shop.internal:80\" cannot be combined with endpoints (use one or the other)"
    );
    assert_eq!(
        err(""),
        "clusters.shop.endpoints: [] must name at least one endpoint (or set dns)"
    );
    assert_eq!(
        err("dns = \"shop.internal:80\"\ndns_ttl_floor = \"0s\"\n"),
        "clusters.shop.dns_ttl_floor: \"0s\" must be above zero"
    );
    assert_eq!(
        err("dns = \"shop.internal:80\"\ndns_ttl_floor = \"10s\"\ndns_ttl_ceiling = \"5s\"\n"),
        "clusters.shop.dns_ttl_ceiling: \"5s\" must be at least dns_ttl_floor"
    );
    assert!(
        err("dns = \"shop.internal:80\"\ndns_server = \"nowhere\"\n")
            .starts_with("clusters.shop.dns_server: "),
        "{}",
        err("dns = \"shop.internal:80\"\ndns_server = \"nowhere\"\n")
    );
    let ok = GatewayConfig::from_toml(&format!("{base}dns = \"shop.internal:8080\"\n")).unwrap();
    let shop = &ok.clusters["shop"];
    assert_eq!(shop.dns_ttl_floor, Duration::from_secs(1));
    assert_eq!(shop.dns_ttl_ceiling, Duration::from_secs(60));
    assert_eq!(shop.dns_server, None);
}

#[test]
fn check_flag_validates_a_dns_cluster() {
    let dir = proxy_support::temp_dir("dns-check");
    let file = dir.join("gateway.toml");
    let check = |toml: &str| {
        std::fs::write(&file, toml).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_rampart-gateway"))
            .arg("--check")
            .arg(&file)
            .output()
            .unwrap()
    };
    let good = "[[routes]]\ncluster = \"shop\"\n[clusters.shop]\ndns = \"shop.internal:8080\"\ndns_server = \"127.0.0.1:53\"\n";
    assert_eq!(check(good).status.code(), Some(0));
    let out = check(&good.replace(":8080", ":http"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("clusters.shop.dns: \"shop.internal:http\" has no valid port"),
        "{stderr}"
    );
}
