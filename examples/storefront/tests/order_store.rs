//! The order-store suite: the same cases against the embedded SQLite store and against a real
//! PostgreSQL server started by the test (Debian's `postgresql` package, run as an
//! unprivileged user in a temporary directory). Without the server binaries the PostgreSQL
//! cases say loudly that they were skipped, and fail when `CI` is set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod pg;
mod support;

use pg::postgres;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use storefront::api::{Confirmation, LineItem, OrderRequest};
use storefront::orders::{
    Claim, LocalPostgres, NewOrder, OrderStore, Outcome, PgStore, SqliteStore, is_public_id,
    new_public_id,
};
use storefront::shop::{Backoff, Checkout, OrderState, Outbox, UpstreamError};

/// Opens another handle (another connection, as another shop instance would) on one store.
type Opener =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn OrderStore>> + Send>> + Send + Sync>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn request(key: &str) -> OrderRequest {
    OrderRequest {
        idempotency_key: key.to_owned(),
        customer: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
        items: vec![LineItem {
            product_id: 7,
            quantity: 2,
        }],
    }
}

fn new_order(key: &str, owner: &str, now: i64, lease_until: i64) -> NewOrder {
    NewOrder {
        public_id: new_public_id().unwrap(),
        request: request(key),
        owner: owner.to_owned(),
        now_ms: now,
        lease_until_ms: lease_until,
    }
}

fn claim(owner: &str, now: i64) -> Claim {
    Claim {
        owner: owner.to_owned(),
        now_ms: now,
        lease_until_ms: now + 10_000,
        limit: 8,
    }
}

fn sqlite_opener(name: &str) -> Opener {
    let path = support::temp_dir(name).join("outbox.db");
    Arc::new(move || {
        let path = path.clone();
        Box::pin(async move { Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn OrderStore> })
    })
}

async fn pg_opener(pg: &LocalPostgres, db: &str) -> Opener {
    let url = pg.create_database(db).await.unwrap();
    Arc::new(move || {
        let url = url.clone();
        Box::pin(
            async move { Arc::new(PgStore::connect(&url).await.unwrap()) as Arc<dyn OrderStore> },
        )
    })
}

// ---------------------------------------------------------------------------------------
// The suite: every case takes an opener and runs against whichever store it opens.

