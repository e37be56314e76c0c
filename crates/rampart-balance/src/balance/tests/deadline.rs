//! Deadlines: an expired request is never sent, and every attempt carries what is left of the
//! budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_is_never_sent_and_not_retried() {
    let a = Replica::new(200, &[]);
    let bb = Replica::new(200, &[]);
    let mut b = Balance::builder()
        .endpoint(Endpoint::new("a", a.clone()))
        .endpoint(Endpoint::new("b", bb.clone()))
        .build()
        .unwrap();
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(10)));
    tokio::time::advance(Duration::from_millis(20)).await;
    let err = send(&mut b, req).await.unwrap_err();
    assert!(find_in_chain::<DeadlineExceeded>(&*err).is_some(), "{err}");
    assert!(rampart_health::is_never_reached(&*err));
    assert_eq!(a.hits() + bb.hits(), 0);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_remaining_budget() {
    let a = Replica::new(503, &[]);
    let bb = Replica::new(503, &[]);
    let mut b = Balance::builder()
        .picker(Picker::RoundRobin)
        .endpoint(Endpoint::new("a", a.clone()))
        .endpoint(Endpoint::new("b", bb.clone()))
        .build()
        .unwrap();
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(800)));
    tokio::time::advance(Duration::from_millis(300)).await;
    let res = send(&mut b, req).await.unwrap();
    assert_eq!(res.status(), 503);
    // Both endpoints were tried (a retry on 503), and each attempt was told what was left.
    assert_eq!(a.hits() + bb.hits(), 2);
    for r in [&a, &bb] {
        assert_eq!(r.seen_deadline.lock().unwrap().as_deref(), Some("500"));
    }
}
