//! The surge once more, without the shops' concurrency limit, for comparison.
//!
//! After the timeline (whose last phase is the surge, with the limit), the runner restarts
//! both shops with `--no-limit` on the same addresses and data directories, waits until the
//! edge routes to them again, and sends the same open-loop surge (same rate, length and
//! seed) once more. Its line goes into the facts side file (`surge.without_limit`), its
//! seconds into the chart next to the limited surge's, and its orders into the run's order
//! accounting (nothing may be lost there either); the report's phases are unchanged, and its
//! errors do not fail the run: showing what happens without the limit is the point.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::calibrate::Calibration;
use super::chart::{SecondPoint, SurgeOverlay};
use super::load::{self, InFlight, LoadPlan};
use super::phases::PHASES;
use super::report::{CheckoutCounts, Collector, PhaseReport, Tally};
use super::topology::Topology;
use super::{lock, say};

/// How the surge was sized and how it went without the limit (the facts side file's
/// `surge`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SurgeFacts {
    /// The surge's arrival rate, requests per second.
    pub rate: f64,
    /// Where it came from: `measured` (5 × the calibrated sustainable rate),
    /// `--sustainable-rate` (5 × the flag) or `--surge-rate`.
    pub rate_from: String,
    /// The sustainable rate the surge is 5 × of (`None` with `--surge-rate`).
    pub sustainable_rate: Option<f64>,
    /// The start-up calibration, when it ran.
    pub calibration: Option<Calibration>,
    /// The same surge with the shops' limit off (`None` with `--no-limit`, or when the
    /// comparison could not run).
    pub without_limit: Option<PhaseReport>,
}

/// The comparison run: its line, and its collector (per-second tallies and orders).
pub(crate) struct Unlimited {
    pub(crate) report: PhaseReport,
    pub(crate) collector: Collector,
}

/// Unless `no_limit` (the shops ran without their limit all along), the surge once more with
/// the limit off, its orders added to `collector`'s; `None` when it did not run. Ctrl-C ends
/// the run.
pub(crate) async fn surge_again(
    no_limit: bool,
    topo: &mut Topology,
    plan: &LoadPlan,
    rate: f64,
    collector: &Mutex<Collector>,
) -> Result<Option<Unlimited>, String> {
    if no_limit {
        return Ok(None);
    }
    say("chaos: the surge once more, with the shops' concurrency limit off");
    let compared = tokio::select! {
        u = surge_without_limit(topo, plan, rate) => u,
        _ = tokio::signal::ctrl_c() => return Err("interrupted".to_owned()),
    };
    match compared {
        Ok(u) => {
            let mut c = lock(collector);
            for (key, ack) in &u.collector.orders {
                *c.orders.entry(key.clone()).or_insert(false) |= *ack;
            }
            Ok(Some(u))
        }
        Err(e) => {
            say(&format!("chaos: the comparison surge did not run: {e}"));
            Ok(None)
        }
    }
}

/// The chart's surge row: the timeline's surge (in `seconds`, per-second tallies from the
/// start of the load) next to `unlimited`'s; `None` without a comparison.
pub(crate) fn overlay(
    seconds: &[Tally],
    unlimited: Option<&Unlimited>,
    phase_len: Duration,
    rate: f64,
) -> Option<SurgeOverlay> {
    let surge_k = PHASES.iter().position(|p| p.name == super::SURGE);
    match (surge_k, unlimited) {
        (Some(k), Some(u)) => {
            let from = phase_len.as_secs_f64() * k as f64;
            Some(SurgeOverlay {
                rate,
                limited: points(seconds, from, phase_len.as_secs_f64()),
                unlimited: points(&u.collector.seconds, 0.0, phase_len.as_secs_f64()),
            })
        }
        _ => None,
    }
}

/// Restarts the shops without their limit and runs one surge phase of `plan`'s length at
/// `rate` (the plan's base, seed and timeout).
pub(crate) async fn surge_without_limit(
    topo: &mut Topology,
    plan: &LoadPlan,
    rate: f64,
) -> Result<Unlimited, String> {
    topo.restart_shops_with(&["--no-limit"]).await?;
    // The edge checks its shops every 250 ms and takes one back after two passed checks.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut plan = plan.clone();
    plan.start = Instant::now() + Duration::from_millis(200);
    plan.phases = 1;
    plan.surge = Some((0, rate));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let load = tokio::spawn(load::run(plan, tx, InFlight::default()));
    let mut collector = Collector::new(&[super::SURGE]);
    while let Some(s) = rx.recv().await {
        collector.add(&s);
    }
    let _ = load.await;
    let mut report = collector
        .phase_reports()
        .pop()
        .ok_or("the comparison surge has no phase")?;
    if let Some((t, _)) = collector.phases.first() {
        report.checkouts = Some(CheckoutCounts {
            attempted: t.checkouts_attempted,
            acknowledged: t.checkouts_acknowledged,
        });
        report.shed = Some(Default::default());
    }
    Ok(Unlimited { report, collector })
}

/// The chart's points for the seconds `[from, from + len)` of `seconds` (per-second tallies
/// from the start of the load), with `t` counted from `from`.
pub(crate) fn points(seconds: &[Tally], from: f64, len: f64) -> Vec<SecondPoint> {
    seconds
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let t = *i as f64 + 0.5;
            t >= from && t < from + len
        })
        .map(|(i, t)| SecondPoint::of(i as f64 + 0.5 - from, t))
        .collect()
}
