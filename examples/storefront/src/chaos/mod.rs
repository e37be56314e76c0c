//! `storefront chaos`: the scripted outage that proves the storefront keeps selling.
//!
//! It starts the production-like topology as child processes of this binary — two edge
//! gateways as two regions (behind rampart-gslb's DNS responder, in this process), two shop
//! instances (each with its own order outbox, or with `--database postgres`
//! both on one PostgreSQL order store, a real server started for the run) and the simulated
//! fleet —
//! drives open-loop load through the edge at a fixed arrival rate ([`load`](self#the-load)),
//! and runs a timeline of phases, injecting faults through the fleet's admin API
//! (`POST /admin/faults`):
//!
//! | phase | faults |
//! |---|---|
//! | `baseline` | none |
//! | `catalog-replica-down` | catalog, us-east, replica 0: `down` |
//! | `slow-replica` | catalog, us-east, replica 1: `slow` (200 ms); the shops hedge their catalog reads. Target: p99 at most 2 × the baseline's (reported, see [`Target`]) |
//! | `rate-limited` | catalog, us-east, replica 2: `rate-limited` (`429` with `Retry-After: 2`; health checks pass); the shops' balancers leave it out for 2 s and retry the read on a sibling. Target: no error, no apology |
//! | `primary-region-down` | every service in us-east: `down` |
//! | `checkout-down` | checkout everywhere: `down` |
//! | `everything-down` | every service everywhere: `down` |
//! | `shop-killed` | from 30 % of the phase on, checkout `hold` (its health checks pass; every order it is sent waits) and a checkout the runner sends straight to shop A; shop instance A is SIGKILLed mid-checkout (frozen with SIGSTOP at a moment it holds a recorded, unanswered order whose customer is waiting, see `kill_mid_checkout`), then the hold is lifted; shop A is restarted 20 % of a phase later (within the phase); with `--database postgres` it is **not** restarted: shop B takes over its claimed orders when their lease runs out |
//! | `edge-region-down` | none; the primary region's edge (`127.0.0.2`) is SIGKILLed at 20 % of the phase and restarted on the same address at 90 %: the DNS responder stops naming it, the load's resolver picks the new answer up when its TTL runs out, and until then a refused connection goes to the next address (see [the load](self#the-load)). The facts side file's `edge_region` says when the answers and the load moved, against the target of TTL + one check interval |
//! | `recovery` | none |
//! | `surge` | none; the load runs at 5 × the sustainable rate (measured at start-up by a short closed-loop run of the usual mix, see `calibrate`; or 5 × `--sustainable-rate`, or `--surge-rate`): the shops' concurrency limits shed the excess as apologies (`503` + `Retry-After`), recommendations and pages before checkout. Its report entry adds `checkouts: {attempted, acknowledged}` and `shed: {<partition>: count}` (summed over the shops; `{}` with `--no-limit`). Target: at least 99 % of its checkouts acknowledged (enforced). Afterwards the same surge runs once more with the shops restarted without their limit, for the facts and the chart (see `compare`) |
//!
//! Every response is classified as ok, degraded, apology or error ([`classify`], by status
//! and headers: the shop marks its partial pages with `x-rampart-degraded`). At the end the
//! runner waits for pending orders to be confirmed, then reads the checkout service's
//! database (read-only SQL on the file the fleet wrote) to count confirmed, lost and
//! duplicated orders. It prints a table (and a progress
//! bar while running on a terminal), writes the JSON [`Report`] (`--report`), the [`Facts`]
//! side file (`--facts`, by default next to the report) and an SVG chart (`--chart`), and
//! fails (non-zero exit) when any phase has errors or any order is lost or duplicated.
//! `--no-limit` runs the shops without their concurrency limit, to see the same surge without
//! it.
//!
//! # The load
//!
//! The load reaches the shop by its name, `shop.example`: it resolves it through the DNS
//! responder with hickory-resolver, keeps the answer for its TTL (2 s in a run), sends each
//! request to the answer's first address and, on a refused connection, to the next one; a
//! request whose connection broke before its answer is sent to the next address once more
//! when it may be repeated (a `GET`, or a checkout with its `Idempotency-Key`).
//!
//! Requests leave at fixed intended times (`start + i / rate`) whatever the answers do; each
//! latency runs from the intended send time to the end of the response body, into HDR
//! histograms per phase and per second, so a stall is counted in full (no coordinated
//! omission). The mix: 15 % home, 10 % product lists, 45 % product pages (85 % of them on 24
//! hot products), 20 % search, 10 % checkouts (a cart cookie, the form, and the idempotency key
//! also as an `Idempotency-Key` header).

