//! The pages' adaptive concurrency limit, over real HTTP against the demo started in-process
//! on port 0: `/status.json` and `/status` show it, and a burst past a small limit is shed
//! with fast `503`s carrying `Retry-After` while checkout keeps its share.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use http::StatusCode;
use serde_json::Value;
use storefront::Demo;
use support::{Http, cart_with, test_config};

async fn status(http: &Http) -> Value {
    let r = http.get("/status.json").await;
    assert_eq!(r.status, StatusCode::OK);
    serde_json::from_str(&r.body).unwrap()
}

fn partition<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["limiter"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no partition {name} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_limit_in_flight_and_sheds_per_partition() {
    let demo = Demo::start(test_config("limit-status")).await.unwrap();
    let http = Http::new(demo.url());
    assert_eq!(http.get("/products/1").await.status, StatusCode::OK);

    let s = status(&http).await;
    let l = &s["limiter"];
    assert_eq!(l["name"], "shop", "{l}");
    assert_eq!(l["algorithm"], "gradient2", "{l}");
    assert!(l["limit"].as_u64().unwrap() >= 8, "{l}");
    assert!(l["in_flight"].is_u64(), "{l}");
    let names: Vec<&str> = l["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["checkout", "pages", "recommendations"]);
    // The product page was admitted as a page, its recommendations call as one of theirs.
    assert!(
        partition(&s, "pages")["admitted"].as_u64().unwrap() >= 1,
        "{s}"
    );
    assert!(
        partition(&s, "recommendations")["admitted"]
            .as_u64()
            .unwrap()
            >= 1,
        "{s}"
    );
    for p in ["checkout", "pages", "recommendations"] {
        assert_eq!(partition(&s, p)["shed"], 0, "{s}");
    }
    // The other fields keep their shape.
    assert!(s["services"].is_array() && s["fallback"]["apologies"].is_u64());

    let page = http.get("/status").await.body;
    assert!(page.contains("Concurrency limit"), "{page}");
    assert!(page.contains("recommendations"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_limit_off_status_says_so_and_pages_are_served() {
    let mut config = test_config("limit-off");
    config.limit.enabled = false;
    let demo = Demo::start(config).await.unwrap();
    let http = Http::new(demo.url());
    assert_eq!(http.get("/products/1").await.status, StatusCode::OK);
    let s = status(&http).await;
    assert!(s["limiter"].is_null(), "{s}");
    assert!(
        http.get("/status")
            .await
            .body
            .contains("Concurrency limit: off")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_a_small_limit_is_shed_with_fast_503s_and_checkout_keeps_its_share() {
    let mut config = test_config("limit-burst");
    config.limit.algorithm = "fixed".into();
    config.limit.min_limit = 1;
    config.limit.initial_limit = 4;
    config.limit.max_limit = 4;
    let deadline = config.shop.page_deadline;
    let demo = Demo::start(config).await.unwrap();
    let http = Http::new(demo.url());

    // Carts first, while everything is quick.
    let mut carts = Vec::new();
    for i in 1..=8u32 {
        carts.push(cart_with(&http, i, 1).await);
    }
    // Every catalog call now takes 300 ms: the pages hold their slots.
    http.fault("catalog", "*", "*", "slow").await;
    // A shopper on the checkout page: the checkout partition is active and keeps its share.
    let r = http.get_with("/checkout", &[("cookie", &carts[0].0)]).await;
    assert_eq!(r.status, StatusCode::OK);

    let burst: Vec<_> = (0..40u32)
        .map(|i| {
            let http = http.clone();
            tokio::spawn(async move {
                http.get_within(&format!("/products/{}", i % 20 + 1), deadline)
                    .await
            })
        })
        .collect();
    let buyer = {
        let http = http.clone();
        tokio::spawn(async move {
            let mut acknowledged = 0;
            for (cookie, key) in &carts {
                let form = format!("idempotency_key={key}&customer=Ada&email=ada%40example.com");
                let r = http
                    .post_form_within("/checkout", Some(cookie), &form, deadline)
                    .await
                    .expect("a checkout answered within the page deadline");
                if matches!(r.status, StatusCode::ACCEPTED | StatusCode::SEE_OTHER) {
                    acknowledged += 1;
                } else {
                    eprintln!("checkout answered {}", r.status);
                }
            }
            acknowledged
        })
    };

    let (mut served, mut shed) = (0, 0);
    for page in burst {
        // Nothing waits longer than the page deadline.
        let r = page
            .await
            .unwrap()
            .expect("a page answered within the page deadline");
        match r.status {
            StatusCode::OK => served += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    r.header("retry-after").is_some(),
                    "a shed page carries Retry-After"
                );
                shed += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    let acknowledged = buyer.await.unwrap();
    assert_eq!(acknowledged, 8, "every checkout acknowledged");
    assert!(served >= 1, "some pages are served");
    assert!(
        shed >= 1,
        "a burst of 40 slow pages past a limit of 4 is shed"
    );

    let s = status(&http).await;
    assert_eq!(s["limiter"]["limit"], 4, "{s}");
    assert_eq!(partition(&s, "checkout")["shed"], 0, "{s}");
    assert!(
        partition(&s, "checkout")["admitted"].as_u64().unwrap() >= 9,
        "{s}"
    );
    assert_eq!(
        partition(&s, "pages")["shed"].as_u64().unwrap(),
        shed,
        "every 503 was a page shed by the limiter: {s}"
    );
    assert!(s["fallback"]["apologies"].as_u64().unwrap() >= shed, "{s}");
    http.reset_faults().await;
}
