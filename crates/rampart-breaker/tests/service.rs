//! The tower middleware: classification, readiness, cancellation, keyed breakers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rampart_breaker::{
    BreakerHandle, BreakerOpen, BreakerState, CircuitBreaker, CircuitBreakerLayer, KeyedBreaker,
    KeyedCircuitBreakerLayer, Policy, PolicyBuilder, SlidingWindow,
};
use rampart_health::{HttpClassifier, Outcome};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

fn policy() -> PolicyBuilder {
    Policy::builder()
        .sliding_window(SlidingWindow::count(10))
        .minimum_calls(2)
        .open_duration(Duration::from_secs(1))
        .open_jitter(0.0)
        .permitted_calls_in_half_open(1)
}

fn status(code: u16) -> http::Response<()> {
    http::Response::builder().status(code).body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn http_classification_5xx_and_errors_fail_4xx_succeed() {
    let layer = CircuitBreakerLayer::http(policy().minimum_calls(4).build().unwrap());
    let breaker = layer.handle().clone();
    let mut svc = layer.layer(service_fn(|code: u16| async move {
        if code == 0 {
            Err(std::io::Error::other("refused"))
        } else {
            Ok(status(code))
        }
    }));
    for code in [404, 400, 429, 200] {
        svc.ready().await.unwrap().call(code).await.unwrap();
    }
    let snap = breaker.snapshot();
    assert_eq!((snap.calls, snap.failures), (4, 0), "4xx are successes");
    svc.ready().await.unwrap().call(503).await.unwrap();
    svc.ready().await.unwrap().call(0).await.unwrap_err();
    let snap = breaker.snapshot();
    assert_eq!((snap.calls, snap.failures), (6, 2));
    let _ = HttpClassifier::new();
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_never_calls_the_inner_service() {
    let (inner, mut handle) = mock::pair::<u32, u32>();
    let breaker = BreakerHandle::new(policy().build().unwrap());
    let mut svc = mock::Spawn::new(CircuitBreaker::new(inner, breaker.clone()));
    handle.allow(10);
    for _ in 0..2 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(1);
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_error(std::io::Error::other("boom"));
        fut.await.unwrap_err();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_ready_ok!(svc.poll_ready(), "fail-fast mode follows the inner service");
    let err = svc.call(2).await.unwrap_err();
    assert!(BreakerOpen::find(&*err).is_some());
    assert_pending!(handle.poll_request(), "nothing reached the inner service");
}

#[tokio::test(start_paused = true)]
async fn poll_ready_follows_the_inner_service() {
    let (inner, mut handle) = mock::pair::<u32, u32>();
    let mut svc = mock::Spawn::new(CircuitBreaker::new(
        inner,
        BreakerHandle::new(policy().build().unwrap()),
    ));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_future_releases_its_half_open_permit() {
    let (inner, mut handle) = mock::pair::<u32, u32>();
    let breaker = BreakerHandle::new(policy().build().unwrap());
    let mut svc = CircuitBreaker::new(inner, breaker.clone());
    handle.allow(10);
    for _ in 0..2 {
        breaker.try_acquire().unwrap().record(Outcome::Failure);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let fut = svc.ready().await.unwrap().call(1); // the trial
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(
        svc.ready().await.unwrap().call(2).await.is_err(),
        "the only permit is taken"
    );
    drop(fut);
    let snap = breaker.snapshot();
    assert_eq!(
        (
            snap.state,
            snap.half_open_in_flight,
            snap.half_open_successes,
            snap.half_open_failures
        ),
        (BreakerState::HalfOpen, 0, 0, 0),
        "permit released, nothing recorded"
    );
    let fut = svc.ready().await.unwrap().call(3);
    // Two requests reached the mock (1 and 3); answer the live one.
    let (r1, _send1) = handle.next_request().await.unwrap();
    assert_eq!(r1, 1);
    let (r3, send3) = handle.next_request().await.unwrap();
    assert_eq!(r3, 3);
    send3.send_response(3);
    assert_eq!(fut.await.unwrap(), 3);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_future_records_nothing_in_the_closed_state() {
    let (inner, mut handle) = mock::pair::<u32, u32>();
    let breaker = BreakerHandle::new(policy().minimum_calls(1).build().unwrap());
    let mut svc = CircuitBreaker::new(inner, breaker.clone());
    handle.allow(10);
    let fut = svc.ready().await.unwrap().call(1);
    let (_, respond) = handle.next_request().await.unwrap();
    drop(fut); // cancelled, e.g. by a timeout outside
    respond.send_error(std::io::Error::other("too late"));
    let snap = breaker.snapshot();
    assert_eq!((snap.state, snap.calls), (BreakerState::Closed, 0));
}

#[tokio::test(start_paused = true)]
async fn not_ready_while_open_waits_and_wakes_when_the_open_period_ends() {
    let breaker = BreakerHandle::new(policy().build().unwrap());
    let svc = CircuitBreaker::new(
        service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }),
        breaker.clone(),
    )
    .not_ready_while_open(true);
    let mut svc = mock::Spawn::new(svc);
    assert_ready_ok!(svc.poll_ready());
    for _ in 0..2 {
        breaker.try_acquire().unwrap().record(Outcome::Failure);
    }
    assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(!svc.is_woken());
    assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(svc.is_woken(), "the stored timer wakes the task");
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(svc.call(7).await.unwrap(), 7, "the trial call passes");
    assert_eq!(breaker.state(), BreakerState::Closed);

    // Forced open: not ready, re-checked on a slow timer, ready after a reset.
    breaker.force_open();
    assert_pending!(svc.poll_ready());
    breaker.reset();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(svc.is_woken());
    assert_ready!(svc.poll_ready()).unwrap();

    // A clone does not copy readiness or the timer.
    let clone = svc.get_ref().clone();
    assert!(format!("{clone:?}").contains("CircuitBreaker"));
}

#[tokio::test(start_paused = true)]
async fn the_layer_shares_one_breaker_among_its_services() {
    let layer = CircuitBreakerLayer::new(policy().build().unwrap());
    let ok =
        || service_fn(|x: u32| async move { Err::<u32, _>(std::io::Error::other(x.to_string())) });
    let mut a = layer.layer(ok());
    let mut b = layer.clone().layer(ok());
    a.ready().await.unwrap().call(1).await.unwrap_err();
    b.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(layer.handle().state(), BreakerState::Open);
    assert!(a.get_ref().clone().ready().await.is_ok());
    let _inner = b.into_inner();
    let _ = a.get_mut();
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_are_independent_per_key() {
    let breakers =
        KeyedBreaker::<String>::new(policy().build().unwrap(), 100, Duration::from_secs(600));
    let layer =
        KeyedCircuitBreakerLayer::new(breakers.clone(), |req: &(String, bool)| req.0.clone());
    let mut svc = layer.layer(service_fn(|(_, fail): (String, bool)| async move {
        if fail {
            Err(std::io::Error::other("down"))
        } else {
            Ok(())
        }
    }));
    for _ in 0..2 {
        svc.ready()
            .await
            .unwrap()
            .call(("a".into(), true))
            .await
            .unwrap_err();
    }
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(("a".into(), false))
        .await
        .unwrap_err();
    assert_eq!(BreakerOpen::find(&*err).unwrap().breaker(), "breaker[a]");
    svc.ready()
        .await
        .unwrap()
        .call(("b".into(), false))
        .await
        .unwrap();
    assert_eq!(
        breakers.get(&"a".to_string()).unwrap().state(),
        BreakerState::Open
    );
    assert_eq!(
        breakers.get(&"b".to_string()).unwrap().state(),
        BreakerState::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn the_middleware_times_calls_for_slow_call_tracking() {
    let layer = CircuitBreakerLayer::new(
        policy()
            .slow_call_duration(Duration::from_millis(200))
            .slow_call_rate_threshold(50.0)
            .build()
            .unwrap(),
    );
    let breaker = layer.handle().clone();
    let mut svc = layer.layer(service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, std::io::Error>(ms)
    }));
    svc.ready().await.unwrap().call(10).await.unwrap();
    assert_eq!(breaker.snapshot().slow_calls, 0);
    svc.ready().await.unwrap().call(250).await.unwrap();
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "1 slow success of 2 = 50 %"
    );
}
