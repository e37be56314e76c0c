//! Priority failover, weights, all-down behaviour, drain/restore, probes, task lifetime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Mock, next, settle, tally};
use rampart_gslb::{Gslb, GslbConfig, Mode, NoHealthySite, Site, Sites};
use rampart_health::{Health, HealthPublisher, HealthReport, HealthReporter, is_never_reached};
use tower::{Service, ServiceExt};

fn two_priorities(p0: &HealthReporter) -> (Gslb<Mock, ()>, Mock, Mock) {
    let (a, b) = (Mock::new("primary"), Mock::new("secondary"));
    let sites = Sites::builder()
        .site(
            Site::new("primary", a.clone())
                .priority(0)
                .health_report(p0.subscribe()),
        )
        .site(Site::new("secondary", b.clone()).priority(1))
        .build()
        .unwrap();
    (Gslb::new(GslbConfig::default(), sites), a, b)
}

/// The figures of Envoy's "priority levels" documentation, through the whole selector: the
/// snapshot's level loads and the sites' traffic shares.
#[tokio::test(start_paused = true)]
async fn envoy_priority_figures_end_to_end() {
    let p0 = HealthReporter::new(HealthReport::new(100, 100));
    let (gslb, _, _) = two_priorities(&p0);
    let mut handle = gslb.handle();
    for (healthy, expected) in [
        (72, (100, 0)),
        (71, (99, 1)),
        (50, (70, 30)),
        (25, (35, 65)),
        (0, (0, 100)),
    ] {
        p0.publish(HealthReport::new(healthy, 100));
        let snap = next(&mut handle).await;
        let loads = (
            snap.level(0).unwrap().load_percent,
            snap.level(1).unwrap().load_percent,
        );
        assert_eq!(loads, expected, "P0 {healthy}% healthy");
        let share = snap.site("primary").unwrap().traffic_share;
        assert!((share - f64::from(expected.0) / 100.0).abs() < 1e-9);
        // Losses apply at once (no hold on the way down): the next loop step goes down too.
    }
}

/// The split is what requests actually see: at 50 % primary health, about 70/30.
#[tokio::test(start_paused = true)]
async fn requests_follow_the_split() {
    fastrand::seed(7);
    let p0 = HealthReporter::new(HealthReport::new(10, 10));
    let (mut gslb, _, _) = two_priorities(&p0);
    let mut handle = gslb.handle();
    let all = tally(&mut gslb, 1000, || ()).await;
    assert_eq!(all.get("primary"), Some(&1000));

    p0.publish(HealthReport::new(5, 10));
    next(&mut handle).await;
    let split = tally(&mut gslb, 4000, || ()).await;
    let primary = split["primary"] as f64 / 4000.0;
    assert!((0.66..=0.74).contains(&primary), "primary share {primary}");
}

#[tokio::test(start_paused = true)]
async fn weighted_within_a_priority() {
    fastrand::seed(11);
    let (a, b, c) = (Mock::new("a"), Mock::new("b"), Mock::new("c"));
    let sites = Sites::builder()
        .site(Site::new("a", a).weight(3.0))
        .site(Site::new("b", b).weight(1.0))
        .site(Site::new("c", c).weight(0.0))
        .build()
        .unwrap();
    let mut gslb = Gslb::new(GslbConfig::default(), sites);
    let snap = gslb.handle().snapshot();
    assert!((snap.site("a").unwrap().traffic_share - 0.75).abs() < 1e-9);
    assert_eq!(snap.site("c").unwrap().traffic_share, 0.0);
    let counts = tally(&mut gslb, 4000, || ()).await;
    let a_share = counts["a"] as f64 / 4000.0;
    assert!((0.71..=0.79).contains(&a_share), "a share {a_share}");
    assert_eq!(
        counts.get("c"),
        None,
        "weight 0 never gets weighted traffic"
    );
}

/// Envoy's locality weighting: a half-healthy site's weight counts at min(1, 1.4 × 0.5) = 0.7.
#[tokio::test(start_paused = true)]
async fn partially_healthy_site_gets_less_of_its_level() {
    let ra = HealthReporter::new(HealthReport::new(5, 10));
    let sites = Sites::builder()
        .site(Site::new("a", Mock::new("a")).health_report(ra.subscribe()))
        .site(Site::new("b", Mock::new("b")))
        .build()
        .unwrap();
    let gslb = Gslb::new(GslbConfig::<()>::default(), sites);
    let snap = gslb.handle().snapshot();
    // Level health: (0.5 + 1) / 2 = 75 % × 1.4 → 100: the level keeps all the load.
    assert_eq!(snap.level(0).unwrap().load_percent, 100);
    let a = snap.site("a").unwrap().traffic_share;
    assert!((a - 0.7 / 1.7).abs() < 1e-9, "a share {a}");
}

