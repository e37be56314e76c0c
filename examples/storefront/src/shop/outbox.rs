//! The local order outbox: an order is written durably *before* it is forwarded, so no order
//! is lost while checkout is down, and a worker replays pending orders until checkout confirms.
//!
//! SQLite in WAL mode with `synchronous=FULL`; the idempotency key is UNIQUE and orders are
//! inserted with `INSERT … ON CONFLICT DO NOTHING` and read back, so submitting the same key
//! twice yields the same order (the transactional-outbox pattern).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use tokio::sync::Notify;

use super::upstream::{Upstream, UpstreamError};
use crate::api::{Confirmation, LineItem, OrderRequest};
use crate::{AbortOnDrop, unix_now_ms};

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderState {
    /// Stored locally, not yet confirmed by checkout.
    Pending,
    /// Confirmed by checkout.
    Confirmed,
    /// Refused by checkout (for example an unknown product).
    Rejected,
}

impl OrderState {
    fn parse(s: &str) -> Self {
        match s {
            "confirmed" => OrderState::Confirmed,
            "rejected" => OrderState::Rejected,
            _ => OrderState::Pending,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "pending",
            OrderState::Confirmed => "confirmed",
            OrderState::Rejected => "rejected",
        }
    }
}

/// One order in the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxOrder {
    /// The shop's order id (what `/orders/{id}` shows).
    pub id: i64,
    /// The request as forwarded to checkout.
    pub request: OrderRequest,
    /// Where it stands.
    pub state: OrderState,
    /// Checkout's confirmation number, once confirmed.
    pub confirmation: Option<String>,
    /// The total checkout charged, once confirmed.
    pub total_cents: Option<u64>,
    /// Forwarding attempts so far.
    pub attempts: u32,
    /// Why checkout refused it, when rejected.
    pub reason: Option<String>,
}

/// The outbox database. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Outbox {
    conn: Arc<Mutex<Connection>>,
    wake: Arc<Notify>,
}

fn row_to_order(row: &Row<'_>) -> rusqlite::Result<OutboxOrder> {
    let items: String = row.get("items")?;
    let items: Vec<LineItem> = serde_json::from_str(&items).unwrap_or_default();
    let state: String = row.get("state")?;
    let total: Option<i64> = row.get("total_cents")?;
    let attempts: i64 = row.get("attempts")?;
    Ok(OutboxOrder {
        id: row.get("id")?,
        request: OrderRequest {
            idempotency_key: row.get("idempotency_key")?,
            customer: row.get("customer")?,
            email: row.get("email")?,
            items,
        },
        state: OrderState::parse(&state),
        confirmation: row.get("confirmation")?,
        total_cents: total.map(|t| t.max(0) as u64),
        attempts: attempts.clamp(0, i64::from(u32::MAX)) as u32,
        reason: row.get("reason")?,
    })
}

/// What forwarding one order did.
#[derive(Debug)]
pub enum Forwarded {
    /// Checkout confirmed it.
    Confirmed(OutboxOrder),
    /// Checkout refused it for good.
    Rejected(OutboxOrder),
    /// Checkout could not be reached; it stays pending.
    Pending(OutboxOrder),
}