mod calibrate;
mod chart;
mod compare;
mod held;
mod load;
mod region;
mod report;
mod tail;
mod topology;

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::orders::{LocalPostgres, instance_name_for};

pub use calibrate::Calibration;
pub use compare::SurgeFacts;
pub use load::{Class, Kind, ResponseFacts, classify};
pub use region::EdgeRegionFacts;
pub use report::{Facts, KillFacts, OrderFacts, OrdersReport, PhaseFacts, PhaseReport, Report};
pub use tail::{RATE_LIMITED, SLOW_REPLICA, SURGE_ACKNOWLEDGED_PERCENT, Target, targets};

use chart::{ChartData, SecondPoint};
use report::Collector;
use topology::Topology;

/// Flags of `storefront chaos` (`--data-dir` and `--admin-token` are the global flags: where
/// the run's processes keep their data and logs, and the token they share).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ChaosArgs {
    /// The short version (5 s phases at 60 requests/s; under a minute in all).
    #[arg(long)]
    pub quick: bool,
    /// Write the JSON report to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the facts side file here (default: next to the report, `*.facts.json`).
    #[arg(long)]
    pub facts: Option<PathBuf>,
    /// Draw the SVG chart into this file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Arrival rate, requests per second (default 60 with --quick, else 150).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Length of each phase (default 5s with --quick, else 20s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub phase: Option<Duration>,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Arrival rate of the `surge` phase, requests per second (default: 5 × the sustainable
    /// rate).
    #[arg(long)]
    pub surge_rate: Option<f64>,
    /// The rate the machine sustains, requests per second, for sizing the surge (default:
    /// measured at start-up by a short closed-loop run of the usual mix).
    #[arg(long)]
    pub sustainable_rate: Option<f64>,
    /// Run the shops without their concurrency limit (filled from the global `--no-limit`),
    /// to see the surge without it.
    #[arg(skip)]
    pub no_limit: bool,
    /// The shops' order store: `sqlite` (one file per shop; the killed shop is restarted) or
    /// `postgres` (a PostgreSQL server started for the run and shared by both shops; the
    /// killed shop is not restarted and the other confirms its orders).
    #[arg(long, value_enum, default_value_t = ChaosDatabase::Sqlite)]
    pub database: ChaosDatabase,
    /// Where the run's processes keep data and logs (filled from the global `--data-dir`;
    /// default: a fresh directory under the system's temporary directory).
    #[arg(skip)]
    pub data_dir: Option<PathBuf>,
    /// The admin token shared with the children (filled from the global `--admin-token`).
    #[arg(skip)]
    pub admin_token: Option<String>,
    /// How the fleet's catalog is spoken, and the shops dial it (filled from the global
    /// `--catalog-protocol`: `http1`, `h2c` or `https`).
    #[arg(skip)]
    pub catalog_protocol: crate::fleet::CatalogProtocol,
}

/// The shops' order store in a chaos run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChaosDatabase {
    /// One SQLite outbox per shop.
    #[default]
    Sqlite,
    /// One PostgreSQL database shared by both shops.
    Postgres,
}

/// The shared PostgreSQL order store, read by the runner.
struct SharedDb {
    client: tokio_postgres::Client,
    _conn: crate::AbortOnDrop,
    /// Shop A's name in `claimed_by`.
    shop_a: String,
}