#[tokio::test(start_paused = true)]
async fn all_down_fails_fast_with_typed_error() {
    let p0 = HealthReporter::new(HealthReport::new(0, 3));
    let sites = Sites::builder()
        .site(Site::new("only", Mock::new("only")).health_report(p0.subscribe()))
        .build()
        .unwrap();
    let mut gslb = Gslb::new(
        GslbConfig::<()>::builder().name("catalog").build().unwrap(),
        sites,
    );
    assert_eq!(gslb.handle().snapshot().mode, Mode::Unavailable);
    let err = gslb.ready().await.unwrap().call(()).await.unwrap_err();
    let typed = err.downcast_ref::<NoHealthySite>().expect("NoHealthySite");
    assert_eq!(typed.gslb(), "catalog");
    assert!(
        is_never_reached(&*err),
        "NoHealthySite carries NeverReached"
    );
}

#[tokio::test(start_paused = true)]
async fn all_down_uses_the_fallback_site() {
    let p0 = HealthReporter::new(HealthReport::new(3, 3));
    let sorry = Mock::new("sorry");
    let sites = Sites::builder()
        .site(Site::new("only", Mock::new("only")).health_report(p0.subscribe()))
        .fallback(Site::new("sorry", sorry.clone()))
        .build()
        .unwrap();
    let mut gslb = Gslb::new(GslbConfig::<()>::default(), sites);
    let mut handle = gslb.handle();
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "only");
    assert_eq!(
        sorry.calls(),
        0,
        "the fallback is not used while a site is up"
    );
    p0.publish(HealthReport::new(0, 3));
    let snap = next(&mut handle).await;
    assert_eq!(snap.mode, Mode::Fallback);
    assert_eq!(snap.active_priority, None);
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "sorry");
    // Back up: with nothing else serving, no failback hold applies.
    p0.publish(HealthReport::new(1, 3));
    let snap = next(&mut handle).await;
    assert_eq!(snap.mode, Mode::Normal);
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "only");
}

#[tokio::test(start_paused = true)]
async fn all_down_as_healthy_routes_anyway() {
    let ra = HealthReporter::new(HealthReport::new(0, 3));
    let rb = HealthReporter::new(HealthReport::new(0, 3));
    let sites = Sites::builder()
        .site(Site::new("a", Mock::new("a")).health_report(ra.subscribe()))
        .site(
            Site::new("b", Mock::new("b"))
                .priority(1)
                .health_report(rb.subscribe()),
        )
        .build()
        .unwrap();
    let config = GslbConfig::<()>::builder()
        .all_down_as_healthy(true)
        .build()
        .unwrap();
    let mut gslb = Gslb::new(config, sites);
    let handle = gslb.handle();
    let snap = handle.snapshot();
    assert_eq!(snap.mode, Mode::AllAsHealthy);
    assert_eq!(snap.active_priority, Some(0));
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "a");
    // Drained sites stay out even then.
    handle.drain("a").unwrap();
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "b");
    handle.drain("b").unwrap();
    assert_eq!(handle.snapshot().mode, Mode::Unavailable);
    assert!(gslb.ready().await.unwrap().call(()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn drain_and_restore_take_effect_at_once() {
    let (a, b) = (Mock::new("a"), Mock::new("b"));
    let sites = Sites::builder()
        .site(Site::new("a", a))
        .site(Site::new("b", b).priority(1))
        .build()
        .unwrap();
    let mut gslb = Gslb::new(GslbConfig::<()>::default(), sites);
    let handle = gslb.handle();
    let v0 = handle.snapshot().version;
    handle.drain("a").unwrap();
    let snap = handle.snapshot();
    assert!(snap.version > v0, "a drain is a change of decision");
    assert!(snap.site("a").unwrap().drained);
    assert!(!snap.site("a").unwrap().routable);
    assert_eq!(snap.active_priority, Some(1));
    for _ in 0..20 {
        assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "b");
    }
    // Restore is an operator decision: no failback hold.
    handle.restore("a").unwrap();
    assert_eq!(handle.snapshot().active_priority, Some(0));
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "a");
    let err = handle.drain("zz").unwrap_err();
    assert_eq!(err.to_string(), "unknown site `zz`");
}

