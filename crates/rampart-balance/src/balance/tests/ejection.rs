//! Passive outlier ejection: an ejected endpoint returns after its ejection time, and the policy's
//! classifier decides what counts as a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[tokio::test(start_paused = true)]
async fn an_ejected_endpoint_returns_after_the_ejection_time_and_ramps_up() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flaky = Flaky {
        name: "bad".into(),
        failing: failing.clone(),
    };
    let good = Flaky {
        name: "good".into(),
        failing: Arc::default(),
    };
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new().replay(false))
        .picker(Picker::RoundRobin)
        .outlier_detection(
            rampart_health::OutlierConfig::builder()
                .consecutive_failures(3)
                .base_ejection_time(Duration::from_secs(2))
                .max_ejection_percent(50.0)
                .build()
                .unwrap(),
        )
        .endpoint(Endpoint::new("bad", flaky))
        .endpoint(Endpoint::new("good", good))
        .build()
        .unwrap();
    let mut failures = 0;
    for k in 0..20 {
        if balance.ready().await.unwrap().call(k).await.is_err() {
            failures += 1;
        }
        if balance.snapshot().endpoint("bad").unwrap().ejected {
            break;
        }
    }
    assert_eq!(
        failures, 3,
        "ejected after the configured 3 consecutive failures"
    );
    let snap = balance.snapshot();
    let bad = snap.endpoint("bad").unwrap();
    assert!(
        bad.ejected && !bad.routable && bad.ejection_count == 1,
        "{bad:?}"
    );
    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let snap = balance.snapshot();
    let bad = snap.endpoint("bad").unwrap();
    assert!(!bad.ejected && bad.routable, "{bad:?}");
    assert!(bad.slow_start && bad.effective_weight < 0.5, "{bad:?}");
}

#[tokio::test(start_paused = true)]
async fn passive_detection_follows_the_policys_classifier() {
    // A classifier that calls e0's (successful) answers failures ejects e0; one that ignores
    // every result ejects nothing.
    type C =
        rampart_health::FnClassify<fn(Result<&Arc<str>, &BoxError>) -> rampart_health::Outcome>;
    let e0_fails: C = rampart_health::FnClassify::new(|r| match r {
        Ok(name) if &**name == "e0" => rampart_health::Outcome::Failure,
        _ => rampart_health::Outcome::Success,
    });
    let ignore_all: C = rampart_health::FnClassify::new(|_| rampart_health::Outcome::Ignored);
    for (classify, expect_ejected) in [(e0_fails, true), (ignore_all, false)] {
        let mut b = Balance::builder()
            .policy(ServicePolicy::new().with_classifier(classify))
            .picker(Picker::RoundRobin)
            .outlier_detection(
                rampart_health::OutlierConfig::builder()
                    .consecutive_failures(3)
                    .max_ejection_percent(50.0)
                    .build()
                    .unwrap(),
            );
        for name in names(2) {
            let name: Arc<str> = name.into();
            b = b.endpoint(Endpoint::new(name.clone(), Echo(name)));
        }
        let mut balance = b.build().unwrap();
        for k in 0..10 {
            balance.ready().await.unwrap().call(k).await.unwrap();
        }
        assert_eq!(
            balance.snapshot().endpoint("e0").unwrap().ejected,
            expect_ejected
        );
    }
}
