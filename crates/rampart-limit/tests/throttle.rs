//! Client-side adaptive throttling: the SRE formula over a sliding window.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rampart_health::Outcome;
use rampart_limit::{AdaptiveThrottle, AdaptiveThrottleLayer, Overloaded, ShedReason};
use tower::{Layer, Service, ServiceExt, service_fn};

fn throttle(k: f64) -> (AdaptiveThrottle, std::sync::Arc<quanta::Mock>) {
    let (clock, mock) = quanta::Clock::mock();
    let t = AdaptiveThrottle::builder()
        .name("dep")
        .k(k)
        .window(Duration::from_secs(10))
        .buckets(10)
        .seed(42)
        .clock(clock)
        .build()
        .unwrap();
    (t, mock)
}

#[test]
fn a_dependency_that_accepts_everything_is_never_throttled() {
    let (t, _) = throttle(2.0);
    for _ in 0..1000 {
        t.try_admit().unwrap().record(Outcome::Success);
    }
    assert_eq!(t.rejection_probability(), 0.0);
    assert_eq!(t.snapshot().throttled, 0);
}

#[test]
fn the_probability_is_requests_minus_k_accepts_over_requests_plus_one() {
    let (t, _) = throttle(2.0);
    // 30 accepted, then the dependency rejects everything.
    for _ in 0..30 {
        t.try_admit().unwrap().record(Outcome::Success);
    }
    let mut sent = 0;
    let mut throttled = 0;
    for _ in 0..200 {
        match t.try_admit() {
            Ok(g) => {
                sent += 1;
                g.record(Outcome::Failure);
            }
            Err(e) => {
                assert_eq!(e.reason(), ShedReason::Throttled);
                throttled += 1;
            }
        }
    }
    let s = t.snapshot();
    assert_eq!((s.requests, s.accepts), (230, 30));
    let expected = (230.0 - 2.0 * 30.0) / 231.0;
    assert!(
        (s.probability - expected).abs() < 1e-12,
        "{} vs {expected}",
        s.probability
    );
    assert_eq!(s.throttled, throttled);
    assert_eq!(sent + throttled, 200);
    // Requests up to 60 (= K × accepts) pass for free, the rest mostly not.
    // Σ p over the 200 draws is about 77.
    assert!(
        (55..=100).contains(&throttled),
        "throttled {throttled} of 200"
    );
}

#[test]
fn a_lower_k_throttles_sooner() {
    let run = |k: f64| {
        let (t, _) = throttle(k);
        for i in 0..300 {
            if let Ok(g) = t.try_admit() {
                // The dependency accepts half.
                g.record(if i % 2 == 0 {
                    Outcome::Success
                } else {
                    Outcome::Failure
                });
            }
        }
        t.snapshot().throttled
    };
    assert_eq!(run(2.0), 0, "K = 2 tolerates a 50 % rejection rate");
    assert!(run(1.1) > 0, "K = 1.1 does not");
}

#[test]
fn the_window_forgets_old_rejections() {
    let (t, mock) = throttle(2.0);
    for _ in 0..100 {
        if let Ok(g) = t.try_admit() {
            g.record(Outcome::Failure);
        }
    }
    assert!(t.rejection_probability() > 0.9);
    mock.increment(Duration::from_secs(5));
    assert!(
        t.rejection_probability() > 0.9,
        "half a window later it still counts"
    );
    mock.increment(Duration::from_secs(6));
    assert_eq!(
        t.rejection_probability(),
        0.0,
        "a whole window later it is forgotten"
    );
    assert_eq!(t.snapshot().requests, 0);
}

#[tokio::test]
async fn the_layer_rejects_locally_with_the_never_reached_marker() {
    let (t, _) = throttle(2.0);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let mut svc = AdaptiveThrottleLayer::new(t.clone()).layer(service_fn(move |_: ()| {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Err::<(), _>(std::io::Error::other("503")) }
    }));
    let mut local = 0;
    for _ in 0..100 {
        if let Err(e) = svc.ready().await.unwrap().call(()).await
            && let Some(o) = Overloaded::find(&*e)
        {
            assert!(rampart_health::is_never_reached(&*e));
            assert_eq!(o.retry_after(), Some(Duration::from_secs(1)));
            assert_eq!(o.to_string(), "throttle `dep` rejected the request locally");
            local += 1;
        }
    }
    assert_eq!(local + calls.load(std::sync::atomic::Ordering::SeqCst), 100);
    assert!(local > 50, "most were never sent: {local}");
}

#[test]
fn settings_are_validated() {
    assert_eq!(
        AdaptiveThrottle::builder()
            .k(0.5)
            .build()
            .unwrap_err()
            .field(),
        "k"
    );
    assert_eq!(
        AdaptiveThrottle::builder()
            .buckets(0)
            .build()
            .unwrap_err()
            .field(),
        "buckets"
    );
    assert_eq!(
        AdaptiveThrottle::builder()
            .window(Duration::ZERO)
            .build()
            .unwrap_err()
            .field(),
        "window"
    );
}
