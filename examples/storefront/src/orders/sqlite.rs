//! The embedded order store: SQLite in WAL mode with `synchronous=FULL`.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Claim, NewOrder, OrderStore, Outcome, Settled, StoreError, StoreFuture, clamp_u32, clamp_u64,
    new_public_id,
};
use crate::api::{LineItem, OrderRequest};
use crate::shop::{OrderState, OutboxOrder};

/// The schema, one migration per version. Version 1 is the original outbox table (written
/// with `IF NOT EXISTS`, so a file from before versioning is taken over as it is).
const MIGRATIONS: [(i64, &str); 2] = [
    (
        1,
        "CREATE TABLE IF NOT EXISTS orders (
            id INTEGER PRIMARY KEY,
            idempotency_key TEXT NOT NULL UNIQUE,
            customer TEXT NOT NULL,
            email TEXT NOT NULL,
            items TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            confirmation TEXT,
            total_cents INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL DEFAULT 0,
            reason TEXT,
            created_ms INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS orders_due ON orders (state, next_attempt_ms);",
    ),
    (
        2,
        "ALTER TABLE orders ADD COLUMN public_id TEXT;
        ALTER TABLE orders ADD COLUMN claimed_by TEXT;",
    ),
];

/// The embedded order store. Cloning shares the connection; open the same file twice for two
/// connections (two workers).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn row_to_order(row: &Row<'_>) -> rusqlite::Result<OutboxOrder> {
    let items: String = row.get("items")?;
    let items: Vec<LineItem> = serde_json::from_str(&items).unwrap_or_default();
    let state: String = row.get("state")?;
    Ok(OutboxOrder {
        id: row
            .get::<_, Option<String>>("public_id")?
            .unwrap_or_default(),
        seq: row.get("id")?,
        request: OrderRequest {
            idempotency_key: row.get("idempotency_key")?,
            customer: row.get("customer")?,
            email: row.get("email")?,
            items,
        },
        state: OrderState::parse(&state),
        confirmation: row.get("confirmation")?,
        total_cents: clamp_u64(row.get("total_cents")?),
        attempts: clamp_u32(row.get("attempts")?),
        reason: row.get("reason")?,
        claimed_by: row.get("claimed_by")?,
        created_ms: row.get("created_ms")?,
    })
}

fn err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::new(what, e)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            applied_ms INTEGER NOT NULL
        );",
    )
    .map_err(err("cannot create schema_migrations"))?;
    for (version, sql) in MIGRATIONS {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err("cannot begin a migration"))?;
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                params![version],
                |r| r.get(0),
            )
            .optional()
            .map_err(err("cannot read schema_migrations"))?;
        if done.is_some() {
            continue;
        }
        tx.execute_batch(sql).map_err(err("migration failed"))?;
        if version == 2 {
            // Orders from before public ids get one now.
            let seqs: Vec<i64> = {
                let mut stmt = tx
                    .prepare("SELECT id FROM orders WHERE public_id IS NULL")
                    .map_err(err("migration failed"))?;
                let rows = stmt
                    .query_map([], |r| r.get(0))
                    .map_err(err("migration failed"))?;
                rows.collect::<rusqlite::Result<_>>()
                    .map_err(err("migration failed"))?
            };
            for seq in seqs {
                tx.execute(
                    "UPDATE orders SET public_id = ?2 WHERE id = ?1",
                    params![seq, new_public_id()?],
                )
                .map_err(err("migration failed"))?;
            }
            tx.execute_batch(
                "CREATE UNIQUE INDEX IF NOT EXISTS orders_public_id ON orders (public_id);",
            )
            .map_err(err("migration failed"))?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
            params![version, crate::unix_now_ms()],
        )
        .map_err(err("cannot record a migration"))?;
        tx.commit().map_err(err("cannot commit a migration"))?;
        tracing::info!(version, store = "sqlite", "order store migration applied");
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and applies its migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = crate::fleet::open_durable(path).map_err(err("cannot open"))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn run<'a, T: Send + 'static>(
        &'a self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFuture<'a, T> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
                f(&guard)
            })
            .await
            .map_err(|e| StoreError::new(what, e))?
            .map_err(|e| StoreError::new(what, e))
        })
    }
}