impl Outbox {
    /// Opens (creating if needed) the outbox at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = crate::fleet::open_durable(path)?;
        conn.execute_batch(
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
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            wake: Arc::new(Notify::new()),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&guard)
        })
        .await
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?
    }

    /// Stores `order` durably (once per idempotency key) and returns the stored order and
    /// whether it was new.
    pub async fn record(&self, order: OrderRequest) -> rusqlite::Result<(OutboxOrder, bool)> {
        self.run(move |c| {
            let items = serde_json::to_string(&order.items).unwrap_or_else(|_| "[]".to_owned());
            let inserted = c.execute(
                "INSERT INTO orders (idempotency_key, customer, email, items, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (idempotency_key) DO NOTHING",
                params![
                    order.idempotency_key,
                    order.customer,
                    order.email,
                    items,
                    unix_now_ms()
                ],
            )?;
            let stored = c.query_row(
                "SELECT * FROM orders WHERE idempotency_key = ?1",
                params![order.idempotency_key],
                row_to_order,
            )?;
            Ok((stored, inserted == 1))
        })
        .await
    }

    /// The order stored under `key`, if any.
    pub async fn by_key(&self, key: String) -> rusqlite::Result<Option<OutboxOrder>> {
        self.run(move |c| {
            c.query_row(
                "SELECT * FROM orders WHERE idempotency_key = ?1",
                params![key],
                row_to_order,
            )
            .optional()
        })
        .await
    }

    /// The order with shop id `id`, if any.
    pub async fn get(&self, id: i64) -> rusqlite::Result<Option<OutboxOrder>> {
        self.run(move |c| {
            c.query_row(
                "SELECT * FROM orders WHERE id = ?1",
                params![id],
                row_to_order,
            )
            .optional()
        })
        .await
    }

    /// Orders still pending.
    pub async fn pending_count(&self) -> rusqlite::Result<u64> {
        self.run(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM orders WHERE state = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
        })
        .await
    }

    async fn due(&self, limit: i64) -> rusqlite::Result<Vec<OutboxOrder>> {
        self.run(move |c| {
            let mut stmt = c.prepare(
                "SELECT * FROM orders WHERE state = 'pending' AND next_attempt_ms <= ?1
                 ORDER BY next_attempt_ms, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![unix_now_ms(), limit], row_to_order)?;
            rows.collect()
        })
        .await
    }

    async fn next_due_ms(&self) -> rusqlite::Result<Option<i64>> {
        self.run(|c| {
            c.query_row(
                "SELECT MIN(next_attempt_ms) FROM orders WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn confirm(&self, id: i64, c: Confirmation) -> rusqlite::Result<OutboxOrder> {
        self.run(move |conn| {
            conn.execute(
                "UPDATE orders SET state = 'confirmed', confirmation = ?2, total_cents = ?3,
                 attempts = attempts + 1 WHERE id = ?1",
                params![id, c.confirmation, c.total_cents as i64],
            )?;
            conn.query_row(
                "SELECT * FROM orders WHERE id = ?1",
                params![id],
                row_to_order,
            )
        })
        .await
    }

    async fn reject(&self, id: i64, reason: String) -> rusqlite::Result<OutboxOrder> {
        self.run(move |conn| {
            conn.execute(
                "UPDATE orders SET state = 'rejected', reason = ?2, attempts = attempts + 1
                 WHERE id = ?1 AND state = 'pending'",
                params![id, reason],
            )?;
            conn.query_row(
                "SELECT * FROM orders WHERE id = ?1",
                params![id],
                row_to_order,
            )
        })
        .await
    }

    async fn postpone(&self, id: i64, delay: Duration) -> rusqlite::Result<OutboxOrder> {
        self.run(move |conn| {
            conn.execute(
                "UPDATE orders SET attempts = attempts + 1, next_attempt_ms = ?2
                 WHERE id = ?1 AND state = 'pending'",
                params![id, unix_now_ms() + delay.as_millis() as i64],
            )?;
            conn.query_row(
                "SELECT * FROM orders WHERE id = ?1",
                params![id],
                row_to_order,
            )
        })
        .await
    }

    /// Forwards one stored order to checkout and records the outcome.
    pub async fn forward(
        &self,
        checkout: &Upstream,
        order: &OutboxOrder,
        backoff: &Backoff,
    ) -> rusqlite::Result<Forwarded> {
        let result: Result<Confirmation, UpstreamError> = checkout
            .post_json("/orders", &order.request.idempotency_key, &order.request)
            .await;
        match result {
            Ok(c) => {
                tracing::info!(order = order.id, confirmation = %c.confirmation, "order confirmed");
                metrics::counter!("storefront_orders_confirmed_total").increment(1);
                Ok(Forwarded::Confirmed(self.confirm(order.id, c).await?))
            }
            Err(UpstreamError::Rejected(status, reason)) => {
                tracing::warn!(order = order.id, %status, %reason, "order rejected by checkout");
                metrics::counter!("storefront_orders_rejected_total").increment(1);
                Ok(Forwarded::Rejected(self.reject(order.id, reason).await?))
            }
            Err(e) => {
                let delay = backoff.delay(order.attempts);
                tracing::info!(order = order.id, error = %e, retry_in = ?delay, "checkout unavailable; order stays pending");
                metrics::counter!("storefront_orders_deferred_total").increment(1);
                let stored = self.postpone(order.id, delay).await?;
                self.wake.notify_one();
                Ok(Forwarded::Pending(stored))
            }
        }
    }

    /// Starts the worker that replays pending orders until checkout confirms them. The worker
    /// stops when the returned guard is dropped.
    pub fn spawn_replayer(&self, checkout: Upstream, backoff: Backoff) -> AbortOnDrop {
        let outbox = self.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                match outbox.due(32).await {
                    Ok(orders) => {
                        for order in orders {
                            if let Err(e) = outbox.forward(&checkout, &order, &backoff).await {
                                tracing::error!(error = %e, "outbox write failed");
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "outbox read failed"),
                }
                let wait = match outbox.next_due_ms().await {
                    Ok(Some(at)) => {
                        Duration::from_millis((at - unix_now_ms()).clamp(10, 1000) as u64)
                    }
                    _ => Duration::from_secs(1),
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = outbox.wake.notified() => {
                        // A new pending order: look again soon, but not in a busy loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }))
    }
}

/// Exponential backoff with full jitter for the outbox replay (AWS Architecture Blog,
/// "Exponential Backoff And Jitter", 2015): `uniform(base/2, min(max, base × 2^attempt))`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `attempts` failed attempts.
    pub fn delay(&self, attempts: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempts.min(16));
        let cap = exp.min(self.max);
        let low = (self.base / 2).min(cap);
        let span = cap.saturating_sub(low);
        low + span.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_same_order() {
        let dir = crate::test_dir("outbox");
        let outbox = Outbox::open(&dir.join("outbox.db")).unwrap();
        let order = OrderRequest {
            idempotency_key: "abc".into(),
            customer: "Ada".into(),
            email: "a@example.com".into(),
            items: vec![LineItem {
                product_id: 3,
                quantity: 1,
            }],
        };
        let (a, new_a) = outbox.record(order.clone()).await.unwrap();
        let (b, new_b) = outbox.record(order).await.unwrap();
        assert!(new_a && !new_b);
        assert_eq!(a.id, b.id);
        assert_eq!(a.state, OrderState::Pending);
        assert_eq!(outbox.pending_count().await.unwrap(), 1);
        assert_eq!(
            outbox.get(a.id).await.unwrap().unwrap().request.items.len(),
            1
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 0..40 {
            let d = b.delay(attempt);
            assert!(d >= Duration::from_millis(50), "{d:?}");
            assert!(d <= Duration::from_secs(2), "{d:?}");
        }
        assert!(b.delay(0) <= Duration::from_millis(100));
    }
}
