//! Unit tests of the pickers, panic mode, retries, drain and slow start, on tower-test mocks
//! and in-memory services.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use rampart_health::{BoxError, Health, HealthPublisher, NeverReached, is_never_reached};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::ServiceExt;
use tower_service::Service;
use tower_test::mock;

use super::*;
use crate::{Picker, ServicePolicy};

type Mock = mock::Mock<&'static str, &'static str>;
type Handle = mock::Handle<&'static str, &'static str>;

fn mocks(n: usize) -> (Vec<Mock>, Vec<Handle>) {
    (0..n).map(|_| mock::pair()).unzip()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("e{i}")).collect()
}

/// Which handle received a request (polling each once).
fn who_got(handles: &mut [Handle]) -> Vec<usize> {
    let mut got = Vec::new();
    for (i, h) in handles.iter_mut().enumerate() {
        while let Poll::Ready(Some((_, send))) = h.poll_request() {
            got.push(i);
            drop(send);
        }
    }
    got
}

type EchoBalance =
    Balance<Echo, ServicePolicy<rampart_health::FnClassify, fn(&u64) -> Option<u64>>>;

/// An in-memory endpoint that answers with its own name.
#[derive(Clone)]
struct Echo(Arc<str>);

impl Service<u64> for Echo {
    type Response = Arc<str>;
    type Error = BoxError;
    type Future = Ready<Result<Arc<str>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: u64) -> Self::Future {
        ready(Ok(self.0.clone()))
    }
}

fn echo_balance(n: usize, picker: Picker) -> EchoBalance {
    let key: fn(&u64) -> Option<u64> = |k| Some(*k);
    let mut b = Balance::builder()
        .policy(ServicePolicy::new().hash_key(key))
        .picker(picker);
    for name in names(n) {
        let name: Arc<str> = name.into();
        b = b.endpoint(name.clone(), Echo(name));
    }
    b.build().unwrap()
}

async fn served(balance: &mut EchoBalance, key: u64) -> Arc<str> {
    balance.ready().await.unwrap().call(key).await.unwrap()
}

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

/// Like `who_got`, but keeps the responder so the request stays in flight.
fn who_got_hold(handles: &mut [Handle]) -> (usize, mock::SendResponse<&'static str>) {
    for (i, h) in handles.iter_mut().enumerate() {
        if let Poll::Ready(Some((_, send))) = h.poll_request() {
            return (i, send);
        }
    }
    panic!("no endpoint got the request");
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
        .weighted_endpoint("a", svcs.next().unwrap(), 5)
        .weighted_endpoint("b", svcs.next().unwrap(), 1)
        .weighted_endpoint("c", svcs.next().unwrap(), 1)
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

fn watched_balance(n: usize, threshold: f64) -> (EchoBalance, Vec<HealthPublisher>) {
    let key: fn(&u64) -> Option<u64> = |k| Some(*k);
    let mut b = Balance::builder()
        .policy(ServicePolicy::new().hash_key(key))
        .panic_threshold(threshold)
        .picker(Picker::Random);
    let mut pubs = Vec::new();
    for name in names(n) {
        let p = HealthPublisher::with_initial(Health::Healthy);
        let name: Arc<str> = name.into();
        b = b.endpoint_with_health(name.clone(), Echo(name), p.subscribe());
        pubs.push(p);
    }
    (b.build().unwrap(), pubs)
}

/// Lets the health-watch tasks run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

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
            .endpoint_with_health("u", Echo("u".into()), p.subscribe())
            .build()
            .unwrap();
        assert_eq!(balance.snapshot().routable, usize::from(allowed));
    }
}

#[tokio::test(start_paused = true)]
async fn never_reached_errors_are_retried_on_another_endpoint() {
    let (svcs, mut handles) = mocks(2);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .endpoints(names(2).into_iter().zip(svcs))
        .build()
        .unwrap();
    let mut f = task::spawn(balance.call("x"));
    assert_pending!(f.poll());
    let (first, send) = who_got_hold(&mut handles);
    send.send_error(NeverReached::new().with_source(std::io::Error::other("refused")));
    assert_pending!(f.poll());
    let (second, send) = who_got_hold(&mut handles);
    assert_ne!(first, second, "retried elsewhere");
    send.send_response("ok");
    assert_eq!(assert_ready_ok!(f.poll()), "ok");
}