impl SharedDb {
    async fn connect(url: &str, shop_a: String) -> Result<Self, String> {
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
    async fn unanswered(&self, recorded_after_ms: i64) -> Result<Vec<String>, String> {
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
    async fn confirmed_by_others(&self, keys: &[String]) -> Result<u64, String> {
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

/// One phase of the timeline.
#[derive(Debug, Clone, Copy)]
struct PhaseSpec {
    name: &'static str,
    /// `(service, region, replica, fault)`; region and replica may be `"*"`.
    faults: &'static [(&'static str, &'static str, Replica, &'static str)],
    /// Kill shop instance A mid-phase and restart it.
    kill: bool,
}

#[derive(Debug, Clone, Copy)]
enum Replica {
    All,
    One(u32),
}

const PHASES: &[PhaseSpec] = &[
    PhaseSpec {
        name: "baseline",
        faults: &[],
        kill: false,
    },
    PhaseSpec {
        name: "catalog-replica-down",
        faults: &[("catalog", "us-east", Replica::One(0), "down")],
        kill: false,
    },
    // One catalog replica of the active region answers 200 ms late, then one answers 429
    // with `Retry-After: 2` (see `tail`).
    PhaseSpec {
        name: tail::SLOW_REPLICA,
        faults: &[("catalog", "us-east", Replica::One(1), tail::SLOW_FAULT)],
        kill: false,
    },
    PhaseSpec {
        name: tail::RATE_LIMITED,
        faults: &[(
            "catalog",
            "us-east",
            Replica::One(2),
            tail::RATE_LIMITED_FAULT,
        )],
        kill: false,
    },
    PhaseSpec {
        name: "primary-region-down",
        faults: &[
            ("catalog", "us-east", Replica::All, "down"),
            ("checkout", "us-east", Replica::All, "down"),
            ("recommendations", "us-east", Replica::All, "down"),
        ],
        kill: false,
    },
    PhaseSpec {
        name: "checkout-down",
        faults: &[("checkout", "*", Replica::All, "down")],
        kill: false,
    },
    PhaseSpec {
        name: "everything-down",
        faults: &[
            ("catalog", "*", Replica::All, "down"),
            ("checkout", "*", Replica::All, "down"),
            ("recommendations", "*", Replica::All, "down"),
        ],
        kill: false,
    },
    PhaseSpec {
        name: "shop-killed",
        faults: &[],
        kill: true,
    },
    // The primary region's edge is SIGKILLed at 20 % of the phase and restarted at 90 %; the
    // load resolves the shop's name through the DNS responder (see `region`).
    PhaseSpec {
        name: region::PHASE,
        faults: &[],
        kill: false,
    },
    PhaseSpec {
        name: "recovery",
        faults: &[],
        kill: false,
    },
    // Open-loop load at --surge-rate (5 × --rate by default), the usual mix, a healthy fleet.
    PhaseSpec {
        name: SURGE,
        faults: &[],
        kill: false,
    },
];

/// The phase at `--surge-rate`.
const SURGE: &str = "surge";

/// The shops' `[shop]` settings for a chaos run: pending orders are replayed within about a
/// second, open breakers probe again after 0.5 s (backing off to 3 s), and active checks run
/// every 0.5 s (a replica is back after two passed checks), so that even the short run sees
/// the recovery within a phase.
const SHOP_SETTINGS: &str = concat!(
    "outbox_retry_base = \"100ms\"\n",
    "outbox_retry_max = \"1s\"\n",
    "outbox_lease = \"2s\"\n",
    "breaker_open_for = \"500ms\"\n",
    "health_interval = \"500ms\"\n",
);

fn fault_body(f: &(&str, &str, Replica, &str)) -> serde_json::Value {
    let replica = match f.2 {
        Replica::All => json!("*"),
        Replica::One(i) => json!(i),
    };
    // `fault` or `fault:parameter` (`slow:200ms`, `rate-limited:2s`).
    let (fault, param) = f.3.split_once(':').unwrap_or((f.3, ""));
    let mut body = json!({ "service": f.0, "region": f.1, "replica": replica, "fault": fault });
    match fault {
        "slow" => body["latency"] = json!(if param.is_empty() { "300ms" } else { param }),
        "rate-limited" if !param.is_empty() => body["retry_after"] = json!(param),
        _ => {}
    }
    body
}

fn lock(c: &Mutex<Collector>) -> std::sync::MutexGuard<'_, Collector> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// The live progress line (on a terminal only).
struct Progress {
    collector: Arc<Mutex<Collector>>,
    phase: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    start: Instant,
    total: Duration,
}

impl Progress {
    async fn run(self) {
        let tty = std::io::stderr().is_terminal();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        while !self.done.load(Ordering::Relaxed) {
            tick.tick().await;
            if !tty {
                continue;
            }
            let (sent, ok, deg, apo, err) = lock(&self.collector).totals();
            let elapsed = self.start.elapsed().min(self.total);
            let frac = elapsed.as_secs_f64() / self.total.as_secs_f64().max(0.001);
            let filled = (frac * 24.0).round() as usize;
            let k = self.phase.load(Ordering::Relaxed).min(PHASES.len() - 1);
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\r[{}{}] {:>5}/{} {}/{} {:<21} sent {sent} ok {ok} degraded {deg} apology {apo} errors {err}   ",
                "█".repeat(filled.min(24)),
                "░".repeat(24 - filled.min(24)),
                report::secs(elapsed),
                report::secs(self.total),
                k + 1,
                PHASES.len(),
                PHASES[k].name,
            );
            let _ = e.flush();
        }
        if tty {
            let _ = writeln!(std::io::stderr().lock());
        }
    }
}

/// Confirmed orders in the checkout database: idempotency key → rows, and extra rows per
/// chaos customer (a duplicate under another key would show there).
fn read_confirmed(
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
fn in_both(outboxes: &[PathBuf; 2], caught: &[String]) -> Result<(u64, u64), rusqlite::Error> {
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
fn unanswered_orders(db: &Path, recorded_after_ms: i64) -> Result<Vec<String>, rusqlite::Error> {
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

/// Shop A's checkouts that it recorded and has not answered, and whose customer is still
/// waiting (the load's in-flight keys).
async fn caught_checkouts(
    topo: &Topology,
    inflight: &load::InFlight,
    shared: Option<&SharedDb>,
) -> Vec<String> {
    let recorded_after = crate::unix_now_ms() - checkout_budget_ms() + 250;
    let found = if let Some(db) = shared {
        db.unanswered(recorded_after).await.unwrap_or_default()
    } else {
        let Some(db) = topo.shop_outbox(0) else {
            return Vec::new();
        };
        tokio::task::spawn_blocking(move || unanswered_orders(&db, recorded_after))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    found.into_iter().filter(|k| inflight.contains(k)).collect()
}

/// How long a shop's `POST /checkout` waits for checkout before answering "pending" (half
/// the page deadline; the chaos shops keep the default).
fn checkout_budget_ms() -> i64 {
    (crate::config::ShopConfig::default().page_deadline / 2).as_millis() as i64
}

/// Kills shop A with SIGKILL in the middle of a checkout, from 30 % of the phase on.
///
/// What is guaranteed when [`KillFacts::caught_orders`] is non-zero: at the SIGKILL, shop A
/// had written each of those orders durably to its outbox, had not answered its customer and
/// could not any more. The runner checks this on a frozen process: when shop A's outbox (read
/// without disturbing it) shows a candidate whose customer is waiting, it stops shop A with
/// SIGSTOP, waits until every thread is stopped, reads the outbox again (pending, no finished
/// forwarding attempt, recorded within the checkout budget) and intersects it with the
/// checkouts its customers are still waiting for; if that is not empty, the frozen shop is
/// SIGKILLed, otherwise resumed with SIGCONT and the search goes on.
///
/// Such a moment is made, not waited for (see [`held`]): checkout holds every order it is sent
/// while the runner looks, and the runner places its own checkout straight at shop A, which
/// then sits recorded and unanswered in shop A for the shop's whole checkout budget. Once shop
/// A is killed the hold is lifted (checkout is back to the phase's `slow`). Should 85 % of the
/// phase pass without a catch, it kills anyway and reports `caught_orders: 0`.
async fn kill_mid_checkout(
    topo: &mut Topology,
    inflight: &load::InFlight,
    phase_start: Instant,
    phase_len: Duration,
    kill: &mut KillFacts,
    shared: Option<&SharedDb>,
) -> Result<(), String> {
    tokio::time::sleep_until(phase_start + phase_len.mul_f64(0.3)).await;
    let latest = phase_start + phase_len.mul_f64(0.85);
    // The phase follows `everything-down`: wait until shop A forwards checkouts again (its
    // checkout breaker closed, a healthy replica), or the held order would be answered `202`
    // at once, never reaching checkout.
    while Instant::now() < latest && !topo.shop_checkout_ready(0).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    topo.fault(fault_body(&("checkout", "*", Replica::All, "hold")))
        .await?;
    let shop_a = topo.shop_url(0)?;
    let mut rng = fastrand::Rng::with_seed(phase_start.elapsed().as_nanos() as u64);
    let mut held: Vec<held::Held> = Vec::new();
    let mut caught_any = false;
    while Instant::now() < latest {
        if held.last().is_none_or(|h| h.0.is_finished()) && topo.shop_checkout_ready(0).await {
            // The previous one was answered (its budget ran out before the runner looked).
            kill.held_checkouts += 1;
            held.push(held::send(&shop_a, inflight, &mut rng));
        }
        if !caught_checkouts(topo, inflight, shared).await.is_empty() {
            kill.freezes += 1;
            if topo.freeze_shop(0).await? {
                let caught = caught_checkouts(topo, inflight, shared).await;
                if !caught.is_empty() {
                    kill.checkouts_in_flight = inflight.len() as u64;
                    kill.caught_orders = caught.len() as u64;
                    kill.caught_keys = caught;
                    caught_any = true;
                    break;
                }
                topo.thaw_shop(0)?;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if !caught_any {
        kill.checkouts_in_flight = inflight.len() as u64;
    }
    topo.kill_shop(0);
    // Lift the hold: the orders held in shop B are released (a 503, so they stay pending and
    // are replayed) and checkout is healthy again.
    topo.fault(fault_body(&("checkout", "*", Replica::All, "none")))
        .await?;
    // The held checkouts end with shop A's connections; wait for them briefly.
    for mut h in held {
        let outcome = tokio::time::timeout(Duration::from_secs(2), &mut h.0).await;
        kill.held_outcomes.push(match outcome {
            Ok(Ok(o)) => o,
            _ => "no answer".to_owned(),
        });
    }
    Ok(())
}

/// The 1, 5 and 15 minute load averages, on Linux.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn facts_path(args: &ChaosArgs) -> Option<PathBuf> {
    args.facts.clone().or_else(|| {
        args.report.as_ref().map(|r| {
            let stem = r
                .file_stem()
                .map_or_else(|| "report".into(), |s| s.to_string_lossy().into_owned());
            r.with_file_name(format!("{stem}.facts.json"))
        })
    })
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `storefront chaos`: runs the timeline and reports; `Err` when the run failed (errors in a
/// phase, a lost or duplicated order) or could not run.
pub async fn run(args: ChaosArgs) -> Result<(), String> {
    let phase_len = args
        .phase
        .unwrap_or(Duration::from_secs(if args.quick { 5 } else { 20 }));
    let rate = args.rate.unwrap_or(if args.quick { 60.0 } else { 150.0 });
    if !(rate > 0.0 && rate <= 20_000.0) {
        return Err(format!("--rate {rate}: must be between 0 and 20000"));
    }
    for (flag, value) in [
        ("--surge-rate", args.surge_rate),
        ("--sustainable-rate", args.sustainable_rate),
    ] {
        if let Some(v) = value
            && !(v > 0.0 && v <= 20_000.0)
        {
            return Err(format!("{flag} {v}: must be between 0 and 20000"));
        }
    }
    if phase_len < Duration::from_secs(2) {
        return Err(format!("--phase {phase_len:?}: must be at least 2s"));
    }
    let dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "storefront-chaos-{}-{:x}",
            std::process::id(),
            fastrand::u32(..)
        ))
    });
    let token = args
        .admin_token
        .clone()
        .unwrap_or_else(crate::shop::generate_token);
    let load_before = load_average();
    say(&format!(
        "chaos: starting fleet, two shops and two edges in {}",
        dir.display()
    ));
    let postgres = match args.database {
        ChaosDatabase::Sqlite => None,
        ChaosDatabase::Postgres => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            say("chaos: starting PostgreSQL for the shops' shared order store");
            let parent = dir.clone();
            let server = tokio::task::spawn_blocking(move || LocalPostgres::start(&parent))
                .await
                .map_err(|e| format!("starting PostgreSQL: {e}"))?
                .map_err(|e| format!("cannot start PostgreSQL: {e}"))?;
            let url = server
                .create_database("storefront")
                .await
                .map_err(|e| e.to_string())?;
            Some((server, url))
        }
    };
    let database_url = postgres.as_ref().map(|(_, url)| url.as_str());
    let shop_settings = if args.no_limit {
        format!("{SHOP_SETTINGS}\n[limit]\nenabled = false\n")
    } else {
        SHOP_SETTINGS.to_owned()
    };
    let edge_addrs = region::edge_addrs()?;
    let mut topo = Topology::start(
        &dir,
        &token,
        &shop_settings,
        Duration::from_millis(250),
        database_url,
        &edge_addrs,
        args.catalog_protocol,
    )
    .await?;
    // The shop's name in DNS: the responder in front of the two edges, and the load's
    // resolver pointed at it.
    let dns = region::start_responder(&topo.edge_addrs()).await?;
    let resolver = Arc::new(region::ShopResolver::new(dns.addr(), edge_addrs[0].port())?);
    let shared = match database_url {
        Some(url) => Some(SharedDb::connect(url, instance_name_for(topo.shop_pid(0)?)).await?),
        None => None,
    };
    say(&format!(
        "chaos: {} resolved by the DNS responder at {} (edges {:?}); {} phases of {} at {rate} requests/s",
        region::SHOP_NAME,
        dns.addr(),
        topo.edge_addrs(),
        PHASES.len(),
        report::secs(phase_len)
    ));

    let mut surge = compare::SurgeFacts::default();
    let surge_rate = match (args.surge_rate, args.sustainable_rate) {
        (Some(r), _) => {
            surge.rate_from = "--surge-rate".into();
            r
        }
        (None, Some(s)) => {
            surge.rate_from = "--sustainable-rate".into();
            surge.sustainable_rate = Some(s);
            s * 5.0
        }
        (None, None) => {
            let (warmup, measure) = if args.quick { (0.5, 2.0) } else { (1.0, 4.0) };
            let c = calibrate::sustainable_rate(
                &format!("http://{}", topo.edge_addr(0)?),
                args.seed,
                Duration::from_secs_f64(warmup),
                Duration::from_secs_f64(measure),
            )
            .await;
            say(&format!(
                "chaos: sustainable rate {:.0} requests/s ({} answers in {measure} s, closed loop of {}); the surge runs at 5 ×",
                c.rate, c.answered, c.workers
            ));
            surge.rate_from = "measured".into();
            surge.sustainable_rate = Some(c.rate);
            surge.calibration = Some(c);
            c.rate * 5.0
        }
    }
    .clamp(rate, 20_000.0);
    surge.rate = surge_rate;

    let names: Vec<&str> = PHASES.iter().map(|p| p.name).collect();
    let collector = Arc::new(Mutex::new(Collector::new(&names)));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sink_collector = collector.clone();
    let sink = tokio::spawn(async move {
        while let Some(s) = rx.recv().await {
            lock(&sink_collector).add(&s);
        }
    });
    let start = Instant::now() + Duration::from_millis(200);
    let total = phase_len * PHASES.len() as u32;
    let inflight = load::InFlight::default();
    let plan = load::LoadPlan {
        base: resolver.base(),
        resolver: resolver.clone(),
        rate,
        start,
        phase_len,
        phases: PHASES.len(),
        timeout: Duration::from_secs(15),
        seed: args.seed,
        surge: PHASES
            .iter()
            .position(|p| p.name == SURGE)
            .map(|k| (k, surge_rate)),
    };
    let load_task = tokio::spawn(load::run(plan.clone(), tx, inflight.clone()));
    let phase_now = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let progress = tokio::spawn(
        Progress {
            collector: collector.clone(),
            phase: phase_now.clone(),
            done: done.clone(),
            start,
            total,
        }
        .run(),
    );

    let timeline = async {
        let mut kill = KillFacts::default();
        let mut events = Vec::new();
        let mut shed_before = None;
        let mut region_down = None;
        for (k, spec) in PHASES.iter().enumerate() {
            tokio::time::sleep_until(start + phase_len * k as u32).await;
            topo.check_alive()?;
            phase_now.store(k, Ordering::Relaxed);
            if !std::io::stderr().is_terminal() {
                say(&format!(
                    "chaos: phase {}/{} {}",
                    k + 1,
                    PHASES.len(),
                    spec.name
                ));
            }
            topo.reset().await?;
            if spec.name == SURGE {
                shed_before = topo.limiter_sheds().await;
                events.push((
                    start.elapsed().as_secs_f64(),
                    format!("surge: {surge_rate} requests/s"),
                ));
            }
            for f in spec.faults {
                topo.fault(fault_body(f)).await?;
            }
            if spec.name == region::PHASE {
                let phase_start = start + phase_len * k as u32;
                let r =
                    region::RegionDown::run(&mut topo, &dns, start, phase_start, phase_len).await?;
                events.push((r.facts.killed_at_s, "SIGKILL edge us-east".to_owned()));
                events.push((r.facts.restarted_at_s, "restart edge us-east".to_owned()));
                region_down = Some(r);
            }
            if spec.kill {
                let phase_start = start + phase_len * k as u32;
                kill_mid_checkout(
                    &mut topo,
                    &inflight,
                    phase_start,
                    phase_len,
                    &mut kill,
                    shared.as_ref(),
                )
                .await?;
                kill.killed_at_s = start.elapsed().as_secs_f64();
                if shared.is_some() {
                    // One shared order store: shop A stays dead, shop B confirms its orders.
                    events.push((
                        kill.killed_at_s,
                        "SIGKILL shop A (not restarted)".to_owned(),
                    ));
                    continue;
                }
                events.push((kill.killed_at_s, "SIGKILL shop A".to_owned()));
                // Restart 20 % of a phase later, but within the phase.
                let phase_end = phase_start + phase_len;
                let restart_at = (Instant::now() + phase_len.mul_f64(0.2))
                    .min(phase_end - Duration::from_millis(100));
                tokio::time::sleep_until(restart_at).await;
                kill.restarted_at_s = start.elapsed().as_secs_f64();
                let took = topo.restart_shop(0).await?;
                kill.ready_after_s = took.as_secs_f64();
                events.push((kill.restarted_at_s, "restart shop A".to_owned()));
            }
        }
        tokio::time::sleep_until(start + total).await;
        Ok::<_, String>((kill, events, shed_before, region_down))
    };
    // Ctrl-C stops the run; the children are killed when `topo` is dropped on return.
    let timeline = tokio::select! {
        t = timeline => t,
        _ = tokio::signal::ctrl_c() => {
            load_task.abort();
            Err("interrupted".to_owned())
        }
    };
    // Otherwise let the load finish (it stops at the end of the last phase).
    let _ = load_task.await;
    let _ = sink.await;
    done.store(true, Ordering::Relaxed);
    let _ = progress.await;
    let (mut kill, events, shed_before, region_down) = timeline?;
    let dead_edge = topo.edge_addr(0)?.ip();
    let edge_region = region_down.map(|r| r.finish(&resolver, dead_edge));
    // The load is over: stop the responder (and its checks) before the edges go.
    drop(dns);
    // Every surge request has been answered: the shops' shed counters are final.
    let shed_after = topo.limiter_sheds().await;
    let _ = topo.reset().await;
    // The same surge with the shops' limit off, for the facts and the chart.
    let unlimited = if args.no_limit {
        None
    } else {
        say("chaos: the surge once more, with the shops' concurrency limit off");
        let compared = tokio::select! {
            u = compare::surge_without_limit(&mut topo, &plan, surge_rate) => u,
            _ = tokio::signal::ctrl_c() => return Err("interrupted".to_owned()),
        };
        match compared {
            Ok(u) => {
                let mut c = lock(&collector);
                for (key, ack) in &u.collector.orders {
                    *c.orders.entry(key.clone()).or_insert(false) |= *ack;
                }
                Some(u)
            }
            Err(e) => {
                say(&format!("chaos: the comparison surge did not run: {e}"));
                None
            }
        }
    };

    // Orders: wait for the pending ones to be confirmed, then count.
    let settle_started = Instant::now();
    let settle_max = if args.quick {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(60)
    };
    let orders: Vec<(String, bool)> = lock(&collector)
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
    let caught_by_b = match &shared {
        Some(db) => Some(db.confirmed_by_others(&kill.caught_keys).await),
        None => None,
    };
    drop(topo);
    let outboxes = [dir.join("shop-a/outbox.db"), dir.join("shop-b/outbox.db")];
    let caught = kill.caught_keys.clone();
    let both = tokio::task::spawn_blocking(move || in_both(&outboxes, &caught))
        .await
        .ok()
        .and_then(Result::ok);
    of.in_both_outboxes = both.map(|b| b.0);
    kill.caught_retried_on_other_shop = both.map(|b| b.1);
    if let Some(by_b) = caught_by_b {
        // One shared outbox: "retried on the other shop" is "confirmed by the other shop".
        of.in_both_outboxes = None;
        kill.caught_retried_on_other_shop = by_b.ok();
    }
    kill.caught_confirmed_once = kill
        .caught_keys
        .iter()
        .filter(|k| confirmed.get(k.as_str()) == Some(&1))
        .count() as u64;

    let c = lock(&collector);
    let mut phase_reports = c.phase_reports();
    if let Some((p, (t, _))) = phase_reports
        .iter_mut()
        .zip(&c.phases)
        .find(|(p, _)| p.name == SURGE)
    {
        p.checkouts = Some(report::CheckoutCounts {
            attempted: t.checkouts_attempted,
            acknowledged: t.checkouts_acknowledged,
        });
        let before = shed_before.unwrap_or_default();
        p.shed = Some(
            shed_after
                .unwrap_or_default()
                .into_iter()
                .map(|(k, n)| {
                    let was = before.get(&k).copied().unwrap_or(0);
                    (k, n.saturating_sub(was))
                })
                .collect(),
        );
    }
    let report = Report {
        phases: phase_reports,
        orders: o,
    };
    let surge_k = PHASES.iter().position(|p| p.name == SURGE);
    surge.without_limit = unlimited.as_ref().map(|u| u.report.clone());
    let surge_overlay = match (surge_k, &unlimited) {
        (Some(k), Some(u)) => {
            let from = phase_len.as_secs_f64() * k as f64;
            Some(chart::SurgeOverlay {
                rate: surge_rate,
                limited: compare::points(&c.seconds, from, phase_len.as_secs_f64()),
                unlimited: compare::points(&u.collector.seconds, 0.0, phase_len.as_secs_f64()),
            })
        }
        _ => None,
    };
    let facts = Facts {
        phases: c.phases.iter().map(|(_, f)| f.clone()).collect(),
        kill,
        edge_region,
        orders: of,
        surge,
        targets: tail::targets(&report),
        rate,
        phase_s: phase_len.as_secs_f64(),
        dir: dir.display().to_string(),
        load_average: load_before.into_iter().chain(load_average()).collect(),
    };
    let chart_data = ChartData {
        seconds: c
            .seconds
            .iter()
            .enumerate()
            .map(|(i, t)| SecondPoint {
                t: i as f64 + 0.5,
                ok: t.ok,
                degraded: t.degraded,
                apology: t.apology,
                errors: t.errors,
                p50_ms: t.percentile_ms(0.5),
                p99_ms: t.percentile_ms(0.99),
            })
            .collect(),
        phases: PHASES
            .iter()
            .enumerate()
            .map(|(k, p)| (phase_len.as_secs_f64() * k as f64, p.name.to_owned()))
            .collect(),
        events,
        end: total.as_secs_f64(),
        rate,
        surge: surge_overlay,
    };
    drop(c);

    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", report.table());
        let _ = write!(out, "{}", tail::lines(&facts.targets));
        let _ = out.flush();
    }
    if let Some(p) = &args.report {
        write_json(p, &report)?;
    }
    if let Some(p) = facts_path(&args) {
        write_json(&p, &facts)?;
    }
    if let Some(p) = &args.chart {
        chart::draw(p, &chart_data)?;
    }
    if facts.load_average.len() == 2 {
        say(&format!(
            "chaos: load average {} before, {} after (latencies depend on it)",
            facts.load_average[0], facts.load_average[1]
        ));
    }
    say(&format!("chaos: data and logs in {}", dir.display()));
    let why: Vec<String> = report
        .verdict()
        .into_iter()
        .chain(tail::missed(&facts.targets))
        .collect();
    if why.is_empty() {
        Ok(())
    } else {
        Err(format!("chaos run failed: {}", why.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_SERVICES: [&str; 3] = ["catalog", "checkout", "recommendations"];

    #[test]
    fn fault_bodies_match_the_admin_api() {
        let b = fault_body(&("catalog", "us-east", Replica::One(0), "down"));
        assert_eq!(
            b,
            json!({"service": "catalog", "region": "us-east", "replica": 0, "fault": "down"})
        );
        let b = fault_body(&("checkout", "*", Replica::All, "slow"));
        assert_eq!(b["replica"], "*");
        assert_eq!(b["latency"], "300ms");
        let b = fault_body(&("catalog", "us-east", Replica::One(1), tail::SLOW_FAULT));
        assert_eq!(
            (&b["fault"], &b["latency"]),
            (&json!("slow"), &json!("200ms"))
        );
        let b = fault_body(&(
            "catalog",
            "us-east",
            Replica::One(2),
            tail::RATE_LIMITED_FAULT,
        ));
        assert_eq!(b["fault"], "rate-limited");
        assert_eq!(b["retry_after"], "2s");
        let mut parsed = 0;
        for p in PHASES {
            for f in p.faults {
                assert!(ALL_SERVICES.contains(&f.0), "{f:?}");
                // Every phase's fault is one the fleet's admin API takes.
                crate::fleet::FaultRequest::parse(fault_body(f).to_string().as_bytes(), 3).unwrap();
                parsed += 1;
            }
        }
        assert!(parsed >= 10);
    }

    #[test]
    fn facts_sit_next_to_the_report() {
        let args = ChaosArgs {
            report: Some(PathBuf::from("/tmp/x/run.json")),
            ..ChaosArgs::default()
        };
        assert_eq!(
            facts_path(&args),
            Some(PathBuf::from("/tmp/x/run.facts.json"))
        );
    }
}
