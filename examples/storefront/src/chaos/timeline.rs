//! The timeline of a run: the open-loop load through the edge at a fixed arrival rate, the
//! live progress line, and the phases in order against the stage (each phase's faults, the
//! primary edge's outage, shop A killed mid-checkout, the surge) until the load ends.
//!
//! Every response goes into one collector (by phase and by second), which the report, the
//! facts and the chart are made of; Ctrl-C stops the run.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::args::Pace;
use super::load::{self, InFlight, LoadPlan};
use super::phases::{PHASES, SURGE, fault_body};
use super::progress::Progress;
use super::region::{self, RegionDown, ShopResolver};
use super::report::{Collector, KillFacts};
use super::stage::Stage;
use super::{kill, lock, say};

/// What the phases leave for the report.
#[derive(Default)]
pub(super) struct Outcome {
    /// The kill mid-checkout.
    pub(super) kill: KillFacts,
    /// The chart's events (seconds from the start of the load, label).
    pub(super) events: Vec<(f64, String)>,
    /// The shops' shed counters as the surge began.
    pub(super) shed_before: Option<BTreeMap<String, u64>>,
    /// The primary edge's outage, to be finished with what the load saw.
    pub(super) region_down: Option<RegionDown>,
}

/// The load in flight through the timeline, and what it has collected.
pub(super) struct Timeline {
    /// The responses so far, by phase and by second, and the orders placed.
    pub(super) collector: Arc<Mutex<Collector>>,
    /// The load's settings (the comparison surge reuses them).
    pub(super) plan: LoadPlan,
    /// The length of the load: every phase.
    pub(super) total: Duration,
    /// The surge's arrival rate.
    surge_rate: f64,
    inflight: InFlight,
    /// The phase running now (for the progress line).
    phase: Arc<AtomicUsize>,
    /// Set once the load is over (stops the progress line).
    done: Arc<AtomicBool>,
    load: JoinHandle<()>,
    sink: JoinHandle<()>,
    progress: JoinHandle<()>,
}

impl Timeline {
    /// Starts the load through `resolver` 200 ms from now, its collector and the progress
    /// line.
    pub(super) fn start(
        resolver: &Arc<ShopResolver>,
        pace: Pace,
        seed: u64,
        surge_rate: f64,
    ) -> Timeline {
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
        let total = pace.phase_len * PHASES.len() as u32;
        let inflight = InFlight::default();
        let plan = LoadPlan {
            base: resolver.base(),
            resolver: resolver.clone(),
            rate: pace.rate,
            start,
            phase_len: pace.phase_len,
            phases: PHASES.len(),
            timeout: Duration::from_secs(15),
            seed,
            surge: PHASES
                .iter()
                .position(|p| p.name == SURGE)
                .map(|k| (k, surge_rate)),
        };
        let load = tokio::spawn(load::run(plan.clone(), tx, inflight.clone()));
        let phase = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let progress = tokio::spawn(
            Progress {
                collector: collector.clone(),
                phase: phase.clone(),
                done: done.clone(),
                start,
                total,
            }
            .run(),
        );
        Timeline {
            collector,
            plan,
            total,
            surge_rate,
            inflight,
            phase,
            done,
            load,
            sink,
            progress,
        }
    }

    /// Runs the phases against `stage` and waits for the load to end (it stops at the end of
    /// the last phase); Ctrl-C stops the load at once and ends the run.
    pub(super) async fn run(&mut self, stage: &mut Stage) -> Result<Outcome, String> {
        // On Ctrl-C the children are killed when the stage is dropped on return.
        let outcome = tokio::select! {
            o = self.phases(stage) => o,
            _ = tokio::signal::ctrl_c() => {
                self.load.abort();
                Err("interrupted".to_owned())
            }
        };
        // Otherwise let the load finish (it stops at the end of the last phase).
        let _ = (&mut self.load).await;
        let _ = (&mut self.sink).await;
        self.done.store(true, Ordering::Relaxed);
        let _ = (&mut self.progress).await;
        outcome
    }

    /// Each phase at its time: the fleet reset, the phase's faults, and its events.
    async fn phases(&self, stage: &mut Stage) -> Result<Outcome, String> {
        let (start, phase_len) = (self.plan.start, self.plan.phase_len);
        let mut out = Outcome::default();
        for (k, spec) in PHASES.iter().enumerate() {
            let phase_start = start + phase_len * k as u32;
            tokio::time::sleep_until(phase_start).await;
            stage.topo.check_alive()?;
            self.phase.store(k, Ordering::Relaxed);
            if !std::io::stderr().is_terminal() {
                say(&format!(
                    "chaos: phase {}/{} {}",
                    k + 1,
                    PHASES.len(),
                    spec.name
                ));
            }
            stage.topo.reset().await?;
            if spec.name == SURGE {
                out.shed_before = stage.topo.limiter_sheds().await;
                out.events.push((
                    start.elapsed().as_secs_f64(),
                    format!("surge: {} requests/s", self.surge_rate),
                ));
            }
            for f in spec.faults {
                stage.topo.fault(fault_body(f)).await?;
            }
            if spec.name == region::PHASE {
                let r = RegionDown::run(&mut stage.topo, &stage.dns, start, phase_start, phase_len)
                    .await?;
                out.events
                    .push((r.facts.killed_at_s, "SIGKILL edge us-east".to_owned()));
                out.events
                    .push((r.facts.restarted_at_s, "restart edge us-east".to_owned()));
                out.region_down = Some(r);
            }
            if spec.kill {
                let events = kill::shop_killed(
                    stage,
                    &self.inflight,
                    start,
                    phase_start,
                    phase_len,
                    &mut out.kill,
                )
                .await?;
                out.events.extend(events);
            }
        }
        tokio::time::sleep_until(start + self.total).await;
        Ok(out)
    }
}
