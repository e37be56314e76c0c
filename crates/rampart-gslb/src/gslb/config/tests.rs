use std::time::Duration;

use super::*;

/// The documented defaults: overprovisioning factor 1.4, failback hold 30 s, weighted
/// steering, fail fast when all sites are down.
#[test]
fn defaults_are_envoys_factor_and_a_30_s_hold() {
    let c = GslbConfig::<()>::builder().build().unwrap();
    assert_eq!(c.overprovisioning_factor(), 1.4);
    assert_eq!(c.failback_hold(), Duration::from_secs(30));
    assert!(matches!(c.steering(), Steering::Weighted));
    assert!(!c.all_down_as_healthy());
    assert_eq!(c.retries(), 1);
    assert!(!c.replay_enabled, "no replay unless configured");
}

/// `build()` names the field and the value it rejects.
#[test]
fn build_rejects_bad_values_naming_field_and_value() {
    for factor in [0.99, 0.0, -1.4, f64::NAN, f64::INFINITY, 1e9] {
        let e = GslbConfig::<()>::builder()
            .overprovisioning_factor(factor)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "overprovisioning_factor");
        assert_eq!(e.value(), format!("{factor:?}"));
        let msg = e.to_string();
        assert!(
            msg.contains("overprovisioning_factor") && msg.contains(&format!("{factor:?}")),
            "{msg}"
        );
    }
    assert!(
        GslbConfig::<()>::builder()
            .overprovisioning_factor(1.0)
            .build()
            .is_ok()
    );

    let e = GslbConfig::<()>::builder().name("").build().unwrap_err();
    assert_eq!(e.field(), "name");
    let e = GslbConfig::<()>::builder().retries(9).build().unwrap_err();
    assert_eq!((e.field(), e.value()), ("retries", "9"));
    for (config, field) in [
        (LatencyConfig::default().alpha(0.0), "latency.alpha"),
        (LatencyConfig::default().alpha(f64::NAN), "latency.alpha"),
        (
            LatencyConfig::default().hysteresis(f64::NAN),
            "latency.hysteresis",
        ),
        (LatencyConfig::default().explore(1.5), "latency.explore"),
    ] {
        let e = GslbConfig::<()>::builder()
            .lowest_latency(config)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), field);
    }
}
