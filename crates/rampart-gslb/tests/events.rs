//! Every change of decision is a `tracing` event (and, with the `metrics` feature, a counter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;

use common::{Mock, settle};
use rampart_gslb::{Gslb, GslbConfig, Site, Sites};
use rampart_health::{HealthReport, HealthReporter};
use rampart_test_support::tracing::Capture;

/// A selector named `name` over "eu" (priority 0, its health from the returned reporter, now
/// 2 of 2 healthy) and "us" (priority 1).
fn eu_then_us(name: &str) -> (Gslb<Mock, ()>, HealthReporter) {
    let p0 = HealthReporter::new(HealthReport::new(2, 2));
    let sites = Sites::builder()
        .site(Site::new("eu", Mock::new("eu")).health_report(p0.subscribe()))
        .site(Site::new("us", Mock::new("us")).priority(1))
        .build()
        .unwrap();
    let config = GslbConfig::<()>::builder().name(name).build().unwrap();
    (Gslb::new(config, sites), p0)
}

#[tokio::test(start_paused = true)]
async fn decision_changes_are_traced() {
    let capture = Arc::new(Capture::default());
    let _default = tracing::subscriber::set_default(capture.clone());
    // tracing-core computes a call site's interest from the registering thread's own
    // subscriber while only one subscriber exists ("just one" mode), so the other tests of
    // this binary, which run without one, would cache "never" for our call sites. A second
    // registered subscriber turns that mode off; then re-evaluate what was cached before.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::callsite::rebuild_interest_cache();

    let (gslb, p0) = eu_then_us("catalog");
    let handle = gslb.handle();
    let v0 = handle.snapshot().version;

    p0.publish(HealthReport::new(1, 2));
    settle().await;
    let events = capture.events();
    assert!(
        !capture.with_message("site health changed").is_empty(),
        "{events:?}"
    );
    let decisions = capture.with_message("gslb decision changed");
    assert!(
        decisions.iter().all(|d| d.fields["gslb"] == "catalog"),
        "{decisions:?}"
    );
    assert!(
        decisions
            .iter()
            .any(|d| d.fields["loads"] == "[(0, 70), (1, 30)]"),
        "{decisions:?}"
    );
    assert_eq!(handle.snapshot().version, v0 + 1);

    handle.drain("us").unwrap();
    let drained = capture.with_message("site drained");
    assert_eq!(drained.len(), 1, "{:?}", capture.events());
    assert_eq!(drained[0].fields["site"], "us");
    assert_eq!(handle.snapshot().version, v0 + 2);

    p0.publish(HealthReport::new(2, 2));
    settle().await;
    assert!(
        capture
            .events()
            .iter()
            .any(|e| e.message.starts_with("failback pending")),
        "{:?}",
        capture.events()
    );
}

#[cfg(feature = "metrics")]
mod metrics_feature {
    use super::*;
    use rampart_test_support::metrics::Captured;
    use rampart_test_support::series;

    #[tokio::test(start_paused = true)]
    async fn decisions_and_requests_are_counted() {
        use tower::{Service, ServiceExt};
        let captured = Captured::default();
        let _guard = metrics::set_default_local_recorder(&captured);
        let (mut gslb, p0) = eu_then_us("m");
        gslb.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(
            series::counter(&captured, "rampart_gslb_requests_total{gslb=m,site=eu}"),
            1
        );
        assert_eq!(
            series::gauge(&captured, "rampart_gslb_active_priority{gslb=m}"),
            0.0
        );
        let before = series::counter(&captured, "rampart_gslb_decision_changes_total{gslb=m}");
        p0.publish(HealthReport::new(0, 2));
        settle().await;
        assert_eq!(
            series::counter(&captured, "rampart_gslb_decision_changes_total{gslb=m}"),
            before + 1
        );
        assert_eq!(
            series::gauge(&captured, "rampart_gslb_active_priority{gslb=m}"),
            1.0
        );
        assert_eq!(
            series::gauge(&captured, "rampart_gslb_site_traffic_share{gslb=m,site=us}"),
            1.0
        );
        gslb.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(
            series::counter(&captured, "rampart_gslb_requests_total{gslb=m,site=us}"),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_recorder_installed_after_the_selector_is_built_still_gets_every_series() {
        use tower::{Service, ServiceExt};
        // Built while no recorder is installed...
        let (mut gslb, p0) = eu_then_us("late");
        // ...and the recorder arrives before the first request.
        let captured = Captured::default();
        let _guard = metrics::set_default_local_recorder(&captured);
        gslb.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(
            series::counter(&captured, "rampart_gslb_requests_total{gslb=late,site=eu}"),
            1
        );
        assert_eq!(
            series::counter(&captured, "rampart_gslb_requests_total{gslb=late,site=us}"),
            0
        );
        assert_eq!(
            series::counter(&captured, "rampart_gslb_retries_total{gslb=late}"),
            0
        );
        p0.publish(HealthReport::new(0, 2));
        settle().await;
        assert_eq!(
            series::counter(&captured, "rampart_gslb_decision_changes_total{gslb=late}"),
            1
        );
        assert_eq!(
            series::gauge(&captured, "rampart_gslb_active_priority{gslb=late}"),
            1.0
        );
        assert_eq!(
            series::gauge(
                &captured,
                "rampart_gslb_site_health_share{gslb=late,site=eu}"
            ),
            0.0
        );
        assert!(
            captured.keys().iter().all(|k| k.contains("gslb=late")),
            "every series carries the selector's name"
        );
    }
}