#[tokio::test(start_paused = true)]
async fn other_errors_are_not_retried_and_attempts_are_bounded() {
    let (svcs, mut handles) = mocks(4);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .max_retries(2)
        .endpoints(names(4).into_iter().zip(svcs))
        .build()
        .unwrap();
    // A plain error: returned as is.
    let mut f = task::spawn(balance.call("x"));
    assert_pending!(f.poll());
    let (_, send) = who_got_hold(&mut handles);
    send.send_error(std::io::Error::other("boom"));
    let err = match f.poll() {
        Poll::Ready(Err(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(err.to_string(), "boom");
    // Never reached everywhere: 1 + 2 attempts, then the last error.
    let mut f = task::spawn(balance.call("y"));
    let mut attempts = 0;
    let result = loop {
        match f.poll() {
            Poll::Pending => {
                let (_, send) = who_got_hold(&mut handles);
                attempts += 1;
                send.send_error(NeverReached::new());
            }
            Poll::Ready(r) => break r,
        }
    };
    assert_eq!(attempts, 3);
    assert!(is_never_reached(&*result.unwrap_err()));
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_caps_retries() {
    let (svcs, mut handles) = mocks(2);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .retry_budget(
            crate::RetryBudget::builder()
                .ratio(0.0)
                .min_per_second(1)
                .window(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .endpoints(names(2).into_iter().zip(svcs))
        .build()
        .unwrap();
    let mut attempts = 0;
    for _ in 0..3 {
        let mut f = task::spawn(balance.call("x"));
        loop {
            match f.poll() {
                Poll::Pending => {
                    let (_, send) = who_got_hold(&mut handles);
                    attempts += 1;
                    send.send_error(NeverReached::new());
                }
                Poll::Ready(r) => {
                    assert!(r.is_err());
                    break;
                }
            }
        }
    }
    // 3 requests + 1 retry allowed by the floor of 1 per second.
    assert_eq!(attempts, 4);
}

#[tokio::test(start_paused = true)]
async fn drained_endpoints_take_no_new_requests_but_finish_in_flight_ones() {
    let (svcs, mut handles) = mocks(2);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .picker(Picker::RoundRobin)
        .endpoints(names(2).into_iter().zip(svcs))
        .build()
        .unwrap();
    let mut inflight = Vec::new();
    for _ in 0..2 {
        let mut f = task::spawn(balance.call("x"));
        assert_pending!(f.poll());
        inflight.push((f, who_got_hold(&mut handles)));
    }
    assert!(balance.handle().drain("e0"));
    let snap = balance.snapshot();
    assert!(snap.endpoint("e0").unwrap().draining);
    assert_eq!(snap.endpoint("e0").unwrap().outstanding, 1);
    for _ in 0..10 {
        let mut f = task::spawn(balance.call("y"));
        assert_pending!(f.poll());
        assert_eq!(who_got(&mut handles), vec![1]);
    }
    for (mut f, (_, send)) in inflight {
        send.send_response("done");
        assert_eq!(assert_ready_ok!(f.poll()), "done");
    }
    assert_eq!(balance.snapshot().endpoint("e0").unwrap().outstanding, 0);
    assert!(balance.handle().undrain("e0"));
    assert!(balance.snapshot().endpoint("e0").unwrap().routable);
}

#[tokio::test(start_paused = true)]
async fn a_new_endpoint_ramps_up_over_the_slow_start_window() {
    let balance = echo_balance(2, Picker::PeakEwma);
    let id = balance.insert("late", Echo("late".into()));
    let weight = |b: &Balance<_, _>| {
        b.snapshot()
            .endpoints
            .iter()
            .find(|e| e.id == id)
            .unwrap()
            .effective_weight
    };
    assert!((weight(&balance) - 0.1).abs() < 1e-9, "starts at 10 %");
    assert!(balance.snapshot().endpoint("late").unwrap().slow_start);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mid = weight(&balance);
    assert!((0.4..=0.6).contains(&mid), "halfway: {mid}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!((weight(&balance) - 1.0).abs() < 1e-9);
    assert!(!balance.snapshot().endpoint("late").unwrap().slow_start);
    // Endpoints of the initial set never ramped.
    assert!((balance.snapshot().endpoint("e0").unwrap().effective_weight - 1.0).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_balancer_stops_discovery_and_health_tasks() {
    // A discovery stream that never ends, and that tells when it is dropped.
    struct Alive(#[allow(dead_code)] tokio::sync::oneshot::Sender<()>);
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let alive = Alive(tx);
    let stream = futures_util::stream::unfold(alive, |alive| async move {
        std::future::pending::<()>().await;
        Some((
            Ok::<_, std::io::Error>(tower::discover::Change::Remove("x")),
            alive,
        ))
    });
    let (health_tx, health_rx) = tokio::sync::watch::channel(Health::Healthy);
    let balance: Balance<Echo, ServicePolicy> = Balance::builder()
        .policy(ServicePolicy::new())
        .endpoint_with_health("a", Echo("a".into()), health_rx.into())
        .discover(Box::pin(stream))
        .build()
        .unwrap();
    let clone = balance.clone();
    settle().await;
    assert!(rx.try_recv().is_err(), "discovery still running");
    assert_eq!(health_tx.receiver_count(), 1, "health watch running");
    drop(balance);
    settle().await;
    assert!(rx.try_recv().is_err(), "a clone keeps it running");
    drop(clone);
    settle().await;
    assert!(matches!(
        rx.try_recv(),
        Err(tokio::sync::oneshot::error::TryRecvError::Closed)
    ));
    // The health watch task is gone too: the publisher has no subscriber left.
    assert_eq!(health_tx.receiver_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn discovery_inserts_and_removes() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (Ok::<_, std::io::Error>(c), rx))
    });
    let mut balance: Balance<Echo, _> = Balance::builder()
        .policy(ServicePolicy::new())
        .discover(Box::pin(stream))
        .build()
        .unwrap();
    use tower::discover::Change;
    tx.send(Change::Insert("a", Echo("a".into()))).unwrap();
    tx.send(Change::Insert("b", Echo("b".into()))).unwrap();
    settle().await;
    assert_eq!(balance.snapshot().total, 2);
    // Same batch as the first insert: neither ramps.
    assert!(balance.snapshot().endpoints.iter().all(|e| !e.slow_start));
    tx.send(Change::Remove("a")).unwrap();
    settle().await;
    assert_eq!(balance.snapshot().total, 1);
    let got = balance.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(&*got, "b");
    tx.send(Change::Insert("c", Echo("c".into()))).unwrap();
    settle().await;
    assert!(
        balance.snapshot().endpoint("c").unwrap().slow_start,
        "later inserts ramp"
    );
}

#[tokio::test]
async fn builder_rejects_bad_settings() {
    let e = Balance::builder::<Echo>()
        .panic_threshold(1.5)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "panic_threshold");
    let e = Balance::builder::<Echo>()
        .max_retries(9)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_retries");
    let e = Balance::builder::<Echo>()
        .picker(Picker::ConsistentHash { virtual_nodes: 0 })
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "virtual_nodes");
    let e = Balance::builder::<Echo>()
        .weighted_endpoint("a", Echo("a".into()), 0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "weight");
}

#[test]
fn discovery_outside_a_runtime_is_a_config_error() {
    let stream =
        futures_util::stream::empty::<Result<tower::discover::Change<u8, Echo>, std::io::Error>>();
    let e = Balance::builder()
        .policy(ServicePolicy::new())
        .discover(stream)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "runtime");
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
            b = b.endpoint(name.clone(), Echo(name));
        }
        let mut balance = b.build().unwrap();
        {
            let reg = balance.shared.registry();
            for (e, (h, ejected, draining)) in reg.entries.iter().zip(&states) {
                e.ep.set_health(crate::endpoint::health_from_u8(*h));
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
async fn active_checks_drive_routability_and_stop_with_the_balancer() {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    let probes = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(AtomicBool::new(true));
    let probe = {
        let probes = probes.clone();
        let up = up.clone();
        rampart_health::probe_fn(move || {
            probes.fetch_add(1, Ordering::SeqCst);
            let ok = up.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(rampart_health::ProbeError::new(
                        rampart_health::ProbeErrorKind::Status,
                        "down",
                    ))
                }
            }
        })
    };
    let checks = rampart_health::CheckerConfig::builder()
        .interval(Duration::from_secs(1))
        .unhealthy_interval(Duration::from_secs(1))
        .timeout(Duration::from_millis(500))
        .jitter(0.0)
        .rise(1)
        .fall(1)
        .build()
        .unwrap();
    let balance: Balance<Echo, ServicePolicy> = Balance::builder()
        .policy(ServicePolicy::new())
        .panic_threshold(0.0)
        .health_checks(checks)
        .endpoint_with_probe("checked", Echo("checked".into()), probe)
        .endpoint("plain", Echo("plain".into()))
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        balance.snapshot().endpoint("checked").unwrap().health,
        Health::Healthy
    );
    up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = balance.snapshot();
    let checked = snap.endpoint("checked").unwrap();
    assert_eq!(checked.health, Health::Unhealthy);
    assert!(!checked.routable);
    assert_eq!(snap.routable, 1);
    // Dropping the balancer stops the checker.
    drop(balance);
    settle().await;
    let after_drop = probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        probes.load(Ordering::SeqCst),
        after_drop,
        "no probe after the drop"
    );
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

type HttpReq = http::Request<String>;
type HttpRes = http::Response<&'static str>;

fn status_of(res: &HttpRes) -> u16 {
    res.status().as_u16()
}

/// A 503 answer (idempotent request) is retried on the other endpoint; when that attempt
/// cannot do better (it never reaches its endpoint, or fails after sending), the caller gets
/// the 503 it already had, marked as served by the endpoint that gave it, not the later error.
#[tokio::test(start_paused = true)]
async fn a_retry_that_cannot_do_better_returns_the_response_it_already_had() {
    let later_errors: [fn() -> BoxError; 2] = [
        || Box::new(NeverReached::new().with_source(std::io::Error::other("refused"))),
        || "connection reset".into(),
    ];
    for later in later_errors {
        for keyed_post in [false, true] {
            let (a, ha) = mock::pair::<HttpReq, HttpRes>();
            let (b, hb) = mock::pair::<HttpReq, HttpRes>();
            let mut handles = [ha, hb];
            let mut balance = Balance::builder()
                .picker(Picker::RoundRobin)
                .endpoint("a", a)
                .endpoint("b", b)
                .build()
                .unwrap();
            let req = if keyed_post {
                http::Request::post("/orders")
                    .header("idempotency-key", "k")
                    .body(String::from("{}"))
                    .unwrap()
            } else {
                http::Request::get("/").body(String::new()).unwrap()
            };
            let mut f = task::spawn(balance.call(req));
            assert_pending!(f.poll());
            let mut first = None;
            for (i, h) in handles.iter_mut().enumerate() {
                if let Poll::Ready(Some((_, send))) = h.poll_request() {
                    send.send_response(http::Response::builder().status(503).body("busy").unwrap());
                    first = Some(i);
                }
            }
            let first = first.expect("one endpoint got the request");
            assert_pending!(f.poll(), "retried on the other endpoint");
            let Poll::Ready(Some((_, send))) = handles[1 - first].poll_request() else {
                panic!("the retry went to the other endpoint");
            };
            send.send_error(later());
            let res = match f.poll() {
                Poll::Ready(Ok(res)) => res,
                other => panic!("expected the 503 back, got {other:?}"),
            };
            assert_eq!(status_of(&res), 503);
            assert_eq!(*res.body(), "busy");
            let served = res.extensions().get::<crate::ServedBy>().unwrap();
            assert_eq!(served.endpoint(), ["a", "b"][first]);
        }
    }
}

/// A later response replaces an earlier one: the retry's 200 is the answer.
#[tokio::test(start_paused = true)]
async fn a_retry_that_does_better_returns_its_own_response() {
    let (a, ha) = mock::pair::<HttpReq, HttpRes>();
    let (b, hb) = mock::pair::<HttpReq, HttpRes>();
    let mut handles = [ha, hb];
    let mut balance = Balance::builder()
        .picker(Picker::RoundRobin)
        .endpoint("a", a)
        .endpoint("b", b)
        .build()
        .unwrap();
    let mut f = task::spawn(balance.call(http::Request::get("/").body(String::new()).unwrap()));
    assert_pending!(f.poll());
    let mut first = None;
    for (i, h) in handles.iter_mut().enumerate() {
        if let Poll::Ready(Some((_, send))) = h.poll_request() {
            send.send_response(http::Response::builder().status(502).body("bad").unwrap());
            first = Some(i);
        }
    }
    let first = first.unwrap();
    assert_pending!(f.poll());
    let Poll::Ready(Some((_, send))) = handles[1 - first].poll_request() else {
        panic!("no retry");
    };
    send.send_response(http::Response::builder().status(200).body("ok").unwrap());
    let res = assert_ready_ok!(f.poll());
    assert_eq!((status_of(&res), *res.body()), (200, "ok"));
    let served = res.extensions().get::<crate::ServedBy>().unwrap();
    assert_eq!(served.endpoint(), ["a", "b"][1 - first]);
}

/// The documented default settings, observed rather than configured.
fn health_pool(n: usize) -> (Balance<Echo, ServicePolicy>, Vec<HealthPublisher>) {
    let mut b = Balance::builder().policy(ServicePolicy::new());
    let mut pubs = Vec::new();
    for name in names(n) {
        let p = HealthPublisher::with_initial(Health::Healthy);
        let name: Arc<str> = name.into();
        b = b.endpoint_with_health(name.clone(), Echo(name), p.subscribe());
        pubs.push(p);
    }
    (b.build().unwrap(), pubs)
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

#[tokio::test(start_paused = true)]
async fn by_default_a_request_gets_two_extra_attempts() {
    let (svcs, mut handles) = mocks(5);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .endpoints(names(5).into_iter().zip(svcs))
        .build()
        .unwrap();
    let mut f = task::spawn(balance.call("x"));
    let mut seen = Vec::new();
    let result = loop {
        match f.poll() {
            Poll::Pending => {
                let (i, send) = who_got_hold(&mut handles);
                seen.push(i);
                send.send_error(NeverReached::new());
            }
            Poll::Ready(r) => break r,
        }
    };
    assert_eq!(seen.len(), 3, "1 attempt + 2 retries: {seen:?}");
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), 3, "each attempt on a different endpoint");
    assert!(is_never_reached(&*result.unwrap_err()));
}

#[tokio::test(start_paused = true)]
async fn a_vanished_endpoint_service_is_retried_elsewhere() {
    // An endpoint whose service has closed (its `poll_ready` fails): the request never left,
    // so it goes to another endpoint and is not lost.
    let (svcs, handles) = mocks(2);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .picker(Picker::RoundRobin)
        .endpoints(names(2).into_iter().zip(svcs))
        .build()
        .unwrap();
    let mut handles = handles.into_iter();
    drop(handles.next()); // e0's service is gone
    let mut alive = handles.next().unwrap();
    for _ in 0..4 {
        let mut f = task::spawn(balance.call("x"));
        assert_pending!(f.poll());
        let Poll::Ready(Some((req, send))) = alive.poll_request() else {
            panic!("the live endpoint got the request");
        };
        assert_eq!(req, "x");
        send.send_response("ok");
        assert_eq!(assert_ready_ok!(f.poll()), "ok");
    }
    assert!(balance.snapshot().endpoint("e0").unwrap().failures >= 1);
}

fn ramping<S: Send + Sync + 'static, P: Send + Sync + 'static>(
    balance: &Balance<S, P>,
    name: &str,
) -> (bool, f64) {
    let snap = balance.snapshot();
    let e = snap.endpoint(name).unwrap();
    (e.slow_start, e.effective_weight)
}

#[tokio::test(start_paused = true)]
async fn a_recovered_endpoint_ramps_up() {
    let (balance, pubs) = health_pool(3);
    assert_eq!(ramping(&balance, "e0"), (false, 1.0));
    pubs[0].set(Health::Unhealthy);
    settle().await;
    assert!(!balance.snapshot().endpoint("e0").unwrap().routable);
    pubs[0].set(Health::Healthy);
    settle().await;
    let (slow, weight) = ramping(&balance, "e0");
    assert!(slow && (weight - 0.1).abs() < 1e-9, "{slow} {weight}");
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(ramping(&balance, "e0"), (false, 1.0));
}

#[tokio::test(start_paused = true)]
async fn an_undrained_endpoint_ramps_up() {
    let balance = echo_balance(2, Picker::PeakEwma);
    assert!(balance.drain("e0"));
    assert!(balance.handle().undrain("e0"));
    let (slow, weight) = ramping(&balance, "e0");
    assert!(slow && (weight - 0.1).abs() < 1e-9, "{slow} {weight}");
}

/// An endpoint whose answers are failures while `failing` is set.
#[derive(Clone)]
struct Flaky {
    name: Arc<str>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Service<u64> for Flaky {
    type Response = Arc<str>;
    type Error = BoxError;
    type Future = Ready<Result<Arc<str>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: u64) -> Self::Future {
        if self.failing.load(Ordering::SeqCst) {
            ready(Err("broken".into()))
        } else {
            ready(Ok(self.name.clone()))
        }
    }
}

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
        .endpoint("bad", flaky)
        .endpoint("good", good)
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
            b = b.endpoint(name.clone(), Echo(name));
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

/// Collects the message of every `tracing` event (a minimal subscriber, so the crate needs no
/// extra dependency).
#[derive(Clone, Default)]
struct Events(Arc<std::sync::Mutex<Vec<String>>>);

impl Events {
    fn count(&self, message: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| *m == message)
            .count()
    }
}

impl tracing::Subscriber for Events {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // Other tests run in parallel without a subscriber: never let a cached "never" hide
        // an event from this one.
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    *self.0 = format!("{value:?}");
                }
            }
        }
        let mut m = String::new();
        event.record(&mut Message(&mut m));
        self.0.lock().unwrap().push(m);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Three healthy round-robin endpoints with manual health publishers; `e0` fails while
