//! Geo and lowest-latency steering, session affinity.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Mock, settle, tally};
use rampart_gslb::extract::{Cookie, Header, IpTable};
use rampart_gslb::{Gslb, GslbConfig, LatencyConfig, Site, Sites};
use rampart_health::{HealthReport, HealthReporter};

type Req = http::Request<()>;

fn req_from(region: &str) -> Req {
    http::Request::builder()
        .header("x-region", region)
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn geo_prefers_the_clients_region_then_its_order() {
    fastrand::seed(3);
    let eu_health = HealthReporter::new(HealthReport::new(2, 2));
    let sites = Sites::builder()
        .site(
            Site::new("eu-west", Mock::new("eu-west"))
                .region("eu")
                .health_report(eu_health.subscribe()),
        )
        .site(Site::new("eu-central", Mock::new("eu-central")).region("eu"))
        .site(Site::new("us-east", Mock::new("us-east")).region("us"))
        // EU clients: eu-west, then eu-central, then us-east.
        .geo_order("eu", ["eu-west", "eu-central", "us-east"])
        .build()
        .unwrap();
    let config = GslbConfig::builder()
        .geo(Header::new("x-region"))
        .build()
        .unwrap();
    let mut gslb = Gslb::new(config, sites);
    assert_eq!(tally(&mut gslb, 50, || req_from("eu")).await["eu-west"], 50);
    // Region tag without an explicit order: the sites tagged "us".
    assert_eq!(tally(&mut gslb, 50, || req_from("us")).await["us-east"], 50);
    // Unknown region or none: weighted over the level.
    let other = tally(&mut gslb, 300, || req_from("mars")).await;
    assert_eq!(other.len(), 3, "weighted spreads over all three: {other:?}");

    eu_health.publish(HealthReport::new(0, 2));
    settle().await;
    assert_eq!(
        tally(&mut gslb, 50, || req_from("eu")).await["eu-central"],
        50
    );
}

#[tokio::test(start_paused = true)]
async fn geo_from_a_client_ip_table() {
    let sites = Sites::builder()
        .site(Site::new("eu", Mock::new("eu")))
        .site(Site::new("us", Mock::new("us")))
        .build()
        .unwrap();
    let table = IpTable::new(|r: &Req| {
        r.headers()
            .get("x-forwarded-for")?
            .to_str()
            .ok()?
            .parse()
            .ok()
    })
    .route("10.0.0.0".parse().unwrap(), 8, "eu")
    .route("10.64.0.0".parse().unwrap(), 10, "us");
    let config = GslbConfig::builder().geo(table).build().unwrap();
    let mut gslb = Gslb::new(config, sites);
    let from = |ip: &'static str| {
        move || {
            http::Request::builder()
                .header("x-forwarded-for", ip)
                .body(())
                .unwrap()
        }
    };
    assert_eq!(tally(&mut gslb, 20, from("10.1.2.3")).await["eu"], 20);
    assert_eq!(tally(&mut gslb, 20, from("10.65.0.1")).await["us"], 20);
}

fn latency_setup(hysteresis: f64) -> (Gslb<Mock, ()>, Mock, Mock) {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let sites = Sites::builder()
        .site(Site::new("a", a.clone()))
        .site(Site::new("b", b.clone()))
        .build()
        .unwrap();
    let config = GslbConfig::builder()
        .lowest_latency(
            LatencyConfig::default()
                .hysteresis(hysteresis)
                .explore(0.1)
                .alpha(0.5),
        )
        .build()
        .unwrap();
    (Gslb::new(config, sites), a, b)
}

#[tokio::test(start_paused = true)]
async fn lowest_latency_takes_the_faster_site() {
    fastrand::seed(5);
    let (mut gslb, a, b) = latency_setup(0.2);
    a.delay(100);
    b.delay(20);
    // Let exploration measure both.
    tally(&mut gslb, 200, || ()).await;
    let snap = gslb.handle().snapshot();
    assert!(snap.site("b").unwrap().latency_leader, "{snap:?}");
    assert_eq!(
        snap.site("b").unwrap().latency,
        Some(Duration::from_millis(20))
    );
    let counts = tally(&mut gslb, 1000, || ()).await;
    let b_share = counts["b"] as f64 / 1000.0;
    // Leader plus its share of the 10 % exploration: about 95 %.
    assert!(b_share > 0.9, "b share {b_share}");
}

