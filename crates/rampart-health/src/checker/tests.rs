//! Unit tests of the active checker, on paused time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::*;
use crate::{ProbeErrorKind, probe_fn};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// interval 10 s, unhealthy 1 s, timeout 1 s, no jitter, rise 2, fall 3.
fn config() -> CheckerConfigBuilder {
    CheckerConfig::builder()
        .interval(secs(10))
        .unhealthy_interval(secs(1))
        .timeout(secs(1))
        .jitter(0.0)
}

/// A probe that passes while `up` is set, and counts its calls.
fn switch_probe(up: &Arc<AtomicBool>, calls: &Arc<AtomicU32>) -> impl Probe + use<> {
    let up = up.clone();
    let calls = calls.clone();
    probe_fn(move || {
        calls.fetch_add(1, Ordering::SeqCst);
        let passed = up.load(Ordering::SeqCst);
        async move {
            if passed {
                Ok(())
            } else {
                Err(ProbeError::new(ProbeErrorKind::Status, "status 500"))
            }
        }
    })
}

#[test]
fn rise_fall_machine() {
    let mut m = RiseFall::new(Health::Unknown, 2, 3);
    // The first answer decides.
    assert_eq!(m.observe(true), Some(Health::Healthy));
    // Two failures and a pass: the streak resets.
    assert_eq!(m.observe(false), None);
    assert_eq!(m.observe(false), None);
    assert_eq!(m.observe(true), None);
    assert_eq!(m.observe(false), None);
    assert_eq!(m.observe(false), None);
    assert_eq!(m.observe(false), Some(Health::Unhealthy));
    assert_eq!(m.observe(true), None);
    assert_eq!(m.observe(false), None);
    assert_eq!(m.observe(true), None);
    assert_eq!(m.observe(true), Some(Health::Healthy));

    let mut m = RiseFall::new(Health::Unknown, 2, 3);
    assert_eq!(m.observe(false), Some(Health::Unhealthy));
}