/// `failing` is set.
fn flaky_trio(
    failing: &Arc<std::sync::atomic::AtomicBool>,
    outlier: rampart_health::OutlierConfig,
) -> (Balance<Flaky, ServicePolicy>, Vec<HealthPublisher>) {
    let mut pubs = Vec::new();
    let mut b = Balance::builder()
        .policy(ServicePolicy::new())
        .picker(Picker::RoundRobin)
        .outlier_detection(outlier);
    for (i, name) in names(3).into_iter().enumerate() {
        let p = HealthPublisher::with_initial(Health::Healthy);
        let svc = Flaky {
            name: name.clone().into(),
            failing: if i == 0 {
                failing.clone()
            } else {
                Arc::default()
            },
        };
        b = b.endpoint_with_health(name, svc, p.subscribe());
        pubs.push(p);
    }
    (b.build().unwrap(), pubs)
}

#[tokio::test(start_paused = true)]
async fn every_change_emits_a_tracing_event() {
    let events = Events::default();
    // tracing-core caches each call site's interest when the site is first hit. With a single
    // registered dispatcher it asks only the registering thread's default, so a parallel test
    // (no subscriber) hitting a site first would cache "never" for ours too. A second live
    // dispatcher makes registration ask every registered dispatcher, ours included.
    let _second = tracing::Dispatch::new(Events::default());
    let _guard = tracing::subscriber::set_default(events.clone());
    tracing::callsite::rebuild_interest_cache();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut balance, pubs) = flaky_trio(
        &failing,
        rampart_health::OutlierConfig::builder()
            .consecutive_failures(1)
            .base_ejection_time(Duration::from_secs(1))
            .max_ejection_percent(50.0)
            .build()
            .unwrap(),
    );
    assert_eq!(events.count("endpoint added"), 3);

    // Ejection and its return (then slow start to the end).
    failing.store(true, Ordering::SeqCst);
    for k in 0..3 {
        let _ = balance.ready().await.unwrap().call(k).await;
    }
    assert_eq!(
        events.count("endpoint ejected (passive outlier detection)"),
        1
    );
    assert!(events.count("endpoint routability changed") >= 1);
    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(events.count("endpoint returned from ejection"), 1);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(events.count("slow start finished"), 1);

    // Drain, health, panic mode and its end.
    assert!(balance.drain("e1"));
    assert_eq!(events.count("endpoint drain changed"), 1);
    pubs[2].set(Health::Unhealthy);
    settle().await;
    assert_eq!(events.count("endpoint health changed"), 1);
    assert_eq!(events.count("panic mode: spreading over all endpoints"), 1);
    assert!(balance.handle().undrain("e1"));
    assert_eq!(events.count("panic mode over"), 1);

    // Removal.
    let id = balance.snapshot().endpoint("e2").unwrap().id;
    assert!(balance.remove(id));
    assert_eq!(events.count("endpoint removed"), 1);

    // A retry elsewhere, and a request with nowhere to go.
    let (svcs, handles) = mocks(2);
    let mut retrying = Balance::builder()
        .policy(ServicePolicy::new())
        .picker(Picker::RoundRobin)
        .endpoints(names(2).into_iter().zip(svcs))
        .build()
        .unwrap();
    let mut handles = handles.into_iter();
    drop(handles.next());
    let mut alive = handles.next().unwrap();
    for _ in 0..2 {
        let mut f = task::spawn(retrying.call("x"));
        assert_pending!(f.poll());
        if let Poll::Ready(Some((_, send))) = alive.poll_request() {
            send.send_response("ok");
        }
        assert_ready_ok!(f.poll());
    }
    assert_eq!(events.count("retrying on another endpoint"), 1);
    let mut empty: Balance<Echo, ServicePolicy> = Balance::builder()
        .policy(ServicePolicy::new())
        .build()
        .unwrap();
    assert!(empty.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(events.count("no healthy endpoints"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_removed_endpoints_load_cell_is_not_shared_until_nothing_refers_to_it() {
    // The load state lives in a slab whose slots are reused: a request still in flight on a
    // removed endpoint must keep its slot, so a newcomer's counts start clean and stay so.
    let (svcs, mut handles) = mocks(1);
    let mut balance = Balance::builder()
        .policy(ServicePolicy::new())
        .endpoints(names(1).into_iter().zip(svcs))
        .build()
        .unwrap();
    let mut f = task::spawn(balance.call("x"));
    assert_pending!(f.poll());
    let (_, send) = who_got_hold(&mut handles);
    let old = balance.snapshot().endpoint("e0").unwrap().id;
    assert!(balance.remove(old));
    let (svc, mut late) = mock::pair();
    balance.insert("late", svc);
    let fresh = |b: &Balance<Mock, ServicePolicy>| {
        let snap = b.snapshot();
        let e = snap.endpoint("late").unwrap();
        (e.outstanding, e.requests)
    };
    assert_eq!(fresh(&balance), (0, 0));
    send.send_response("done");
    assert_eq!(assert_ready_ok!(f.poll()), "done");
    drop(f);
    assert_eq!(
        fresh(&balance),
        (0, 0),
        "the old request released its own cell"
    );
    // The old slot is free now; the next endpoint reuses it with clean counts.
    let (svc2, _h2) = mock::pair();
    balance.insert("later", svc2);
    let snap = balance.snapshot();
    let later = snap.endpoint("later").unwrap();
    assert_eq!((later.outstanding, later.requests), (0, 0));
    // And requests land on their own cells.
    let mut g = task::spawn(balance.call("y"));
    assert_pending!(g.poll());
    let got_late = matches!(late.poll_request(), Poll::Ready(Some(_)));
    let snap = balance.snapshot();
    let total: u64 = snap.endpoints.iter().map(|e| e.outstanding).sum();
    assert_eq!(total, 1, "{snap:?} (late got it: {got_late})");
}

/// Counts counter increments and remembers gauge values by `name{label=value,...}` (a minimal
/// recorder, so the crate needs no extra dependency).
#[cfg(feature = "metrics")]
#[derive(Default)]
struct Metrics(Arc<std::sync::Mutex<HashMap<String, f64>>>);

#[cfg(feature = "metrics")]
struct Cell(Arc<std::sync::Mutex<HashMap<String, f64>>>, String);

#[cfg(feature = "metrics")]
impl metrics::CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.0.lock().unwrap().insert(self.1.clone(), value as f64);
    }
}

#[cfg(feature = "metrics")]
impl metrics::GaugeFn for Cell {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.0.lock().unwrap().insert(self.1.clone(), value);
    }
}