impl OrderStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn record<'a>(&'a self, order: &'a NewOrder) -> StoreFuture<'a, (OutboxOrder, bool)> {
        let o = order.clone();
        self.run("cannot record the order", move |c| {
            let items = serde_json::to_string(&o.request.items).unwrap_or_else(|_| "[]".into());
            let inserted = c.execute(
                "INSERT INTO orders (public_id, idempotency_key, customer, email, items,
                     created_ms, next_attempt_ms, claimed_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (idempotency_key) DO NOTHING",
                params![
                    o.public_id,
                    o.request.idempotency_key,
                    o.request.customer,
                    o.request.email,
                    items,
                    o.now_ms,
                    o.lease_until_ms,
                    o.owner
                ],
            )?;
            let stored = c.query_row(
                "SELECT * FROM orders WHERE idempotency_key = ?1",
                params![o.request.idempotency_key],
                row_to_order,
            )?;
            Ok((stored, inserted == 1))
        })
    }

    fn by_key<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<OutboxOrder>> {
        let key = key.to_owned();
        self.run("cannot read an order", move |c| {
            c.query_row(
                "SELECT * FROM orders WHERE idempotency_key = ?1",
                params![key],
                row_to_order,
            )
            .optional()
        })
    }

    fn by_public_id<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<OutboxOrder>> {
        let id = id.to_owned();
        self.run("cannot read an order", move |c| {
            c.query_row(
                "SELECT * FROM orders WHERE public_id = ?1",
                params![id],
                row_to_order,
            )
            .optional()
        })
    }

    fn pending_count(&self) -> StoreFuture<'_, u64> {
        self.run("cannot count pending orders", |c| {
            c.query_row(
                "SELECT COUNT(*) FROM orders WHERE state = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
        })
    }

    fn claim_due<'a>(&'a self, claim: &'a Claim) -> StoreFuture<'a, Vec<OutboxOrder>> {
        let cl = claim.clone();
        self.run("cannot claim orders", move |c| {
            // One statement: SQLite holds the write lock for all of it, so a concurrent
            // claim on another connection sees these orders as no longer due.
            let mut stmt = c.prepare(
                "UPDATE orders SET next_attempt_ms = ?1, claimed_by = ?2
                 WHERE id IN (SELECT id FROM orders
                              WHERE state = 'pending' AND next_attempt_ms <= ?3
                              ORDER BY next_attempt_ms, id LIMIT ?4)
                 RETURNING *",
            )?;
            let rows = stmt.query_map(
                params![cl.lease_until_ms, cl.owner, cl.now_ms, i64::from(cl.limit)],
                row_to_order,
            )?;
            rows.collect()
        })
    }

    fn next_due_ms(&self) -> StoreFuture<'_, Option<i64>> {
        self.run("cannot read the next due order", |c| {
            c.query_row(
                "SELECT MIN(next_attempt_ms) FROM orders WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
        })
    }

    fn settle<'a>(&'a self, seq: i64, outcome: &'a Outcome) -> StoreFuture<'a, Settled> {
        let outcome = outcome.clone();
        self.run("cannot settle the order", move |c| {
            let changed = match &outcome {
                Outcome::Confirmed {
                    confirmation,
                    total_cents,
                } => c.execute(
                    "UPDATE orders SET state = 'confirmed', confirmation = ?2, total_cents = ?3,
                         attempts = attempts + 1
                     WHERE id = ?1 AND state = 'pending'",
                    params![seq, confirmation, *total_cents as i64],
                )?,
                Outcome::Rejected { reason } => c.execute(
                    "UPDATE orders SET state = 'rejected', reason = ?2, attempts = attempts + 1
                     WHERE id = ?1 AND state = 'pending'",
                    params![seq, reason],
                )?,
                Outcome::Postponed { until_ms } => c.execute(
                    "UPDATE orders SET attempts = attempts + 1, next_attempt_ms = ?2
                     WHERE id = ?1 AND state = 'pending'",
                    params![seq, until_ms],
                )?,
            };
            let order = c.query_row(
                "SELECT * FROM orders WHERE id = ?1",
                params![seq],
                row_to_order,
            )?;
            Ok(Settled {
                order,
                changed: changed == 1,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_from_before_versioning_is_migrated_and_its_orders_get_public_ids() {
        let dir = crate::test_dir("sqlite-migrate");
        let path = dir.join("outbox.db");
        {
            let conn = crate::fleet::open_durable(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].1).unwrap();
            conn.execute(
                "INSERT INTO orders (idempotency_key, customer, email, items, created_ms)
                 VALUES ('old-key-1', 'Ada', 'ada@example.com', '[]', 1)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let old = rt.block_on(store.by_key("old-key-1")).unwrap().unwrap();
        assert!(super::super::is_public_id(&old.id), "{}", old.id);
        drop(store);
        // Opening again applies nothing twice.
        let again = SqliteStore::open(&path).unwrap();
        let same = rt.block_on(again.by_key("old-key-1")).unwrap().unwrap();
        assert_eq!(same.id, old.id);
        let _ = std::fs::remove_dir_all(dir);
    }
}