#[tokio::test(start_paused = true)]
async fn rise_and_fall_follow_the_schedule() {
    let up = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    let handle = Checker::spawn(
        "a",
        switch_probe(&up, &calls),
        config().rise(2).fall(3).build().unwrap(),
    );
    let mut events = handle.subscribe();
    assert_eq!(handle.health(), Health::Unknown);

    // First probe at t=0 decides: healthy.
    let t = events.recv().await.unwrap();
    assert_eq!((t.from, t.to), (Health::Unknown, Health::Healthy));
    assert_eq!(t.at - start, secs(0));
    assert_eq!(&*t.name, "a");
    assert_eq!(handle.health(), Health::Healthy);

    // Failing from now: probes at 10, 20, 30 s; the third (fall = 3) flips it.
    up.store(false, Ordering::SeqCst);
    let t = events.recv().await.unwrap();
    assert_eq!((t.from, t.to), (Health::Healthy, Health::Unhealthy));
    assert_eq!(t.at - start, secs(30));
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // Unhealthy: probes every second (unhealthy_interval); rise = 2 → healthy at 32 s.
    up.store(true, Ordering::SeqCst);
    let t = events.recv().await.unwrap();
    assert_eq!((t.from, t.to), (Health::Unhealthy, Health::Healthy));
    assert_eq!(t.at - start, secs(32));
    assert_eq!(handle.health(), Health::Healthy);
    assert_eq!(handle.watch().get(), Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn a_configured_initial_state_needs_rise_or_fall() {
    // Starting Unhealthy: the first pass does not decide, `rise` passes do.
    let up = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    let handle = Checker::spawn(
        "a",
        switch_probe(&up, &calls),
        config().initial(Health::Unhealthy).rise(3).build().unwrap(),
    );
    assert_eq!(handle.health(), Health::Unhealthy);
    let t = handle.subscribe().recv().await.unwrap();
    assert_eq!((t.from, t.to), (Health::Unhealthy, Health::Healthy));
    assert_eq!(t.at - start, secs(2)); // passes at 0, 1, 2 s (unhealthy_interval)
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn probes_faster_while_unhealthy() {
    let up = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU32::new(0));
    let handle = Checker::spawn(
        "a",
        switch_probe(&up, &calls),
        config().initial(Health::Healthy).fall(1).build().unwrap(),
    );
    // t=0: fails → unhealthy (fall 1). Then one probe per second.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(handle.health(), Health::Unhealthy);
    assert_eq!(calls.load(Ordering::SeqCst), 11); // 0, 1, …, 10 s

    // Healthy again: back to the 10 s interval (rise 2 → healthy at 12 s).
    up.store(true, Ordering::SeqCst);
    tokio::time::sleep(secs(20)).await; // now 30.5 s
    assert_eq!(handle.health(), Health::Healthy);
    // 11 + passes at 11 and 12 s + 22 s = 14.
    assert_eq!(calls.load(Ordering::SeqCst), 14);
}

#[tokio::test(start_paused = true)]
async fn interleaved_failures_do_not_reach_fall() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    // Fails twice, passes once, forever.
    let probe = probe_fn(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if n % 3 == 2 {
                Ok(())
            } else {
                Err(ProbeError::new(ProbeErrorKind::Other, "flaky"))
            }
        }
    });
    let handle = Checker::spawn(
        "flaky",
        probe,
        config().initial(Health::Healthy).fall(3).build().unwrap(),
    );
    tokio::time::sleep(secs(305)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 31);
    assert_eq!(handle.health(), Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn a_probe_past_its_timeout_is_a_failure() {
    let probe = probe_fn(|| async {
        tokio::time::sleep(secs(60)).await;
        Ok(())
    });
    let start = Instant::now();
    let handle = Checker::spawn("slow", probe, config().build().unwrap());
    let mut events = handle.subscribe();
    let t = events.recv().await.unwrap();
    assert_eq!(t.to, Health::Unhealthy);
    assert_eq!(t.at - start, secs(1)); // the timeout, not the probe's 60 s
}

#[tokio::test(start_paused = true)]
async fn a_panicking_probe_is_a_failure() {
    let probe = probe_fn(|| async { panic!("probe bug") });
    let handle = Checker::spawn("buggy", probe, config().build().unwrap());
    let mut watch = handle.watch();
    assert_eq!(watch.changed().await, Some(Health::Unhealthy));
    assert!(handle.is_running());
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_bounds() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let recorded = times.clone();
    let probe = probe_fn(move || {
        recorded.lock().unwrap().push(Instant::now());
        async { Ok(()) }
    });
    let start = Instant::now();
    let _handle = Checker::spawn("j", probe, config().jitter(0.5).build().unwrap());
    tokio::time::sleep(secs(1000)).await;

    let times = times.lock().unwrap().clone();
    assert!(times.len() >= 60, "only {} probes", times.len());
    // Bounds are inclusive at the top: tokio's timer rounds deadlines up to the next
    // millisecond, so a wait of 14.9996 s fires at 15 s.
    let first = times[0] - start;
    assert!(first <= secs(5), "first probe after {first:?}");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(
            *gap >= secs(10) && *gap <= secs(15),
            "gap {gap:?} outside [10 s, 15 s]"
        );
    }
    // Jitter is applied: the gaps are not all equal.
    assert!(gaps.iter().any(|g| *g != gaps[0]));
}

