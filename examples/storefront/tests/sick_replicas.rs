//! A catalog replica that is alive but sick — rate limiting with `429` + `Retry-After`, or
//! holding its requests — over real HTTP against the demo on port 0: the replica answers
//! its health checks throughout, and the shop's pages stay complete.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use http::StatusCode;
use storefront::Demo;
use storefront::fleet::{Region, ServiceName};
use support::{Http, eventually, test_config};

async fn start(name: &str) -> (Demo, Http) {
    let demo = Demo::start(test_config(name)).await.unwrap();
    let http = Http::new(demo.url());
    (demo, http)
}

fn replica_url(demo: &Demo, index: usize) -> String {
    let addr = demo.fleet().upstreams()[&ServiceName::Catalog][&Region::UsEast][index];
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_replica_answers_429_with_retry_after_and_passes_its_checks() {
    let (demo, http) = start("rate-limited-replica").await;
    let r = http
        .send(
            http::Method::POST,
            "/admin/faults",
            &[
                ("authorization", &format!("Bearer {}", support::TOKEN)),
                ("content-type", "application/json"),
            ],
            Some(
                r#"{"service": "catalog", "region": "us-east", "replica": 2, "fault": "rate-limited", "retry_after": "3s"}"#,
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let replica = Http::new(replica_url(&demo, 2));
    let r = replica.get("/products/1").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(replica.get("/healthz").await.status, StatusCode::OK);
    // The default Retry-After is 2 s.
    http.fault("catalog", "us-east", "2", "rate-limited").await;
    assert_eq!(
        replica.get("/products/1").await.header("retry-after"),
        Some("2")
    );
    // Every page is complete: the shop's balancer backs off the replica and retries the
    // refused read on a sibling.
    for i in 0..40 {
        let r = http.get(&format!("/products/{}", 1 + i % 7)).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.body);
        assert!(r.header("x-rampart-degraded").is_none(), "request {i}");
        assert!(r.header("x-rampart-stale").is_none(), "request {i}");
    }
    // A bad Retry-After is refused, naming the key.
    let r = http
        .send(
            http::Method::POST,
            "/admin/faults",
            &[
                ("authorization", &format!("Bearer {}", support::TOKEN)),
                ("content-type", "application/json"),
            ],
            Some(r#"{"service": "catalog", "fault": "rate-limited", "retry_after": "1500ms"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("retry_after"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_waits_until_the_hold_is_lifted_while_checks_pass() {
    let (demo, http) = start("held-replica").await;
    http.fault("catalog", "us-east", "0", "hold").await;
    let replica = Http::new(replica_url(&demo, 0));
    assert_eq!(replica.get("/healthz").await.status, StatusCode::OK);
    let held = tokio::spawn({
        let replica = replica.clone();
        async move { replica.get("/products/1").await }
    });
    // Still held after its health check answered (a bounded wait, not a timing claim: the
    // request is released only by the reset below).
    assert_eq!(replica.get("/healthz").await.status, StatusCode::OK);
    assert!(
        replica
            .get_within("/products/2", Duration::from_millis(300))
            .await
            .is_none(),
        "a held replica answered"
    );
    assert!(!held.is_finished());
    http.reset_faults().await;
    eventually(
        "the held request is released",
        Duration::from_secs(10),
        || {
            let held = &held;
            async move { held.is_finished().then_some(()) }
        },
    )
    .await;
    let r = held.await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.body.contains("released from hold"), "{}", r.body);
}
