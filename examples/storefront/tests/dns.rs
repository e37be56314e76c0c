//! `storefront dns` over loopback: two "edges" (TCP listeners on 127.0.0.2 and 127.0.0.3, same
//! port), the responder in front, a real resolver asking it. When the primary edge stops
//! listening, the answers move to the other region within the health checks' bound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use rampart_health::Health;
use storefront::dns::{DnsArgs, start};
use tokio::net::TcpListener;

fn resolver(addr: SocketAddr) -> TokioResolver {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(1);
    hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .unwrap()
}

async fn answers(r: &TokioResolver) -> Vec<IpAddr> {
    r.clear_cache();
    r.lookup("shop.example.", RecordType::A)
        .await
        .unwrap()
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// Two listeners on the same port of two loopback addresses.
async fn two_edges() -> (TcpListener, TcpListener) {
    for _ in 0..32 {
        let a = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind(("127.0.0.3", port)).await {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// Accepts and drops connections (the health check is a TCP connect).
fn accept_forever(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_move_to_the_other_region_when_the_primary_edge_dies() {
    let (us, eu) = two_edges().await;
    let port = us.local_addr().unwrap().port();
    let us_task = accept_forever(us);
    let _eu_task = accept_forever(eu);
    let args = DnsArgs {
        name: "shop.example.".into(),
        edges: vec![
            format!("us-east=127.0.0.2:{port}"),
            format!("eu-west=127.0.0.3:{port}"),
        ],
        ttl: Duration::from_secs(5),
        check_interval: Duration::from_millis(100),
        fall: 2,
        weighted: false,
        listen: Some("127.0.0.1:0".parse().unwrap()),
    };
    let front = start(&args).await.unwrap();
    let r = resolver(front.addr());
    let (us_ip, eu_ip): (IpAddr, IpAddr) =
        ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());

    // Both up: the primary first, the standby next; then wait for both checks to pass so the
    // kill below is seen by a checker that had a verdict.
    assert_eq!(answers(&r).await, vec![us_ip, eu_ip]);
    let mut healthy = false;
    for _ in 0..200 {
        let snap = front.gslb().snapshot();
        if snap.sites.iter().all(|s| s.probe == Some(Health::Healthy)) {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(healthy, "both edges pass their checks");
    assert_eq!(answers(&r).await, vec![us_ip, eu_ip]);

    // The primary edge dies: its port refuses connections. Two failed checks at 100 ms
    // intervals take it out; allow ten times that before calling it a failure.
    us_task.abort();
    let _ = us_task.await;
    let killed = std::time::Instant::now();
    let mut moved = false;
    for _ in 0..100 {
        if answers(&r).await == vec![eu_ip] {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        moved,
        "answers still name the dead edge: {:?}",
        answers(&r).await
    );
    eprintln!("answers moved {:?} after the kill", killed.elapsed());
    assert_eq!(front.gslb().snapshot().active_priority, Some(1));
}
