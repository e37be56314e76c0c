//! `/status` and `/status.json` do not mislead: they report the state the next call will see,
//! a site held for failback as healthy and held, a window below its minimum as such, and panic
//! mode only where traffic goes. Over real HTTP against the demo started in-process on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use storefront::Demo;
use support::{Http, eventually, test_config};

const CATALOG: usize = 0;
const RECOMMENDATIONS: usize = 2;
const US_EAST: usize = 0;

async fn status(http: &Http) -> Value {
    let r = http.get("/status.json").await;
    assert_eq!(r.status, StatusCode::OK);
    serde_json::from_str(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_below_its_minimum_and_one_past_its_open_duration_are_reported_truthfully() {
    let demo = Demo::start(test_config("status-breaker")).await.unwrap();
    let http = Http::new(demo.url());
    http.fault("recommendations", "*", "*", "error").await;

    // One failed call: closed, but not because things are fine.
    assert_eq!(http.get("/products/1").await.status, StatusCode::OK);
    let s = status(&http).await;
    let rec = &s["services"][RECOMMENDATIONS];
    assert_eq!(rec["breaker"], "closed");
    let b = &rec["breaker_status"];
    assert_eq!(
        (b["calls"].as_u64(), b["failures"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(b["minimum_calls"], 5);
    assert_eq!(b["below_minimum"], true);
    assert_eq!(b["failure_rate"], Value::Null);
    assert_eq!(
        rec["breaker_detail"], "1/1 failed, below the minimum of 5",
        "{rec}"
    );
    let page = http.get("/status").await.body;
    assert!(
        page.contains("1/1 failed, below the minimum of 5"),
        "{page}"
    );

    // Enough failures open it; then the outage heals and no traffic comes.
    let rec = eventually(
        "the recommendations breaker opens",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move {
                let _ = http.get("/products/2").await;
                let rec = status(&http).await["services"][RECOMMENDATIONS].clone();
                (rec["breaker"] == "open").then_some(rec)
            }
        },
    )
    .await;
    let b = &rec["breaker_status"];
    assert!(b["retry_after_secs"].as_f64().unwrap() > 0.0, "{b}");
    assert!(
        rec["breaker_detail"]
            .as_str()
            .unwrap()
            .starts_with("next trial call in "),
        "{rec}"
    );
    http.reset_faults().await;

    // Past the open duration (300 ms, backing off to at most 1.8 s) without a call, it reads
    // half-open awaiting a trial, never "open, next probe in 0.0s".
    let rec = eventually(
        "the idle breaker reads half-open",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move {
                let s = status(&http).await;
                let rec = s["services"][RECOMMENDATIONS].clone();
                (rec["breaker"] != "open").then_some(rec)
            }
        },
    )
    .await;
    assert_eq!(rec["breaker"], "half_open", "{rec}");
    let b = &rec["breaker_status"];
    assert_eq!(b["recorded_state"], "open", "no call has come: read lazily");
    assert_eq!(b["awaiting_trial"], true);
    assert_eq!(b["retry_after_secs"], Value::Null);
    assert_eq!(
        rec["breaker_detail"],
        "open duration over: the next call is a trial"
    );
    let page = http.get("/status").await.body;
    assert!(!page.contains("next trial call in 0.0s"), "{page}");
    assert!(page.contains("the next call is a trial"), "{page}");

    // The next call is the trial; it succeeds and the breaker closes.
    eventually(
        "the trial closes the breaker",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move {
                let _ = http.get("/products/4").await;
                (status(&http).await["services"][RECOMMENDATIONS]["breaker"] == "closed")
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_site_held_for_failback_is_not_shown_down_and_idle_panic_mode_is_left_out() {
    let mut config = test_config("status-failback");
    config.shop.failback_hold = Duration::from_secs(60);
    let demo = Demo::start(config).await.unwrap();
    let http = Http::new(demo.url());

    // The primary region's catalog goes down: its site takes no traffic, and its balancer,
    // with no healthy replica, is in panic mode, which means nothing there.
    http.fault("catalog", "us-east", "*", "down").await;
    let site = eventually("us-east down", Duration::from_secs(20), || {
        let http = http.clone();
        async move {
            let site = status(&http).await["services"][CATALOG]["sites"][US_EAST].clone();
            (site["health"] == "down" && site["panic"] == true).then_some(site)
        }
    })
    .await;
    assert_eq!(site["traffic_share"].as_f64(), Some(0.0));
    assert_eq!(site["panic_note"], Value::Null, "{site}");
    assert_eq!(site["held_for_failback"], false);
    assert_eq!(site["balancer"], "catalog-us-east");
    let page = http.get("/status").await.body;
    assert!(!page.contains("panic mode"), "{page}");

    // Every replica is healthy again; the site waits out the 60 s hold.
    http.reset_faults().await;
    let site = eventually("us-east healthy and held", Duration::from_secs(20), || {
        let http = http.clone();
        async move {
            let site = status(&http).await["services"][CATALOG]["sites"][US_EAST].clone();
            let healthy = site["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["health"] == "healthy");
            (healthy && site["held_for_failback"] == true).then_some(site)
        }
    })
    .await;
    assert_eq!(
        site["routable"], false,
        "no traffic during the hold: {site}"
    );
    assert_eq!(site["traffic_share"].as_f64(), Some(0.0));
    let left = site["failback_in_secs"].as_f64().unwrap();
    assert!(left > 0.0 && left <= 60.0, "{site}");
    let health = site["health"].as_str().unwrap();
    assert!(
        health.starts_with("healthy, held for failback, ") && health.ends_with(" s left"),
        "{health}"
    );
    let page = http.get("/status").await.body;
    assert!(page.contains("healthy, held for failback, "), "{page}");
}