async fn same_key_same_order_under_a_random_public_id(open: Opener) {
    let store = open().await;
    let now = now_ms();
    let (a, new_a) = store
        .record(&new_order("key-same-1", "w1", now, now + 5_000))
        .await
        .unwrap();
    let (b, new_b) = store
        .record(&new_order("key-same-1", "w2", now, now + 5_000))
        .await
        .unwrap();
    assert!(new_a && !new_b);
    assert_eq!(a.id, b.id, "the same key is the same order");
    assert_eq!(a.seq, b.seq);
    assert!(is_public_id(&a.id), "{}", a.id);
    assert_eq!(a.state, OrderState::Pending);
    assert_eq!(a.claimed_by.as_deref(), Some("w1"));
    let (c, _) = store
        .record(&new_order("key-same-2", "w1", now, now))
        .await
        .unwrap();
    assert_ne!(a.id, c.id);
    let found = store.by_public_id(&a.id).await.unwrap().unwrap();
    assert_eq!(found.request, request("key-same-1"));
    assert!(
        store
            .by_public_id(&new_public_id().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.by_key("key-same-2").await.unwrap().unwrap().id, c.id);
    assert!(store.by_key("key-unknown").await.unwrap().is_none());
    assert_eq!(store.pending_count().await.unwrap(), 2);
}

async fn a_claim_is_exclusive_until_its_lease_runs_out(open: Opener) {
    let a = open().await;
    let b = open().await;
    let now = now_ms();
    let (order, _) = a
        .record(&new_order("key-lease", "w1", now, now + 5_000))
        .await
        .unwrap();
    // The recorder holds it: nobody else may take it before the lease runs out.
    assert!(b.claim_due(&claim("w2", now)).await.unwrap().is_empty());
    assert_eq!(b.next_due_ms().await.unwrap(), Some(now + 5_000));
    let later = now + 5_000;
    let taken = b.claim_due(&claim("w2", later)).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].seq, order.seq);
    assert_eq!(taken[0].claimed_by.as_deref(), Some("w2"));
    // Now w2 holds it.
    assert!(a.claim_due(&claim("w1", later)).await.unwrap().is_empty());
    assert!(
        b.claim_due(&claim("w2", later + 1))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_order_leaves_pending_exactly_once(open: Opener) {
    let store = open().await;
    let now = now_ms();
    let (order, _) = store
        .record(&new_order("key-settle", "w1", now, now))
        .await
        .unwrap();
    let confirmed = Outcome::Confirmed {
        confirmation: "RMP-000001".into(),
        total_cents: 1234,
    };
    let first = store.settle(order.seq, &confirmed).await.unwrap();
    assert!(first.changed);
    assert_eq!(first.order.state, OrderState::Confirmed);
    assert_eq!(first.order.total_cents, Some(1234));
    assert_eq!(first.order.attempts, 1);
    let second = store.settle(order.seq, &confirmed).await.unwrap();
    assert!(!second.changed, "settled twice");
    let rejected = Outcome::Rejected {
        reason: "late".into(),
    };
    let third = store.settle(order.seq, &rejected).await.unwrap();
    assert!(!third.changed);
    assert_eq!(third.order.state, OrderState::Confirmed);
    assert_eq!(store.pending_count().await.unwrap(), 0);
    assert!(
        store
            .claim_due(&claim("w1", now + 60_000))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_postponed_order_comes_due_again(open: Opener) {
    let store = open().await;
    let now = now_ms();
    let (order, _) = store
        .record(&new_order("key-postpone", "w1", now, now))
        .await
        .unwrap();
    let s = store
        .settle(
            order.seq,
            &Outcome::Postponed {
                until_ms: now + 700,
            },
        )
        .await
        .unwrap();
    assert!(s.changed);
    assert_eq!(s.order.state, OrderState::Pending);
    assert_eq!(s.order.attempts, 1);
    assert!(store.claim_due(&claim("w1", now)).await.unwrap().is_empty());
    assert_eq!(store.next_due_ms().await.unwrap(), Some(now + 700));
    assert_eq!(
        store
            .claim_due(&claim("w1", now + 700))
            .await
            .unwrap()
            .len(),
        1
    );
    let rejected = store
        .settle(
            order.seq,
            &Outcome::Rejected {
                reason: "unknown product".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(rejected.order.state, OrderState::Rejected);
    assert_eq!(rejected.order.reason.as_deref(), Some("unknown product"));
}

/// A checkout stand-in that counts submissions per key.
#[derive(Clone, Default)]
struct CountingCheckout {
    submits: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
    total: Arc<AtomicU64>,
}

impl CountingCheckout {
    fn count(&self, key: &str) -> u64 {
        self.submits.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

impl Checkout for CountingCheckout {
    fn submit<'a>(
        &'a self,
        order: &'a OrderRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Confirmation, UpstreamError>> + Send + 'a>> {
        Box::pin(async move {
            *self
                .submits
                .lock()
                .unwrap()
                .entry(order.idempotency_key.clone())
                .or_default() += 1;
            let n = self.total.fetch_add(1, Ordering::SeqCst) + 1;
            // Give the other worker every chance to take the same order meanwhile.
            tokio::task::yield_now().await;
            Ok(Confirmation {
                confirmation: format!("RMP-{n:06}"),
                idempotency_key: order.idempotency_key.clone(),
                total_cents: 999,
                created: true,
            })
        })
    }
}

fn backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    }
}

async fn two_workers_racing_for_one_order_confirm_it_exactly_once(open: Opener) {
    let a = Outbox::new(open().await, Duration::from_secs(10)).with_owner("worker-a");
    let b = Outbox::new(open().await, Duration::from_secs(10)).with_owner("worker-b");
    let checkout = CountingCheckout::default();
    let rounds = 60;
    for i in 0..rounds {
        let key = format!("race-{i:04}");
        let now = now_ms();
        // Recorded by a third instance that died at once: due now, claimed by nobody live.
        let (order, _) = a
            .store()
            .record(&new_order(&key, "dead", now - 1, now - 1))
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let run = |outbox: Outbox| {
            let checkout = checkout.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                outbox.replay_once(&checkout, &backoff()).await.unwrap()
            })
        };
        let (ca, cb) = tokio::join!(run(a.clone()), run(b.clone()));
        let claimed = ca.unwrap() + cb.unwrap();
        assert_eq!(claimed, 1, "round {i}: both workers claimed the order");
        assert_eq!(checkout.count(&key), 1, "round {i}: forwarded twice");
        let stored = a.store().by_public_id(&order.id).await.unwrap().unwrap();
        assert_eq!(stored.state, OrderState::Confirmed, "round {i}");
        assert_eq!(stored.attempts, 1, "round {i}");
    }
    assert_eq!(checkout.total.load(Ordering::SeqCst), rounds);
    assert_eq!(a.pending_count().await.unwrap(), 0);
}

async fn an_order_claimed_by_a_dead_worker_is_confirmed_by_another(open: Opener) {
    // Worker A records (and so claims) the order, then dies before forwarding it.
    let a = Outbox::new(open().await, Duration::from_millis(300)).with_owner("worker-a");
    let (order, new) = a.record(request("key-takeover")).await.unwrap();
    assert!(new);
    assert_eq!(order.claimed_by.as_deref(), Some("worker-a"));
    drop(a);
    // Worker B, another instance on the same store, takes it over once the lease runs out.
    let b = Outbox::new(open().await, Duration::from_secs(10)).with_owner("worker-b");
    let checkout = CountingCheckout::default();
    let _replayer = b.spawn_replayer(checkout.clone(), backoff());
    let confirmed = support::eventually(
        "the other worker confirms the order",
        Duration::from_secs(20),
        || {
            let b = b.clone();
            let id = order.id.clone();
            async move {
                let o = b.get(&id).await.unwrap()?;
                (o.state == OrderState::Confirmed).then_some(o)
            }
        },
    )
    .await;
    assert_eq!(confirmed.claimed_by.as_deref(), Some("worker-b"));
    assert_eq!(checkout.count("key-takeover"), 1);
}

async fn run_suite(make: impl AsyncFnMut(&str) -> Opener) {
    let mut make = make;
    same_key_same_order_under_a_random_public_id(make("same_key").await).await;
    a_claim_is_exclusive_until_its_lease_runs_out(make("lease").await).await;
    an_order_leaves_pending_exactly_once(make("settle").await).await;
    a_postponed_order_comes_due_again(make("postpone").await).await;
    an_order_claimed_by_a_dead_worker_is_confirmed_by_another(make("takeover").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_order_store_suite() {
    run_suite(async |name: &str| sqlite_opener(name)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_order_store_suite() {
    let Some(pg) = postgres().await else { return };
    run_suite(async |name: &str| pg_opener(&pg, name).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_workers_racing_for_one_order_confirm_it_exactly_once() {
    two_workers_racing_for_one_order_confirm_it_exactly_once(sqlite_opener("race")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_workers_racing_for_one_order_confirm_it_exactly_once() {
    let Some(pg) = postgres().await else { return };
    two_workers_racing_for_one_order_confirm_it_exactly_once(pg_opener(&pg, "race").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_are_versioned_and_applied_once() {
    let Some(pg) = postgres().await else { return };
    let url = pg.create_database("migrations").await.unwrap();
    // Two instances starting together, then one more: each migration is applied once.
    let (a, b) = tokio::join!(PgStore::connect(&url), PgStore::connect(&url));
    a.unwrap();
    b.unwrap();
    PgStore::connect(&url).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, vec![1]);
    drop(client);
    let _ = task.await;
}
