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

mod args;
mod calibrate;
mod chart;
mod compare;
mod held;
mod kill;
mod load;
mod phases;
mod progress;
mod region;
mod report;
mod store;
mod tail;
mod topology;

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::orders::{LocalPostgres, instance_name_for};

pub use args::{ChaosArgs, ChaosDatabase};
pub use calibrate::Calibration;
pub use compare::SurgeFacts;
pub use load::{Class, Kind, ResponseFacts, classify};
pub use region::EdgeRegionFacts;
pub use report::{Facts, KillFacts, OrderFacts, OrdersReport, PhaseFacts, PhaseReport, Report};
pub use tail::{RATE_LIMITED, SLOW_REPLICA, SURGE_ACKNOWLEDGED_PERCENT, Target, targets};

use args::facts_path;
use chart::{ChartData, SecondPoint};
use kill::kill_mid_checkout;
use phases::{PHASES, SHOP_SETTINGS, SURGE, fault_body};
use progress::Progress;
use report::Collector;
use store::{SharedDb, in_both, read_confirmed};
use topology::Topology;

fn lock(c: &Mutex<Collector>) -> std::sync::MutexGuard<'_, Collector> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
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
