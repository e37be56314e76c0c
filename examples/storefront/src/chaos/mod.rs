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
mod stage;
mod store;
mod tail;
mod timeline;
mod topology;

use std::io::Write as _;
use std::sync::{Mutex, PoisonError};

pub use args::{ChaosArgs, ChaosDatabase};
pub use calibrate::Calibration;
pub use compare::SurgeFacts;
pub use load::{Class, Kind, ResponseFacts, classify};
pub use region::EdgeRegionFacts;
pub use report::{Facts, KillFacts, OrderFacts, OrdersReport, PhaseFacts, PhaseReport, Report};
pub use tail::{RATE_LIMITED, SLOW_REPLICA, SURGE_ACKNOWLEDGED_PERCENT, Target, targets};

use args::Pace;
use chart::ChartData;
use phases::SURGE;
use report::Collector;
use stage::Stage;
use timeline::Timeline;

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

/// `storefront chaos`: runs the timeline and reports; `Err` when the run failed (errors in a
/// phase, a lost or duplicated order) or could not run.
pub async fn run(args: ChaosArgs) -> Result<(), String> {
    // Set up: the pace, the stage, and the surge's rate (measured unless a flag gives it).
    let pace = Pace::of(&args)?;
    let dir = args::data_dir(&args);
    let load_before = load_average();
    let mut stage = Stage::start(&args, &dir, pace).await?;
    let mut surge = calibrate::size_surge(&args, &stage.topo, pace.rate).await?;

    // The timeline: the load through the phases, their faults, the kill and the surge.
    let mut timeline = Timeline::start(&stage.resolver, pace, args.seed, surge.rate);
    let mut outcome = timeline.run(&mut stage).await?;
    let dead_edge = stage.topo.edge_addr(0)?.ip();
    let edge_region = outcome
        .region_down
        .map(|r| r.finish(&stage.resolver, dead_edge));
    // The load is over: stop the responder (and its checks) before the edges go.
    drop(stage.dns);
    // Every surge request has been answered: the shops' shed counters are final.
    let shed_after = stage.topo.limiter_sheds().await;
    let _ = stage.topo.reset().await;
    let collector = &timeline.collector;
    let unlimited = compare::surge_again(
        args.no_limit,
        &mut stage.topo,
        &timeline.plan,
        surge.rate,
        collector,
    )
    .await?;

    // Orders: wait for the pending ones to be confirmed, count them, and follow the ones
    // caught in shop A (the outboxes are read once the processes are stopped).
    let mut orders = store::count_orders(&stage.topo, collector, args.quick).await?;
    let by_b = kill::caught_confirmed_by_b(stage.shared.as_ref(), &outcome.kill).await;
    drop(stage.topo);
    kill::follow_caught(
        &mut outcome.kill,
        &mut orders.facts,
        &orders.confirmed,
        &dir,
        by_b,
    )
    .await;

    // The report, its facts and the chart.
    let c = lock(collector);
    let report = c.report(orders.report, outcome.shed_before, shed_after);
    surge.without_limit = unlimited.as_ref().map(|u| u.report.clone());
    let overlay = compare::overlay(&c.seconds, unlimited.as_ref(), pace.phase_len, surge.rate);
    let facts = Facts {
        phases: c.phases.iter().map(|(_, f)| f.clone()).collect(),
        kill: outcome.kill,
        edge_region,
        orders: orders.facts,
        surge,
        targets: tail::targets(&report),
        rate: pace.rate,
        phase_s: pace.phase_len.as_secs_f64(),
        dir: dir.display().to_string(),
        load_average: load_before.into_iter().chain(load_average()).collect(),
    };
    let chart_data = ChartData::new(
        &c.seconds,
        pace.phase_len,
        outcome.events,
        timeline.total,
        pace.rate,
        overlay,
    );
    drop(c);
    report::publish(&args, &report, &facts, &chart_data, &dir)
}