#[tokio::test(start_paused = true)]
async fn probe_and_report_combine() {
    let probe = HealthPublisher::new(); // Unknown
    let report = HealthReporter::new(HealthReport::new(4, 4));
    let sites = Sites::builder()
        .site(
            Site::new("a", Mock::new("a"))
                .health_watch(probe.subscribe())
                .health_report(report.subscribe()),
        )
        .site(Site::new("b", Mock::new("b")).priority(1))
        .build()
        .unwrap();
    let mut gslb = Gslb::new(GslbConfig::<()>::default(), sites);
    let mut handle = gslb.handle();
    // Unknown is routable by default.
    assert_eq!(handle.snapshot().active_priority, Some(0));
    probe.set(Health::Unhealthy);
    let snap = next(&mut handle).await;
    assert_eq!(snap.site("a").unwrap().observed_share, 0.0);
    assert_eq!(
        snap.site("a").unwrap().report,
        Some(HealthReport::new(4, 4))
    );
    assert_eq!(snap.site("a").unwrap().probe, Some(Health::Unhealthy));
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "b");
}

#[tokio::test(start_paused = true)]
async fn unknown_not_routable_when_configured() {
    let probe = HealthPublisher::new();
    let sites = Sites::builder()
        .site(Site::new("a", Mock::new("a")).health_watch(probe.subscribe()))
        .site(Site::new("b", Mock::new("b")).priority(1))
        .build()
        .unwrap();
    let config = GslbConfig::<()>::builder()
        .unknown_is_routable(false)
        .build()
        .unwrap();
    let gslb = Gslb::new(config, sites);
    assert_eq!(gslb.handle().snapshot().active_priority, Some(1));
}

/// The background task stops with the selector: the health channels it watched are released.
#[tokio::test(start_paused = true)]
async fn background_task_stops_when_the_selector_is_dropped() {
    let (tx, rx) = tokio::sync::watch::channel(HealthReport::new(1, 1));
    let sites = Sites::builder()
        .site(Site::new("a", Mock::new("a")).health_report(rx))
        .build()
        .unwrap();
    let gslb = Gslb::new(GslbConfig::<()>::default(), sites);
    let clone = gslb.clone();
    settle().await;
    assert!(tx.receiver_count() >= 2, "the task and the state watch it");
    drop(gslb);
    settle().await;
    assert!(tx.receiver_count() >= 2, "a clone keeps it running");
    drop(clone);
    settle().await;
    assert_eq!(tx.receiver_count(), 0, "task aborted and state dropped");
}

/// Outside a runtime the selector still works on the health it saw at construction.
#[test]
fn works_without_a_runtime() {
    let sites = Sites::builder()
        .site(Site::new("a", Mock::new("a")))
        .build()
        .unwrap();
    let gslb = Gslb::new(GslbConfig::<()>::default(), sites);
    let handle = gslb.handle();
    assert_eq!(handle.snapshot().active_priority, Some(0));
    handle.drain("a").unwrap();
    assert_eq!(handle.snapshot().mode, Mode::Unavailable);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_always_ready_and_sites_are_reachable() {
    let sites = Sites::builder()
        .site(Site::new("a", Mock::new("a")))
        .build()
        .unwrap();
    let mut gslb = Gslb::new(GslbConfig::<()>::default(), sites);
    assert!(gslb.site("a").is_some());
    assert_eq!(gslb.get_ref().len(), 1);
    std::future::poll_fn(|cx| gslb.poll_ready(cx))
        .await
        .unwrap();
    // A long answer does not block other calls (no reservation in poll_ready).
    gslb.get_ref()[0].delay(10_000);
    let slow = gslb.call(());
    gslb.get_ref()[0].delay(0);
    assert_eq!(gslb.call(()).await.unwrap(), "a");
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(slow.await.unwrap(), "a");
}

/// An active probe of the whole site through a rampart-health `Checker`: the checker's
/// verdict moves traffic, and the selector keeps the checker alive exactly as long as itself.
#[tokio::test(start_paused = true)]
async fn site_checker_moves_traffic_and_lives_with_the_selector() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use rampart_health::{Checker, CheckerConfig, ProbeError, ProbeErrorKind, probe_fn};

    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    let probe = probe_fn(move || {
        let ok = flag.load(Ordering::SeqCst);
        async move {
            if ok {
                Ok(())
            } else {
                Err(ProbeError::new(ProbeErrorKind::Connect, "refused"))
            }
        }
    });
    let config = CheckerConfig::builder()
        .interval(Duration::from_secs(1))
        .unhealthy_interval(Duration::from_secs(1))
        .jitter(0.0)
        .fall(2)
        .rise(1)
        .build()
        .unwrap();
    let checker = Checker::spawn("eu-front-door", probe, config);
    let mut watch = checker.watch();
    let sites = Sites::builder()
        .site(Site::new("eu", Mock::new("eu")).checker(checker))
        .site(Site::new("us", Mock::new("us")).priority(1))
        .build()
        .unwrap();
    let config = GslbConfig::<()>::builder()
        .failback_hold(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut gslb = Gslb::new(config, sites);
    let handle = gslb.handle();
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "eu");

    up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await; // two failed probes
    settle().await;
    assert_eq!(
        handle.snapshot().site("eu").unwrap().probe,
        Some(Health::Unhealthy)
    );
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "us");

    up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await; // one good probe: healthy, held
    settle().await;
    assert_eq!(
        handle.snapshot().site("eu").unwrap().probe,
        Some(Health::Healthy)
    );
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "us");
    tokio::time::sleep(Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "eu");

    // The checker stops with the selector: its health watch closes.
    drop(gslb);
    drop(handle);
    settle().await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while watch.changed().await.is_some() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "checker still running after the selector was dropped"
    );
}

