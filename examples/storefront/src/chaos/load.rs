//! The open-loop load: requests leave at a fixed arrival rate whatever the answers do, and
//! each latency is measured from the request's *intended* send time, so a stall shows up in
//! full instead of slowing the generator down (no coordinated omission; Gil Tene, "How NOT to
//! Measure Latency"). Latencies go into HDR histograms.
//!
//! The mix: home page, product list, product pages (mostly a hot set of products, so the
//! shops hold stale copies of them; some others), search, and checkouts (a cart cookie and
//! the checkout form, the idempotency key also sent as an `Idempotency-Key` header).
//!
//! Every response is classified ([`classify`]):
//! - **ok**: 200 fresh, or a checkout confirmed at once (303);
//! - **degraded**: a stale copy (`x-rampart-stale`, or `Age`), a page the shop marked
//!   degraded with `x-rampart-degraded` (the partial search page: `search-partial`), an order
//!   received with confirmation pending (202);
//! - **apology**: 503 with `Retry-After`;
//! - **error**: anything else — other statuses, a 503 without `Retry-After`, resets, timeouts.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AGE, CONTENT_TYPE, COOKIE, RETRY_AFTER};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::edge::EDGE_APOLOGY_HEADER;
use crate::shop::DEGRADED_HEADER;
use rampart::fallback::STALE_HEADER;

/// How a response counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Fresh and complete.
    Ok,
    /// Stale, partial, or an order pending confirmation.
    Degraded,
    /// 503 with `Retry-After`.
    Apology,
    /// Anything else.
    Error,
}

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /`.
    Home,
    /// `GET /products?page=N`.
    Products,
    /// `GET /products/{id}`.
    Product,
    /// `GET /search?q=`.
    Search,
    /// `POST /checkout`.
    Checkout,
}

/// Facts of one response, beyond its class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    /// The status was 503.
    pub status_503: bool,
    /// It carried `Retry-After`.
    pub retry_after: bool,
    /// The edge's own apology, with its trigger.
    pub edge_apology: Option<String>,
    /// A stale copy.
    pub stale: bool,
    /// It carried `Age`.
    pub age: bool,
    /// A partial page: the shop marked it with `x-rampart-degraded` (search unavailable).
    pub partial: bool,
    /// An order received, confirmation pending (202).
    pub pending: bool,
    /// An order confirmed at once (303).
    pub confirmed: bool,
}

/// Classifies one answer (see [`crate::chaos`]) by its status and headers; the string names
/// the error kind. The body is not read: a partial page is known by the shop's
/// [`DEGRADED_HEADER`], a stale copy by `x-rampart-stale` or `Age`.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use storefront::chaos::{Class, Kind, classify};
///
/// let mut h = HeaderMap::new();
/// h.insert("retry-after", "5".parse().unwrap());
/// assert_eq!(classify(Kind::Product, StatusCode::SERVICE_UNAVAILABLE, &h, b"").0, Class::Apology);
/// assert_eq!(classify(Kind::Product, StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"").0, Class::Error);
/// assert_eq!(classify(Kind::Checkout, StatusCode::ACCEPTED, &HeaderMap::new(), b"").0, Class::Degraded);
/// let mut partial = HeaderMap::new();
/// partial.insert("x-rampart-degraded", "search-partial".parse().unwrap());
/// assert_eq!(classify(Kind::Search, StatusCode::OK, &partial, b"").0, Class::Degraded);
/// assert_eq!(classify(Kind::Search, StatusCode::OK, &HeaderMap::new(), b"").0, Class::Ok);
/// ```
pub fn classify(
    kind: Kind,
    status: StatusCode,
    headers: &HeaderMap,
    _body: &[u8],
) -> (Class, ResponseFacts, Option<String>) {
    let mut f = ResponseFacts {
        status_503: status == StatusCode::SERVICE_UNAVAILABLE,
        retry_after: headers.contains_key(RETRY_AFTER),
        edge_apology: headers
            .get(EDGE_APOLOGY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        age: headers.contains_key(AGE),
        ..ResponseFacts::default()
    };
    if f.status_503 {
        return if f.retry_after {
            (Class::Apology, f, None)
        } else {
            (Class::Error, f, Some("503 without retry-after".into()))
        };
    }
    let class = match (kind, status) {
        (Kind::Checkout, StatusCode::SEE_OTHER) => {
            f.confirmed = true;
            Class::Ok
        }
        (Kind::Checkout, StatusCode::ACCEPTED) => {
            f.pending = true;
            Class::Degraded
        }
        (Kind::Checkout, _) => Class::Error,
        (_, StatusCode::OK) => {
            f.stale = headers.contains_key(STALE_HEADER) || f.age;
            f.partial = headers.contains_key(DEGRADED_HEADER);
            if f.stale || f.partial {
                Class::Degraded
            } else {
                Class::Ok
            }
        }
        _ => Class::Error,
    };
    let err = (class == Class::Error).then(|| format!("status {}", status.as_u16()));
    (class, f, err)
}

/// One measured request.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) phase: usize,
    /// Intended send time, from the start of the load.
    pub(crate) intended: Duration,
    /// From the intended send time to the end of the response body.
    pub(crate) latency: Duration,
    pub(crate) class: Class,
    pub(crate) facts: ResponseFacts,
    pub(crate) error: Option<String>,
    pub(crate) order_key: Option<String>,
    pub(crate) acknowledged: bool,
}

