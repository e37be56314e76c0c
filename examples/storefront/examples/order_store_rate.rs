//! Orders per second through each order store: 16 concurrent customers each recording an
//! order durably and settling it as confirmed (what one confirmed checkout costs the store),
//! against the embedded SQLite store and against a PostgreSQL server started for the run.
//!
//! ```text
//! cargo run --release -p storefront --example order_store_rate [-- ORDERS]
//! ```

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use storefront::api::{LineItem, OrderRequest};
use storefront::orders::{
    LocalPostgres, NewOrder, OrderStore, Outcome, PgStore, SqliteStore, new_public_id,
};

const CUSTOMERS: usize = 16;

async fn rate(store: Arc<dyn OrderStore>, orders: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CUSTOMERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c..orders).step_by(CUSTOMERS) {
                let now = 1_700_000_000_000 + i as i64;
                let order = NewOrder {
                    public_id: new_public_id().unwrap(),
                    request: OrderRequest {
                        idempotency_key: format!("rate-{i:08}"),
                        customer: "Ada Lovelace".into(),
                        email: "ada@example.com".into(),
                        items: vec![LineItem {
                            product_id: 7,
                            quantity: 2,
                        }],
                    },
                    owner: "bench".into(),
                    now_ms: now,
                    lease_until_ms: now + 10_000,
                };
                let (stored, new) = store.record(&order).await.unwrap();
                assert!(new);
                let confirmed = Outcome::Confirmed {
                    confirmation: format!("RMP-{i:06}"),
                    total_cents: 1999,
                };
                assert!(store.settle(stored.seq, &confirmed).await.unwrap().changed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    orders as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let orders: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4000);
    let dir = std::env::temp_dir().join(format!("order-store-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let sqlite = Arc::new(SqliteStore::open(&dir.join("outbox.db")).unwrap());
    let r = rate(sqlite, orders).await;
    println!(
        "sqlite   (WAL, synchronous=FULL):      {r:>8.0} orders/s ({orders} orders, {CUSTOMERS} customers)"
    );

    let d = dir.clone();
    let server = tokio::task::spawn_blocking(move || LocalPostgres::start(&d))
        .await
        .unwrap()
        .expect("PostgreSQL starts (apt-get install -y postgresql)");
    let url = server.create_database("rate").await.unwrap();
    let pg = Arc::new(PgStore::connect(&url).await.unwrap());
    let r = rate(pg, orders).await;
    println!(
        "postgres (local, synchronous_commit=on): {r:>8.0} orders/s ({orders} orders, {CUSTOMERS} customers)"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
