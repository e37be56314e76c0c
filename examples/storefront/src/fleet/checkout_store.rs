//! The checkout service's database: one SQLite file shared by every checkout replica.
//!
//! WAL journal, `synchronous=FULL`, a UNIQUE idempotency key and
//! `INSERT … ON CONFLICT DO NOTHING` followed by a read-back: the same key always yields the
//! same confirmed order, whichever replica answers and however often the order is replayed.
//! The SQL is portable (no SQLite-only syntax in the statements) so that a PostgreSQL store
//! could sit behind the same type.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::api::{Confirmation, OrderRequest};

/// A connection to the shared checkout database. Cloning shares the connection; open one per
/// replica to share the file instead.
#[derive(Debug, Clone)]
pub struct CheckoutStore {
    conn: Arc<Mutex<Connection>>,
}

/// Opens `path` with the durability settings every writer of the shop uses.
pub(crate) fn open_durable(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl CheckoutStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = open_durable(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS confirmed_orders (
                id INTEGER PRIMARY KEY,
                idempotency_key TEXT NOT NULL UNIQUE,
                customer TEXT NOT NULL,
                email TEXT NOT NULL,
                items TEXT NOT NULL,
                total_cents INTEGER NOT NULL,
                confirmed_at INTEGER NOT NULL
            );",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Stores `order` once per idempotency key and returns the stored confirmation.
    pub fn confirm(
        &self,
        order: &OrderRequest,
        total_cents: u64,
    ) -> rusqlite::Result<Confirmation> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let items = serde_json::to_string(&order.items).unwrap_or_else(|_| "[]".to_owned());
        let now = crate::unix_now();
        let inserted = conn.execute(
            "INSERT INTO confirmed_orders (idempotency_key, customer, email, items, total_cents, confirmed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (idempotency_key) DO NOTHING",
            params![order.idempotency_key, order.customer, order.email, items, total_cents as i64, now],
        )?;
        let (id, total): (i64, i64) = conn.query_row(
            "SELECT id, total_cents FROM confirmed_orders WHERE idempotency_key = ?1",
            params![order.idempotency_key],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(Confirmation {
            confirmation: format!("RMP-{id:06}"),
            idempotency_key: order.idempotency_key.clone(),
            total_cents: total.max(0) as u64,
            created: inserted == 1,
        })
    }

    /// How many orders are confirmed.
    pub fn count(&self) -> rusqlite::Result<u64> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM confirmed_orders", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// How many confirmed orders carry `key` (0 or 1).
    pub fn count_key(&self, key: &str) -> rusqlite::Result<u64> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let n: Option<i64> = conn
            .query_row(
                "SELECT COUNT(*) FROM confirmed_orders WHERE idempotency_key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LineItem;

    #[test]
    fn same_key_same_order_across_connections() {
        let dir = crate::test_dir("checkout-store");
        let path = dir.join("checkout.db");
        let a = CheckoutStore::open(&path).unwrap();
        let b = CheckoutStore::open(&path).unwrap();
        let order = OrderRequest {
            idempotency_key: "k1".into(),
            customer: "Ada".into(),
            email: "ada@example.com".into(),
            items: vec![LineItem {
                product_id: 1,
                quantity: 2,
            }],
        };
        let first = a.confirm(&order, 1000).unwrap();
        let second = b.confirm(&order, 999).unwrap();
        assert!(first.created);
        assert!(!second.created);
        assert_eq!(first.confirmation, second.confirmation);
        assert_eq!(second.total_cents, 1000);
        assert_eq!(a.count().unwrap(), 1);
        assert_eq!(b.count_key("k1").unwrap(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
