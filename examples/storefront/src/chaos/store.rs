//! The order stores the runner reads to count orders and to find the moment to kill: the
//! checkout service's database, the shops' outboxes, or their shared PostgreSQL store (whose
//! server the runner starts with `--database postgres`).
//!
//! At the end of a run the runner waits until every acknowledged order is confirmed in the
//! checkout service's database (or a time limit passes), then counts the orders submitted,
//! acknowledged, confirmed, lost and duplicated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::report::{Collector, OrderFacts, OrdersReport};
use super::topology::Topology;
use super::{lock, say};
use crate::orders::LocalPostgres;

/// Starts a PostgreSQL server under `dir` for the shops' shared order store: the server and
/// the URL of its `storefront` database.
pub(super) async fn start_postgres(dir: &Path) -> Result<(LocalPostgres, String), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    say("chaos: starting PostgreSQL for the shops' shared order store");
    let parent = dir.to_path_buf();
    let server = tokio::task::spawn_blocking(move || LocalPostgres::start(&parent))
        .await
        .map_err(|e| format!("starting PostgreSQL: {e}"))?
        .map_err(|e| format!("cannot start PostgreSQL: {e}"))?;
    let url = server
        .create_database("storefront")
        .await
        .map_err(|e| e.to_string())?;
    Ok((server, url))
}

/// The shared PostgreSQL order store, read by the runner.
pub(super) struct SharedDb {
    client: tokio_postgres::Client,
    _conn: crate::AbortOnDrop,
    /// Shop A's name in `claimed_by`.
    shop_a: String,
}

impl SharedDb {
    pub(super) async fn connect(url: &str, shop_a: String) -> Result<Self, String> {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to the order store: {e}"))?;
        let conn = crate::AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        Ok(Self {
            client,
            _conn: conn,
            shop_a,
        })
    }

    /// Shop A's orders recorded after `recorded_after_ms` and not answered yet (see
    /// [`unanswered_orders`]: the same rule, on the claim shop A holds).
    pub(super) async fn unanswered(&self, recorded_after_ms: i64) -> Result<Vec<String>, String> {
        let rows = self
            .client
            .query(
                "SELECT idempotency_key FROM orders
                 WHERE state = 'pending' AND attempts = 0 AND claimed_by = $1
                   AND created_ms > $2",
                &[&self.shop_a, &recorded_after_ms],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Of `keys`, how many the other shop confirmed (confirmed, last claimed by another).
    pub(super) async fn confirmed_by_others(&self, keys: &[String]) -> Result<u64, String> {
        let row = self
            .client
            .query_one(
                "SELECT COUNT(*) FROM orders WHERE idempotency_key = ANY($1)
                   AND state = 'confirmed' AND claimed_by <> $2",
                &[&keys, &self.shop_a],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}

/// The run's orders against the checkout database.
pub(super) struct Orders {
    /// The report's counts.
    pub(super) report: OrdersReport,
    /// The facts side file's account of them.
    pub(super) facts: OrderFacts,
    /// Confirmed rows per idempotency key.
    pub(super) confirmed: HashMap<String, u64>,
}

/// Waits until every order `collector` saw acknowledged is confirmed in the checkout
/// database (at most 15 s with `quick`, else 60 s), then counts the orders.
pub(super) async fn count_orders(
    topo: &Topology,
    collector: &Mutex<Collector>,
    quick: bool,
) -> Result<Orders, String> {
    let settle_started = Instant::now();
    let settle_max = if quick {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(60)
    };
    let orders: Vec<(String, bool)> = lock(collector)
        .orders
        .iter()
        .map(|(k, a)| (k.clone(), *a))
        .collect();
    let db = topo.checkout_db();
    let (confirmed, dup_extra) = loop {
        let path = db.clone();
        let read = tokio::task::spawn_blocking(move || read_confirmed(&path))
            .await
            .map_err(|e| format!("reading the checkout database: {e}"))?
            .map_err(|e| format!("reading {}: {e}", db.display()))?;
        let all_in = orders
            .iter()
            .filter(|(_, ack)| *ack)
            .all(|(k, _)| read.0.contains_key(k));
        if all_in || settle_started.elapsed() > settle_max {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut o = OrdersReport::default();
    let mut of = OrderFacts {
        settle_s: settle_started.elapsed().as_secs_f64(),
        ..OrderFacts::default()
    };
    for (key, ack) in &orders {
        let n = confirmed.get(key).copied().unwrap_or(0);
        o.submitted += 1;
        o.acknowledged += u64::from(*ack);
        o.confirmed += u64::from(n > 0);
        if *ack && n == 0 {
            o.lost += 1;
            if of.lost_keys.len() < 20 {
                of.lost_keys.push(key.clone());
            }
        }
        if !*ack && n > 0 {
            of.confirmed_unacknowledged += 1;
        }
    }
    o.duplicated = dup_extra;
    Ok(Orders {
        report: o,
        facts: of,
        confirmed,
    })
}

/// Confirmed orders in the checkout database: idempotency key → rows, and extra rows per
/// chaos customer (a duplicate under another key would show there).
pub(super) fn read_confirmed(
    db: &Path,
) -> Result<(std::collections::HashMap<String, u64>, u64), rusqlite::Error> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut keys = std::collections::HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT idempotency_key, COUNT(*) FROM confirmed_orders GROUP BY idempotency_key",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (k, n) = row?;
        keys.insert(k, n.max(0) as u64);
    }
    let extra: i64 = conn.query_row(
        "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM confirmed_orders
         WHERE customer LIKE 'chaos-%' GROUP BY customer)",
        [],
        |r| r.get(0),
    )?;
    Ok((keys, extra.max(0) as u64))
}

/// How many idempotency keys appear in both shops' outboxes, and how many of `caught` do.
pub(super) fn in_both(
    outboxes: &[PathBuf; 2],
    caught: &[String],
) -> Result<(u64, u64), rusqlite::Error> {
    let keys = |p: &Path| -> Result<std::collections::HashSet<String>, rusqlite::Error> {
        let conn =
            rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut stmt = conn.prepare("SELECT idempotency_key FROM orders")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    };
    let a = keys(&outboxes[0])?;
    let b = keys(&outboxes[1])?;
    let caught_in_b = caught.iter().filter(|k| b.contains(*k)).count() as u64;
    Ok((a.intersection(&b).count() as u64, caught_in_b))
}

/// The orders in a shop's outbox that the shop has recorded and certainly not answered yet,
/// read at `now_ms`: still `pending`, no forwarding attempt finished (`attempts = 0`; the
/// shop writes the outcome of an attempt, confirmed or failed, before it answers), and
/// recorded after `recorded_after_ms` (so the handler's checkout budget, the only other way
/// it answers, has not run out).
pub(super) fn unanswered_orders(
    db: &Path,
    recorded_after_ms: i64,
) -> Result<Vec<String>, rusqlite::Error> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_millis(200))?;
    let mut stmt = conn.prepare(
        "SELECT idempotency_key FROM orders
         WHERE state = 'pending' AND attempts = 0 AND created_ms > ?1",
    )?;
    let rows = stmt.query_map([recorded_after_ms], |r| r.get::<_, String>(0))?;
    rows.collect()
}
