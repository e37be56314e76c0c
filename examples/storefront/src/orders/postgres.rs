//! The shared order store: PostgreSQL through `tokio-postgres` and a `deadpool-postgres`
//! pool.
//!
//! Every shop instance connects to the same database and so shares one outbox. Claims use
//! `SELECT … FOR UPDATE SKIP LOCKED` inside one `UPDATE … RETURNING`: concurrent workers
//! skip each other's rows instead of waiting for them, and a row committed as claimed by
//! another worker is no longer due when re-checked. With the server down every call fails
//! fast (connection refused, or the pool's and the connection's timeouts), which the shop
//! turns into its degraded mode.

use std::str::FromStr as _;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Row};

use super::{
    Claim, NewOrder, OrderStore, Outcome, Settled, StoreError, StoreFuture, clamp_u32, clamp_u64,
};
use crate::api::{LineItem, OrderRequest};
use crate::shop::{OrderState, OutboxOrder};

/// The schema, one migration per version, each applied in its own transaction under an
/// advisory lock (so that shop instances starting together do not race).
const MIGRATIONS: [(i64, &str); 1] = [(
    1,
    "CREATE TABLE orders (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        public_id TEXT NOT NULL UNIQUE,
        idempotency_key TEXT NOT NULL UNIQUE,
        customer TEXT NOT NULL,
        email TEXT NOT NULL,
        items TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        confirmation TEXT,
        total_cents BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_ms BIGINT NOT NULL DEFAULT 0,
        reason TEXT,
        created_ms BIGINT NOT NULL,
        claimed_by TEXT
    );
    CREATE INDEX orders_due ON orders (state, next_attempt_ms);",
)];

/// The advisory lock key taken while migrating (any constant; "rampart" in ASCII).
const MIGRATION_LOCK: i64 = 0x72_61_6d_70_61_72_74;

/// How long to wait for a new connection or a free one from the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The PostgreSQL order store. Cloning shares the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

fn row_to_order(row: &Row) -> Result<OutboxOrder, StoreError> {
    let e = |e| StoreError::new("unexpected row", e);
    let items: String = row.try_get("items").map_err(e)?;
    let items: Vec<LineItem> = serde_json::from_str(&items).unwrap_or_default();
    let state: String = row.try_get("state").map_err(e)?;
    Ok(OutboxOrder {
        id: row.try_get("public_id").map_err(e)?,
        seq: row.try_get("id").map_err(e)?,
        request: OrderRequest {
            idempotency_key: row.try_get("idempotency_key").map_err(e)?,
            customer: row.try_get("customer").map_err(e)?,
            email: row.try_get("email").map_err(e)?,
            items,
        },
        state: OrderState::parse(&state),
        confirmation: row.try_get("confirmation").map_err(e)?,
        total_cents: clamp_u64(row.try_get("total_cents").map_err(e)?),
        attempts: clamp_u32(row.try_get("attempts").map_err(e)?),
        reason: row.try_get("reason").map_err(e)?,
        claimed_by: row.try_get("claimed_by").map_err(e)?,
        created_ms: row.try_get("created_ms").map_err(e)?,
    })
}

fn err(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::new(what, e)
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut cfg = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::new("invalid database url", e))?;
        cfg.connect_timeout(CONNECT_TIMEOUT);
        cfg.application_name("storefront");
        let manager = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::new("cannot build the connection pool", e))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::new("database unavailable", e))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        for (version, sql) in MIGRATIONS {
            let tx = client
                .transaction()
                .await
                .map_err(err("cannot begin a migration"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(err("cannot take the migration lock"))?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version BIGINT PRIMARY KEY,
                    applied_ms BIGINT NOT NULL
                )",
            )
            .await
            .map_err(err("cannot create schema_migrations"))?;
            let done = tx
                .query_opt(
                    "SELECT version FROM schema_migrations WHERE version = $1",
                    &[&version],
                )
                .await
                .map_err(err("cannot read schema_migrations"))?;
            if done.is_some() {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(err("migration failed"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
                &[&version, &crate::unix_now_ms()],
            )
            .await
            .map_err(err("cannot record a migration"))?;
            tx.commit()
                .await
                .map_err(err("cannot commit a migration"))?;
            tracing::info!(version, store = "postgres", "order store migration applied");
        }
        Ok(())
    }

    async fn one(
        &self,
        what: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<OutboxOrder>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(err(what))?;
        let row = client.query_opt(&stmt, params).await.map_err(err(what))?;
        row.as_ref().map(row_to_order).transpose()
    }
}