/// Products most requests go to (so that stale copies exist when the catalog goes down).
const HOT_PRODUCTS: u32 = 24;
const PRODUCTS: u32 = 300;
const QUERIES: [&str; 8] = [
    "lamp", "oak", "chair", "wool", "steel", "mug", "desk", "linen",
];

pub(crate) fn pick_kind(rng: &mut fastrand::Rng) -> Kind {
    match rng.u32(0..100) {
        0..15 => Kind::Home,
        15..25 => Kind::Products,
        25..70 => Kind::Product,
        70..90 => Kind::Search,
        _ => Kind::Checkout,
    }
}

fn product_id(rng: &mut fastrand::Rng) -> u32 {
    if rng.u32(0..100) < 85 {
        rng.u32(1..=HOT_PRODUCTS)
    } else {
        rng.u32(1..=PRODUCTS)
    }
}

/// A fresh idempotency key in the cart's format (32 hex digits).
fn new_key(rng: &mut fastrand::Rng) -> String {
    format!("{:016x}{:016x}", rng.u64(..), rng.u64(..))
}

/// Builds the request for `kind`; a checkout also returns its idempotency key.
pub(crate) fn build_request(
    kind: Kind,
    base: &str,
    rng: &mut fastrand::Rng,
) -> (Request<Full<Bytes>>, Option<String>) {
    let get = |path: String| {
        Request::get(format!("{base}{path}"))
            .header(ACCEPT, "text/html")
            .body(Full::default())
    };
    let built = match kind {
        Kind::Home => get("/".into()),
        Kind::Products => get(format!("/products?page={}", rng.u32(1..=4))),
        Kind::Product => get(format!("/products/{}", product_id(rng))),
        Kind::Search => get(format!("/search?q={}", QUERIES[rng.usize(..QUERIES.len())])),
        Kind::Checkout => {
            let key = new_key(rng);
            let cart = format!("cart={key}.{}-{}", product_id(rng), rng.u32(1..=3));
            let form =
                format!("idempotency_key={key}&customer=chaos-{key}&email=chaos%40example.com");
            let req = Request::post(format!("{base}/checkout"))
                .header(ACCEPT, "text/html")
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(COOKIE, cart)
                .header("idempotency-key", key.as_str())
                .body(Full::new(Bytes::from(form)));
            return match req {
                Ok(r) => (r, Some(key)),
                // Unreachable with these constant parts; fall back to the home page.
                Err(_) => (fallback_request(base), None),
            };
        }
    };
    (built.unwrap_or_else(|_| fallback_request(base)), None)
}

fn fallback_request(base: &str) -> Request<Full<Bytes>> {
    let mut r = Request::new(Full::default());
    if let Ok(uri) = format!("{base}/").parse() {
        *r.uri_mut() = uri;
    }
    r
}

/// The idempotency keys of the checkouts sent and not answered yet.
#[derive(Debug, Clone, Default)]
pub(crate) struct InFlight(Arc<Mutex<HashSet<String>>>);

impl InFlight {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, key: &str) {
        self.set().insert(key.to_owned());
    }

    pub(crate) fn remove(&self, key: &str) {
        self.set().remove(key);
    }

    /// How many checkouts are in flight.
    pub(crate) fn len(&self) -> usize {
        self.set().len()
    }

    /// Whether the checkout with `key` is still unanswered.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.set().contains(key)
    }
}

/// The load's settings.
#[derive(Debug, Clone)]
pub(crate) struct LoadPlan {
    /// `http://shop.example:<port>`: the shop's name, resolved by `resolver`.
    pub(crate) base: String,
    /// Resolves the shop's name through the DNS responder and sends each request to an
    /// address of the answer.
    pub(crate) resolver: Arc<super::region::ShopResolver>,
    /// Requests per second.
    pub(crate) rate: f64,
    /// When the load starts (phase 0 begins).
    pub(crate) start: Instant,
    /// Length of each phase.
    pub(crate) phase_len: Duration,
    /// Number of phases.
    pub(crate) phases: usize,
    /// Per-request timeout (counted as an error).
    pub(crate) timeout: Duration,
    /// Seed of the request mix.
    pub(crate) seed: u64,
    /// The phase run at another arrival rate (the surge), and that rate.
    pub(crate) surge: Option<(usize, f64)>,
}

