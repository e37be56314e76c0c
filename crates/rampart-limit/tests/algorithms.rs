//! Each algorithm on synthetic windows: latency rising → limit falls; recovering → it rises;
//! baselines re-probed; and the same through a `Limiter` driven by a mock clock (paused
//! time: every duration is set by the test, nothing sleeps).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rampart_health::Outcome;
use rampart_limit::algorithm::{Aimd, Fixed, Gradient2, LimitAlgorithm, Sample, Vegas};
use rampart_limit::{Class, Limiter};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Feeds `n` windows of `rtt` with the limit fully used; returns the limits seen.
fn feed(alg: &mut dyn LimitAlgorithm, n: usize, rtt: Duration, dropped: bool) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let in_flight = alg.limit();
            alg.update(&Sample::new(rtt, in_flight, dropped))
        })
        .collect()
}

#[test]
fn gradient2_limit_falls_when_latency_rises_and_rises_when_it_recovers() {
    let mut g = Gradient2::builder()
        .initial_limit(100)
        .min_limit(5)
        .max_limit(1000)
        .build()
        .unwrap();
    feed(&mut g, 30, ms(10), false);
    let healthy = g.limit();
    assert!(
        healthy >= 100,
        "no queueing: the limit does not fall ({healthy})"
    );
    let rising = feed(&mut g, 30, ms(40), false);
    let overloaded = g.limit();
    assert!(
        overloaded < healthy / 2,
        "4x latency for 30 windows: {healthy} -> {overloaded}"
    );
    assert!(
        rising.windows(2).all(|w| w[1] <= w[0]),
        "falls monotonically: {rising:?}"
    );
    let recovering = feed(&mut g, 60, ms(10), false);
    assert!(
        g.limit() > overloaded + 20,
        "latency back to normal: {overloaded} -> {}",
        g.limit()
    );
    assert!(
        recovering.windows(2).all(|w| w[1] >= w[0]),
        "rises monotonically"
    );
}

#[test]
fn gradient2_baseline_follows_a_lasting_change_instead_of_ratcheting_down() {
    let mut g = Gradient2::builder()
        .initial_limit(50)
        .min_limit(5)
        .max_limit(1000)
        .long_window(50)
        .build()
        .unwrap();
    feed(&mut g, 20, ms(10), false);
    // The backend moved somewhere slower for good: 30 ms is its new normal.
    feed(&mut g, 400, ms(30), false);
    let baseline = g.baseline_secs().unwrap();
    assert!(baseline > 0.025, "baseline followed to {baseline}");
    let before = g.limit();
    feed(&mut g, 50, ms(30), false);
    assert!(
        g.limit() >= before,
        "at the new normal the limit grows again"
    );
    // Latency comes back down after the long overload: the baseline catches up fast.
    feed(&mut g, 30, ms(10), false);
    assert!(g.baseline_secs().unwrap() < baseline * 0.5);
}

#[test]
fn gradient2_app_limited_windows_leave_the_limit_alone() {
    let mut g = Gradient2::builder()
        .initial_limit(100)
        .min_limit(1)
        .build()
        .unwrap();
    for _ in 0..20 {
        g.update(&Sample::new(ms(10), 100, false));
    }
    let l = g.limit();
    for _ in 0..20 {
        // Slow but only 10 in flight: the caller is the bottleneck.
        g.update(&Sample::new(ms(50), 10, false));
    }
    assert_eq!(g.limit(), l);
}

#[test]
fn aimd_backs_off_on_drops_and_slow_windows_and_grows_additively() {
    let mut a = Aimd::builder()
        .initial_limit(100)
        .min_limit(10)
        .max_limit(200)
        .backoff(0.5)
        .latency_threshold(ms(100))
        .build()
        .unwrap();
    assert_eq!(feed(&mut a, 1, ms(5), true), vec![50]);
    assert_eq!(
        feed(&mut a, 1, ms(150), false),
        vec![25],
        "latency above the threshold"
    );
    assert_eq!(
        feed(&mut a, 5, ms(150), false).last(),
        Some(&10),
        "floor at min"
    );
    assert_eq!(feed(&mut a, 3, ms(5), false), vec![11, 12, 13]);
    feed(&mut a, 500, ms(5), false);
    assert_eq!(a.limit(), 200, "capped at max");
}

