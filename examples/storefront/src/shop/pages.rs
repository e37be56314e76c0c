//! The page handlers and their per-route degradation.
//!
//! | route | depends on | when it fails |
//! |---|---|---|
//! | `/`, `/products`, `/products/{id}` | catalog | stale copy (they are cacheable), else the apology |
//! | recommendations on `/products/{id}` | recommendations | left out (optional) |
//! | `/search` | catalog | a friendly partial page |
//! | `/cart` | catalog (names, prices) | the cart without details |
//! | `POST /checkout` | checkout | the outbox: 202 "order received, confirmation pending" |
//! | `/orders/{id}` (a 128-bit random public id) | the order store only | the apology |

use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;

use super::cart::Cart;
use super::outbox::{Forwarded, OrderState, OutboxOrder};
use super::upstream::UpstreamError;
use super::views::{
    CartLine, CartPage, CheckoutPage, HomePage, MessagePage, OrderPage, ProductPage, ProductsPage,
    SearchPage,
};
use super::{AppState, DEGRADED_HEADER};
use crate::api::{OrderRequest, ProductPage as ProductList, SearchResults};
use crate::catalog::{Product, format_cents};

/// Product pages and lists: cacheable, and kept for stale-if-error for a day (RFC 5861).
pub(crate) const CACHEABLE: &str = "public, max-age=30, stale-if-error=86400";
const PER_PAGE: usize = 24;

/// What a handler can fail with.
#[derive(Debug)]
pub(crate) enum PageError {
    /// A critical dependency is unavailable: the apology (or a stale copy).
    Unavailable(Option<Duration>),
    /// No such thing.
    NotFound(&'static str),
    /// The customer sent something unusable.
    BadRequest(String),
}

impl From<UpstreamError> for PageError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::NotFound => PageError::NotFound("We could not find that product."),
            UpstreamError::Rejected(_, m) => PageError::BadRequest(m),
            other => {
                tracing::warn!(error = %other, "upstream failed");
                PageError::Unavailable(other.retry_after())
            }
        }
    }
}

impl From<crate::orders::StoreError> for PageError {
    /// The order store is down: the honest apology (nothing was acknowledged).
    fn from(e: crate::orders::StoreError) -> Self {
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        tracing::warn!(error = %e, cause = cause.as_deref().unwrap_or(""), "order store unavailable");
        metrics::counter!("storefront_order_store_errors_total").increment(1);
        PageError::Unavailable(Some(Duration::from_secs(5)))
    }
}

fn message(status: StatusCode, title: &str, msg: &str) -> Response {
    let page = MessagePage {
        title: title.to_owned(),
        message: msg.to_owned(),
    };
    (status, html(&page)).into_response()
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Unavailable(hint) => {
                // An empty 503: the fallback layers turn it into a stale copy or the apology,
                // which takes its `Retry-After` from here (a breaker's time to its next probe).
                let mut r = StatusCode::SERVICE_UNAVAILABLE.into_response();
                if let Some(h) = hint {
                    let secs = h.as_secs() + u64::from(h.subsec_nanos() > 0);
                    r.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                }
                r
            }
            PageError::NotFound(m) => message(StatusCode::NOT_FOUND, "Not found", m),
            PageError::BadRequest(m) => message(StatusCode::BAD_REQUEST, "That did not work", &m),
        }
    }
}

fn html<T: Template>(t: &T) -> Html<String> {
    Html(t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "template failed");
        "<!doctype html><title>Error</title><p>Something went wrong.</p>".to_owned()
    }))
}

fn cacheable(body: Html<String>) -> Response {
    ([(CACHE_CONTROL, HeaderValue::from_static(CACHEABLE))], body).into_response()
}

pub(crate) async fn home(State(st): State<AppState>) -> Result<Response, PageError> {
    let featured: Vec<Product> = st.catalog.get_json("/featured").await?;
    Ok(cacheable(html(&HomePage { featured })))
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    page: Option<usize>,
}

pub(crate) async fn products(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let page = q.page.unwrap_or(1);
    if page == 0 {
        return Err(PageError::BadRequest("Page numbers start at 1.".into()));
    }
    // A page whose first product lies beyond any possible offset does not exist (checked
    // arithmetic: a huge page number must never wrap around to page 1).
    let Some(offset) = (page - 1).checked_mul(PER_PAGE) else {
        return Err(PageError::NotFound("There is no such page of products."));
    };
    let list: ProductList = st
        .catalog
        .get_json(&format!("/products?offset={offset}&limit={PER_PAGE}"))
        .await?;
    let pages = list.total.div_ceil(PER_PAGE).max(1);
    if page > pages {
        return Err(PageError::NotFound("There is no such page of products."));
    }
    Ok(cacheable(html(&ProductsPage {
        products: list.products,
        page,
        pages,
    })))
}