/// Near-ties do not flap: a site 10 % faster does not take over with a 20 % margin, a site
/// 50 % faster does.
#[tokio::test(start_paused = true)]
async fn lowest_latency_hysteresis_prevents_flapping() {
    fastrand::seed(9);
    let (mut gslb, a, b) = latency_setup(0.2);
    a.delay(50);
    b.delay(50);
    tally(&mut gslb, 100, || ()).await;
    let leader = |g: &Gslb<Mock, ()>| {
        let snap = g.handle().snapshot();
        snap.sites
            .iter()
            .find(|s| s.latency_leader)
            .map(|s| s.name.to_string())
            .unwrap()
    };
    let first = leader(&gslb);
    let (lead, other) = if first == "a" { (&a, &b) } else { (&b, &a) };
    // The other site gets 10 % faster: within the margin, no switch.
    other.delay(45);
    for _ in 0..10 {
        tally(&mut gslb, 50, || ()).await;
        assert_eq!(leader(&gslb), first, "switched on a near-tie");
    }
    // Now clearly faster: switch.
    other.delay(20);
    tally(&mut gslb, 300, || ()).await;
    assert_ne!(leader(&gslb), first);
    // And the old leader recovering to a near-tie does not pull it back.
    lead.delay(19);
    tally(&mut gslb, 300, || ()).await;
    assert_ne!(leader(&gslb), first);
}

#[tokio::test(start_paused = true)]
async fn lowest_latency_leader_moves_off_an_unhealthy_site() {
    let ra = HealthReporter::new(HealthReport::new(1, 1));
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    a.delay(10);
    b.delay(30);
    let sites = Sites::builder()
        .site(Site::new("a", a).health_report(ra.subscribe()))
        .site(Site::new("b", b))
        .build()
        .unwrap();
    let config = GslbConfig::builder()
        .lowest_latency(LatencyConfig::default().explore(0.0))
        .build()
        .unwrap();
    let mut gslb = Gslb::new(config, sites);
    assert_eq!(tally(&mut gslb, 20, || ()).await["a"], 20);
    ra.publish(HealthReport::new(0, 1));
    settle().await;
    assert_eq!(tally(&mut gslb, 20, || ()).await["b"], 20);
    assert!(gslb.handle().snapshot().site("b").unwrap().latency_leader);
}

#[tokio::test(start_paused = true)]
async fn affinity_keeps_a_session_on_its_site_while_it_is_healthy() {
    let rb = HealthReporter::new(HealthReport::new(1, 1));
    let sites = Sites::builder()
        .site(Site::new("primary", Mock::new("primary")))
        .site(
            Site::new("secondary", Mock::new("secondary"))
                .priority(1)
                .health_report(rb.subscribe()),
        )
        .build()
        .unwrap();
    let config = GslbConfig::builder()
        .affinity(Cookie::new("gslb_site"))
        .build()
        .unwrap();
    let mut gslb = Gslb::new(config, sites);
    let pinned = || {
        http::Request::builder()
            .header("cookie", "gslb_site=secondary")
            .body(())
            .unwrap()
    };
    // The secondary gets no load by the split, but the session stays on it.
    assert_eq!(tally(&mut gslb, 20, pinned).await["secondary"], 20);
    assert_eq!(
        tally(&mut gslb, 20, || http::Request::new(())).await["primary"],
        20
    );
    // Unknown site names are ignored.
    let bogus = || {
        http::Request::builder()
            .header("cookie", "gslb_site=atlantis")
            .body(())
            .unwrap()
    };
    assert_eq!(tally(&mut gslb, 5, bogus).await["primary"], 5);
    // Its site down: the session moves.
    rb.publish(HealthReport::new(0, 1));
    settle().await;
    assert_eq!(tally(&mut gslb, 20, pinned).await["primary"], 20);
}
