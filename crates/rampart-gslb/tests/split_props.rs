//! Property tests of the whole split (through the public API): traffic shares over sites sum
//! to 100 % whenever anything is healthy, and a site's share never falls when its own health
//! rises.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::Mock;
use proptest::prelude::*;
use rampart_gslb::{Gslb, GslbConfig, Mode, Site, Sites, Snapshot};
use rampart_health::{HealthReport, HealthReporter};

/// (priority, weight, healthy of 10) per site.
fn snapshot(sites: &[(u32, f64, usize)]) -> Snapshot {
    let mut b = Sites::builder();
    let mut keep = Vec::new();
    for (i, &(priority, weight, healthy)) in sites.iter().enumerate() {
        let r = HealthReporter::new(HealthReport::new(healthy, 10));
        b = b.site(
            Site::new(format!("s{i}"), Mock::new("s"))
                .priority(priority)
                .weight(weight)
                .health_report(r.subscribe()),
        );
        keep.push(r);
    }
    // Outside a runtime: the split is computed once from the reports at construction.
    let gslb: Gslb<Mock, ()> = Gslb::new(GslbConfig::default(), b.build().unwrap());
    gslb.handle().snapshot()
}

fn site_strategy() -> impl Strategy<Value = (u32, f64, usize)> {
    (0u32..3, 0.5f64..10.0, 0usize..=10)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn site_shares_sum_to_one(sites in proptest::collection::vec(site_strategy(), 1..8)) {
        let snap = snapshot(&sites);
        let total: f64 = snap.sites.iter().map(|s| s.traffic_share).sum();
        if sites.iter().any(|s| s.2 > 0) {
            prop_assert_eq!(snap.mode, Mode::Normal);
            prop_assert!((total - 1.0).abs() < 1e-9, "total {}", total);
            let loads: u32 = snap.levels.iter().map(|l| l.load_percent).sum();
            prop_assert_eq!(loads, 100);
        } else {
            prop_assert_eq!(snap.mode, Mode::Unavailable);
            prop_assert_eq!(total, 0.0);
        }
    }

    #[test]
    fn own_share_monotone_in_own_health(
        sites in proptest::collection::vec(site_strategy(), 1..6),
        pick in 0usize..6,
        extra in 1usize..=10,
    ) {
        let i = pick % sites.len();
        let mut better = sites.clone();
        better[i].2 = (better[i].2 + extra).min(10);
        let before = snapshot(&sites).sites[i].traffic_share;
        let after = snapshot(&better).sites[i].traffic_share;
        prop_assert!(after + 1e-9 >= before, "share fell from {} to {}", before, after);
    }
}

/// Found by `site_shares_sum_to_one`: the level's healthy share (weighted by site weight) was
/// so small that Envoy's rounding-down made the level 0 % healthy, and the selector failed fast
/// with a healthy endpoint available.
#[test]
fn a_light_site_with_one_healthy_endpoint_among_dead_heavy_ones_still_serves() {
    let sites = vec![(0u32, 8.03f64, 0usize), (0, 8.87, 0), (0, 0.5, 1)];
    let snap = snapshot(&sites);
    assert_eq!(snap.mode, Mode::Normal);
    let total: f64 = snap.sites.iter().map(|s| s.traffic_share).sum();
    assert!((total - 1.0).abs() < 1e-9, "total {total}");
}