/// A product id in its one canonical spelling: decimal digits without a sign or leading zeros.
fn canonical_id(s: &str) -> Option<u32> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

pub(crate) async fn product(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    // One URL per product: `/products/5` only, never `/products/+5` or `/products/0005`
    // (aliases would split caches and stale copies).
    let id = canonical_id(&id).ok_or(PageError::NotFound("We could not find that product."))?;
    let path = format!("/products/{id}");
    let product = st.catalog.get_json::<Product>(&path);
    let recommendations = st.recommendations_for(id);
    let (product, recommendations) = tokio::join!(product, recommendations);
    let product = product?;
    Ok(cacheable(html(&ProductPage {
        product,
        recommendations,
    })))
}

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    q: String,
}

pub(crate) async fn search(State(st): State<AppState>, Query(q): Query<SearchQuery>) -> Response {
    let query: String = q.q.trim().chars().take(100).collect();
    let mut degraded = false;
    let page = if query.is_empty() {
        SearchPage {
            query,
            results: Vec::new(),
            degraded: false,
        }
    } else {
        let path = format!("/search?q={}&limit=48", percent_encode(&query));
        match st.catalog.get_json::<SearchResults>(&path).await {
            Ok(r) => SearchPage {
                query,
                results: r.results,
                degraded: false,
            },
            Err(e) => {
                tracing::warn!(error = %e, "search degraded");
                metrics::counter!("storefront_degraded_total", "feature" => "search").increment(1);
                degraded = true;
                SearchPage {
                    query,
                    results: Vec::new(),
                    degraded: true,
                }
            }
        }
    };
    let mut resp = (
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        html(&page),
    )
        .into_response();
    if degraded {
        mark_degraded(&mut resp, "search-partial");
    }
    resp
}

