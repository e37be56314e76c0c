//! Orders over loopback: order pages cannot be guessed or enumerated, an idempotency key
//! never hands out another customer's order, and with the PostgreSQL store an outage of the
//! database is a degraded mode (an honest apology, nothing acknowledged that is not stored,
//! and pending orders proceed when it is back).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod pg;
mod support;

use std::time::Duration;

use http::StatusCode;
use storefront::Demo;
use storefront::orders::is_public_id;
use support::{Http, cart_with, eventually, test_config};

async fn start(name: &str) -> (Demo, Http) {
    let demo = Demo::start(test_config(name)).await.unwrap();
    let http = Http::new(demo.url());
    (demo, http)
}

fn order_id(location: &str) -> &str {
    location
        .strip_prefix("/orders/")
        .unwrap_or_else(|| panic!("not an order location: {location}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_pages_have_unguessable_ids_and_small_ids_show_nothing() {
    let (_demo, http) = start("order-ids").await;
    let mut locations = Vec::new();
    for (customer, product) in [("Ada+Lovelace", 11), ("Grace+Hopper", 12)] {
        let (cookie, key) = cart_with(&http, product, 1).await;
        let form = format!("idempotency_key={key}&customer={customer}&email=x%40example.com");
        let r = http.post_form("/checkout", Some(&cookie), &form).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let location = r.header("location").unwrap().to_owned();
        assert!(is_public_id(order_id(&location)), "{location}");
        locations.push(location);
    }
    assert_ne!(locations[0], locations[1]);
    // The holder of the link sees the order.
    let r = http.get(&locations[0]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Ada Lovelace"), "{}", r.body);
    // Nobody can walk the orders by number, or by anything but the full id.
    let prefix = &order_id(&locations[0])[..31];
    for path in [
        "/orders/0".to_owned(),
        "/orders/1".to_owned(),
        "/orders/2".to_owned(),
        "/orders/3".to_owned(),
        format!("/orders/{prefix}"),
        format!("/orders/{}", order_id(&locations[0]).to_uppercase()),
    ] {
        let r = http.get(&path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!r.body.contains("Lovelace"), "{path}: {}", r.body);
        assert!(!r.body.contains("Hopper"), "{path}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_with_another_order_is_refused_without_showing_the_first() {
    let (demo, http) = start("order-key-reuse").await;
    let (cookie, key) = cart_with(&http, 11, 3).await;
    let form = format!("idempotency_key={key}&customer=Ada+Lovelace&email=ada%40example.com");
    let first = http.post_form("/checkout", Some(&cookie), &form).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    let location = first.header("location").unwrap().to_owned();

    // The same form again (a double click): the same order.
    let again = http.post_form("/checkout", Some(&cookie), &form).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(again.header("location"), Some(location.as_str()));
    // The same form after the first answer emptied the cart: still the same order.
    let emptied = http.post_form("/checkout", None, &form).await;
    assert_eq!(emptied.status, StatusCode::SEE_OTHER, "{}", emptied.body);
    assert_eq!(emptied.header("location"), Some(location.as_str()));

    // Someone else sends that key with their own order: refused, and told nothing.
    let (other_cookie, _) = cart_with(&http, 12, 1).await;
    let forged = format!("idempotency_key={key}&customer=Mallory&email=m%40example.com");
    for cookie in [Some(other_cookie.as_str()), None] {
        let r = http.post_form("/checkout", cookie, &forged).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert!(r.header("location").is_none());
        assert!(r.body.contains("already used"), "{}", r.body);
        assert!(!r.body.contains("Lovelace"), "{}", r.body);
        assert!(!r.body.contains(order_id(&location)), "{}", r.body);
    }
    // The same customer with other items under that key: refused as well.
    let (more_cookie, _) = cart_with(&http, 13, 2).await;
    let r = http.post_form("/checkout", Some(&more_cookie), &form).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(demo.fleet().checkout_db().count_key(&key).unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_checkout_apologises_and_pending_orders_proceed_when_it_is_back() {
    let Some(mut pg) = pg::postgres().await else {
        return;
    };
    let mut cfg = test_config("pg-outage");
    cfg.database_url = Some(pg.create_database("outage").await.unwrap());
    let demo = Demo::start(cfg).await.unwrap();
    let http = Http::new(demo.url());
    assert_eq!(demo.shop().outbox().store().kind(), "postgres");

    // An order stored while checkout is down: acknowledged as pending.
    let (cookie, key) = cart_with(&http, 11, 1).await;
    http.fault("checkout", "*", "*", "down").await;
    let form = format!("idempotency_key={key}&customer=Ada&email=ada%40example.com");
    let r = http.post_form("/checkout", Some(&cookie), &form).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let pending = r.header("location").unwrap().to_owned();

    // The database goes down; checkout comes back.
    pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    http.reset_faults().await;

    // A new checkout: an honest apology, not an acknowledgement.
    let (cookie2, key2) = cart_with(&http, 12, 2).await;
    let form2 = format!("idempotency_key={key2}&customer=Grace&email=grace%40example.com");
    let r = http.post_form("/checkout", Some(&cookie2), &form2).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert!(r.header("location").is_none());
    assert!(!r.body.contains("Order received"), "{}", r.body);
    // The order page cannot be read either: the apology again, never a wrong answer.
    let r = http.get(&pending).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // The shop itself stays up.
    assert_eq!(http.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(demo.fleet().checkout_db().count_key(&key2).unwrap(), 0);

    // The database is back: the pending order proceeds, by the worker alone.
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    eventually(
        "the pending order is confirmed once the database is back",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let pending = pending.clone();
            async move {
                let r = http.get(&pending).await;
                r.body.contains("Order confirmed").then_some(())
            }
        },
    )
    .await;
    assert_eq!(demo.fleet().checkout_db().count_key(&key).unwrap(), 1);
    // Nothing was stored for the apologised checkout; the customer can simply try again.
    assert!(demo.shop().outbox().by_key(&key2).await.unwrap().is_none());
    let r = http.post_form("/checkout", Some(&cookie2), &form2).await;
    // Acknowledged: confirmed at once (303), or recorded and pending (202) when the checkout
    // service did not answer within the page's budget on a busy machine.
    assert!(
        matches!(r.status, StatusCode::SEE_OTHER | StatusCode::ACCEPTED),
        "{} {}",
        r.status,
        r.body
    );
    let db = demo.fleet().checkout_db().clone();
    eventually(
        "the retried order reaches the checkout service",
        Duration::from_secs(30),
        || {
            let db = db.clone();
            let key2 = key2.clone();
            async move { (db.count_key(&key2).unwrap() == 1).then_some(()) }
        },
    )
    .await;
    assert_eq!(demo.fleet().checkout_db().count_key(&key2).unwrap(), 1);
    drop(demo);
    drop(pg);
}
