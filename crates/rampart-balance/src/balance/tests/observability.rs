//! Events and metrics: every change emits a tracing event and updates its series, each labelled
//! with the balancer's name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "metrics")]
use rampart_test_support::metrics::Captured;

use rampart_test_support::tracing::Capture;

use super::*;

#[tokio::test(start_paused = true)]
async fn every_change_emits_a_tracing_event() {
    let events = Arc::new(Capture::default());
    // tracing-core caches each call site's interest when the site is first hit. With a single
    // registered dispatcher it asks only the registering thread's default, so a parallel test
    // (no subscriber) hitting a site first would cache "never" for ours too. A second live
    // dispatcher makes registration ask every registered dispatcher, ours included.
    let _second = tracing::Dispatch::new(Capture::default());
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
    assert_eq!(events.with_message("endpoint added").len(), 3);

    // Ejection and its return (then slow start to the end).
    failing.store(true, Ordering::SeqCst);
    for k in 0..3 {
        let _ = balance.ready().await.unwrap().call(k).await;
    }
    assert_eq!(
        events
            .with_message("endpoint ejected (passive outlier detection)")
            .len(),
        1
    );
    assert!(
        !events
            .with_message("endpoint routability changed")
            .is_empty()
    );
    failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        events.with_message("endpoint returned from ejection").len(),
        1
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(events.with_message("slow start finished").len(), 1);

    // Drain, health, panic mode and its end.
    assert!(balance.drain("e1"));
    assert_eq!(events.with_message("endpoint drain changed").len(), 1);
    pubs[2].set(Health::Unhealthy);
    settle().await;
    assert_eq!(events.with_message("endpoint health changed").len(), 1);
    assert_eq!(
        events
            .with_message("panic mode: spreading over all endpoints")
            .len(),
        1
    );
    assert!(balance.handle().undrain("e1"));
    assert_eq!(events.with_message("panic mode over").len(), 1);

    // Removal.
    let id = balance.snapshot().endpoint("e2").unwrap().id;
    assert!(balance.remove(id));
    assert_eq!(events.with_message("endpoint removed").len(), 1);

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
    assert_eq!(events.with_message("retrying on another endpoint").len(), 1);
    let mut empty: Balance<Echo, ServicePolicy> = Balance::builder()
        .policy(ServicePolicy::new())
        .build()
        .unwrap();
    assert!(empty.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(events.with_message("no healthy endpoints").len(), 1);
}

#[cfg(feature = "metrics")]
#[tokio::test(start_paused = true)]
async fn every_change_updates_the_metrics() {
    let recorder = Captured::default();
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
        recorder.counter("rampart_balance_endpoint_changes_total{balancer=balancer,change=added}"),
        3
    );
    assert_eq!(
        recorder.gauge("rampart_balance_endpoints{balancer=balancer,state=routable}"),
        Some(3.0)
    );
    assert_eq!(
        recorder.gauge("rampart_balance_endpoints{balancer=balancer,state=total}"),
        Some(3.0)
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
        recorder.counter("rampart_balance_ejections_total{balancer=balancer}"),
        1
    );
    assert_eq!(
        recorder
            .counter("rampart_balance_endpoint_changes_total{balancer=balancer,change=unroutable}"),
        1
    );
    assert_eq!(
        recorder.gauge("rampart_balance_endpoints{balancer=balancer,state=routable}"),
        Some(2.0)
    );
    // Drain, undrain, removal, panic mode, nowhere to go.
    metrics::with_local_recorder(&recorder, || {
        assert!(balance.drain("e1"));
        assert_eq!(
            recorder.gauge("rampart_balance_panic{balancer=balancer}"),
            Some(1.0),
            "1 of 3 routable"
        );
        assert!(balance.handle().undrain("e1"));
        assert_eq!(
            recorder.gauge("rampart_balance_panic{balancer=balancer}"),
            Some(0.0)
        );
        let id = balance.snapshot().endpoint("e2").unwrap().id;
        assert!(balance.remove(id));
    });
    assert_eq!(
        recorder
            .counter("rampart_balance_endpoint_changes_total{balancer=balancer,change=drained}"),
        1
    );
    assert_eq!(
        recorder
            .counter("rampart_balance_endpoint_changes_total{balancer=balancer,change=undrained}"),
        1
    );
    assert_eq!(
        recorder
            .counter("rampart_balance_endpoint_changes_total{balancer=balancer,change=removed}"),
        1
    );
    assert_eq!(
        recorder.gauge("rampart_balance_endpoints{balancer=balancer,state=total}"),
        Some(2.0)
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
        recorder.counter("rampart_balance_no_healthy_endpoints_total{balancer=balancer}"),
        1
    );
}

#[cfg(feature = "metrics")]
#[tokio::test(start_paused = true)]
async fn every_series_is_labelled_with_the_balancers_name() {
    let recorder = Captured::default();
    let build = |name: &'static str, n: usize| {
        let mut b = Balance::builder().policy(ServicePolicy::new()).name(name);
        for i in 0..n {
            b = b.endpoint(Endpoint::new(format!("e{i}"), Echo(Arc::from("e"))));
        }
        b.build().unwrap()
    };
    let (mut empty, east, west) = metrics::with_local_recorder(&recorder, || {
        (build("empty", 0), build("east", 3), build("west", 2))
    });
    assert_eq!(&*east.handle().name(), "east");
    assert_eq!(&*west.snapshot().name, "west");
    assert_eq!(
        recorder.gauge("rampart_balance_endpoints{balancer=east,state=total}"),
        Some(3.0)
    );
    assert_eq!(
        recorder.gauge("rampart_balance_endpoints{balancer=west,state=total}"),
        Some(2.0)
    );
    assert_eq!(
        recorder.gauge("rampart_balance_endpoints{balancer=empty,state=total}"),
        Some(0.0)
    );
    assert_eq!(
        recorder.counter("rampart_balance_endpoint_changes_total{balancer=west,change=added}"),
        2
    );
    metrics::with_local_recorder(&recorder, || {
        let mut f = task::spawn(empty.call(0));
        assert!(matches!(f.poll(), Poll::Ready(Err(_))));
    });
    assert_eq!(
        recorder.counter("rampart_balance_no_healthy_endpoints_total{balancer=empty}"),
        1
    );
    assert!(
        recorder.keys().iter().all(|k| k.contains("balancer=")),
        "a series without the balancer label: {:?}",
        recorder.keys()
    );
    let e = Balance::builder::<Echo>()
        .policy(ServicePolicy::new())
        .name("")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("name"), "{e}");
}
