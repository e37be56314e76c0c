//! Endpoints coming and going: drain, slow start, discovery, active checks, background tasks,
//! configuration errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

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
        .endpoint(Endpoint::new("a", Echo("a".into())).health_watch(health_rx.into()))
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
        .endpoint(Endpoint::new("a", Echo("a".into())).weight(0))
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
        .endpoint(Endpoint::new("checked", Echo("checked".into())).probe(probe))
        .endpoint(Endpoint::new("plain", Echo("plain".into())))
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
