//! The order store: where the shop's outbox keeps its orders, behind one trait with two
//! implementations.
//!
//! - [`SqliteStore`]: the embedded default, one file per shop instance (WAL,
//!   `synchronous=FULL`). Nothing to install.
//! - [`PgStore`]: PostgreSQL through `tokio-postgres` and a `deadpool-postgres` pool
//!   (`--database-url postgres://…`). Every shop instance shares the one outbox, so any
//!   instance confirms any other's orders, including those of an instance that died.
//!
//! Both keep the same rules:
//!
//! - the idempotency key is a UNIQUE constraint: recording the same key twice yields the
//!   same order (`INSERT … ON CONFLICT DO NOTHING`, then read back);
//! - every order has a public id of 128 random bits from the operating system's generator
//!   ([`new_public_id`]), the only id a customer ever sees: order pages cannot be guessed
//!   or enumerated;
//! - a worker *claims* due pending orders with a lease ([`OrderStore::claim_due`]: one
//!   `UPDATE … RETURNING` whose rows PostgreSQL selects with `FOR UPDATE SKIP LOCKED`), so
//!   two workers never forward the same order at once, and a dead worker's claim simply
//!   runs out;
//! - an order leaves `pending` exactly once ([`OrderStore::settle`] only changes a pending
//!   order and says whether it did);
//! - the schema is versioned: numbered migrations are applied at start-up, each in its own
//!   transaction, and recorded in `schema_migrations`.

mod postgres;
mod server;
mod sqlite;

use std::future::Future;
use std::pin::Pin;

pub use postgres::PgStore;
pub use server::{LocalPostgres, LocalPostgresError, bin_dir as postgres_bin_dir};
pub use sqlite::SqliteStore;

use crate::api::OrderRequest;
use crate::shop::OutboxOrder;

/// The future every [`OrderStore`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why the order store could not do what was asked: the database is unreachable, refused the
/// statement or answered something unexpected. Opaque; the cause is its `source()`.
#[derive(Debug)]
pub struct StoreError {
    what: &'static str,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub(crate) fn new(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what,
            source: Some(source.into()),
        }
    }

    pub(crate) fn bare(what: &'static str) -> Self {
        Self { what, source: None }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "order store: {}", self.what)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A new order to record.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Its public id ([`new_public_id`]).
    pub public_id: String,
    /// The order as checkout will get it.
    pub request: OrderRequest,
    /// Who records it: it is claimed by this worker until `lease_until_ms`.
    pub owner: String,
    /// Now, in Unix milliseconds.
    pub now_ms: i64,
    /// Until when the recording worker holds it (no other worker forwards it before).
    pub lease_until_ms: i64,
}

/// A claim on due pending orders.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The claiming worker.
    pub owner: String,
    /// Now, in Unix milliseconds: orders due at or before this are claimed.
    pub now_ms: i64,
    /// Until when the claimed orders are held.
    pub lease_until_ms: i64,
    /// At most this many.
    pub limit: u32,
}

/// How a forwarding attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Checkout confirmed the order.
    Confirmed {
        /// Checkout's confirmation number.
        confirmation: String,
        /// What checkout charged.
        total_cents: u64,
    },
    /// Checkout refused it for good.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Checkout could not be reached: try again at `until_ms` (the claim is given up).
    Postponed {
        /// When the order is due again, Unix milliseconds.
        until_ms: i64,
    },
}

/// What [`OrderStore::settle`] did.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The order as stored afterwards.
    pub order: OutboxOrder,
    /// Whether this call changed it (`false`: it was no longer pending, someone else
    /// settled it first).
    pub changed: bool,
}

/// Where the outbox keeps its orders. See the [module docs](self) for the rules every
/// implementation keeps.
pub trait OrderStore: Send + Sync + std::fmt::Debug + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn kind(&self) -> &'static str;

    /// Stores `order` durably once per idempotency key; returns the stored order (the earlier
    /// one if the key was known) and whether it is new. It returns only once the order is
    /// durable.
    fn record<'a>(&'a self, order: &'a NewOrder) -> StoreFuture<'a, (OutboxOrder, bool)>;

    /// The order recorded under the idempotency key `key`.
    fn by_key<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<OutboxOrder>>;

    /// The order with public id `id`.
    fn by_public_id<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<OutboxOrder>>;

    /// How many orders are pending.
    fn pending_count(&self) -> StoreFuture<'_, u64>;

    /// Claims up to `claim.limit` pending orders that are due (their previous lease or
    /// backoff has run out) for `claim.owner` until `claim.lease_until_ms`, atomically: two
    /// concurrent claims never get the same order.
    fn claim_due<'a>(&'a self, claim: &'a Claim) -> StoreFuture<'a, Vec<OutboxOrder>>;

    /// The earliest time a pending order is due, Unix milliseconds.
    fn next_due_ms(&self) -> StoreFuture<'_, Option<i64>>;

    /// Records the outcome of a forwarding attempt on the order with internal id `seq`, if it
    /// is still pending.
    fn settle<'a>(&'a self, seq: i64, outcome: &'a Outcome) -> StoreFuture<'a, Settled>;
}

/// A fresh public order id: 128 bits from the operating system's random number generator,
/// as 32 lowercase hex digits.
pub fn new_public_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::new("no random bytes", e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` has the shape of a public order id (32 lowercase hex digits).
pub fn is_public_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Who this process is when it claims orders: `<host>:<pid>`, so that an operator (and the
/// chaos runner) can tell which instance holds a claim.
pub fn instance_name() -> String {
    instance_name_for(std::process::id())
}

/// The name the process `pid` on this host claims orders under (see [`instance_name`]).
pub fn instance_name_for(pid: u32) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{pid}")
}

/// Opens the store a shop uses: PostgreSQL at `database_url` when given (its migrations
/// applied), else SQLite in `data_dir/outbox.db`.
pub async fn open(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn OrderStore>, StoreError> {
    match database_url {
        Some(url) => Ok(std::sync::Arc::new(PgStore::connect(url).await?)),
        None => Ok(std::sync::Arc::new(SqliteStore::open(
            &data_dir.join("outbox.db"),
        )?)),
    }
}

pub(crate) fn clamp_u64(v: Option<i64>) -> Option<u64> {
    v.map(|t| t.max(0) as u64)
}

pub(crate) fn clamp_u32(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ids_are_128_random_bits_in_hex() {
        let a = new_public_id().unwrap();
        let b = new_public_id().unwrap();
        assert!(is_public_id(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_public_id("1"));
        assert!(!is_public_id(&a.to_uppercase()));
    }
}
