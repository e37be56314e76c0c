//! Picking: each picker's choice on tower-test mocks and in-memory endpoints, and that picks are
//! always routable when anything is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[tokio::test(start_paused = true)]
async fn p2c_prefers_the_endpoint_with_fewer_outstanding_requests() {
    let (svcs, mut handles) = mocks(2);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .endpoints(names(2).into_iter().zip(svcs))
        .build()
        .unwrap();
    // First request: both idle, either may win; it stays in flight.
    let mut first = task::spawn(balance.call("a"));
    assert_pending!(first.poll());
    let busy = who_got_hold(&mut handles);
    // Every following request (each answered at once) goes to the idle one.
    for _ in 0..10 {
        let mut f = task::spawn(balance.call("b"));
        assert_pending!(f.poll());
        let got = who_got(&mut handles);
        assert_eq!(got, vec![1 - busy.0]);
    }
    drop(busy.1);
}

#[tokio::test(start_paused = true)]
async fn least_request_prefers_the_idle_endpoint() {
    let (svcs, mut handles) = mocks(2);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .picker(Picker::LeastRequest)
        .endpoints(names(2).into_iter().zip(svcs))
        .build()
        .unwrap();
    let mut first = task::spawn(balance.call("a"));
    assert_pending!(first.poll());
    let busy = who_got_hold(&mut handles);
    for _ in 0..10 {
        let mut f = task::spawn(balance.call("b"));
        assert_pending!(f.poll());
        assert_eq!(who_got(&mut handles), vec![1 - busy.0]);
    }
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_prefers_the_faster_endpoint() {
    let (clock, mock_clock) = quanta::Clock::mock();
    let (svcs, mut handles) = mocks(2);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .clock(clock)
        .endpoints(names(2).into_iter().zip(svcs))
        .build()
        .unwrap();
    // Teach it: e0 takes 50 ms, e1 takes 1 ms (same initial estimate before).
    let mut seen = [false, false];
    while !(seen[0] && seen[1]) {
        let mut f = task::spawn(balance.call("x"));
        assert_pending!(f.poll());
        let (i, send) = who_got_hold(&mut handles);
        seen[i] = true;
        mock_clock.increment(if i == 0 { 50_000_000u64 } else { 1_000_000 });
        send.send_response("ok");
        assert_ready_ok!(f.poll());
    }
    let snap = balance.snapshot();
    assert!(snap.endpoint("e0").unwrap().ewma > snap.endpoint("e1").unwrap().ewma);
    // Now every request goes to e1 (two endpoints: both are always the two choices).
    for _ in 0..20 {
        let mut f = task::spawn(balance.call("y"));
        assert_pending!(f.poll());
        let (i, send) = who_got_hold(&mut handles);
        assert_eq!(i, 1);
        mock_clock.increment(1_000_000u64);
        send.send_response("ok");
        assert_ready_ok!(f.poll());
    }
}

#[tokio::test(start_paused = true)]
async fn round_robin_cycles_through_every_endpoint() {
    let (svcs, mut handles) = mocks(3);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .picker(Picker::RoundRobin)
        .endpoints(names(3).into_iter().zip(svcs))
        .build()
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..6 {
        let mut f = task::spawn(balance.call("x"));
        assert_pending!(f.poll());
        order.extend(who_got(&mut handles));
    }
    assert_eq!(order.len(), 6);
    assert_eq!(&order[..3], &order[3..], "a cycle repeats: {order:?}");
    let mut first: Vec<_> = order[..3].to_vec();
    first.sort_unstable();
    assert_eq!(first, vec![0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn smooth_weighted_round_robin_follows_weights_without_bursts() {
    let (svcs, mut handles) = mocks(3);
    let mut svcs = svcs.into_iter();
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .picker(Picker::WeightedRoundRobin)
        .endpoint(Endpoint::new("a", svcs.next().unwrap()).weight(5))
        .endpoint(Endpoint::new("b", svcs.next().unwrap()).weight(1))
        .endpoint(Endpoint::new("c", svcs.next().unwrap()).weight(1))
        .build()
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..7 {
        let mut f = task::spawn(balance.call("x"));
        assert_pending!(f.poll());
        order.extend(who_got(&mut handles));
    }
    // nginx's smooth sequence for {a:5, b:1, c:1}: a a b a c a a.
    assert_eq!(order, vec![0, 0, 1, 0, 2, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn random_reaches_every_endpoint() {
    let mut balance = echo_balance(3, Picker::Random);
    let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
    for k in 0..300 {
        *counts.entry(served(&mut balance, k).await).or_default() += 1;
    }
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&c| c > 50), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn consistent_hash_keeps_keys_and_moves_only_the_removed_share() {
    let mut balance = echo_balance(10, Picker::ConsistentHash { virtual_nodes: 160 });
    let keys = 10_000u64;
    let mut before = Vec::new();
    for k in 0..keys {
        before.push(served(&mut balance, k).await);
    }
    // Same key, same endpoint.
    for k in 0..100 {
        assert_eq!(served(&mut balance, k).await, before[k as usize]);
    }
    let victim = balance.snapshot().endpoint("e3").unwrap().id;
    assert!(balance.remove(victim));
    let mut moved = 0;
    for k in 0..keys {
        let now = served(&mut balance, k).await;
        if now != before[k as usize] {
            assert_eq!(
                &*before[k as usize], "e3",
                "key {k} moved off a surviving endpoint"
            );
            moved += 1;
        }
    }
    let share = f64::from(moved) / keys as f64;
    assert!((0.06..=0.14).contains(&share), "moved share {share}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Without panic mode, the picker never returns a non-routable endpoint while a routable
    /// one exists, whatever the mix of health, ejection and drain, for every picker.
    #[test]
    fn picks_are_routable_whenever_a_routable_endpoint_exists(
        states in proptest::collection::vec((0u8..3, any::<bool>(), any::<bool>()), 1..40),
        picker_ix in 0usize..6,
        keys in proptest::collection::vec(any::<u64>(), 1..20),
    ) {
        let picker = [
            Picker::PeakEwma,
            Picker::LeastRequest,
            Picker::RoundRobin,
            Picker::WeightedRoundRobin,
            Picker::Random,
            Picker::ConsistentHash { virtual_nodes: 16 },
        ][picker_ix];
        let key: fn(&u64) -> Option<u64> = |k| Some(*k);
        let mut b = Balance::builder()
            .policy(ServicePolicy::new().hash_key(key))
            .panic_threshold(0.0)
            .picker(picker);
        for i in 0..states.len() {
            let name: Arc<str> = format!("e{i}").into();
            b = b.endpoint(Endpoint::new(name.clone(), Echo(name)));
        }
        let mut balance = b.build().unwrap();
        {
            let reg = balance.shared.registry();
            for (e, (h, ejected, draining)) in reg.entries.iter().zip(&states) {
                e.ep.set_health(crate::table::health_from_u8(*h));
                e.ep.ejected.store(*ejected, Ordering::Release);
                e.ep.draining.store(*draining, Ordering::Release);
            }
        }
        {
            let mut reg = balance.shared.registry();
            balance.shared.rebuild(&mut reg);
        }
        let routable: std::collections::HashSet<String> = balance
            .snapshot()
            .endpoints
            .into_iter()
            .filter(|e| e.routable)
            .map(|e| e.name)
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for k in keys {
            let result = rt.block_on(async { balance.ready().await?.call(k).await });
            match result {
                Ok(name) => prop_assert!(routable.contains(&*name), "{name} is not routable"),
                Err(e) => {
                    prop_assert!(routable.is_empty(), "failed with routable endpoints: {e}");
                    prop_assert!(e.is::<NoHealthyEndpoints>());
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn random_on_mocks_reaches_every_endpoint() {
    let (svcs, mut handles) = mocks(3);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .picker(Picker::Random)
        .endpoints(names(3).into_iter().zip(svcs))
        .build()
        .unwrap();
    let mut counts = [0usize; 3];
    for _ in 0..300 {
        // Give tokio's cooperative budget back (the mock's channel counts against it).
        tokio::task::yield_now().await;
        let mut f = task::spawn(balance.call("x"));
        assert_pending!(f.poll());
        let got = who_got(&mut handles);
        assert_eq!(got.len(), 1, "{got:?} {counts:?}");
        for i in got {
            counts[i] += 1;
        }
    }
    assert_eq!(counts.iter().sum::<usize>(), 300);
    assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn consistent_hash_on_mocks_pins_each_key_to_one_endpoint() {
    let (svcs, mut handles) = mocks(4);
    let key = |s: &&'static str| {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        s.hash(&mut h);
        Some(h.finish())
    };
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new().hash_key(key))
        .picker(Picker::ConsistentHash { virtual_nodes: 100 })
        .endpoints(names(4).into_iter().zip(svcs))
        .build()
        .unwrap();
    const USERS: [&str; 12] = [
        "u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9", "u10", "u11",
    ];
    let mut owner = HashMap::new();
    for _ in 0..3 {
        for user in USERS {
            tokio::task::yield_now().await;
            let mut f = task::spawn(balance.call(user));
            assert_pending!(f.poll());
            let got = who_got(&mut handles);
            assert_eq!(got.len(), 1);
            let first = *owner.entry(user).or_insert(got[0]);
            assert_eq!(first, got[0], "{user} moved between identical requests");
        }
    }
    let distinct: std::collections::HashSet<_> = owner.values().collect();
    assert!(distinct.len() >= 2, "keys spread over endpoints: {owner:?}");
}
