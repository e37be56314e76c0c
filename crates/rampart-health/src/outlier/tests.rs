//! Unit tests of the outlier detector, on paused time.

use super::*;
use crate::Outcome;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// consecutive 5, interval 10 s, base 30 s, max 300 s, cap 100 %, statistical checks on
/// pools of any size.
fn config() -> OutlierConfigBuilder {
    OutlierConfig::builder()
        .max_ejection_percent(100.0)
        .failure_percentage_minimum_hosts(1)
}

fn fail(t: &OutlierTracker, n: usize) {
    for _ in 0..n {
        t.record(Outcome::Failure);
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_at_the_threshold() {
    let d = OutlierDetector::new(config().build().unwrap());
    let mut events = d.subscribe();
    let a = d.track("a");
    let start = Instant::now();

    fail(&a, 4);
    a.record(Outcome::Success); // resets the streak
    fail(&a, 4);
    a.record(Outcome::Ignored); // does not
    assert!(!a.is_ejected());
    assert_eq!(a.consecutive_failures(), 4);
    a.record(Outcome::Failure);
    assert!(a.is_ejected());
    assert_eq!(a.ejected_until(), Some(start + secs(30)));
    assert_eq!(a.ejection_count(), 1);
    assert_eq!(d.ejected(), 1);
    match events.try_recv().unwrap() {
        OutlierEvent::Ejected {
            name,
            until,
            count,
            reason,
        } => {
            assert_eq!(&*name, "a");
            assert_eq!(until, start + secs(30));
            assert_eq!(count, 1);
            assert_eq!(reason, EjectionReason::ConsecutiveFailures);
        }
        other => panic!("unexpected {other:?}"),
    }

    tokio::time::advance(secs(29)).await;
    assert!(a.is_ejected());
    tokio::time::advance(secs(1)).await;
    assert!(!a.is_ejected());
    assert_eq!(d.ejected(), 0);
    assert!(matches!(events.try_recv().unwrap(), OutlierEvent::Restored { name } if &*name == "a"));
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_zero_disables() {
    let d = OutlierDetector::new(config().consecutive_failures(0).build().unwrap());
    let a = d.track("a");
    fail(&a, 1000);
    assert!(!a.is_ejected());
}

#[tokio::test(start_paused = true)]
async fn ejection_time_backs_off_and_is_capped() {
    let d = OutlierDetector::new(
        config()
            .base_ejection_time(secs(30))
            .max_ejection_time(secs(100))
            .build()
            .unwrap(),
    );
    let a = d.track("a");
    // Re-eject as soon as each ejection ends: no time to decay in between.
    for (count, expected) in [(1, 30), (2, 60), (3, 90), (4, 100), (5, 100)] {
        let start = Instant::now();
        fail(&a, 5);
        assert_eq!(a.ejection_count(), count);
        assert_eq!(
            a.ejected_until(),
            Some(start + secs(expected)),
            "count {count}"
        );
        tokio::time::advance(secs(expected)).await;
        assert!(!a.is_ejected());
    }
}

#[tokio::test(start_paused = true)]
async fn failures_while_ejected_do_not_count() {
    let d = OutlierDetector::new(config().build().unwrap());
    let a = d.track("a");
    fail(&a, 5);
    assert!(a.is_ejected());
    fail(&a, 20); // in-flight calls failing after the ejection
    assert_eq!(a.consecutive_failures(), 0);
    tokio::time::advance(secs(30)).await;
    assert!(!a.is_ejected());
    fail(&a, 4);
    assert!(!a.is_ejected());
    assert_eq!(a.ejection_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn ejection_count_decays_once_per_interval_while_not_ejected() {
    let d = OutlierDetector::new(config().build().unwrap()); // interval 10 s, base 30 s
    let a = d.track("a");
    // Three back-to-back ejections: 30 + 60 + 90 s.
    for wait in [30, 60, 90] {
        fail(&a, 5);
        tokio::time::advance(secs(wait)).await;
    }
    assert_eq!(a.ejection_count(), 3);

    // Ejected now (count 4 after this one, 120 s): no decay while ejected.
    fail(&a, 5);
    assert_eq!(a.ejection_count(), 4);
    tokio::time::advance(secs(100)).await;
    d.evaluate();
    assert_eq!(a.ejection_count(), 4);

    // Expires at 120 s; decay counts from then, one step per full 10 s.
    tokio::time::advance(secs(29)).await; // 9 s after the expiry
    d.evaluate();
    assert!(!a.is_ejected());
    assert_eq!(a.ejection_count(), 4);
    tokio::time::advance(secs(1)).await; // 10 s
    d.evaluate();
    assert_eq!(a.ejection_count(), 3);
    tokio::time::advance(secs(25)).await; // 35 s: two more full intervals
    d.evaluate();
    assert_eq!(a.ejection_count(), 1);

    // The next ejection is based on the decayed count: 2 × 30 s.
    let start = Instant::now();
    fail(&a, 5);
    assert_eq!(a.ejection_count(), 2);
    assert_eq!(a.ejected_until(), Some(start + secs(60)));

    // After long enough, the count is back to zero and stays there.
    tokio::time::advance(secs(60 + 200)).await;
    d.evaluate();
    assert_eq!(a.ejection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn decay_also_happens_lazily_on_the_failure_path() {
    let d = OutlierDetector::new(config().build().unwrap());
    let a = d.track("a");
    fail(&a, 5);
    tokio::time::advance(secs(30)).await;
    assert!(!a.is_ejected());
    assert_eq!(a.ejection_count(), 1);
    tokio::time::advance(secs(15)).await;
    // No explicit evaluate: the failure runs the overdue evaluation first.
    a.record(Outcome::Failure);
    assert_eq!(a.ejection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_ejection_settles_the_decay_owed_since_the_last_evaluation() {
    let d = OutlierDetector::new(config().build().unwrap()); // interval 10 s, base 30 s
    let a = d.track("a");
    fail(&a, 5); // t = 0, count 1, back at 30 s
    tokio::time::advance(secs(39)).await;
    d.evaluate(); // 9 s after the return: no decay yet; the next evaluation is due at 49 s
    assert!(!a.is_ejected());
    assert_eq!(a.ejection_count(), 1);

    // At 45 s the endpoint has been back 15 s (one full interval), but no evaluation ran
    // since 39 s. Its next ejection must still use the decayed count: 1 × 30 s, not 2 × 30 s.
    tokio::time::advance(secs(6)).await;
    let start = Instant::now();
    fail(&a, 5);
    assert_eq!(a.ejection_count(), 1);
    assert_eq!(a.ejected_until(), Some(start + secs(30)));

    // The same holds for a manual ejection.
    tokio::time::advance(secs(30 + 25)).await; // back for 25 s: two full intervals
    assert!(!a.is_ejected());
    let start = Instant::now();
    assert!(a.eject());
    assert_eq!(a.ejection_count(), 1);
    assert_eq!(a.ejected_until(), Some(start + secs(30)));
}

#[test]
fn the_success_path_takes_no_lock() {
    // Hold the detector's mutex on this thread; another thread records successes and
    // ignored outcomes and asks `is_ejected`. If any of these locked, it would block until
    // the safety net below expires (not a timing assertion: it only turns a hang into a
    // failure).
    let d = OutlierDetector::new(config().failure_percentage(50.0, 10).build().unwrap());
    let a = Arc::new(d.track("a"));
    fail(&a, 2); // a streak, so that the success path also resets it
    let guard = d.shared.lock();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let tracker = Arc::clone(&a);
    let worker = std::thread::spawn(move || {
        for _ in 0..10_000 {
            tracker.record(Outcome::Success);
            tracker.record(Outcome::Ignored);
            assert!(!tracker.is_ejected());
        }
        let _ = done_tx.send(tracker.consecutive_failures());
    });
    let done = done_rx.recv_timeout(Duration::from_secs(10));
    drop(guard);
    worker.join().unwrap();
    assert_eq!(
        done,
        Ok(0),
        "the success path waited for the detector's lock"
    );
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_needs_the_minimum_volume() {
    let d = OutlierDetector::new(
        config()
            .consecutive_failures(0)
            .failure_percentage(50.0, 10)
            .build()
            .unwrap(),
    );
    let mut events = d.subscribe();
    let a = d.track("a");
    let good = d.track("good");

    // 4 of 8 failed: over the threshold, under the volume.
    for _ in 0..4 {
        a.record(Outcome::Failure);
        a.record(Outcome::Success);
    }
    for _ in 0..100 {
        good.record(Outcome::Success);
    }
    tokio::time::advance(secs(10)).await;
    d.evaluate();
    assert!(!a.is_ejected());

    // The window started over: 5 of 10 failed (exactly 50 %).
    for _ in 0..5 {
        a.record(Outcome::Failure);
        a.record(Outcome::Success);
    }
    tokio::time::advance(secs(10)).await;
    d.evaluate();
    assert!(a.is_ejected());
    assert!(!good.is_ejected());
    assert!(matches!(
        events.try_recv().unwrap(),
        OutlierEvent::Ejected {
            reason: EjectionReason::FailurePercentage,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn frequent_evaluations_keep_the_failure_percentage_window_an_interval_long() {
    let d = OutlierDetector::new(
        config()
            .consecutive_failures(0)
            .failure_percentage(50.0, 80)
            .build()
            .unwrap(),
    );
    let a = d.track("a");
    let start = Instant::now();
    // One call per 100 ms, every other one failing, and an evaluation every 100 ms (as a
    // balancer's maintenance tick would): 100 calls per 10 s window.
    for tick in 0..100u32 {
        a.record(if tick % 2 == 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        });
        tokio::time::advance(Duration::from_millis(100)).await;
        d.evaluate();
        if Instant::now() - start < secs(10) {
            assert!(!a.is_ejected(), "ejected early, at tick {tick}");
        }
    }
    assert!(a.is_ejected());
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_below_threshold_does_not_eject() {
    let d = OutlierDetector::new(
        config()
            .consecutive_failures(0)
            .failure_percentage(50.0, 10)
            .build()
            .unwrap(),
    );
    let a = d.track("a");
    for _ in 0..4 {
        a.record(Outcome::Failure);
    }
    for _ in 0..6 {
        a.record(Outcome::Success);
    }
    tokio::time::advance(secs(10)).await;
    d.evaluate();
    assert!(!a.is_ejected());
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_runs_lazily_from_the_failure_path() {
    let d = OutlierDetector::new(
        config()
            .consecutive_failures(0)
            .failure_percentage(80.0, 5)
            .build()
            .unwrap(),
    );
    let a = d.track("a");
    fail(&a, 9);
    assert!(!a.is_ejected());
    tokio::time::advance(secs(10)).await;
    a.record(Outcome::Failure); // the due evaluation sees 9 of 9 failed
    assert!(a.is_ejected());
}

/// Ejects as many of `n` endpoints as `cap` allows, each by 5 consecutive failures.
fn eject_all(n: usize, cap: f64) -> (OutlierDetector, Vec<OutlierTracker>) {
    let d = OutlierDetector::new(config().max_ejection_percent(cap).build().unwrap());
    let ts: Vec<_> = (0..n).map(|i| d.track(format!("e{i}"))).collect();
    for t in &ts {
        fail(t, 5);
    }
    (d, ts)
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_one_of_three() {
    // 1 of 3 is 33.3 %: over a 10 % cap, so nobody is ejected (stricter than Envoy).
    let (d, ts) = eject_all(3, 10.0);
    assert_eq!(d.ejected(), 0);
    assert!(ts.iter().all(|t| !t.is_ejected()));

    // 34 %: one fits (33.3 %), a second (66.7 %) does not.
    let (d, ts) = eject_all(3, 34.0);
    assert_eq!(d.ejected(), 1);
    assert!(ts[0].is_ejected());
    assert!(!ts[1].is_ejected() && !ts[2].is_ejected());

    // 100 %: all three.
    let (d, _ts) = eject_all(3, 100.0);
    assert_eq!(d.ejected(), 3);
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_pool_of_one() {
    // 0 of 1 stays 0 of 1 unless the cap is 100 %.
    for cap in [0.0, 10.0, 50.0, 99.9] {
        let (d, ts) = eject_all(1, cap);
        assert_eq!(d.ejected(), 0, "cap {cap}");
        assert!(!ts[0].is_ejected());
    }
    // 1 of 1 at 100 %.
    let (d, ts) = eject_all(1, 100.0);
    assert_eq!(d.ejected(), 1);
    assert!(ts[0].is_ejected());
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_zero_ejects_nobody() {
    let (d, _ts) = eject_all(10, 0.0);
    assert_eq!(d.ejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_blocked_ejection_happens_once_the_cap_frees_up() {
    let (d, ts) = eject_all(3, 34.0);
    assert!(ts[0].is_ejected());
    assert!(!ts[1].is_ejected());
    // The streak of e1 stays over the threshold; once e0 returns, its next failure ejects.
    tokio::time::advance(secs(30)).await;
    ts[1].record(Outcome::Failure);
    assert!(ts[1].is_ejected());
    assert!(!ts[0].is_ejected());
    assert_eq!(d.ejected(), 1);
}

#[tokio::test(start_paused = true)]
async fn manual_eject_ignores_the_cap_and_restore_ends_it() {
    let d = OutlierDetector::new(OutlierConfig::default()); // cap 10 %
    let mut events = d.subscribe();
    let a = d.track("a");
    let b = d.track("b");
    let start = Instant::now();
    assert!(a.eject());
    assert!(!a.eject()); // already ejected
    assert!(b.eject());
    assert_eq!(d.ejected(), 2);
    assert_eq!(a.ejected_until(), Some(start + secs(30)));
    assert!(matches!(
        events.try_recv().unwrap(),
        OutlierEvent::Ejected {
            reason: EjectionReason::Manual,
            count: 1,
            ..
        }
    ));

    a.restore();
    assert!(!a.is_ejected());
    assert_eq!(d.ejected(), 1);
    assert_eq!(a.ejection_count(), 1);
    let _ = events.try_recv().unwrap(); // b's ejection
    assert!(matches!(
        events.try_recv().unwrap(),
        OutlierEvent::Restored { .. }
    ));
    a.restore(); // no-op
    assert!(events.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn dropping_a_tracker_unregisters_it() {
    let d = OutlierDetector::new(config().build().unwrap());
    assert!(d.is_empty());
    let a = d.track("a");
    let b = d.track("b");
    assert_eq!(d.len(), 2);
    fail(&a, 5);
    assert_eq!(d.ejected(), 1);
    drop(a);
    assert_eq!(d.len(), 1);
    assert_eq!(d.ejected(), 0);
    let snapshot = d.snapshot();
    assert_eq!(snapshot.len(), 1);
    assert_eq!(&*snapshot[0].name, "b");
    assert_eq!(snapshot[0].ejected_until, None);
    assert_eq!(b.name(), "b");
}

#[tokio::test(start_paused = true)]
async fn snapshot_shows_ejections() {
    let d = OutlierDetector::new(config().build().unwrap());
    let a = d.track("a");
    let start = Instant::now();
    fail(&a, 5);
    let s = d.snapshot();
    assert_eq!(s[0].ejected_until, Some(start + secs(30)));
    assert_eq!(s[0].ejection_count, 1);
    tokio::time::advance(secs(30)).await;
    assert_eq!(d.snapshot()[0].ejected_until, None);
}

#[test]
fn config_validation_names_field_and_value() {
    let cases = [
        (config().interval(Duration::ZERO), "interval", "0ns"),
        (
            config().base_ejection_time(Duration::ZERO),
            "base_ejection_time",
            "0ns",
        ),
        (
            config().max_ejection_time(secs(10)),
            "max_ejection_time",
            "10s",
        ),
        (
            config().max_ejection_percent(100.5),
            "max_ejection_percent",
            "100.5",
        ),
        (
            config().max_ejection_percent(-1.0),
            "max_ejection_percent",
            "-1.0",
        ),
        (
            config().max_ejection_percent(f64::NAN),
            "max_ejection_percent",
            "NaN",
        ),
        (
            config().failure_percentage(0.0, 10),
            "failure_percentage_threshold",
            "0.0",
        ),
        (
            config().failure_percentage(101.0, 10),
            "failure_percentage_threshold",
            "101.0",
        ),
        (
            config().failure_percentage(50.0, 0),
            "failure_percentage_minimum_requests",
            "0",
        ),
    ];
    for (builder, field, value) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!((err.field(), err.value()), (field, value), "{err}");
    }
    let c = config().failure_percentage(85.0, 100).build().unwrap();
    assert_eq!(c.failure_percentage(), Some((85.0, 100)));
    assert_eq!(c.max_ejection_percent(), 100.0);
    assert_eq!(c.interval(), secs(10));
    assert_eq!(c.max_ejection_time(), secs(300));
}

#[test]
fn concurrent_failures_never_exceed_the_cap() {
    // Real threads racing to eject 8 endpoints under a 50 % cap (outside a runtime the
    // clock is the real one; no ejection expires within the test).
    let d = OutlierDetector::new(
        OutlierConfig::builder()
            .consecutive_failures(3)
            .max_ejection_percent(50.0)
            .build()
            .unwrap(),
    );
    let trackers: Vec<_> = (0..8).map(|i| Arc::new(d.track(format!("e{i}")))).collect();
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let trackers = &trackers;
            let d = &d;
            scope.spawn(move || {
                for round in 0..200 {
                    for (i, t) in trackers.iter().enumerate() {
                        if (i + worker + round) % 5 == 0 {
                            t.record(Outcome::Success);
                        } else {
                            t.record(Outcome::Failure);
                        }
                        assert!(d.ejected() <= 4);
                    }
                }
            });
        }
    });
    assert_eq!(d.ejected(), 4);
    assert_eq!(trackers.iter().filter(|t| t.is_ejected()).count(), 4);
}

#[test]
fn tracker_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<OutlierTracker>();
    assert_send_sync::<OutlierDetector>();
}

/// Records `successes` then `failures` interleaved (so no streak of consecutive failures).
fn record_mix(t: &OutlierTracker, successes: usize, failures: usize) {
    let total = successes + failures;
    let mut failed = 0;
    for i in 0..total {
        // Spread the failures evenly over the calls.
        if failed < failures && (i + 1) * failures >= (failed + 1) * total {
            t.record(Outcome::Failure);
            failed += 1;
        } else {
            t.record(Outcome::Success);
        }
    }
}

fn success_rate_pool(n: usize, cap: f64) -> (OutlierDetector, Vec<OutlierTracker>) {
    let d = OutlierDetector::new(
        OutlierConfig::builder()
            .consecutive_failures(0)
            .success_rate(1.9, 5, 100)
            .max_ejection_percent(cap)
            .build()
            .unwrap(),
    );
    let trackers = (0..n).map(|i| d.track(format!("e{i}"))).collect();
    (d, trackers)
}

#[tokio::test(start_paused = true)]
async fn success_rate_ejects_the_endpoint_far_below_the_pool() {
    let (d, t) = success_rate_pool(6, 50.0);
    let mut events = d.subscribe();
    for tracker in &t[..5] {
        record_mix(tracker, 99, 1);
    }
    record_mix(&t[5], 60, 40);
    tokio::time::advance(secs(10)).await;
    d.evaluate();
    assert!(t[5].is_ejected(), "the 60 % endpoint is an outlier");
    assert!(t[..5].iter().all(|t| !t.is_ejected()));
    match events.try_recv().unwrap() {
        OutlierEvent::Ejected { name, reason, .. } => {
            assert_eq!(&*name, "e5");
            assert_eq!(reason, EjectionReason::SuccessRate);
        }
        other => panic!("unexpected event {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn success_rate_leaves_a_uniformly_failing_pool_alone() {
    // Every endpoint at 70 %: nobody is worse than the others, so nobody is an outlier.
    let (d, t) = success_rate_pool(6, 100.0);
    for tracker in &t {
        record_mix(tracker, 70, 30);
    }
    tokio::time::advance(secs(10)).await;
    d.evaluate();
    assert_eq!(d.ejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn success_rate_needs_the_minimum_hosts_with_enough_volume() {
    let (d, t) = success_rate_pool(6, 50.0);
    // Only four endpoints reach the volume of 100 calls: fewer than the minimum of five.
    for tracker in &t[..3] {
        record_mix(tracker, 99, 1);
    }
    record_mix(&t[3], 60, 40);
    record_mix(&t[4], 50, 0);
    record_mix(&t[5], 50, 0);
    tokio::time::advance(secs(10)).await;
    d.evaluate();
    assert_eq!(d.ejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn success_rate_ejection_respects_max_ejection_percent() {
    // One of six is 16.7 %: a cap of 10 % forbids it.
    let (d, t) = success_rate_pool(6, 10.0);
    for tracker in &t[..5] {
        record_mix(tracker, 99, 1);
    }
    record_mix(&t[5], 10, 90);
    tokio::time::advance(secs(10)).await;
    d.evaluate();
    assert_eq!(d.ejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn success_rate_counts_only_the_last_interval() {
    let (d, t) = success_rate_pool(6, 50.0);
    for tracker in &t[..5] {
        record_mix(tracker, 99, 1);
    }
    record_mix(&t[5], 60, 40);
    tokio::time::advance(secs(10)).await;
    d.evaluate();
    assert!(t[5].is_ejected());
    // The next window: everyone healthy again, e5 back after its ejection, nothing new.
    tokio::time::advance(secs(30)).await;
    for tracker in &t {
        record_mix(tracker, 100, 0);
    }
    d.evaluate();
    assert_eq!(d.ejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_needs_the_minimum_hosts() {
    let build = |hosts: u32| {
        OutlierDetector::new(
            OutlierConfig::builder()
                .consecutive_failures(0)
                .failure_percentage(50.0, 10)
                .failure_percentage_minimum_hosts(hosts)
                .max_ejection_percent(100.0)
                .build()
                .unwrap(),
        )
    };
    // Envoy's default: a pool of three is too small for the statistics.
    let d = build(5);
    let t: Vec<_> = (0..3).map(|i| d.track(format!("e{i}"))).collect();
    record_mix(&t[0], 2, 18);
    tokio::time::advance(secs(10)).await;
    d.evaluate();
    assert_eq!(d.ejected(), 0);

    let d = build(3);
    let t: Vec<_> = (0..3).map(|i| d.track(format!("e{i}"))).collect();
    record_mix(&t[0], 2, 18);
    tokio::time::advance(secs(10)).await;
    d.evaluate();
    assert!(t[0].is_ejected());
}

#[test]
fn statistical_settings_are_validated_with_the_field_named() {
    let err = |b: OutlierConfigBuilder| b.build().unwrap_err().to_string();
    assert_eq!(
        err(OutlierConfig::builder().success_rate(0.0, 5, 100)),
        "invalid `success_rate_stdev_factor` = 0.0: must be a finite number greater than zero"
    );
    assert_eq!(
        err(OutlierConfig::builder().success_rate(1.9, 0, 100)),
        "invalid `success_rate_minimum_hosts` = 0: must be at least 1"
    );
    assert_eq!(
        err(OutlierConfig::builder().success_rate(1.9, 5, 0)),
        "invalid `success_rate_request_volume` = 0: must be at least 1"
    );
    let ok = OutlierConfig::default();
    assert_eq!(ok.success_rate(), None);
    assert_eq!(ok.failure_percentage_minimum_hosts(), 5);
}
