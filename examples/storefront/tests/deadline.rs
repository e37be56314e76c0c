//! The page deadline travels with every upstream call: a catalog call never outlives the page
//! that asked for it. Over real sockets: the shop's own stack (breaker → GSLB → balancer →
//! HTTP endpoint) against loopback services that hang, and that honour the deadline they are
//! given the way a well-behaved service does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use storefront::config::LimitConfig;
use storefront::fleet::{Region, ServiceName, Upstreams};
use storefront::shop::{AdminState, FaultControl, Shop};
use support::{Http, eventually, temp_dir, test_config};
use tokio::net::TcpListener;

/// What one service saw: per request, the path, the deadline header (milliseconds), and
/// whether its work is over (cut at its deadline, or dropped because the caller hung up)
/// rather than still running its full length.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Call>>>);

#[derive(Debug, Clone)]
struct Call {
    path: String,
    deadline_ms: Option<u64>,
    ended: bool,
}

/// How long a call takes when nobody says how long the caller waits.
const HANG: Duration = Duration::from_secs(60);

/// A service whose every call hangs, but never past the deadline the caller sent: it stops
/// its work then and answers 504 (a caller still waiting would get it).
async fn hanging(State(seen): State<Seen>, uri: Uri, headers: HeaderMap) -> StatusCode {
    let deadline_ms = headers
        .get("x-rampart-deadline-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let index = {
        let mut calls = seen.0.lock().unwrap();
        calls.push(Call {
            path: uri.path().to_owned(),
            deadline_ms,
            ended: false,
        });
        calls.len() - 1
    };
    let _over = Over(seen, index);
    let work = deadline_ms.map_or(HANG, Duration::from_millis).min(HANG);
    tokio::time::sleep(work).await;
    StatusCode::GATEWAY_TIMEOUT
}

/// Marks a call's work over when its handler finishes or is dropped.
struct Over(Seen, usize);

impl Drop for Over {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.0.0.lock() {
            calls[self.1].ended = true;
        }
    }
}

async fn service(seen: Seen) -> SocketAddr {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(hanging)
        .with_state(seen);
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_call_never_outlives_the_page_that_asked_for_it() {
    let config = test_config("deadline");
    let page_deadline = config.shop.page_deadline;
    let catalog = Seen::default();
    let others = Seen::default();
    let mut upstreams = Upstreams::new();
    for (name, seen) in [
        (ServiceName::Catalog, &catalog),
        (ServiceName::Checkout, &others),
        (ServiceName::Recommendations, &others),
    ] {
        // Two replicas in the primary region, so that a retry on another replica is possible.
        let replicas = vec![service(seen.clone()).await, service(seen.clone()).await];
        upstreams.insert(name, BTreeMap::from([(Region::ALL[0], replicas)]));
    }
    let admin = AdminState {
        token: "t".repeat(32),
        faults: FaultControl::None,
    };
    let shop = Shop::start(
        &config.shop,
        &LimitConfig::default(),
        &upstreams,
        admin,
        &temp_dir("deadline-shop"),
    )
    .unwrap();
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = shop.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    // The catalog hangs: the page answers with its apology at its deadline.
    let page = Http::new(base).get("/products/1").await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );

    let calls: Vec<Call> = catalog
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.path == "/products/1")
        .cloned()
        .collect();
    assert!(!calls.is_empty(), "the page asked the catalog");
    for call in &calls {
        let ms = call
            .deadline_ms
            .unwrap_or_else(|| panic!("a catalog call without the page's deadline: {calls:?}"));
        assert!(
            u128::from(ms) <= page_deadline.as_millis(),
            "a catalog call was given more than the page's {page_deadline:?}: {calls:?}"
        );
    }
    // Later attempts share the page's budget rather than starting a new one.
    for pair in calls.windows(2) {
        assert!(
            pair[1].deadline_ms <= pair[0].deadline_ms,
            "a later attempt got a larger budget: {calls:?}"
        );
    }
    // And every one of those calls is over soon after the page, not after the catalog's own
    // minute of work.
    eventually(
        "every catalog call ends at the page's deadline",
        Duration::from_secs(15),
        || {
            let catalog = catalog.clone();
            async move {
                let calls = catalog.0.lock().unwrap();
                calls.iter().all(|c| c.ended).then_some(())
            }
        },
    )
    .await;
    drop(shop);
}