impl OrderStore for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn record<'a>(&'a self, o: &'a NewOrder) -> StoreFuture<'a, (OutboxOrder, bool)> {
        Box::pin(async move {
            let items = serde_json::to_string(&o.request.items).unwrap_or_else(|_| "[]".into());
            let inserted = self
                .one(
                    "cannot record the order",
                    "INSERT INTO orders (public_id, idempotency_key, customer, email, items,
                         created_ms, next_attempt_ms, claimed_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (idempotency_key) DO NOTHING
                     RETURNING *",
                    &[
                        &o.public_id,
                        &o.request.idempotency_key,
                        &o.request.customer,
                        &o.request.email,
                        &items,
                        &o.now_ms,
                        &o.lease_until_ms,
                        &o.owner,
                    ],
                )
                .await?;
            if let Some(order) = inserted {
                return Ok((order, true));
            }
            let existing = self.by_key(&o.request.idempotency_key).await?;
            existing
                .map(|order| (order, false))
                .ok_or_else(|| StoreError::bare("the order vanished after it was recorded"))
        })
    }

    fn by_key<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<OutboxOrder>> {
        Box::pin(async move {
            self.one(
                "cannot read an order",
                "SELECT * FROM orders WHERE idempotency_key = $1",
                &[&key],
            )
            .await
        })
    }

    fn by_public_id<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<OutboxOrder>> {
        Box::pin(async move {
            self.one(
                "cannot read an order",
                "SELECT * FROM orders WHERE public_id = $1",
                &[&id],
            )
            .await
        })
    }

    fn pending_count(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT COUNT(*) FROM orders WHERE state = 'pending'", &[])
                .await
                .map_err(err("cannot count pending orders"))?;
            let n: i64 = row.try_get(0).map_err(err("cannot count pending orders"))?;
            Ok(n.max(0) as u64)
        })
    }

    fn claim_due<'a>(&'a self, c: &'a Claim) -> StoreFuture<'a, Vec<OutboxOrder>> {
        Box::pin(async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "UPDATE orders SET next_attempt_ms = $1, claimed_by = $2
                     WHERE id IN (SELECT id FROM orders
                                  WHERE state = 'pending' AND next_attempt_ms <= $3
                                  ORDER BY next_attempt_ms, id LIMIT $4
                                  FOR UPDATE SKIP LOCKED)
                     RETURNING *",
                )
                .await
                .map_err(err("cannot claim orders"))?;
            let rows = client
                .query(
                    &stmt,
                    &[&c.lease_until_ms, &c.owner, &c.now_ms, &i64::from(c.limit)],
                )
                .await
                .map_err(err("cannot claim orders"))?;
            rows.iter().map(row_to_order).collect()
        })
    }

    fn next_due_ms(&self) -> StoreFuture<'_, Option<i64>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT MIN(next_attempt_ms) FROM orders WHERE state = 'pending'",
                    &[],
                )
                .await
                .map_err(err("cannot read the next due order"))?;
            row.try_get(0)
                .map_err(err("cannot read the next due order"))
        })
    }

    fn settle<'a>(&'a self, seq: i64, outcome: &'a Outcome) -> StoreFuture<'a, Settled> {
        Box::pin(async move {
            let what = "cannot settle the order";
            let changed = match outcome {
                Outcome::Confirmed {
                    confirmation,
                    total_cents,
                } => {
                    let total = *total_cents as i64;
                    self.one(
                        what,
                        "UPDATE orders SET state = 'confirmed', confirmation = $2,
                             total_cents = $3, attempts = attempts + 1
                         WHERE id = $1 AND state = 'pending' RETURNING *",
                        &[&seq, confirmation, &total],
                    )
                    .await?
                }
                Outcome::Rejected { reason } => {
                    self.one(
                        what,
                        "UPDATE orders SET state = 'rejected', reason = $2,
                             attempts = attempts + 1
                         WHERE id = $1 AND state = 'pending' RETURNING *",
                        &[&seq, reason],
                    )
                    .await?
                }
                Outcome::Postponed { until_ms } => {
                    self.one(
                        what,
                        "UPDATE orders SET attempts = attempts + 1, next_attempt_ms = $2
                         WHERE id = $1 AND state = 'pending' RETURNING *",
                        &[&seq, until_ms],
                    )
                    .await?
                }
            };
            if let Some(order) = changed {
                return Ok(Settled {
                    order,
                    changed: true,
                });
            }
            let order = self
                .one(what, "SELECT * FROM orders WHERE id = $1", &[&seq])
                .await?
                .ok_or_else(|| StoreError::bare("no such order to settle"))?;
            Ok(Settled {
                order,
                changed: false,
            })
        })
    }
}
