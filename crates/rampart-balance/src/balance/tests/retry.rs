//! Retry elsewhere: which errors and responses are retried, on which endpoint, how often, within
//! the budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

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
                .endpoint(Endpoint::new("a", a))
                .endpoint(Endpoint::new("b", b))
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
        .endpoint(Endpoint::new("a", a))
        .endpoint(Endpoint::new("b", b))
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
