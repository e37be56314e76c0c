//! The three simulated services as axum routers.
//!
//! - catalog: `GET /products?offset=&limit=`, `GET /products/{id}`, `GET /featured`,
//!   `GET /search?q=&limit=`
//! - recommendations: `GET /recommendations/{id}`
//! - checkout: `POST /orders` (JSON [`OrderRequest`], answers a [`Confirmation`](crate::api::Confirmation))
//!
//! Each also answers `GET /healthz`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;

use super::checkout_store::CheckoutStore;
use crate::api::{OrderRequest, ProductPage, SearchResults};
use crate::catalog::{self, Product};

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Deserialize)]
struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
    limit: Option<usize>,
}

/// The catalog service.
pub fn catalog(products: Arc<Vec<Product>>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/products", get(list))
        .route("/products/{id}", get(one))
        .route("/featured", get(featured))
        .route("/search", get(search))
        .with_state(products)
}

async fn list(State(p): State<Arc<Vec<Product>>>, Query(q): Query<PageQuery>) -> Json<ProductPage> {
    let offset = q.offset.unwrap_or(0).min(p.len());
    let limit = q.limit.unwrap_or(24).min(100);
    Json(ProductPage {
        total: p.len(),
        products: p.iter().skip(offset).take(limit).cloned().collect(),
    })
}

async fn one(State(p): State<Arc<Vec<Product>>>, Path(id): Path<u32>) -> Response {
    match p.iter().find(|x| x.id == id) {
        Some(product) => Json(product.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such product\n").into_response(),
    }
}

async fn featured(State(p): State<Arc<Vec<Product>>>) -> Json<Vec<Product>> {
    Json(p.iter().step_by(37).take(8).cloned().collect())
}

async fn search(
    State(p): State<Arc<Vec<Product>>>,
    Query(q): Query<SearchQuery>,
) -> Json<SearchResults> {
    let query = q.q.unwrap_or_default();
    let results = catalog::search(&p, &query, q.limit.unwrap_or(50).min(200))
        .into_iter()
        .cloned()
        .collect();
    Json(SearchResults { query, results })
}

/// The recommendations service: four products of the same category.
pub fn recommendations(products: Arc<Vec<Product>>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/recommendations/{id}", get(recommend))
        .with_state(products)
}

async fn recommend(State(p): State<Arc<Vec<Product>>>, Path(id): Path<u32>) -> Response {
    let Some(me) = p.iter().find(|x| x.id == id) else {
        return (StatusCode::NOT_FOUND, "no such product\n").into_response();
    };
    let picks: Vec<Product> = p
        .iter()
        .filter(|x| x.category == me.category && x.id != id)
        .cycle()
        .skip(id as usize % 7)
        .take(4)
        .cloned()
        .collect();
    Json(picks).into_response()
}

#[derive(Clone)]
struct CheckoutState {
    store: CheckoutStore,
    products: Arc<Vec<Product>>,
}

/// The checkout service, storing into `store` (shared by every replica's own connection).
pub fn checkout(store: CheckoutStore, products: Arc<Vec<Product>>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/orders", post(take_order))
        .with_state(CheckoutState { store, products })
}

async fn take_order(State(st): State<CheckoutState>, body: axum::body::Bytes) -> Response {
    let order: OrderRequest = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("invalid order: {e}\n")).into_response();
        }
    };
    if order.idempotency_key.is_empty() || order.idempotency_key.len() > 128 {
        return (StatusCode::BAD_REQUEST, "invalid idempotency_key\n").into_response();
    }
    if order.items.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "an order needs at least one item\n",
        )
            .into_response();
    }
    let mut total = 0u64;
    for item in &order.items {
        let Some(p) = st.products.iter().find(|p| p.id == item.product_id) else {
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown product {}\n", item.product_id),
            )
                .into_response();
        };
        if !(1..=99).contains(&item.quantity) {
            return (StatusCode::BAD_REQUEST, "quantity must be 1 to 99\n").into_response();
        }
        total += p.price_cents * u64::from(item.quantity);
    }
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.confirm(&order, total)).await {
        Ok(Ok(c)) => Json(c).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "checkout database error");
            (StatusCode::INTERNAL_SERVER_ERROR, "database error\n").into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "worker failed\n").into_response(),
    }
}