/// `get_mut` and `into_inner` give the site services back only while nothing else shares
/// them: not while a clone exists, nor while a response future that may retry holds on.
#[tokio::test(start_paused = true)]
async fn get_mut_and_into_inner_need_exclusive_access() {
    use rampart_gslb::replay::CloneReplay;

    let (a, sorry) = (Mock::new("a"), Mock::new("sorry"));
    let sites = Sites::builder()
        .site(Site::new("a", a))
        .fallback(Site::new("sorry", sorry))
        .build()
        .unwrap();
    let config = GslbConfig::<u32>::builder()
        .replay(CloneReplay)
        .build()
        .unwrap();
    let mut gslb = Gslb::new(config, sites);
    let handle = gslb.handle();

    gslb.get_mut().unwrap()[0].delay(1_000);
    let clone = gslb.clone();
    assert!(gslb.get_mut().is_none(), "a clone shares the services");
    drop(clone);

    // A response future (with retries on) keeps the shared state alive.
    let in_flight = gslb.call(1);
    let Err(gslb) = gslb.into_inner() else {
        panic!("into_inner while a response future holds the services");
    };
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        in_flight.await.unwrap(),
        "a",
        "the delay set through get_mut applied"
    );

    let (services, fallback) = gslb.into_inner().unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].calls(), 1);
    assert_eq!(fallback.unwrap().name, "sorry");
    // The handle still answers with the last state it saw.
    assert_eq!(handle.snapshot().active_priority, Some(0));
}

/// A site's inner service that reports its own health (the `ReportHealth` trait of
/// rampart-health, which a rampart-balance balancer implements): `Site::reported()` follows it.
#[tokio::test(start_paused = true)]
async fn site_follows_its_inner_services_report_health() {
    use rampart_health::ReportHealth;
    use std::task::{Context, Poll};

    #[derive(Clone)]
    struct Pool {
        inner: Mock,
        reporter: HealthReporter,
    }
    impl ReportHealth for Pool {
        fn health_report(&self) -> tokio::sync::watch::Receiver<HealthReport> {
            self.reporter.subscribe()
        }
    }
    impl Service<()> for Pool {
        type Response = &'static str;
        type Error = rampart_health::BoxError;
        type Future = <Mock as Service<()>>::Future;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Service::<()>::poll_ready(&mut self.inner, cx)
        }
        fn call(&mut self, req: ()) -> Self::Future {
            self.inner.call(req)
        }
    }

    let reporter = HealthReporter::new(HealthReport::new(4, 4));
    let pool = |name| Pool {
        inner: Mock::new(name),
        reporter: reporter.clone(),
    };
    let other = Pool {
        inner: Mock::new("us"),
        reporter: HealthReporter::new(HealthReport::new(1, 1)),
    };
    let sites = Sites::builder()
        .site(Site::new("eu", pool("eu")).reported())
        .site(Site::new("us", other).priority(1).reported())
        .build()
        .unwrap();
    let mut gslb = Gslb::new(GslbConfig::<()>::default(), sites);
    let mut handle = gslb.handle();
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "eu");
    reporter.publish(HealthReport::new(2, 4)); // 50 % → 70/30
    let snap = next(&mut handle).await;
    assert_eq!(
        snap.site("eu").unwrap().report,
        Some(HealthReport::new(2, 4))
    );
    assert_eq!(snap.level(0).unwrap().load_percent, 70);
    reporter.publish(HealthReport::new(0, 4));
    next(&mut handle).await;
    assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "us");
}