#[test]
fn vegas_limit_falls_as_a_queue_builds_and_rises_when_it_drains() {
    let mut v = Vegas::builder()
        .initial_limit(50)
        .min_limit(1)
        .max_limit(500)
        .probe_multiplier(1000)
        .seed(7)
        .build()
        .unwrap();
    feed(&mut v, 5, ms(10), false);
    let healthy = v.limit();
    assert!(healthy > 50, "no queue: Vegas grows ({healthy})");
    feed(&mut v, 20, ms(30), false);
    let overloaded = v.limit();
    assert!(
        overloaded < healthy,
        "queue estimated: {healthy} -> {overloaded}"
    );
    feed(&mut v, 10, ms(10), false);
    assert!(
        v.limit() > overloaded,
        "queue drained: {overloaded} -> {}",
        v.limit()
    );
}

#[test]
fn vegas_reprobes_its_no_load_rtt_periodically() {
    let mut v = Vegas::builder()
        .initial_limit(10)
        .min_limit(10)
        .max_limit(10)
        .probe_multiplier(2)
        .seed(1)
        .build()
        .unwrap();
    // A lucky 1 ms window sets the minimum...
    v.update(&Sample::new(ms(1), 10, false));
    assert_eq!(v.rtt_noload(), ms(1));
    // ...then the backend is 20 ms for good. A pure minimum would stay at 1 ms forever; the
    // re-probe (every 2 × 10 × [0.5, 1) = 10..20 windows) resets it.
    let mut reprobed_after = None;
    for i in 1..=25 {
        v.update(&Sample::new(ms(20), 10, false));
        if v.rtt_noload() == ms(20) {
            reprobed_after = Some(i);
            break;
        }
    }
    let after = reprobed_after.expect("no-load RTT re-probed within 25 windows");
    assert!(
        (10..=20).contains(&after),
        "re-probed after {after} windows"
    );
}

#[test]
fn fixed_never_moves_and_rejects_zero() {
    let mut f = Fixed::new(3).unwrap();
    assert_eq!(feed(&mut f, 10, ms(1000), true), vec![3; 10]);
    assert_eq!(Fixed::new(0).unwrap_err().field(), "limit");
}

#[test]
fn builders_name_the_bad_field() {
    let e = Gradient2::builder().min_limit(0).build().unwrap_err();
    assert_eq!(e.field(), "min_limit");
    let e = Gradient2::builder().initial_limit(500).build().unwrap_err();
    assert_eq!(e.field(), "initial_limit");
    let e = Gradient2::builder().smoothing(0.0).build().unwrap_err();
    assert_eq!(e.field(), "smoothing");
    let e = Aimd::builder().backoff(1.0).build().unwrap_err();
    assert_eq!(e.field(), "backoff");
    let e = Vegas::builder().max_limit(0).build().unwrap_err();
    assert_eq!(e.field(), "max_limit");
    let e = Limiter::builder()
        .partition("a", 0.7)
        .partition("b", 0.7)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "partition.share");
    let e = Limiter::builder()
        .partition("a", 0.5)
        .partition("a", 0.1)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "partition");
    let e = Limiter::builder()
        .min_window(Duration::from_secs(2))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "min_window");
    assert_eq!(
        e.to_string(),
        "invalid `min_window` = 2s: must not exceed `max_window`"
    );
}

/// Runs `calls` sequential calls of `rtt` each through `limiter`, advancing the mock clock.
fn drive(limiter: &Limiter, clock: &quanta::Mock, calls: usize, rtt: Duration, concurrency: usize) {
    for _ in 0..calls / concurrency {
        let permits: Vec<_> = (0..concurrency)
            .filter_map(|_| limiter.try_acquire(Class::Partition(0)).ok())
            .collect();
        clock.increment(rtt);
        for p in permits {
            p.record(Outcome::Success);
        }
    }
}

