//! The order outbox: an order is written durably *before* it is forwarded, so no order is
//! lost while checkout is down, and a worker replays pending orders until checkout confirms
//! (the transactional-outbox pattern).
//!
//! The orders live in an [`OrderStore`] (SQLite by default, or PostgreSQL shared by every
//! shop instance). The idempotency key is UNIQUE, so submitting the same key twice yields the
//! same order. Whoever records or replays an order first *claims* it for a lease: the
//! instance that recorded it forwards it at once, and if that instance dies, any worker
//! sharing the store takes the order over when the lease runs out.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use super::upstream::{Upstream, UpstreamError};
use crate::api::{Confirmation, OrderRequest};
use crate::orders::{
    Claim, NewOrder, OrderStore, Outcome, SqliteStore, StoreError, instance_name, new_public_id,
};
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
    pub(crate) fn parse(s: &str) -> Self {
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
    /// The public order id (what `/orders/{id}` takes): 128 random bits in hex, the only id
    /// a customer sees.
    pub id: String,
    /// The store's internal row id (never shown to customers).
    #[serde(skip)]
    pub seq: i64,
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
    /// The worker that last claimed it (`<host>:<pid>`).
    pub claimed_by: Option<String>,
    /// When it was recorded, Unix milliseconds.
    pub created_ms: i64,
}

impl OutboxOrder {
    /// Whether `request` is the same order as this one's: same customer, e-mail and items,
    /// or the same customer and e-mail with an empty cart (the form sent again after the
    /// cart was emptied by the first answer).
    pub fn same_order(&self, request: &OrderRequest) -> bool {
        self.request.customer == request.customer
            && self.request.email == request.email
            && (request.items.is_empty() || self.request.items == request.items)
    }
}

/// Where orders go to be confirmed: the checkout service (an [`Upstream`]), or a stand-in in
/// tests.
pub trait Checkout: Send + Sync + 'static {
    /// Submits `order` (idempotent on its key).
    fn submit<'a>(
        &'a self,
        order: &'a OrderRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Confirmation, UpstreamError>> + Send + 'a>>;
}

impl Checkout for Upstream {
    fn submit<'a>(
        &'a self,
        order: &'a OrderRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Confirmation, UpstreamError>> + Send + 'a>> {
        Box::pin(self.post_json("/orders", &order.idempotency_key, order))
    }
}

/// The outbox over an [`OrderStore`]. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Outbox {
    store: Arc<dyn OrderStore>,
    wake: Arc<Notify>,
    owner: String,
    lease: Duration,
}

/// How long one store call may take before the outbox gives up on it (a database that does
/// not answer is a database that is down).
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default claim lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

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

async fn timed<T>(f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(STORE_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(StoreError::bare("the database did not answer in time")))
}