/// Marks a page served degraded (partial, or an order still pending), so that clients and the
/// chaos runner can tell it from a complete one without reading the body.
fn mark_degraded(resp: &mut Response, what: &'static str) {
    resp.headers_mut()
        .insert(DEGRADED_HEADER, HeaderValue::from_static(what));
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The cart's lines with names and prices from the catalog, the total when every price is
/// known, and whether details are missing (the catalog failed: the rest go unpriced).
async fn priced_lines(st: &AppState, cart: &Cart) -> (Vec<CartLine>, Option<String>, bool) {
    let mut lines = Vec::new();
    let mut details_missing = false;
    let mut total = 0u64;
    for item in &cart.items {
        let product = if details_missing {
            None
        } else {
            match st
                .catalog
                .get_json::<Product>(&format!("/products/{}", item.product_id))
                .await
            {
                Ok(p) => Some(p),
                Err(_) => {
                    details_missing = true;
                    None
                }
            }
        };
        lines.push(match product {
            Some(p) => {
                let cents = p.price_cents.saturating_mul(u64::from(item.quantity));
                total = total.saturating_add(cents);
                CartLine {
                    product_id: p.id,
                    price: Some(format_cents(cents)),
                    name: p.name,
                    quantity: item.quantity,
                }
            }
            None => CartLine {
                product_id: item.product_id,
                name: format!("Product #{}", item.product_id),
                quantity: item.quantity,
                price: None,
            },
        });
    }
    let total = (!details_missing).then(|| format_cents(total));
    (lines, total, details_missing)
}

pub(crate) async fn cart(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let cart = Cart::from_headers(&headers).unwrap_or_default();
    let (lines, total, details_missing) = priced_lines(&st, &cart).await;
    let mut resp = html(&CartPage {
        lines,
        details_missing,
        total,
    })
    .into_response();
    no_store(&mut resp);
    if details_missing {
        mark_degraded(&mut resp, "cart-partial");
    }
    resp
}

#[derive(Deserialize)]
pub(crate) struct CartForm {
    product_id: u32,
    #[serde(default)]
    quantity: Option<u32>,
}

fn redirect_with_cart(to: &'static str, cart: &Cart) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    if let Ok(v) = HeaderValue::from_str(&cart.set_cookie()) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    no_store(&mut resp);
    resp
}

pub(crate) async fn cart_add(headers: HeaderMap, Form(f): Form<CartForm>) -> Response {
    let mut cart = Cart::from_headers(&headers).unwrap_or_default();
    cart.add(f.product_id, f.quantity.unwrap_or(1).clamp(1, 99));
    redirect_with_cart("/cart", &cart)
}

pub(crate) async fn cart_remove(headers: HeaderMap, Form(f): Form<CartForm>) -> Response {
    let mut cart = Cart::from_headers(&headers).unwrap_or_default();
    cart.remove(f.product_id);
    redirect_with_cart("/cart", &cart)
}

pub(crate) async fn checkout_form(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let existing = Cart::from_headers(&headers);
    let cart = existing.clone().unwrap_or_default();
    // Prices are a courtesy here: a slow catalog must never hold up the checkout form, so past
    // the checkout budget the form shows the lines unpriced (checkout prices the order).
    let (lines, total, details_missing) = match tokio::time::timeout(
        st.checkout_budget,
        super::upstream::within_budget(st.checkout_budget, priced_lines(&st, &cart)),
    )
    .await
    {
        Ok(priced) => priced,
        Err(_) => (unpriced_lines(&cart), None, true),
    };
    let mut resp = html(&CheckoutPage {
        key: cart.key.clone(),
        items: cart.count(),
        lines,
        total,
    })
    .into_response();
    if existing.is_none()
        && let Ok(v) = HeaderValue::from_str(&cart.set_cookie())
    {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    no_store(&mut resp);
    if details_missing {
        mark_degraded(&mut resp, "cart-partial");
    }
    resp
}

/// The cart's lines without the catalog's details.
fn unpriced_lines(cart: &Cart) -> Vec<CartLine> {
    cart.items
        .iter()
        .map(|item| CartLine {
            product_id: item.product_id,
            name: format!("Product #{}", item.product_id),
            quantity: item.quantity,
            price: None,
        })
        .collect()
}

#[derive(Deserialize)]
pub(crate) struct CheckoutForm {
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    customer: String,
    #[serde(default)]
    email: String,
}

fn valid_key(k: &str) -> bool {
    (8..=128).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The answer for an order, whatever state it is in.
fn order_response(order: OutboxOrder, clear_cart: bool) -> Response {
    let location = format!("/orders/{}", order.id);
    let mut resp = match order.state {
        OrderState::Confirmed => StatusCode::SEE_OTHER.into_response(),
        OrderState::Pending => {
            let mut r = (StatusCode::ACCEPTED, order_page(order)).into_response();
            mark_degraded(&mut r, "order-pending");
            r
        }
        OrderState::Rejected => {
            (StatusCode::UNPROCESSABLE_ENTITY, order_page(order)).into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    if clear_cart && let Ok(v) = HeaderValue::from_str(&Cart::clear_cookie()) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    no_store(&mut resp);
    resp
}

fn order_page(order: OutboxOrder) -> Html<String> {
    let total = order.total_cents.map(format_cents);
    html(&OrderPage { order, total })
}

/// The answer to an idempotency key sent again with a different order: 422, and not a word
/// about the order stored under that key.
fn key_reused() -> Response {
    let mut r = message(
        StatusCode::UNPROCESSABLE_ENTITY,
        "That checkout form was already used",
        "This checkout form was already used for a different order. Please open the checkout \
         page again.",
    );
    no_store(&mut r);
    r
}

pub(crate) async fn checkout_submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<CheckoutForm>,
) -> Result<Response, PageError> {
    let key = f.idempotency_key.trim().to_owned();
    if !valid_key(&key) {
        return Err(PageError::BadRequest(
            "Your checkout form has expired; please open the checkout page again.".into(),
        ));
    }
    let customer = f.customer.trim().chars().take(100).collect::<String>();
    let email = f.email.trim().chars().take(200).collect::<String>();
    let cart = Cart::from_headers(&headers).unwrap_or_default();
    // The same key again (a double click, a retry after a timeout): the same order, but only
    // for the same order: a key sent with another body is refused, never answered with the
    // order stored under it.
    if let Some(existing) = st.outbox.by_key(&key).await? {
        let again = OrderRequest {
            idempotency_key: key,
            customer,
            email,
            items: cart.items,
        };
        if existing.same_order(&again) {
            return Ok(order_response(existing, true));
        }
        tracing::info!(
            order = existing.seq,
            "idempotency key reused for a different order"
        );
        return Ok(key_reused());
    }
    if customer.is_empty() || !email.contains('@') {
        return Err(PageError::BadRequest(
            "Please give your name and a valid e-mail address.".into(),
        ));
    }
    let cart = Cart::from_headers(&headers).unwrap_or_default();
    if cart.items.is_empty() {
        return Err(PageError::BadRequest("Your cart is empty.".into()));
    }
    let request = OrderRequest {
        idempotency_key: key,
        customer,
        email,
        items: cart.items,
    };
    // Durable first, then forward. If the store cannot take the order, the customer gets the
    // apology: nothing is acknowledged that is not stored.
    let (stored, new) = st.outbox.record(request.clone()).await?;
    if !new && !stored.same_order(&request) {
        // Another request with this key was recorded in between.
        return Ok(key_reused());
    }
    metrics::counter!("storefront_orders_received_total").increment(1);
    // Forward now (this instance holds the claim), but never let a slow checkout hold the
    // customer past the page deadline: past the budget the order stays pending, the claim is
    // given up, and the worker confirms it later.
    // Under pressure (three quarters of the pages' concurrency limit in use), the customer is
    // not kept waiting for checkout either: the order is stored, so it is acknowledged as
    // pending at once, and its slot goes back to the limit sooner; the worker forwards it
    // when this instance's claim runs out (`outbox_lease`). A surge then costs checkout its
    // immediate confirmation, never the order.
    let pressed = st
        .limiter
        .as_ref()
        .is_some_and(|l| l.in_flight() * 4 >= l.limit() * 3);
    let order = if new && stored.state == OrderState::Pending && pressed {
        tracing::info!(
            order = stored.seq,
            "shop under pressure; order acknowledged as pending"
        );
        stored
    } else if new && stored.state == OrderState::Pending {
        let forward = st.outbox.forward(&st.checkout, &stored, &st.backoff);
        let forward = super::upstream::within_budget(st.checkout_budget, forward);
        match tokio::time::timeout(st.checkout_budget, forward).await {
            Ok(Ok(Forwarded::Confirmed(o) | Forwarded::Rejected(o) | Forwarded::Pending(o))) => o,
            Ok(Err(e)) => {
                // Stored, but the outcome could not be written: it is still pending and the
                // worker replays it when its claim runs out.
                tracing::warn!(order = stored.seq, error = %e, "order store failed after recording; order stays pending");
                stored
            }
            Err(_) => {
                tracing::info!(order = stored.seq, "checkout too slow; order stays pending");
                st.outbox
                    .postpone(&stored, st.backoff.delay(0))
                    .await
                    .unwrap_or(stored)
            }
        }
    } else {
        stored
    };
    Ok(order_response(order, true))
}

pub(crate) async fn order(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    match st.outbox.get(&id).await? {
        Some(order) => {
            let mut resp = order_page(order).into_response();
            no_store(&mut resp);
            Ok(resp)
        }
        None => Err(PageError::NotFound("We could not find that order.")),
    }
}

pub(crate) async fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        "We could not find that page.",
    )
}

/// Gives the framework's own client-error answers (a query, path or form the extractors
/// refuse: 400, 413, 415, 422, …, plain text) the shop's look, so a customer never sees a bare
/// text page. The extractor's wording stays out of the page: it names internals.
pub(crate) fn brand_errors(resp: Response) -> Response {
    let status = resp.status();
    let plain = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if !status.is_client_error() || !plain {
        return resp;
    }
    let (title, msg) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "That was too much",
            "What you sent is larger than the shop accepts.",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "That did not work",
            "Please use the forms on our pages to send this.",
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("That did not work", "This page cannot be used that way.")
        }
        StatusCode::NOT_FOUND => ("Not found", "We could not find that page."),
        _ => (
            "That did not work",
            "We could not understand that request. Please go back and try again.",
        ),
    };
    let mut branded = message(status, title, msg);
    // Keep what the answer said about itself (`Allow` on a 405, for instance), but describe
    // the new body.
    for (name, value) in resp.headers() {
        if name != http::header::CONTENT_TYPE && name != http::header::CONTENT_LENGTH {
            branded.headers_mut().insert(name.clone(), value.clone());
        }
    }
    no_store(&mut branded);
    branded
}

pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}