#[test]
fn limiter_windows_feed_the_algorithm_on_mock_time() {
    let (clock, mock) = quanta::Clock::mock();
    let limiter = Limiter::builder()
        .name("mocked")
        .algorithm(
            Gradient2::builder()
                .initial_limit(40)
                .min_limit(2)
                .max_limit(400)
                .build()
                .unwrap(),
        )
        .window_samples(10)
        .min_window(ms(10))
        .max_window(ms(100))
        .clock(clock)
        .build()
        .unwrap();
    drive(&limiter, &mock, 40 * 30, ms(5), 40);
    let healthy = limiter.limit();
    assert!(healthy >= 40, "healthy at 5 ms: {healthy}");
    let c = healthy;
    drive(&limiter, &mock, c * 40, ms(25), c);
    let overloaded = limiter.limit();
    assert!(
        overloaded < healthy / 2,
        "5x latency: {healthy} -> {overloaded}"
    );
    let c = overloaded;
    drive(&limiter, &mock, c * 200, ms(5), c);
    assert!(
        limiter.limit() > overloaded,
        "recovered: {overloaded} -> {}",
        limiter.limit()
    );
    assert_eq!(limiter.in_flight(), 0);
}

#[test]
fn dropped_calls_count_as_drops_and_cancelled_calls_are_not_measured() {
    let (clock, mock) = quanta::Clock::mock();
    let limiter = Limiter::builder()
        .algorithm(
            Aimd::builder()
                .initial_limit(20)
                .min_limit(1)
                .backoff(0.5)
                .build()
                .unwrap(),
        )
        .window_samples(1)
        .min_window(Duration::ZERO)
        .clock(clock)
        .build()
        .unwrap();
    let p = limiter.try_acquire(Class::Partition(0)).unwrap();
    mock.increment(ms(1));
    drop(p); // cancelled: no sample
    assert_eq!(limiter.limit(), 20);
    let p = limiter.try_acquire(Class::Partition(0)).unwrap();
    mock.increment(ms(1));
    p.record(Outcome::Failure);
    assert_eq!(limiter.limit(), 10);
    let p = limiter.try_acquire(Class::Partition(0)).unwrap();
    p.record(Outcome::Ignored);
    assert_eq!(limiter.limit(), 10);
    let _held = limiter.try_acquire(Class::Partition(0)).unwrap();
    let snap = limiter.snapshot();
    assert_eq!(snap.partitions[0].admitted, 4);
    assert_eq!(snap.partitions[0].in_flight, 1);
}

#[test]
fn a_busy_window_times_a_sample_of_its_calls_and_still_counts_every_call_and_drop() {
    let (clock, mock) = quanta::Clock::mock();
    let limiter = Limiter::builder()
        .algorithm(
            Aimd::builder()
                .initial_limit(100)
                .min_limit(1)
                .backoff(0.5)
                .build()
                .unwrap(),
        )
        .window_samples(10)
        .min_window(ms(10))
        .max_window(ms(100))
        .clock(clock)
        .build()
        .unwrap();
    // Sequential calls of 250 µs: past the first 10 timed calls of the window, one call in
    // four reads the clock. Calls 12 to 14 are among the untimed ones, and they fail.
    for call in 1..=60 {
        let p = limiter.try_acquire(Class::Partition(0)).unwrap();
        mock.increment(Duration::from_micros(250));
        p.record(if (12..=14).contains(&call) {
            Outcome::Failure
        } else {
            Outcome::Success
        });
    }
    // The window closed (10 ms, more than 10 calls) with the untimed drops in it: backed off
    // once, and every call was counted.
    assert_eq!(limiter.limit(), 50);
    let snap = limiter.snapshot();
    assert_eq!(snap.partitions[0].admitted, 60);
    assert_eq!(snap.in_flight, 0);
}