impl Outbox {
    /// The outbox in the SQLite file at `path` (created if needed), with the default lease.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::new(Arc::new(SqliteStore::open(path)?), DEFAULT_LEASE))
    }

    /// The outbox over `store`; an order claimed by this outbox's worker is held for `lease`
    /// (longer than one forwarding attempt takes) before another worker may take it over.
    pub fn new(store: Arc<dyn OrderStore>, lease: Duration) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
            owner: instance_name(),
            lease,
        }
    }

    /// The same store under another worker name (tests: two workers in one process).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self.wake = Arc::new(Notify::new());
        self
    }

    /// Its store.
    pub fn store(&self) -> &Arc<dyn OrderStore> {
        &self.store
    }

    /// This worker's name, as recorded in `claimed_by`.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn lease_until(&self, now_ms: i64) -> i64 {
        now_ms + self.lease.as_millis() as i64
    }

    /// Stores `order` durably (once per idempotency key) and returns the stored order and
    /// whether it was new. A new order is claimed by this worker for the lease. Returns only
    /// once the order is durable.
    pub async fn record(&self, order: OrderRequest) -> Result<(OutboxOrder, bool), StoreError> {
        let now_ms = unix_now_ms();
        let new = NewOrder {
            public_id: new_public_id()?,
            request: order,
            owner: self.owner.clone(),
            now_ms,
            lease_until_ms: self.lease_until(now_ms),
        };
        timed(self.store.record(&new)).await
    }

    /// The order stored under `key`, if any.
    pub async fn by_key(&self, key: &str) -> Result<Option<OutboxOrder>, StoreError> {
        timed(self.store.by_key(key)).await
    }

    /// The order with public id `id`, if any.
    pub async fn get(&self, id: &str) -> Result<Option<OutboxOrder>, StoreError> {
        if !crate::orders::is_public_id(id) {
            return Ok(None);
        }
        timed(self.store.by_public_id(id)).await
    }

    /// Orders still pending.
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        timed(self.store.pending_count()).await
    }

    /// Claims up to `limit` due pending orders for this worker.
    pub async fn claim_due(&self, limit: u32) -> Result<Vec<OutboxOrder>, StoreError> {
        let now_ms = unix_now_ms();
        let claim = Claim {
            owner: self.owner.clone(),
            now_ms,
            lease_until_ms: self.lease_until(now_ms),
            limit,
        };
        timed(self.store.claim_due(&claim)).await
    }

    /// Gives up this worker's claim on `order` after an attempt that did not finish (the
    /// customer's wait ran out): it is due again after `delay`.
    pub async fn postpone(
        &self,
        order: &OutboxOrder,
        delay: Duration,
    ) -> Result<OutboxOrder, StoreError> {
        let outcome = Outcome::Postponed {
            until_ms: unix_now_ms() + delay.as_millis() as i64,
        };
        let settled = timed(self.store.settle(order.seq, &outcome)).await?;
        self.wake.notify_one();
        Ok(settled.order)
    }

    /// Forwards one claimed order to checkout and records the outcome.
    pub async fn forward<C: Checkout + ?Sized>(
        &self,
        checkout: &C,
        order: &OutboxOrder,
        backoff: &Backoff,
    ) -> Result<Forwarded, StoreError> {
        let kind = self.store.kind();
        match checkout.submit(&order.request).await {
            Ok(c) => {
                let outcome = Outcome::Confirmed {
                    confirmation: c.confirmation.clone(),
                    total_cents: c.total_cents,
                };
                let settled = timed(self.store.settle(order.seq, &outcome)).await?;
                if settled.changed {
                    tracing::info!(order = order.seq, confirmation = %c.confirmation, store = kind, "order confirmed");
                    metrics::counter!("storefront_orders_confirmed_total").increment(1);
                }
                Ok(Forwarded::Confirmed(settled.order))
            }
            Err(UpstreamError::Rejected(status, reason)) => {
                tracing::warn!(order = order.seq, %status, %reason, "order rejected by checkout");
                let settled =
                    timed(self.store.settle(order.seq, &Outcome::Rejected { reason })).await?;
                if settled.changed {
                    metrics::counter!("storefront_orders_rejected_total").increment(1);
                }
                Ok(Forwarded::Rejected(settled.order))
            }
            Err(e) => {
                let delay = backoff.delay(order.attempts);
                tracing::info!(order = order.seq, error = %e, retry_in = ?delay, "checkout unavailable; order stays pending");
                metrics::counter!("storefront_orders_deferred_total").increment(1);
                let stored = self.postpone(order, delay).await?;
                Ok(Forwarded::Pending(stored))
            }
        }
    }

    /// One pass of the replay worker: claims due orders and forwards each. Returns how many
    /// it claimed.
    pub async fn replay_once<C: Checkout + ?Sized>(
        &self,
        checkout: &C,
        backoff: &Backoff,
    ) -> Result<usize, StoreError> {
        let orders = self.claim_due(8).await?;
        for order in &orders {
            if let Err(e) = self.forward(checkout, order, backoff).await {
                tracing::warn!(error = %e, order = order.seq, "order store unavailable; the claim will run out and the order be replayed");
            }
        }
        Ok(orders.len())
    }

    /// Starts the worker that replays pending orders (this instance's and, with a shared
    /// store, any other's whose claim ran out) until checkout confirms them. The worker stops
    /// when the returned guard is dropped. While the store is down it keeps trying, once a
    /// second.
    pub fn spawn_replayer<C: Checkout>(&self, checkout: C, backoff: Backoff) -> AbortOnDrop {
        let outbox = self.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut store_down = false;
            loop {
                let wait = match outbox.replay_once(&checkout, &backoff).await {
                    Ok(n) => {
                        if store_down {
                            tracing::info!(store = outbox.store.kind(), "order store is back");
                            store_down = false;
                        }
                        if n > 0 {
                            Duration::from_millis(10)
                        } else {
                            match timed(outbox.store.next_due_ms()).await {
                                Ok(Some(at)) => Duration::from_millis(
                                    (at - unix_now_ms()).clamp(10, 1000) as u64,
                                ),
                                _ => Duration::from_secs(1),
                            }
                        }
                    }
                    Err(e) => {
                        if !store_down {
                            tracing::error!(error = %e, store = outbox.store.kind(), "order store unavailable; pending orders wait for it");
                            store_down = true;
                        }
                        Duration::from_secs(1)
                    }
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
    use crate::api::LineItem;

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
            outbox
                .get(&a.id)
                .await
                .unwrap()
                .unwrap()
                .request
                .items
                .len(),
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