#[cfg(feature = "metrics")]
impl Metrics {
    fn name(key: &metrics::Key) -> String {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
    fn get(&self, name: &str) -> f64 {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0.0)
    }
}

#[cfg(feature = "metrics")]
impl metrics::Recorder for Metrics {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(Arc::new(Cell(self.0.clone(), Self::name(key))))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(Arc::new(Cell(self.0.clone(), Self::name(key))))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[cfg(feature = "metrics")]
#[tokio::test(start_paused = true)]
async fn every_change_updates_the_metrics() {
    let recorder = Metrics::default();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut balance, pubs) = metrics::with_local_recorder(&recorder, || {
        flaky_trio(
            &failing,
            rampart_health::OutlierConfig::builder()
                .consecutive_failures(1)
                .max_ejection_percent(50.0)
                .build()
                .unwrap(),
        )
    });
    assert_eq!(
        recorder.get("rampart_balance_endpoint_changes_total{balancer=balancer,change=added}"),
        3.0
    );
    assert_eq!(
        recorder.get("rampart_balance_endpoints{balancer=balancer,state=routable}"),
        3.0
    );
    assert_eq!(
        recorder.get("rampart_balance_endpoints{balancer=balancer,state=total}"),
        3.0
    );
    // An ejection (polled synchronously inside the recorder's scope).
    failing.store(true, Ordering::SeqCst);
    metrics::with_local_recorder(&recorder, || {
        for k in 0..3 {
            let mut f = task::spawn(balance.call(k));
            let _ = f.poll();
        }
    });
    assert_eq!(
        recorder.get("rampart_balance_ejections_total{balancer=balancer}"),
        1.0
    );
    assert_eq!(
        recorder.get("rampart_balance_endpoint_changes_total{balancer=balancer,change=unroutable}"),
        1.0
    );
    assert_eq!(
        recorder.get("rampart_balance_endpoints{balancer=balancer,state=routable}"),
        2.0
    );
    // Drain, undrain, removal, panic mode, nowhere to go.
    metrics::with_local_recorder(&recorder, || {
        assert!(balance.drain("e1"));
        assert_eq!(
            recorder.get("rampart_balance_panic{balancer=balancer}"),
            1.0,
            "1 of 3 routable"
        );
        assert!(balance.handle().undrain("e1"));
        assert_eq!(
            recorder.get("rampart_balance_panic{balancer=balancer}"),
            0.0
        );
        let id = balance.snapshot().endpoint("e2").unwrap().id;
        assert!(balance.remove(id));
    });
    assert_eq!(
        recorder.get("rampart_balance_endpoint_changes_total{balancer=balancer,change=drained}"),
        1.0
    );
    assert_eq!(
        recorder.get("rampart_balance_endpoint_changes_total{balancer=balancer,change=undrained}"),
        1.0
    );
    assert_eq!(
        recorder.get("rampart_balance_endpoint_changes_total{balancer=balancer,change=removed}"),
        1.0
    );
    assert_eq!(
        recorder.get("rampart_balance_endpoints{balancer=balancer,state=total}"),
        2.0
    );
    drop(pubs);
    let mut empty: Balance<Echo, ServicePolicy> = Balance::builder()
        .policy(ServicePolicy::new())
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        let mut f = task::spawn(empty.call(0));
        assert!(matches!(f.poll(), Poll::Ready(Err(_))));
    });
    assert_eq!(
        recorder.get("rampart_balance_no_healthy_endpoints_total{balancer=balancer}"),
        1.0
    );
}

