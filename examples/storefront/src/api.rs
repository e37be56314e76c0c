//! The JSON spoken between the shop and the simulated services.

use serde::{Deserialize, Serialize};

use crate::catalog::Product;

/// A page of products (`GET /products` on the catalog service).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProductPage {
    /// All products in the catalog.
    pub total: usize,
    /// This page's products.
    pub products: Vec<Product>,
}

/// Search results (`GET /search?q=` on the catalog service).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResults {
    /// The query as understood.
    pub query: String,
    /// Matching products, best first.
    pub results: Vec<Product>,
}

/// One line of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    /// Which product.
    pub product_id: u32,
    /// How many, from 1.
    pub quantity: u32,
}

/// An order as the shop forwards it to checkout (`POST /orders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// The cart's idempotency key: the same key is the same order.
    pub idempotency_key: String,
    /// Customer name.
    pub customer: String,
    /// Customer e-mail.
    pub email: String,
    /// What was bought.
    pub items: Vec<LineItem>,
}

/// Checkout's answer: the order is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The confirmation number (`RMP-000042`).
    pub confirmation: String,
    /// The key the order was stored under.
    pub idempotency_key: String,
    /// The total checkout charged, in cents.
    pub total_cents: u64,
    /// `false` when this key had been confirmed before (a replay).
    pub created: bool,
}
