//! Helpers shared by the storefront's integration tests: a demo on port 0 with short
//! intervals, a small HTTP client, and polling with a generous safety timeout.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub
)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use storefront::config::Config;

pub const TOKEN: &str = "test-admin-token-123";

/// A fresh data directory under the system temp dir.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "storefront-it-{name}-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A demo configuration for tests: port 0, temp data, short timeouts and intervals.
pub fn test_config(name: &str) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: temp_dir(name),
        admin_token: Some(TOKEN.to_owned()),
        ..Config::default()
    };
    c.fleet.slow_latency = Duration::from_millis(300);
    c.shop.upstream_timeout = Duration::from_secs(1);
    c.shop.page_deadline = Duration::from_millis(2500);
    c.shop.recommendations_budget = Duration::from_secs(1);
    c.shop.health_interval = Duration::from_millis(200);
    c.shop.health_timeout = Duration::from_millis(200);
    c.shop.outbox_retry_base = Duration::from_millis(50);
    c.shop.outbox_retry_max = Duration::from_millis(400);
    c.shop.breaker_open_for = Duration::from_millis(300);
    c.shop.failback_hold = Duration::from_millis(300);
    c.shop.ejection_time = Duration::from_millis(500);
    c.validate().unwrap();
    c
}

/// One answer, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            base: base.into(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("no answer within 30 s")
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// `GET path`, with the client giving up after `limit`: `None` when no complete answer
    /// came within it. A bound the client enforces, so a test can state "answers within a few
    /// seconds" without measuring a duration itself.
    pub async fn get_within(&self, path: &str, limit: Duration) -> Option<Resp> {
        tokio::time::timeout(limit, self.get(path)).await.ok()
    }

    /// `POST` a form, the client giving up after `limit` (see [`Http::get_within`]).
    pub async fn post_form_within(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &str,
        limit: Duration,
    ) -> Option<Resp> {
        tokio::time::timeout(limit, self.post_form(path, cookie, form))
            .await
            .ok()
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, &[], None).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, path, headers, None).await
    }

    pub async fn post_form(&self, path: &str, cookie: Option<&str>, form: &str) -> Resp {
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(c) = cookie {
            headers.push(("cookie", c));
        }
        self.send(Method::POST, path, &headers, Some(form)).await
    }

    /// `POST /admin/faults` with the test token.
    pub async fn fault(&self, service: &str, region: &str, replica: &str, fault: &str) -> Resp {
        let replica = if replica == "*" {
            "\"*\"".to_owned()
        } else {
            replica.to_owned()
        };
        let body = format!(
            r#"{{"service": "{service}", "region": "{region}", "replica": {replica}, "fault": "{fault}"}}"#
        );
        let auth = format!("Bearer {TOKEN}");
        let r = self
            .send(
                Method::POST,
                "/admin/faults",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                Some(&body),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "fault injection failed: {}",
            r.body
        );
        r
    }

    pub async fn reset_faults(&self) {
        let auth = format!("Bearer {TOKEN}");
        let r = self
            .send(
                Method::POST,
                "/admin/faults/reset",
                &[("authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
}

/// Polls `check` until it returns `Some`, or panics after `limit` (a safety net, not a
/// timing claim).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds a product to a fresh cart and returns the `cart=...` cookie and its key.
pub async fn cart_with(http: &Http, product_id: u32, quantity: u32) -> (String, String) {
    let r = http
        .post_form(
            "/cart/add",
            None,
            &format!("product_id={product_id}&quantity={quantity}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set = r.header("set-cookie").expect("a cart cookie");
    let cookie = set.split(';').next().unwrap().to_owned();
    let value = cookie.strip_prefix("cart=").unwrap();
    let key = value.split('.').next().unwrap().to_owned();
    (cookie, key)
}