#[cfg(feature = "metrics")]
#[tokio::test(start_paused = true)]
async fn every_series_is_labelled_with_the_balancers_name() {
    let recorder = Metrics::default();
    let build = |name: &'static str, n: usize| {
        let mut b = Balance::builder().policy(ServicePolicy::new()).name(name);
        for i in 0..n {
            b = b.endpoint(format!("e{i}"), Echo(Arc::from("e")));
        }
        b.build().unwrap()
    };
    let (mut empty, east, west) = metrics::with_local_recorder(&recorder, || {
        (build("empty", 0), build("east", 3), build("west", 2))
    });
    assert_eq!(&*east.handle().name(), "east");
    assert_eq!(&*west.snapshot().name, "west");
    assert_eq!(
        recorder.get("rampart_balance_endpoints{balancer=east,state=total}"),
        3.0
    );
    assert_eq!(
        recorder.get("rampart_balance_endpoints{balancer=west,state=total}"),
        2.0
    );
    assert_eq!(
        recorder.get("rampart_balance_endpoints{balancer=empty,state=total}"),
        0.0
    );
    assert_eq!(
        recorder.get("rampart_balance_endpoint_changes_total{balancer=west,change=added}"),
        2.0
    );
    metrics::with_local_recorder(&recorder, || {
        let mut f = task::spawn(empty.call(0));
        assert!(matches!(f.poll(), Poll::Ready(Err(_))));
    });
    assert_eq!(
        recorder.get("rampart_balance_no_healthy_endpoints_total{balancer=empty}"),
        1.0
    );
    assert!(
        recorder
            .0
            .lock()
            .unwrap()
            .keys()
            .all(|k| k.contains("balancer=")),
        "a series without the balancer label: {:?}",
        recorder.0.lock().unwrap().keys().collect::<Vec<_>>()
    );
    let e = Balance::builder::<Echo>()
        .policy(ServicePolicy::new())
        .name("")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("name"), "{e}");
}
