//! Failback hold under paused time, including a flapping primary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::{Mock, settle, tally};
use rampart_gslb::{Gslb, GslbConfig, Site, Sites};
use rampart_health::{HealthReport, HealthReporter};
use tokio::time::advance;

fn setup(hold: Duration) -> (Gslb<Mock, ()>, HealthReporter) {
    let p0 = HealthReporter::new(HealthReport::new(4, 4));
    let sites = Sites::builder()
        .site(Site::new("primary", Mock::new("primary")).health_report(p0.subscribe()))
        .site(Site::new("secondary", Mock::new("secondary")).priority(1))
        .build()
        .unwrap();
    let config = GslbConfig::builder().failback_hold(hold).build().unwrap();
    (Gslb::new(config, sites), p0)
}

#[tokio::test(start_paused = true)]
async fn traffic_returns_only_after_the_hold() {
    let (mut gslb, p0) = setup(Duration::from_secs(30));
    let handle = gslb.handle();
    p0.publish(HealthReport::new(0, 4));
    settle().await;
    assert_eq!(tally(&mut gslb, 50, || ()).await["secondary"], 50);

    p0.publish(HealthReport::new(4, 4));
    settle().await;
    let snap = handle.snapshot();
    let primary = snap.site("primary").unwrap();
    assert_eq!(primary.observed_share, 1.0);
    assert_eq!(primary.admitted_share, 0.0);
    assert!(primary.failback_at.is_some());
    assert_eq!(snap.active_priority, Some(1));

    advance(Duration::from_secs(29)).await;
    settle().await;
    assert_eq!(
        tally(&mut gslb, 50, || ()).await["secondary"],
        50,
        "still held at 29 s"
    );

    advance(Duration::from_secs(1)).await;
    settle().await;
    let snap = handle.snapshot();
    assert_eq!(snap.active_priority, Some(0), "admitted at 30 s");
    assert_eq!(snap.site("primary").unwrap().failback_at, None);
    assert_eq!(tally(&mut gslb, 50, || ()).await["primary"], 50);
}

/// A primary that alternates healthy/unhealthy faster than the hold never gets traffic back.
#[tokio::test(start_paused = true)]
async fn flapping_primary_never_gets_traffic_back() {
    let (mut gslb, p0) = setup(Duration::from_secs(30));
    let handle = gslb.handle();
    p0.publish(HealthReport::new(0, 4));
    settle().await;
    let version = handle.snapshot().version;
    // 5 minutes of flapping: up 20 s, down 5 s.
    for _ in 0..12 {
        p0.publish(HealthReport::new(4, 4));
        settle().await;
        for _ in 0..4 {
            advance(Duration::from_secs(5)).await;
            settle().await;
            assert_eq!(
                tally(&mut gslb, 5, || ()).await.get("primary"),
                None,
                "flapping primary got traffic"
            );
        }
        p0.publish(HealthReport::new(0, 4));
        settle().await;
        advance(Duration::from_secs(5)).await;
        settle().await;
    }
    assert_eq!(handle.snapshot().active_priority, Some(1));
    assert_eq!(
        handle.snapshot().version,
        version,
        "the decision did not change once during the flapping"
    );
    // Once it stays up for the hold, it is back.
    p0.publish(HealthReport::new(4, 4));
    settle().await;
    advance(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(handle.snapshot().active_priority, Some(0));
}

/// Partial recovery is held too, and a second drop cancels the pending failback.
#[tokio::test(start_paused = true)]
async fn partial_recovery_is_held_and_a_drop_cancels_it() {
    let (gslb, p0) = setup(Duration::from_secs(10));
    let handle = gslb.handle();
    p0.publish(HealthReport::new(1, 4)); // 25 % → 35/65
    settle().await;
    assert_eq!(handle.snapshot().level(0).unwrap().load_percent, 35);
    p0.publish(HealthReport::new(4, 4));
    settle().await;
    assert_eq!(handle.snapshot().level(0).unwrap().load_percent, 35);
    advance(Duration::from_secs(6)).await;
    p0.publish(HealthReport::new(2, 4)); // drops below observed but above admitted
    settle().await;
    // Still above the admitted 25 %: keeps waiting from the original start.
    advance(Duration::from_secs(4)).await;
    settle().await;
    let snap = handle.snapshot();
    assert_eq!(
        snap.level(0).unwrap().load_percent,
        70,
        "50 % admitted after 10 s"
    );
    p0.publish(HealthReport::new(0, 4));
    settle().await;
    assert_eq!(
        handle.snapshot().level(0).unwrap().load_percent,
        0,
        "losses are immediate"
    );
}

#[tokio::test(start_paused = true)]
async fn zero_hold_fails_back_at_once() {
    let (gslb, p0) = setup(Duration::ZERO);
    let handle = gslb.handle();
    p0.publish(HealthReport::new(0, 4));
    settle().await;
    assert_eq!(handle.snapshot().active_priority, Some(1));
    p0.publish(HealthReport::new(4, 4));
    settle().await;
    assert_eq!(handle.snapshot().active_priority, Some(0));
}

/// Flapping much faster than the hold (up and down every second for two minutes): not one
/// change of decision, not one request to the primary.
#[tokio::test(start_paused = true)]
async fn fast_flapping_changes_no_decision() {
    let (mut gslb, p0) = setup(Duration::from_secs(30));
    let handle = gslb.handle();
    p0.publish(HealthReport::new(0, 4));
    settle().await;
    let version = handle.snapshot().version;
    for i in 0..120 {
        p0.publish(HealthReport::new(if i % 2 == 0 { 4 } else { 0 }, 4));
        settle().await;
        advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(tally(&mut gslb, 2, || ()).await.get("primary"), None);
    }
    let snap = handle.snapshot();
    assert_eq!(snap.version, version, "a decision changed while flapping");
    assert_eq!(snap.active_priority, Some(1));
}

/// A site whose replicas are all healthy again but which waits out the failback hold is
/// reported as healthy and held, with the time left, not as down.
#[tokio::test(start_paused = true)]
async fn a_healthy_site_held_for_failback_says_so_with_the_time_left() {
    let (gslb, p0) = setup(Duration::from_secs(30));
    let handle = gslb.handle();
    let primary = handle.snapshot().site("primary").unwrap().clone();
    assert!(!primary.held_for_failback());
    assert_eq!(primary.failback_in, None);

    p0.publish(HealthReport::new(0, 4));
    settle().await;
    let down = handle.snapshot().site("primary").unwrap().clone();
    assert!(!down.routable);
    assert!(!down.held_for_failback(), "unhealthy, not held");

    p0.publish(HealthReport::new(4, 4));
    settle().await;
    advance(Duration::from_secs(12)).await;
    settle().await;
    let held = handle.snapshot().site("primary").unwrap().clone();
    assert!(!held.routable, "no traffic during the hold");
    assert_eq!(held.observed_share, 1.0);
    assert!(held.held_for_failback());
    assert_eq!(held.failback_in, Some(Duration::from_secs(18)));

    advance(Duration::from_secs(18)).await;
    settle().await;
    let back = handle.snapshot().site("primary").unwrap().clone();
    assert!(back.routable);
    assert!(!back.held_for_failback());
    assert_eq!(back.failback_in, None);
}
