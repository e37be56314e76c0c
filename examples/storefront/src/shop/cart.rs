//! The cookie cart: `cart=<idempotency key>.<id>-<qty>_<id>-<qty>`.
//!
//! The cart carries its own idempotency key, generated when the cart is created, so the
//! checkout form of one cart always submits the same key, however often it is posted.

use http::HeaderMap;
use http::header::COOKIE;

use crate::api::LineItem;

/// Cookie name.
pub const COOKIE_NAME: &str = "cart";
const MAX_LINES: usize = 50;

/// A cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    /// The idempotency key of the order this cart becomes.
    pub key: String,
    /// Lines, in insertion order.
    pub items: Vec<LineItem>,
}

/// A fresh 128-bit idempotency key in hex.
pub fn new_key() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

impl Cart {
    /// An empty cart with a new key.
    pub fn new() -> Self {
        Self {
            key: new_key(),
            items: Vec::new(),
        }
    }

    /// The cart in the request's cookies, if there is a valid one.
    pub fn from_headers(headers: &HeaderMap) -> Option<Cart> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE_NAME)
            .and_then(|(_, v)| Cart::decode(v))
    }

    /// Parses a cookie value.
    pub fn decode(value: &str) -> Option<Cart> {
        let (key, rest) = value.split_once('.').unwrap_or((value, ""));
        if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut items = Vec::new();
        for part in rest.split('_').filter(|p| !p.is_empty()).take(MAX_LINES) {
            let (id, qty) = part.split_once('-')?;
            let product_id = id.parse().ok()?;
            let quantity: u32 = qty.parse().ok()?;
            if (1..=99).contains(&quantity) {
                items.push(LineItem {
                    product_id,
                    quantity,
                });
            }
        }
        Some(Cart {
            key: key.to_owned(),
            items,
        })
    }

    /// The cookie value.
    pub fn encode(&self) -> String {
        let lines: Vec<String> = self
            .items
            .iter()
            .map(|i| format!("{}-{}", i.product_id, i.quantity))
            .collect();
        format!("{}.{}", self.key, lines.join("_"))
    }

    /// The `Set-Cookie` header value storing this cart.
    pub fn set_cookie(&self) -> String {
        format!(
            "{COOKIE_NAME}={}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax",
            self.encode()
        )
    }

    /// The `Set-Cookie` header value that clears the cart.
    pub fn clear_cookie() -> String {
        format!("{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
    }

    /// Adds `quantity` of `product_id` (capped at 99 per line).
    pub fn add(&mut self, product_id: u32, quantity: u32) {
        if let Some(line) = self.items.iter_mut().find(|l| l.product_id == product_id) {
            line.quantity = (line.quantity + quantity).min(99);
        } else if self.items.len() < MAX_LINES {
            self.items.push(LineItem {
                product_id,
                quantity: quantity.clamp(1, 99),
            });
        }
    }

    /// Removes a line.
    pub fn remove(&mut self, product_id: u32) {
        self.items.retain(|l| l.product_id != product_id);
    }

    /// Number of articles.
    pub fn count(&self) -> u32 {
        self.items.iter().map(|l| l.quantity).sum()
    }
}

impl Default for Cart {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let mut c = Cart::new();
        c.add(7, 2);
        c.add(7, 1);
        c.add(12, 1);
        let back = Cart::decode(&c.encode()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.count(), 4);
        c.remove(7);
        assert_eq!(c.items.len(), 1);
        assert!(Cart::decode("nonsense").is_none());
        assert!(Cart::decode(&format!("{}.x-1", new_key())).is_none());
        let mut h = HeaderMap::new();
        h.insert(COOKIE, format!("a=b; cart={}", c.encode()).parse().unwrap());
        assert_eq!(Cart::from_headers(&h), Some(c));
    }
}
