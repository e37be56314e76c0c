//! Routability and panic mode: unhealthy endpoints get no traffic, panic mode spreads over all,
//! threshold zero and empty pools fail fast.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[tokio::test(start_paused = true)]
async fn unhealthy_endpoints_get_no_traffic_above_the_panic_threshold() {
    let (mut balance, pubs) = watched_balance(4, 0.5);
    pubs[0].set(Health::Unhealthy);
    settle().await;
    let snap = balance.snapshot();
    assert!(!snap.panic);
    assert_eq!(snap.routable, 3);
    for k in 0..200 {
        assert_ne!(&*served(&mut balance, k).await, "e0");
    }
}

#[tokio::test(start_paused = true)]
async fn panic_mode_spreads_over_all_endpoints_below_the_threshold() {
    let (mut balance, pubs) = watched_balance(4, 0.5);
    let mut report = balance.health_report();
    for p in &pubs[..3] {
        p.set(Health::Unhealthy);
    }
    settle().await;
    let snap = balance.snapshot();
    assert!(snap.panic, "1 of 4 routable is below 50 %");
    assert_eq!(report.borrow_and_update().healthy, 1);
    let mut seen = std::collections::HashSet::new();
    for k in 0..400 {
        seen.insert(served(&mut balance, k).await);
    }
    assert_eq!(seen.len(), 4, "panic mode spreads over every endpoint");
    // Recovery ends panic mode.
    pubs[0].set(Health::Healthy);
    pubs[1].set(Health::Healthy);
    settle().await;
    assert!(!balance.snapshot().panic);
    assert_eq!(report.borrow_and_update().healthy, 3);
}

#[tokio::test(start_paused = true)]
async fn threshold_zero_fails_fast_with_no_healthy_endpoints() {
    let (mut balance, pubs) = watched_balance(3, 0.0);
    pubs[0].set(Health::Unhealthy);
    pubs[1].set(Health::Unhealthy);
    settle().await;
    // One healthy endpoint: only it serves, no panic spreading.
    for k in 0..50 {
        assert_eq!(&*served(&mut balance, k).await, "e2");
    }
    pubs[2].set(Health::Unhealthy);
    settle().await;
    let err = balance.ready().await.unwrap().call(1).await.unwrap_err();
    let typed = err
        .downcast_ref::<NoHealthyEndpoints>()
        .expect("typed error");
    assert_eq!((typed.routable(), typed.total()), (0, 3));
    assert!(is_never_reached(&*err));
}

#[tokio::test(start_paused = true)]
async fn an_empty_pool_fails_fast() {
    let mut balance: Balance<Echo, ServicePolicy> = Balance::builder()
        .policy(ServicePolicy::new())
        .build()
        .unwrap();
    let err = balance.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<NoHealthyEndpoints>());
}

#[tokio::test(start_paused = true)]
async fn unknown_health_routes_only_when_allowed() {
    for allowed in [true, false] {
        let p = HealthPublisher::new(); // Unknown
        let balance: Balance<Echo, ServicePolicy> = Balance::builder()
            .policy(ServicePolicy::new())
            .panic_threshold(0.0)
            .unknown_is_routable(allowed)
            .endpoint(Endpoint::new("u", Echo("u".into())).health_watch(p.subscribe()))
            .build()
            .unwrap();
        assert_eq!(balance.snapshot().routable, usize::from(allowed));
    }
}

#[tokio::test(start_paused = true)]
async fn the_default_panic_threshold_is_half_the_pool() {
    let (balance, pubs) = health_pool(4);
    pubs[0].set(Health::Unhealthy);
    pubs[1].set(Health::Unhealthy);
    settle().await;
    let snap = balance.snapshot();
    assert_eq!(snap.routable, 2);
    assert!(!snap.panic, "2 of 4 is not below 50 %");
    pubs[2].set(Health::Unhealthy);
    settle().await;
    assert!(balance.snapshot().panic, "1 of 4 is below 50 %");
}
