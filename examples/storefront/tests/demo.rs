//! The storefront's proof, over real HTTP against the demo started in-process on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use storefront::Demo;
use storefront::fleet::{Region, ReplicaId, ServiceName};
use support::{Http, TOKEN, cart_with, eventually, test_config};

async fn start(name: &str) -> (Demo, Http) {
    let demo = Demo::start(test_config(name)).await.unwrap();
    let http = Http::new(demo.url());
    (demo, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders() {
    let (_demo, http) = start("pages").await;
    for (path, text) in [
        ("/", "Featured products"),
        ("/products", "All products"),
        ("/products?page=3", "Page 3 of"),
        ("/products/42", "Add to cart"),
        ("/search?q=lantern", "results for"),
        ("/search", "Search"),
        ("/cart", "Your cart is empty"),
        ("/checkout", "Checkout"),
        ("/healthz", "ok"),
        ("/status", "Live status"),
    ] {
        let r = http.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert!(r.body.contains(text), "{path} lacks {text:?}: {}", r.body);
        assert!(
            r.header("x-rampart-degraded").is_none(),
            "{path} marked degraded"
        );
    }
    // Product pages: plain links to each other, cacheable, never a cookie.
    let r = http.get("/products/42").await;
    assert!(r.body.contains("href=\"/products/"), "{}", r.body);
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=30, stale-if-error=86400")
    );
    assert!(r.header("set-cookie").is_none());
    // Recommendations are on the product page when their service is healthy.
    assert!(r.body.contains("Customers also bought"));
    assert!(!r.body.contains("taking a break"), "{}", r.body);
    // The status page refreshes itself; the JSON names every service, site and replica.
    let r = http.get("/status").await;
    assert!(r.body.contains("http-equiv=\"refresh\""));
    let r = http.get("/status.json").await;
    let json: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let services = json["services"].as_array().unwrap();
    assert_eq!(services.len(), 3);
    for s in services {
        let sites = s["sites"].as_array().unwrap();
        assert_eq!(sites[0]["region"], "us-east");
        assert_eq!(sites[1]["region"], "eu-west");
        assert_eq!(sites[0]["replicas"].as_array().unwrap().len(), 3);
        assert!(s["breaker"].is_string());
    }
    // Metrics in the Prometheus text format.
    let r = http.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("storefront_http_requests_total"),
        "{}",
        r.body
    );
    // Unknown pages are a 404 page, not the apology.
    let r = http.get("/no/such/page").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = http.get("/products/99999").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = http.get("/orders/99999").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Cart, checkout and the order page.
    let (cookie, key) = cart_with(&http, 5, 2).await;
    // Even for a customer with a cart, product pages set no cookie (they stay cacheable).
    let r = http.get_with("/products/5", &[("cookie", &cookie)]).await;
    assert!(r.header("set-cookie").is_none());
    let r = http.get_with("/cart", &[("cookie", &cookie)]).await;
    assert!(r.body.contains("Proceed to checkout"), "{}", r.body);
    let r = http.get_with("/checkout", &[("cookie", &cookie)]).await;
    assert!(
        r.body
            .contains(&format!("name=\"idempotency_key\" value=\"{key}\"")),
        "{}",
        r.body
    );
    let r = http
        .post_form(
            "/checkout",
            Some(&cookie),
            &format!("idempotency_key={key}&customer=Ada&email=ada%40example.com"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let order = r.header("location").unwrap().to_owned();
    let r = http.get(&order).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Order confirmed"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_catalog_replica_down_no_request_fails() {
    let (demo, http) = start("one-down").await;
    http.fault("catalog", "us-east", "0", "down").await;
    for i in 1..=60u32 {
        let path = match i % 3 {
            0 => format!("/products/{i}"),
            1 => "/".to_owned(),
            _ => "/search?q=oak".to_owned(),
        };
        let r = http.get(&path).await;
        assert_eq!(r.status, StatusCode::OK, "request {i} to {path} failed");
        assert!(
            r.header("x-rampart-stale").is_none(),
            "{path} was served stale"
        );
        assert!(!r.body.contains("Search is unavailable"), "{path} degraded");
        assert!(
            r.header("x-rampart-degraded").is_none(),
            "{path} marked degraded"
        );
    }
    // The downed replica really refuses connections, and the active checks see it.
    let addr = demo.fleet().upstreams()[&ServiceName::Catalog][&Region::UsEast][0];
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    eventually(
        "replica 0 unhealthy on /status",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move {
                let status: serde_json::Value =
                    serde_json::from_str(&http.get("/status.json").await.body).unwrap();
                let r = &status["services"][0]["sites"][0]["replicas"][0];
                (r["health"] == "unhealthy" && r["fault"] == "down").then_some(())
            }
        },
    )
    .await;
    for i in 1..=20u32 {
        assert_eq!(
            http.get(&format!("/products/{i}")).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_down_everywhere_stale_pages_then_apology() {
    let (_demo, http) = start("catalog-down").await;
    let seen = http.get("/products/7").await;
    assert_eq!(seen.status, StatusCode::OK);
    let name_line = seen
        .body
        .lines()
        .find(|l| l.starts_with("<h1>"))
        .unwrap()
        .to_owned();

    http.fault("catalog", "*", "*", "down").await;

    // A page seen before comes back stale, with its age.
    let r = http.get("/products/7").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.header("age").is_some(), "no Age: {:?}", r.headers);
    assert_eq!(r.header("x-rampart-stale"), Some("1"));
    assert!(r.body.contains(&name_line));

    // An unseen one is the apology, with Retry-After and no caching.
    let r = http
        .get_with("/products/8", &[("accept", "text/html")])
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("taking a short break"), "{}", r.body);

    // Machines asking for problem+json get RFC 9457.
    let r = http
        .get_with("/products/9", &[("accept", "application/problem+json")])
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/problem+json")
    );
    let problem: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(problem["status"], 503);
    assert!(r.header("retry-after").is_some());

    // The catalog's breaker opened: it fails fast now instead of trying dead regions.
    eventually("catalog breaker open", Duration::from_secs(20), || {
        let http = http.clone();
        async move {
            let _ = http.get("/products/10").await;
            let status: serde_json::Value =
                serde_json::from_str(&http.get("/status.json").await.body).unwrap();
            (status["services"][0]["breaker"] == "open").then_some(())
        }
    })
    .await;

    // The cart still shows its lines, without the details only the catalog knows.
    let (cookie, _key) = cart_with(&http, 12, 1).await;
    let r = http.get_with("/cart", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Product #12"), "{}", r.body);
    assert!(r.body.contains("Proceed to checkout"));
    assert_eq!(r.header("x-rampart-degraded"), Some("cart-partial"));

    // Search fails to a friendly partial page, not the apology.
    let r = http.get("/search?q=oak").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Search is unavailable for a moment"));
    // Marked for clients (and the chaos runner) without reading the body.
    assert_eq!(r.header("x-rampart-degraded"), Some("search-partial"));

    // Recovery: fresh pages again.
    http.reset_faults().await;
    eventually(
        "fresh product page after recovery",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move {
                let r = http.get("/products/8").await;
                (r.status == StatusCode::OK && r.header("x-rampart-stale").is_none()).then_some(())
            }
        },
    )
    .await;
}

/// The share of the catalog's traffic the GSLB sends to `region` (0 = us-east, 1 = eu-west),
/// and whether every replica there is healthy.
async fn catalog_site(http: &Http, site: usize) -> (f64, bool) {
    let status: serde_json::Value =
        serde_json::from_str(&http.get("/status.json").await.body).unwrap();
    let s = &status["services"][0]["sites"][site];
    let healthy = s["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["health"] == "healthy");
    (s["traffic_share"].as_f64().unwrap(), healthy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_region_fails_over_to_the_other_and_back() {
    let (_demo, http) = start("failover").await;
    eventually("us-east takes the traffic", Duration::from_secs(20), || {
        let http = http.clone();
        async move {
            let (share, healthy) = catalog_site(&http, 0).await;
            (share > 0.99 && healthy).then_some(())
        }
    })
    .await;
    http.fault("catalog", "us-east", "*", "down").await;
    // Every request succeeds while the selector moves the traffic to eu-west.
    for i in 1..=40u32 {
        let r = http.get(&format!("/products/{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert!(
            r.header("x-rampart-stale").is_none(),
            "request {i} was stale"
        );
    }
    eventually("eu-west takes the traffic", Duration::from_secs(20), || {
        let http = http.clone();
        async move { (catalog_site(&http, 1).await.0 > 0.99).then_some(()) }
    })
    .await;
    // us-east comes back: after its health checks pass and the failback hold, it gets the
    // traffic back.
    http.reset_faults().await;
    eventually(
        "traffic fails back to us-east",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            async move {
                let (share, healthy) = catalog_site(&http, 0).await;
                (share > 0.99 && healthy).then_some(())
            }
        },
    )
    .await;
    for i in 41..=50u32 {
        assert_eq!(
            http.get(&format!("/products/{i}")).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_down_product_page_still_renders() {
    let (_demo, http) = start("recs-down").await;
    http.fault("recommendations", "*", "*", "error").await;
    for id in [3u32, 4, 5] {
        let r = http.get(&format!("/products/{id}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.contains("Add to cart"));
        // The optional section is left out, heading and all.
        assert!(!r.body.contains("Customers also bought"), "{}", r.body);
    }
    http.fault("recommendations", "*", "*", "hang").await;
    let r = http.get("/products/6").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.body.contains("Customers also bought"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_down_order_is_acknowledged_then_confirmed_once() {
    let (demo, http) = start("checkout-down").await;
    let (cookie, key) = cart_with(&http, 11, 3).await;
    http.fault("checkout", "*", "*", "down").await;

    let form = format!("idempotency_key={key}&customer=Grace&email=grace%40example.com");
    let first = http.post_form("/checkout", Some(&cookie), &form).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert!(first.body.contains("Order received, confirmation pending"));
    assert_eq!(first.header("x-rampart-degraded"), Some("order-pending"));
    let location = first.header("location").unwrap().to_owned();

    // The same key again (a double click): the same order.
    let second = http.post_form("/checkout", Some(&cookie), &form).await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(second.header("location"), Some(location.as_str()));

    let r = http.get(&location).await;
    assert!(r.body.contains("confirmation pending"), "{}", r.body);
    assert_eq!(demo.fleet().checkout_db().count_key(&key).unwrap(), 0);

    // Checkout recovers: the worker replays the order until it is confirmed.
    http.reset_faults().await;
    eventually(
        "order confirmed after recovery",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let location = location.clone();
            async move {
                http.get(&location)
                    .await
                    .body
                    .contains("Order confirmed")
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(demo.fleet().checkout_db().count_key(&key).unwrap(), 1);

    // Submitting the key once more still gives the one order.
    let third = http.post_form("/checkout", Some(&cookie), &form).await;
    assert_eq!(third.status, StatusCode::SEE_OTHER);
    assert_eq!(third.header("location"), Some(location.as_str()));
    assert_eq!(demo.fleet().checkout_db().count_key(&key).unwrap(), 1);
    assert_eq!(demo.shop().outbox().pending_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_checkout_still_acknowledges_the_order_in_time() {
    let (demo, http) = start("checkout-hang").await;
    let (cookie, key) = cart_with(&http, 21, 1).await;
    http.fault("checkout", "*", "*", "hang").await;
    let form = format!("idempotency_key={key}&customer=Lin&email=lin%40example.com");
    // The checkout budget is half the 2.5 s page deadline. The client gives up after 8 s (a
    // generous safety margin over that, enforced by the client, not a measured duration): an
    // answer at all means the shop did not wait on the hanging service.
    let r = http
        .post_form_within("/checkout", Some(&cookie), &form, Duration::from_secs(8))
        .await
        .expect("the order is acknowledged before the client's 8 s timeout");
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.header("x-rampart-degraded"), Some("order-pending"));
    let location = r.header("location").unwrap().to_owned();
    http.reset_faults().await;
    eventually(
        "order confirmed after the hang",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let location = location.clone();
            async move {
                http.get(&location)
                    .await
                    .body
                    .contains("Order confirmed")
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(demo.fleet().checkout_db().count_key(&key).unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_refuse_bad_tokens_and_unknown_targets() {
    let (demo, http) = start("admin").await;
    let body = r#"{"service": "catalog", "region": "us-east", "replica": 0, "fault": "down"}"#;
    let json = ("content-type", "application/json");

    let r = http
        .send(Method::POST, "/admin/faults", &[json], Some(body))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    for bad in ["Bearer wrong-token", "Bearer ", TOKEN, "Basic dGVzdA=="] {
        let r = http
            .send(
                Method::POST,
                "/admin/faults",
                &[json, ("authorization", bad)],
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let r = http
        .send(Method::POST, "/admin/faults/reset", &[], None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Nothing changed.
    let id = ReplicaId::new(ServiceName::Catalog, Region::UsEast, 0);
    assert_eq!(demo.fleet().faults().get(id).fault.as_str(), "none");

    let auth = format!("Bearer {TOKEN}");
    let ok = [json, ("authorization", auth.as_str())];
    for (body, says) in [
        (
            r#"{"service": "cart", "region": "*", "replica": 0, "fault": "down"}"#,
            "unknown service \"cart\"",
        ),
        (
            r#"{"service": "catalog", "region": "ap-south", "replica": 0, "fault": "down"}"#,
            "unknown region \"ap-south\"",
        ),
        (
            r#"{"service": "catalog", "region": "*", "replica": 3, "fault": "down"}"#,
            "unknown replica 3",
        ),
        (
            r#"{"service": "catalog", "region": "*", "replica": "all", "fault": "down"}"#,
            "unknown replica \"all\"",
        ),
        (
            r#"{"service": "catalog", "region": "*", "replica": 0, "fault": "explode"}"#,
            "unknown fault \"explode\"",
        ),
        ("not json", "invalid JSON"),
    ] {
        let r = http
            .send(Method::POST, "/admin/faults", &ok, Some(body))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let err: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(
            err["error"].as_str().unwrap().contains(says),
            "{body}: {}",
            r.body
        );
    }

    let r = http
        .send(Method::POST, "/admin/faults", &ok, Some(body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("catalog/us-east/0"));
    assert_eq!(demo.fleet().faults().get(id).fault.as_str(), "down");
    let r = http.send(Method::GET, "/admin/faults", &ok, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = http
        .send(
            Method::POST,
            "/admin/faults/reset",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(demo.fleet().faults().get(id).fault.as_str(), "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_catalog_never_holds_a_page_for_long() {
    let (_demo, http) = start("hang").await;
    assert_eq!(http.get("/products/1").await.status, StatusCode::OK);
    http.fault("catalog", "*", "*", "hang").await;
    // The page deadline is 2.5 s in this configuration (each attempt 1 s); "a few seconds" is
    // the promise. The client gives up after 8 s: a generous safety margin over the deadline,
    // enforced by the client rather than measured, so a page that waited on the hanging
    // catalog would fail here as "no answer" instead of passing slowly.
    for path in ["/products/2", "/products/1", "/", "/search?q=oak", "/cart"] {
        let r = http
            .get_within(path, Duration::from_secs(8))
            .await
            .unwrap_or_else(|| panic!("{path}: no answer before the client's 8 s timeout"));
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.status
        );
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                r.header("retry-after").is_some(),
                "{path}: apology without Retry-After"
            );
        }
    }
    // Search answered with its partial page, marked as such.
    let r = http
        .get_within("/search?q=lamp", Duration::from_secs(8))
        .await
        .expect("search answers before the client's timeout");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-rampart-degraded"), Some("search-partial"));
    // The seen page is stale, the unseen one the apology.
    let r = http.get("/products/1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-rampart-stale"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downed_replica_refuses_connections_and_returns_on_the_same_port() {
    let (demo, http) = start("rebind").await;
    let addr = demo.fleet().upstreams()[&ServiceName::Checkout][&Region::EuWest][2];
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    http.fault("checkout", "eu-west", "2", "down").await;
    eventually(
        "connections refused",
        Duration::from_secs(10),
        || async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    http.fault("checkout", "eu-west", "2", "none").await;
    let probe = Http::new(format!("http://{addr}"));
    eventually("the replica answers again", Duration::from_secs(10), || {
        let probe = probe.clone();
        async move {
            let ok = tokio::net::TcpStream::connect(addr).await.is_ok();
            (ok && probe.get("/healthz").await.status == StatusCode::OK).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_and_shop_run_as_separate_parts() {
    let fleet_cfg = test_config("fleet-part");
    let fleet = storefront::FleetProcess::start(fleet_cfg).await.unwrap();
    // The shop is told where the fleet is through the TOML the fleet prints.
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\nfleet_control = \"http://{}\"\n{}",
        fleet.addr(),
        storefront::fleet::upstreams_toml(fleet.fleet().upstreams())
    );
    let mut shop_cfg = storefront::config::Config::from_toml_str(&toml).unwrap();
    shop_cfg.data_dir = support::temp_dir("shop-part");
    let shop = storefront::ShopProcess::start(shop_cfg).await.unwrap();
    let http = Http::new(format!("http://{}", shop.addr()));
    assert_eq!(http.get("/products/3").await.status, StatusCode::OK);
    // Fault control through the shop reaches the fleet's registry.
    http.fault("recommendations", "eu-west", "1", "slow").await;
    let id = ReplicaId::new(ServiceName::Recommendations, Region::EuWest, 1);
    assert_eq!(fleet.fleet().faults().get(id).fault.as_str(), "slow");
    let auth = format!("Bearer {TOKEN}");
    let r = http
        .send(
            Method::POST,
            "/admin/faults",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(r#"{"service": "nope", "region": "*", "replica": "*", "fault": "down"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("unknown service"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_flaky_replicas_do_what_they_say() {
    let (demo, http) = start("slow-flaky").await;
    let addr = demo.fleet().upstreams()[&ServiceName::Catalog][&Region::EuWest][1];
    let replica = Http::new(format!("http://{addr}"));
    let auth = format!("Bearer {TOKEN}");
    let set = |body: &'static str| {
        let http = http.clone();
        let auth = auth.clone();
        async move {
            let r = http
                .send(
                    Method::POST,
                    "/admin/faults",
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    Some(body),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
    };
    set(r#"{"service": "catalog", "region": "eu-west", "replica": 1, "fault": "slow", "latency": "400ms"}"#).await;
    // The injected latency is a sleep of 400 ms: a client that gives up after 100 ms never
    // sees the answer, one that waits longer does.
    assert!(
        replica
            .get_within("/products/1", Duration::from_millis(100))
            .await
            .is_none(),
        "a slow replica answered within 100 ms"
    );
    let r = replica.get("/products/1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-served-by"), Some("catalog/eu-west/1"));

    set(r#"{"service": "catalog", "region": "eu-west", "replica": 1, "fault": "flaky", "error_rate": 1.0}"#).await;
    for _ in 0..5 {
        assert_eq!(
            replica.get("/products/1").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    set(r#"{"service": "catalog", "region": "eu-west", "replica": 1, "fault": "flaky", "error_rate": 0.0}"#).await;
    for _ in 0..5 {
        assert_eq!(replica.get("/products/1").await.status, StatusCode::OK);
    }
    set(r#"{"service": "catalog", "region": "eu-west", "replica": 1, "fault": "error"}"#).await;
    assert_eq!(
        replica.get("/healthz").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_demo_stops_every_server_and_connection() {
    let (demo, http) = start("drop").await;
    assert_eq!(http.get("/products/1").await.status, StatusCode::OK);
    let shop = demo.addr();
    let replica = demo.fleet().upstreams()[&ServiceName::Catalog][&Region::UsEast][0];
    // A kept-alive connection to the shop, served once before the drop.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut open = tokio::net::TcpStream::connect(shop).await.unwrap();
    open.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = open.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(demo);
    for addr in [shop, replica] {
        eventually(
            "connections refused after drop",
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(addr)
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await;
    }
    // The open connection was closed by the server, not left to a detached task.
    let _ = open
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let read = tokio::time::timeout(Duration::from_secs(10), open.read(&mut buf))
        .await
        .expect("the connection is closed, not hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_order_survives_a_restart_of_the_storefront() {
    let cfg = test_config("restart");
    let data_dir = cfg.data_dir.clone();
    let demo = Demo::start(cfg).await.unwrap();
    let http = Http::new(demo.url());
    let (cookie, key) = cart_with(&http, 17, 2).await;
    http.fault("checkout", "*", "*", "down").await;
    let form = format!("idempotency_key={key}&customer=Ken&email=ken%40example.com");
    let r = http.post_form("/checkout", Some(&cookie), &form).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let location = r.header("location").unwrap().to_owned();
    // The process goes away with the order still pending (only the outbox has it).
    drop(demo);

    // A new process on the same data directory, checkout healthy: the order gets confirmed.
    let mut cfg = test_config("restart-again");
    cfg.data_dir = data_dir;
    let demo = Demo::start(cfg).await.unwrap();
    let http = Http::new(demo.url());
    eventually(
        "the order from before the restart is confirmed",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let location = location.clone();
            async move {
                http.get(&location)
                    .await
                    .body
                    .contains("Order confirmed")
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(demo.fleet().checkout_db().count_key(&key).unwrap(), 1);
    // And the same form once more is still that one order.
    let r = http.post_form("/checkout", Some(&cookie), &form).await;
    assert_eq!(r.header("location"), Some(location.as_str()));
    assert_eq!(demo.fleet().checkout_db().count_key(&key).unwrap(), 1);
}
