//! The compiled page templates (askama): one struct per page, rendered without file I/O.

use askama::Template;

use super::outbox::OutboxOrder;
use super::upstream::ServiceStatus;
use crate::catalog::Product;

/// `/`.
#[derive(Template)]
#[template(path = "home.html")]
pub(crate) struct HomePage {
    pub(crate) featured: Vec<Product>,
}

/// `/products`.
#[derive(Template)]
#[template(path = "products.html")]
pub(crate) struct ProductsPage {
    pub(crate) products: Vec<Product>,
    pub(crate) page: usize,
    pub(crate) pages: usize,
}

/// `/products/{id}`.
#[derive(Template)]
#[template(path = "product.html")]
pub(crate) struct ProductPage {
    pub(crate) product: Product,
    pub(crate) recommendations: Option<Vec<Product>>,
}

/// `/search`.
#[derive(Template)]
#[template(path = "search.html")]
pub(crate) struct SearchPage {
    pub(crate) query: String,
    pub(crate) results: Vec<Product>,
    pub(crate) degraded: bool,
}

/// One line of the cart page.
pub(crate) struct CartLine {
    pub(crate) product_id: u32,
    pub(crate) name: String,
    pub(crate) quantity: u32,
    pub(crate) price: Option<String>,
}

/// `/cart`.
#[derive(Template)]
#[template(path = "cart.html")]
pub(crate) struct CartPage {
    pub(crate) lines: Vec<CartLine>,
    pub(crate) details_missing: bool,
    /// The sum of the lines, when every price is known.
    pub(crate) total: Option<String>,
}

/// `GET /checkout`.
#[derive(Template)]
#[template(path = "checkout.html")]
pub(crate) struct CheckoutPage {
    pub(crate) key: String,
    pub(crate) items: u32,
    /// What is being bought, priced when the catalog answers.
    pub(crate) lines: Vec<CartLine>,
    /// The sum of the lines, when every price is known.
    pub(crate) total: Option<String>,
}

/// `/orders/{id}` and the checkout answers.
#[derive(Template)]
#[template(path = "order.html")]
pub(crate) struct OrderPage {
    pub(crate) order: OutboxOrder,
    pub(crate) total: Option<String>,
}

/// A short message page (not found, bad request).
#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct MessagePage {
    pub(crate) title: String,
    pub(crate) message: String,
}

/// `/status`.
#[derive(Template)]
#[template(path = "status.html")]
pub(crate) struct StatusPage {
    pub(crate) services: Vec<ServiceStatus>,
    pub(crate) pending_orders: u64,
    pub(crate) fallback: super::FallbackStatus,
    pub(crate) limiter: Option<rampart::limit::LimiterSnapshot>,
}

/// The apology page (static).
#[derive(Template)]
#[template(path = "apology.html")]
pub(crate) struct ApologyTemplate;
