//! The generated product catalog shared by the simulated services.
//!
//! The catalog is deterministic (a fixed seed), so every replica of every service, in every
//! process, agrees on the same products without sharing a database.
//!
//! ```
//! let products = storefront::catalog::generate(300);
//! assert_eq!(products.len(), 300);
//! assert_eq!(products[0].id, 1);
//! assert_eq!(products, storefront::catalog::generate(300));
//! ```

use serde::{Deserialize, Serialize};

/// One product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Its id, from 1.
    pub id: u32,
    /// Its display name.
    pub name: String,
    /// Its category.
    pub category: String,
    /// Its price in cents.
    pub price_cents: u64,
    /// A one-sentence description.
    pub description: String,
}

impl Product {
    /// The price as `12.34`.
    pub fn price(&self) -> String {
        format_cents(self.price_cents)
    }
}

/// Formats cents as `12.34`.
///
/// ```
/// assert_eq!(storefront::catalog::format_cents(1205), "12.05");
/// ```
pub fn format_cents(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

const ADJECTIVES: &[&str] = &[
    "Sturdy",
    "Handmade",
    "Compact",
    "Classic",
    "Rugged",
    "Featherweight",
    "Vintage",
    "Modern",
    "Weatherproof",
    "Cosy",
    "Polished",
    "Folding",
    "Heirloom",
    "Nimble",
    "Quiet",
];
const MATERIALS: &[&str] = &[
    "Oak", "Copper", "Linen", "Walnut", "Steel", "Wool", "Ceramic", "Bamboo", "Leather", "Glass",
];
const ITEMS: &[(&str, &str)] = &[
    ("Lantern", "Outdoors"),
    ("Backpack", "Outdoors"),
    ("Tent", "Outdoors"),
    ("Teapot", "Kitchen"),
    ("Skillet", "Kitchen"),
    ("Cutting Board", "Kitchen"),
    ("Desk Lamp", "Home"),
    ("Armchair", "Home"),
    ("Bookshelf", "Home"),
    ("Notebook", "Office"),
    ("Fountain Pen", "Office"),
    ("Wallet", "Accessories"),
    ("Watch", "Accessories"),
    ("Scarf", "Accessories"),
    ("Bicycle Bell", "Sports"),
    ("Water Bottle", "Sports"),
];

/// Generates `count` products with ids `1..=count`, always the same for the same `count`.
///
/// Every name is unique: the adjective × material × item combinations are dealt out in a
/// shuffled order without repetition, and past the last combination the names carry an
/// edition (`Sturdy Oak Lantern No. 2`), so one name never stands for two prices.
pub fn generate(count: u32) -> Vec<Product> {
    let mut rng = fastrand::Rng::with_seed(0x5eed_cafe);
    let mut combos: Vec<(usize, usize, usize)> = (0..ADJECTIVES.len())
        .flat_map(|a| {
            (0..MATERIALS.len()).flat_map(move |m| (0..ITEMS.len()).map(move |i| (a, m, i)))
        })
        .collect();
    rng.shuffle(&mut combos);
    (1..=count)
        .map(|id| {
            let n = (id - 1) as usize;
            let (a, m, i) = combos[n % combos.len()];
            let edition = n / combos.len();
            let adjective = ADJECTIVES[a];
            let material = MATERIALS[m];
            let (item, category) = ITEMS[i];
            let price_cents = u64::from(rng.u32(5..400)) * 100 + u64::from(rng.u32(0..100));
            let name = if edition == 0 {
                format!("{adjective} {material} {item}")
            } else {
                format!("{adjective} {material} {item} No. {}", edition + 1)
            };
            Product {
                id,
                name,
                category: category.to_owned(),
                price_cents,
                description: format!(
                    "A {} {} {} from our {} range, built to last and shipped in two days.",
                    adjective.to_lowercase(),
                    material.to_lowercase(),
                    item.to_lowercase(),
                    category.to_lowercase()
                ),
            }
        })
        .collect()
}

/// Products whose name, category or description contains every word of `query`
/// (case-insensitive), at most `limit`.
pub fn search<'a>(products: &'a [Product], query: &str, limit: usize) -> Vec<&'a Product> {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    if words.is_empty() {
        return Vec::new();
    }
    products
        .iter()
        .filter(|p| {
            let hay = format!("{} {} {}", p.name, p.category, p.description).to_lowercase();
            words.iter().all(|w| hay.contains(w.as_str()))
        })
        .take(limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_searchable() {
        let a = generate(300);
        assert_eq!(a, generate(300));
        assert!(a.iter().all(|p| p.price_cents >= 500));
        let hits = search(&a, "lantern", 1000);
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|p| p.name.contains("Lantern")));
        assert!(search(&a, "   ", 10).is_empty());
        assert!(search(&a, "zzzz-no-such-thing", 10).is_empty());
    }

    #[test]
    fn every_product_name_is_unique() {
        for count in [300, 2400, 5000] {
            let products = generate(count);
            let names: std::collections::HashSet<&str> =
                products.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names.len(), products.len(), "{count} products");
        }
    }
}
