//! What a shopper and an operator see at the shop's front door, over real HTTP against the demo
//! on port 0: the fault API refuses what it cannot mean, error answers and the apology wear the
//! shop's look, page numbers and product ids are strict, and carts show their totals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http::{Method, StatusCode};
use storefront::Demo;
use storefront::fleet::{Fault, ServiceName};
use support::{Http, Resp, TOKEN, cart_with, eventually, temp_dir, test_config};

async fn start(name: &str) -> (Demo, Http) {
    let demo = Demo::start(test_config(name)).await.unwrap();
    let http = Http::new(demo.url());
    (demo, http)
}

fn faulted(demo: &Demo) -> usize {
    demo.fleet()
        .faults()
        .snapshot()
        .iter()
        .filter(|(_, s)| s.fault != Fault::None)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_api_refuses_unknown_keys_nulls_and_huge_latencies_naming_the_key() {
    let (demo, http) = start("fault-strict").await;
    let auth = format!("Bearer {TOKEN}");
    let json = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    for (body, says) in [
        // A typo must not widen the target to every region and replica.
        (
            r#"{"service":"recommendations","regoin":"us-east","replcia":0,"fault":"error"}"#,
            "unknown field `regoin`",
        ),
        (
            r#"{"service":"catalog","region":null,"replica":0,"fault":"down"}"#,
            "`region` must not be null",
        ),
        (
            r#"{"service":"catalog","region":"us-east","replica":null,"fault":"down"}"#,
            "`replica` must not be null",
        ),
        (
            r#"{"service":"catalog","region":"us-east","replica":0,"fault":"slow","latency":null}"#,
            "`latency` must not be null",
        ),
        (
            r#"{"service":"catalog","region":"us-east","replica":0,"fault":"flaky","error_rate":null}"#,
            "`error_rate` must not be null",
        ),
        (
            r#"{"service":"catalog","region":"us-east","replica":0,"fault":"slow","latency":"1year"}"#,
            "at most 1h",
        ),
        (
            r#"{"service":"catalog","region":"us-east","replica":0,"fault":"slow","latency":"61m"}"#,
            "at most 1h",
        ),
    ] {
        let r = http
            .send(Method::POST, "/admin/faults", &json, Some(body))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        let err: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert!(
            err["error"].as_str().unwrap().contains(says),
            "{body}: {}",
            r.body
        );
        assert_eq!(faulted(&demo), 0, "{body} changed a replica");
    }
    // Left out still means "every": region and replica default to "*".
    let r = http
        .send(
            Method::POST,
            "/admin/faults",
            &json,
            Some(r#"{"service":"recommendations","fault":"slow","latency":"1h"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(faulted(&demo), 6);
    assert!(
        demo.fleet()
            .faults()
            .snapshot()
            .iter()
            .all(|(id, s)| (id.service == ServiceName::Recommendations) == (s.fault == Fault::Slow))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_api_wants_json_and_takes_the_bearer_scheme_in_any_case() {
    let (demo, http) = start("fault-media").await;
    let body = r#"{"service": "catalog", "region": "us-east", "replica": 0, "fault": "down"}"#;
    let auth = format!("Bearer {TOKEN}");
    for content_type in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        let r = http
            .send(Method::POST, "/admin/faults", &headers, Some(body))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {}",
            r.body
        );
        assert!(r.body.contains("application/json"), "{}", r.body);
        assert_eq!(faulted(&demo), 0);
    }
    // Without the token it is still a 401 first: the media type tells an outsider nothing.
    let r = http
        .send(
            Method::POST,
            "/admin/faults",
            &[("content-type", "text/plain")],
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // RFC 9110: the scheme is case-insensitive; parameters on the media type are fine.
    for (scheme, content_type) in [
        ("bearer", "application/json; charset=utf-8"),
        ("BEARER", "Application/JSON"),
        ("Bearer", "application/json"),
    ] {
        let auth = format!("{scheme} {TOKEN}");
        let r = http
            .send(
                Method::POST,
                "/admin/faults",
                &[("authorization", &auth), ("content-type", content_type)],
                Some(body),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{scheme} {content_type}: {}",
            r.body
        );
        let r = http
            .send(
                Method::POST,
                "/admin/faults/reset",
                &[("authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{scheme}: {}", r.body);
    }
    let r = http
        .send(
            Method::GET,
            "/admin/faults",
            &[("authorization", &format!("bEaReR {TOKEN}"))],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// The shop's own look: its header with the brand and the navigation.
fn assert_shop_look(what: &str, r: &Resp) {
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("text/html")),
        "{what}: {:?}",
        r.headers
    );
    for needle in [
        "<a class=\"brand\" href=\"/\">Rampart Store</a>",
        "<a href=\"/products\">Products</a>",
        "<a href=\"/cart\">Cart</a>",
        "action=\"/search\"",
    ] {
        assert!(r.body.contains(needle), "{what} lacks {needle}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_and_the_apology_wear_the_shops_look() {
    let (demo, http) = start("branded").await;
    let form = |ct: &'static str, body: &'static str| {
        let http = http.clone();
        async move {
            http.send(
                Method::POST,
                "/cart/add",
                &[("content-type", ct)],
                Some(body),
            )
            .await
        }
    };
    for (what, r, status) in [
        (
            "a page number that is not a number",
            http.get("/products?page=two").await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "a form sent as text",
            form("text/plain", "product_id=5").await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "a form without a product",
            form("application/x-www-form-urlencoded", "product_id=five").await,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a method the page does not take",
            http.send(Method::DELETE, "/cart", &[], None).await,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_shop_look(what, &r);
        assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
        // The framework's own wording (it names internals) stays out.
        assert!(!r.body.contains("Failed to"), "{what}: {}", r.body);
    }
    let r = http.send(Method::DELETE, "/cart", &[], None).await;
    assert!(r.header("allow").is_some(), "a 405 keeps its Allow header");

    // 413: a form larger than the shop accepts (2 MB), over a raw socket so that the client
    // keeps sending while the shop has already answered.
    let r = too_large_form(&demo.url()).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(
        r.contains("<a class=\"brand\" href=\"/\">Rampart Store</a>"),
        "{r}"
    );

    // The apology: the catalog down everywhere, a page never seen before (so no stale copy).
    http.fault("catalog", "*", "*", "down").await;
    let r = eventually("the apology", Duration::from_secs(20), || {
        let http = http.clone();
        async move {
            let r = http.get("/products/77").await;
            (r.status == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
        }
    })
    .await;
    assert!(r.body.contains("taking a short break"), "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_shop_look("the apology", &r);
}

/// `POST /cart/add` with a 3 MB form, sent over a raw socket; the answer as text.
async fn too_large_form(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let len = 3 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST /cart/add HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {len}\r\n\r\nproduct_id=5&pad="
        );
        let _ = wr.write_all(head.as_bytes()).await;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..len / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&answer).contains("</html>") {
                break;
            }
        }
    })
    .await;
    writer.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_numbers_and_product_ids_are_strict() {
    let (_demo, http) = start("strict-ids").await;
    // 300 products, 24 a page: pages 1 to 13.
    let r = http.get("/products?page=13").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Page 13 of 13"), "{}", r.body);
    for (path, status) in [
        // (2^61 + 1 - 1) * 24 wraps to 0 in 64 bits: it must not show page 1's products.
        ("/products?page=2305843009213693953", StatusCode::NOT_FOUND),
        ("/products?page=18446744073709551615", StatusCode::NOT_FOUND),
        ("/products?page=14", StatusCode::NOT_FOUND),
        ("/products?page=0", StatusCode::BAD_REQUEST),
        ("/products?page=-1", StatusCode::BAD_REQUEST),
        (
            "/products?page=99999999999999999999999",
            StatusCode::BAD_REQUEST,
        ),
        // One URL per product.
        ("/products/+5", StatusCode::NOT_FOUND),
        ("/products/0005", StatusCode::NOT_FOUND),
        ("/products/05", StatusCode::NOT_FOUND),
        ("/products/5abc", StatusCode::NOT_FOUND),
        ("/products/%2B5", StatusCode::NOT_FOUND),
        ("/products/4294967296", StatusCode::NOT_FOUND),
    ] {
        let r = http.get(path).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert_shop_look(path, &r);
        assert!(!r.body.contains("Add to cart"), "{path}: {}", r.body);
        assert!(!r.body.contains("Page 1 of"), "{path}: {}", r.body);
        assert_ne!(
            r.header("cache-control"),
            Some("public, max-age=30, stale-if-error=86400"),
            "{path}"
        );
    }
    let r = http.get("/products/5").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Add to cart"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_recommendations_leave_the_section_out() {
    let (_demo, http) = start("recs-left-out").await;
    let r = http.get("/products/3").await;
    assert!(r.body.contains("Customers also bought"), "{}", r.body);
    for fault in ["error", "hang"] {
        http.fault("recommendations", "*", "*", fault).await;
        for id in [4u32, 5] {
            let r = http.get(&format!("/products/{id}")).await;
            assert_eq!(r.status, StatusCode::OK);
            assert!(r.body.contains("Add to cart"), "{}", r.body);
            assert!(
                !r.body.contains("Customers also bought"),
                "{fault}: {}",
                r.body
            );
            assert!(!r.body.contains("taking a break"), "{fault}: {}", r.body);
        }
    }
}

/// The price of `quantity` of product `id` as the page shows it (`$12.34`).
fn price(id: u32, quantity: u64) -> (u64, String) {
    let products = storefront::catalog::generate(300);
    let cents = products[id as usize - 1].price_cents * quantity;
    (
        cents,
        format!("${}", storefront::catalog::format_cents(cents)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_and_checkout_show_the_total() {
    let (_demo, http) = start("totals").await;
    let (cookie, _) = cart_with(&http, 5, 2).await;
    let r = http
        .post_form("/cart/add", Some(&cookie), "product_id=7&quantity=3")
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (five, five_text) = price(5, 2);
    let (seven, seven_text) = price(7, 3);
    let total = format!("${}", storefront::catalog::format_cents(five + seven));
    for path in ["/cart", "/checkout"] {
        let r = http.get_with(path, &[("cookie", &cookie)]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        for needle in [&five_text, &seven_text, &total] {
            assert!(
                r.body.contains(needle.as_str()),
                "{path} lacks {needle}: {}",
                r.body
            );
        }
        assert!(r.body.contains("Total"), "{path}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_catalog_never_holds_up_the_checkout_form() {
    let (_demo, http) = start("checkout-hang").await;
    let (cookie, key) = cart_with(&http, 5, 1).await;
    http.fault("catalog", "*", "*", "hang").await;
    // Bounded by the client's own timeout: a form that waited on the catalog past the page
    // deadline would be the apology, not the form.
    let r = http
        .send(Method::GET, "/checkout", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body
            .contains(&format!("name=\"idempotency_key\" value=\"{key}\"")),
        "{}",
        r.body
    );
    assert!(r.body.contains("Product #5"), "{}", r.body);
    assert_eq!(r.header("x-rampart-degraded"), Some("cart-partial"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_two_products_in_the_catalog_share_a_name() {
    let (_demo, http) = start("unique-names").await;
    let mut names = std::collections::HashMap::new();
    for page in 1..=13 {
        let r = http.get(&format!("/products?page={page}")).await;
        assert_eq!(r.status, StatusCode::OK);
        for card in r
            .body
            .split("<div class=\"card\"><a href=\"/products/")
            .skip(1)
        {
            let (id, rest) = card.split_once("\">").unwrap();
            let name = rest.split_once("</a>").unwrap().0.to_owned();
            if let Some(other) = names.insert(name.clone(), id.to_owned()) {
                panic!("{name:?} is the name of products {other} and {id}");
            }
        }
    }
    assert_eq!(names.len(), 300);
}

/// Starts the `storefront` binary (`demo`, port 0) with `RUST_LOG` as given and returns its
/// output lines up to and including the banner's `admin token:` line.
fn demo_output_until_banner(rust_log: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_storefront"));
    cmd.args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(temp_dir("banner"))
        .args(["--admin-token", TOKEN])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match rust_log {
        Some(v) => cmd.env("RUST_LOG", v),
        None => cmd.env_remove("RUST_LOG"),
    };
    let mut child = cmd.spawn().expect("storefront starts");
    let (tx, rx) = mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let mut lines = Vec::new();
    loop {
        // A safety net for a child that never prints, not a timing claim.
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no banner within 60 s: {lines:#?}"));
        let done = line.contains("admin token:");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn the_demo_banner_is_the_first_thing_a_person_reads() {
    let lines = demo_output_until_banner(None);
    let first = lines.iter().find(|l| !l.trim().is_empty()).unwrap();
    assert_eq!(first, "Rampart storefront demo is running", "{lines:#?}");
    // The libraries' events are still there for whoever asks for them.
    let lines = demo_output_until_banner(Some("info"));
    assert!(
        lines.iter().any(|l| l.contains("INFO")),
        "RUST_LOG=info shows no INFO event: {lines:#?}"
    );
}
