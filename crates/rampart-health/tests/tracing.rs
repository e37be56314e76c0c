//! Every transition emits a `tracing` event: the checker's health changes and the outlier
//! detector's ejections and returns. A small in-memory subscriber captures them, on a
//! current-thread runtime with a paused clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rampart_health::{
    Checker, CheckerConfig, Health, Outcome, OutlierConfig, OutlierDetector, ProbeError,
    ProbeErrorKind, probe_fn,
};
use rampart_test_support::tracing::Capture;
use tracing::Level;

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn every_checker_transition_is_traced() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    paused_runtime().block_on(async {
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let probe = probe_fn(move || {
            let passed = flag.load(Ordering::SeqCst);
            async move {
                if passed {
                    Ok(())
                } else {
                    Err(ProbeError::new(ProbeErrorKind::Status, "status 500"))
                }
            }
        });
        let config = CheckerConfig::builder()
            .interval(Duration::from_secs(1))
            .timeout(Duration::from_secs(1))
            .jitter(0.0)
            .build()
            .unwrap();
        let handle = Checker::spawn("c1", probe, config);
        let mut watch = handle.watch();
        assert_eq!(watch.changed().await, Some(Health::Healthy));
        up.store(false, Ordering::SeqCst);
        assert_eq!(watch.changed().await, Some(Health::Unhealthy));
        up.store(true, Ordering::SeqCst);
        assert_eq!(watch.changed().await, Some(Health::Healthy));
    });

    let changes = capture.with_message("health changed");
    let seen: Vec<(Level, &str, &str)> = changes
        .iter()
        .map(|e| (e.level, e.fields["from"].as_str(), e.fields["to"].as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Level::INFO, "unknown", "healthy"),
            (Level::WARN, "healthy", "unhealthy"),
            (Level::INFO, "unhealthy", "healthy"),
        ]
    );
    for e in &changes {
        assert_eq!(e.fields["checker"], "c1");
    }
    // The fall names the last error.
    assert_eq!(changes[1].fields["last_error"], "status 500");
    // Each failed probe is traced too (fall = 3).
    assert_eq!(capture.with_message("probe failed").len(), 3);
}

#[test]
fn every_outlier_ejection_and_return_is_traced() {
    let capture = Arc::new(Capture::default());
    let _guard = tracing::subscriber::set_default(capture.clone());
    paused_runtime().block_on(async {
        // Cap 50 % of 2 endpoints: one ejection fits, a second does not.
        let detector = OutlierDetector::new(
            OutlierConfig::builder()
                .max_ejection_percent(50.0)
                .build()
                .unwrap(),
        );
        let a = detector.track("a");
        let b = detector.track("b");
        for _ in 0..5 {
            a.record(Outcome::Failure);
            b.record(Outcome::Failure);
        }
        assert!(a.is_ejected() && !b.is_ejected());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!a.is_ejected()); // expires: traced as a return
        assert!(b.eject()); // manual
        b.restore(); // manual
    });

    let ejected: Vec<(Level, String, String)> = capture
        .with_message("endpoint ejected")
        .into_iter()
        .map(|e| {
            (
                e.level,
                e.fields["endpoint"].clone(),
                e.fields["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        ejected,
        vec![
            (
                Level::WARN,
                "a".to_owned(),
                "consecutive_failures".to_owned()
            ),
            (Level::WARN, "b".to_owned(), "manual".to_owned()),
        ]
    );
    let returned: Vec<(Level, String)> = capture
        .with_message("endpoint returned")
        .into_iter()
        .map(|e| (e.level, e.fields["endpoint"].clone()))
        .collect();
    assert_eq!(
        returned,
        vec![(Level::INFO, "a".to_owned()), (Level::INFO, "b".to_owned())]
    );
    // The ejection the cap prevented is traced as well.
    let skipped = capture.with_message("ejection skipped: max_ejection_percent reached");
    assert!(!skipped.is_empty());
    assert!(skipped.iter().all(|e| e.fields["endpoint"] == "b"));
}
