//! Backpressure (`Retry-After`, gRPC pushback) and the failure penalty, on in-memory HTTP endpoints
//! and paused time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[tokio::test(start_paused = true)]
async fn retry_after_takes_the_endpoint_out_of_picking_until_then_and_it_stays_healthy() {
    let (mut b, limited, a, other) = pool(Replica::new(429, &[("retry-after", "2")]), None);
    // Round robin: within two requests `a` answers 429 with Retry-After: 2; the GET is retried
    // on `b`, so the caller sees a 200.
    for _ in 0..2 {
        let res = send(&mut b, get()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(served_by(&res), "b");
    }
    assert_eq!(a.limited_answer.hits(), 1, "a was tried once");
    limited.store(false, Ordering::SeqCst);
    let snap = b.snapshot();
    let ea = snap.endpoints.iter().find(|e| e.name == "a").unwrap();
    assert_eq!(ea.health, Health::Healthy);
    assert!(!ea.ejected);
    assert!(!ea.routable);
    let left = ea.backing_off_until.expect("backing off");
    assert!(left > Duration::from_millis(1900) && left <= Duration::from_secs(2));
    assert_eq!((snap.routable, snap.total), (1, 2));
    // For the next 1.9 s nothing goes to `a`.
    for _ in 0..19 {
        for _ in 0..10 {
            assert_eq!(served_by(&send(&mut b, get()).await.unwrap()), "b");
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert_eq!(a.ok.hits(), 0);
    // After 2 s (and the next maintenance tick) it is picked again.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut to_a = 0;
    for _ in 0..10 {
        if served_by(&send(&mut b, get()).await.unwrap()) == "a" {
            to_a += 1;
        }
    }
    assert_eq!(to_a, 5, "round robin again");
    assert!(
        b.snapshot()
            .endpoints
            .iter()
            .all(|e| e.backing_off_until.is_none())
    );
    assert!(other.ok.hits() > 190);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_does_not_back_off() {
    let (mut b, _limited, a, _) = pool(Replica::new(429, &[]), None);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(send(&mut b, get()).await.unwrap().status().as_u16());
    }
    // Not retried (no Retry-After), not backed off: `a` keeps its share.
    assert_eq!(a.limited_answer.hits(), 5);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 5);
    assert!(
        b.snapshot()
            .endpoints
            .iter()
            .all(|e| e.backing_off_until.is_none() && e.routable)
    );
}

#[tokio::test(start_paused = true)]
async fn a_503_with_retry_after_backs_off_and_the_back_off_is_bounded_by_max_backoff() {
    let (mut b, limited, a, _) = pool(
        Replica::new(503, &[("retry-after", "3600")]),
        Some(Duration::from_secs(5)),
    );
    for _ in 0..2 {
        assert_eq!(send(&mut b, get()).await.unwrap().status(), 200);
    }
    limited.store(false, Ordering::SeqCst);
    let ea = b
        .snapshot()
        .endpoints
        .into_iter()
        .find(|e| e.name == "a")
        .unwrap();
    assert!(ea.backing_off_until.unwrap() <= Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(5300)).await;
    for _ in 0..4 {
        send(&mut b, get()).await.unwrap();
    }
    assert_eq!(a.ok.hits(), 2, "back after max_backoff, not an hour");
}

#[tokio::test(start_paused = true)]
async fn grpc_retry_pushback_backs_off_and_max_backoff_zero_turns_it_off() {
    let (mut b, _limited, a, _) = pool(
        Replica::new(200, &[("grpc-retry-pushback-ms", "1500")]),
        None,
    );
    for _ in 0..10 {
        send(&mut b, get()).await.unwrap();
    }
    assert_eq!(a.limited_answer.hits(), 1);
    let left = b.snapshot().endpoints[0].backing_off_until.unwrap();
    assert!(left <= Duration::from_millis(1500));

    let (mut b, _limited, a, _) = pool(
        Replica::new(200, &[("grpc-retry-pushback-ms", "1500")]),
        Some(Duration::ZERO),
    );
    for _ in 0..10 {
        send(&mut b, get()).await.unwrap();
    }
    assert_eq!(a.limited_answer.hits(), 5);
}

#[tokio::test(start_paused = true)]
async fn backing_off_endpoints_count_as_healthy_in_the_health_report() {
    let (mut b, _limited, _a, _) = pool(Replica::new(429, &[("retry-after", "10")]), None);
    for _ in 0..2 {
        send(&mut b, get()).await.unwrap();
    }
    let report = *rampart_health::ReportHealth::health_report(&b.handle()).borrow();
    assert_eq!(report.healthy_share(), 1.0);
    assert!(!b.snapshot().panic);
}

/// An endpoint that fails at once is not favoured by P2C for being fast: every failure
/// counts at least twice the current average (and at least the failure penalty).
#[tokio::test(start_paused = true)]
async fn fast_failures_do_not_attract_traffic() {
    let hits = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let svc = |i: usize, hits: Arc<AtomicUsize>| {
        tower::service_fn(move |_: u64| {
            hits.fetch_add(1, Ordering::SeqCst);
            let fail = i == 0;
            async move {
                if fail {
                    Err::<u64, BoxError>("boom".into())
                } else {
                    // The healthy endpoint is slower: 2 ms.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok(1)
                }
            }
        })
    };
    let mut b = Balance::builder()
        .policy(ServicePolicy::new().replay(false))
        .latency_estimate(LatencyEstimate::default().failure_penalty(Duration::from_millis(50)))
        .max_retries(0)
        .endpoint(Endpoint::new("failing", svc(0, hits[0].clone())))
        .endpoint(Endpoint::new("ok", svc(1, hits[1].clone())))
        .build()
        .unwrap();
    for i in 0..400u64 {
        let _ = b.ready().await.unwrap().call(i).await;
    }
    let failing = hits[0].load(Ordering::SeqCst);
    assert!(
        failing < 40,
        "the failing endpoint got {failing} of 400 requests"
    );
}