#[tokio::test(start_paused = true)]
async fn jitter_stretches_the_unhealthy_interval_within_bounds() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let recorded = times.clone();
    let probe = probe_fn(move || {
        recorded.lock().unwrap().push(Instant::now());
        async { Err(ProbeError::new(ProbeErrorKind::Status, "status 500")) }
    });
    // Unhealthy from the first answer: every wait is unhealthy_interval (2 s) + jitter.
    let _handle = Checker::spawn(
        "j",
        probe,
        config()
            .unhealthy_interval(secs(2))
            .jitter(0.5)
            .build()
            .unwrap(),
    );
    tokio::time::sleep(secs(300)).await;
    let times = times.lock().unwrap().clone();
    assert!(times.len() >= 90, "only {} probes", times.len());
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(
            *gap >= secs(2) && *gap <= secs(3),
            "gap {gap:?} outside [2 s, 3 s]"
        );
    }
    assert!(gaps.iter().any(|g| *g != gaps[0]));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_cancels_an_attempt_in_flight() {
    // The probe's attempt takes 500 ms (within the 1 s timeout); the handle is dropped in
    // the middle of the first one.
    let started = Arc::new(AtomicU32::new(0));
    let finished = Arc::new(AtomicU32::new(0));
    let (s, f) = (started.clone(), finished.clone());
    let probe = probe_fn(move || {
        s.fetch_add(1, Ordering::SeqCst);
        let f = f.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            f.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let handle = Checker::spawn("inflight", probe, config().build().unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(started.load(Ordering::SeqCst), 1);
    drop(handle);
    tokio::time::sleep(secs(60)).await;
    // The attempt never completed, no other started, and the probe (with its captures)
    // is gone: neither the checker task nor the attempt's own task outlived the handle.
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    assert_eq!(Arc::strong_count(&started), 1);
    assert_eq!(Arc::strong_count(&finished), 1);
}

#[tokio::test(start_paused = true)]
async fn no_jitter_means_an_exact_schedule() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let recorded = times.clone();
    let probe = probe_fn(move || {
        recorded.lock().unwrap().push(Instant::now());
        async { Ok(()) }
    });
    let start = Instant::now();
    let _handle = Checker::spawn("exact", probe, config().build().unwrap());
    tokio::time::sleep(secs(45)).await;
    let offsets: Vec<Duration> = times.lock().unwrap().iter().map(|t| *t - start).collect();
    assert_eq!(
        offsets,
        vec![secs(0), secs(10), secs(20), secs(30), secs(40)]
    );
}

#[tokio::test(start_paused = true)]
async fn task_stops_when_the_last_handle_is_dropped() {
    let up = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let handle = Checker::spawn("a", switch_probe(&up, &calls), config().build().unwrap());
    let clone = handle.clone();
    let mut watch = handle.watch();

    tokio::time::sleep(secs(35)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4); // 0, 10, 20, 30 s

    // One clone left: still running.
    drop(handle);
    tokio::time::sleep(secs(10)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert!(clone.is_running());

    // Last clone gone: the task stops and the watch sees the publisher go.
    drop(clone);
    tokio::time::sleep(secs(100)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    // The unseen change (Unknown → Healthy at t=0), then the end of the channel.
    assert_eq!(watch.changed().await, Some(Health::Healthy));
    assert_eq!(watch.changed().await, None);
    // The probe closure (and its captures) was dropped with the task.
    assert_eq!(Arc::strong_count(&calls), 1);
}

#[test]
fn spawn_outside_a_runtime_is_inert() {
    let handle = Checker::spawn(
        "nowhere",
        probe_fn(|| async { Ok(()) }),
        CheckerConfig::default(),
    );
    assert!(!handle.is_running());
    assert_eq!(handle.health(), Health::Unknown);
    assert_eq!(handle.name(), "nowhere");
}

#[test]
fn spawn_on_an_explicit_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let handle = Checker::spawn_on(
        runtime.handle(),
        "b",
        probe_fn(|| async { Ok(()) }),
        config().build().unwrap(),
    );
    let mut watch = handle.watch();
    let got = runtime.block_on(watch.changed());
    assert_eq!(got, Some(Health::Healthy));
    assert!(handle.is_running());
}

#[test]
fn config_validation_names_field_and_value() {
    let cases = [
        (config().interval(Duration::ZERO), "interval", "0ns"),
        (
            config().unhealthy_interval(Duration::ZERO),
            "unhealthy_interval",
            "0ns",
        ),
        (config().timeout(Duration::ZERO), "timeout", "0ns"),
        (config().timeout(secs(11)), "timeout", "11s"),
        (
            config().unhealthy_interval(Duration::from_millis(500)),
            "timeout",
            "1s",
        ),
        (config().jitter(1.5), "jitter", "1.5"),
        (config().jitter(-0.1), "jitter", "-0.1"),
        (config().jitter(f64::NAN), "jitter", "NaN"),
        (config().rise(0), "rise", "0"),
        (config().fall(0), "fall", "0"),
    ];
    for (builder, field, value) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!((err.field(), err.value()), (field, value), "{err}");
    }
    let ok = config().jitter(1.0).timeout(secs(1)).build().unwrap();
    assert_eq!(ok.jitter(), 1.0);
    assert_eq!(ok.timeout(), secs(1));
    assert_eq!(ok.unhealthy_interval(), secs(1));
    assert_eq!(ok.initial(), Health::Unknown);
}