/// Runs the load until the last phase ends and every request has finished; every sample
/// goes to `tx`. `checkouts_in_flight` holds the keys of the checkouts sent and not yet
/// answered.
pub(crate) async fn run(
    plan: LoadPlan,
    tx: mpsc::UnboundedSender<Sample>,
    checkouts_in_flight: InFlight,
) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let total = plan.phase_len * plan.phases as u32;
    // Intended send times, phase by phase, each at its phase's rate.
    let offsets = (0..plan.phases).flat_map(|phase| {
        let rate = match plan.surge {
            Some((p, r)) if p == phase => r,
            _ => plan.rate,
        };
        let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let begin = plan.phase_len * phase as u32;
        let len = plan.phase_len;
        (0u64..)
            .map(move |i| period.mul_f64(i as f64))
            .take_while(move |o| *o < len)
            .map(move |o| (phase, begin + o))
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (phase, offset) in offsets {
        if offset >= total {
            break;
        }
        let intended = plan.start + offset;
        tokio::time::sleep_until(intended).await;
        let kind = pick_kind(&mut rng);
        let (req, key) = build_request(kind, &plan.base, &mut rng);
        let client = client.clone();
        let resolver = plan.resolver.clone();
        let tx = tx.clone();
        let inflight = checkouts_in_flight.clone();
        let timeout = plan.timeout;
        tasks.spawn(async move {
            if let Some(k) = &key {
                inflight.insert(k);
            }
            let answer = tokio::time::timeout(timeout, async {
                let resp = resolver.request(&client, req).await.map_err(|e| {
                    if e.is_connect() {
                        "connect refused".to_owned()
                    } else {
                        "transport error".to_owned()
                    }
                })?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, 4 << 20)
                    .collect()
                    .await
                    .map_err(|_| "body cut short".to_owned())?
                    .to_bytes();
                Ok::<_, String>((parts, body))
            })
            .await;
            if let Some(k) = &key {
                inflight.remove(k);
            }
            let latency = intended.elapsed();
            let (class, facts, error) = match answer {
                Ok(Ok((parts, body))) => classify(kind, parts.status, &parts.headers, &body),
                Ok(Err(kind)) => (Class::Error, ResponseFacts::default(), Some(kind)),
                Err(_) => (
                    Class::Error,
                    ResponseFacts::default(),
                    Some("timeout".to_owned()),
                ),
            };
            let acknowledged = facts.confirmed || facts.pending;
            let _ = tx.send(Sample {
                phase,
                intended: offset,
                latency,
                class,
                facts,
                error,
                order_key: key,
                acknowledged,
            });
        });
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn classification_follows_the_issue() {
        let ok = StatusCode::OK;
        let c = |k, s, h: &HeaderMap, b: &[u8]| classify(k, s, h, b).0;
        assert_eq!(c(Kind::Product, ok, &headers(&[]), b"page"), Class::Ok);
        assert_eq!(
            c(
                Kind::Product,
                ok,
                &headers(&[("x-rampart-stale", "1"), ("age", "12")]),
                b""
            ),
            Class::Degraded
        );
        assert_eq!(
            c(Kind::Product, ok, &headers(&[("age", "3")]), b""),
            Class::Degraded
        );
        assert_eq!(
            c(
                Kind::Search,
                ok,
                &headers(&[("x-rampart-degraded", "search-partial")]),
                b""
            ),
            Class::Degraded
        );
        // The marker, not the text: a complete page that happens to contain the partial
        // page's words is still ok.
        assert_eq!(
            c(
                Kind::Search,
                ok,
                &headers(&[]),
                b"Search is unavailable for a moment"
            ),
            Class::Ok
        );
        assert_eq!(
            c(Kind::Checkout, StatusCode::SEE_OTHER, &headers(&[]), b""),
            Class::Ok
        );
        assert_eq!(
            c(Kind::Checkout, StatusCode::ACCEPTED, &headers(&[]), b""),
            Class::Degraded
        );
        assert_eq!(c(Kind::Checkout, ok, &headers(&[]), b""), Class::Error);
        assert_eq!(
            c(
                Kind::Home,
                StatusCode::SERVICE_UNAVAILABLE,
                &headers(&[("retry-after", "5")]),
                b""
            ),
            Class::Apology
        );
        assert_eq!(
            c(
                Kind::Home,
                StatusCode::SERVICE_UNAVAILABLE,
                &headers(&[]),
                b""
            ),
            Class::Error
        );
        assert_eq!(
            c(Kind::Home, StatusCode::NOT_FOUND, &headers(&[]), b""),
            Class::Error
        );
        assert_eq!(
            c(Kind::Home, StatusCode::BAD_GATEWAY, &headers(&[]), b""),
            Class::Error
        );
        let (_, f, _) = classify(
            Kind::Product,
            ok,
            &headers(&[("x-rampart-stale", "1")]),
            b"",
        );
        assert!(
            f.stale && !f.age,
            "a stale page without Age is seen as such"
        );
    }

    #[test]
    fn checkout_request_carries_the_key_twice() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (req, key) = build_request(Kind::Checkout, "http://127.0.0.1:1", &mut rng);
        let key = key.unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(req.headers()["idempotency-key"], key.as_str());
        let cookie = req.headers()[COOKIE].to_str().unwrap();
        assert!(cookie.starts_with(&format!("cart={key}.")), "{cookie}");
    }
}
