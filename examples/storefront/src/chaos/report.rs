//! What a chaos run measured: per-phase counts and HDR latency histograms, a per-second
//! series for the chart, the orders, the JSON report and the table, and their publication at
//! the end of the run (the table on stdout, the report, facts and chart files, the verdict).
//!
//! The JSON report has exactly its documented shape ([`Report`]); the facts the
//! integration test checks besides (every apology carries `Retry-After`, every stale page
//! carries `Age`, the kill happened mid-checkout...) go into a side file ([`Facts`]).
//!
//! ```
//! use storefront::chaos::{OrdersReport, PhaseReport, Report};
//!
//! let report = Report {
//!     phases: vec![PhaseReport {
//!         name: "baseline".into(),
//!         requests: 10, ok: 9, degraded: 1, apology: 0, errors: 0,
//!         p50_ms: 1.5, p99_ms: 4.0, max_ms: 4.2, checkouts: None, shed: None,
//!     }],
//!     orders: OrdersReport { submitted: 2, acknowledged: 2, confirmed: 2, lost: 0, duplicated: 0 },
//! };
//! assert!(report.passed());
//! let json = serde_json::to_value(&report).unwrap();
//! assert_eq!(json["phases"][0]["p99_ms"], 4.0);
//! assert_eq!(json["orders"]["lost"], 0);
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::args::{ChaosArgs, facts_path};
use super::chart::{self, ChartData};
use super::load::{Class, Sample};
use super::phases::SURGE;
use super::{say, tail};

/// One phase's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// The phase (`baseline`, `everything-down`...).
    pub name: String,
    /// Requests whose intended send time fell in this phase.
    pub requests: u64,
    /// Fresh, complete answers.
    pub ok: u64,
    /// Stale copies, partial pages, orders acknowledged as pending.
    pub degraded: u64,
    /// The apology: 503 with `Retry-After`.
    pub apology: u64,
    /// Anything else: other statuses, resets, timeouts.
    pub errors: u64,
    /// Median latency from the intended send time, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Largest latency, in milliseconds.
    pub max_ms: f64,
    /// The `surge` phase only: checkouts sent and acknowledged (303 confirmed, or 202
    /// pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkouts: Option<CheckoutCounts>,
    /// The `surge` phase only: requests the shops' concurrency limiters shed, by partition
    /// (empty when the limiter is off). A shed request is answered with the apology and
    /// counted as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shed: Option<BTreeMap<String, u64>>,
}

/// Checkouts of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckoutCounts {
    /// Checkouts sent.
    pub attempted: u64,
    /// Checkouts acknowledged (303 confirmed, or 202 pending).
    pub acknowledged: u64,
}

/// What became of the orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrdersReport {
    /// Checkouts sent.
    pub submitted: u64,
    /// Checkouts the shop acknowledged (303 confirmed, or 202 pending).
    pub acknowledged: u64,
    /// Submitted orders present in the checkout service's database at the end.
    pub confirmed: u64,
    /// Acknowledged orders that were never confirmed.
    pub lost: u64,
    /// Extra confirmed copies of an order (same idempotency key, or same customer).
    pub duplicated: u64,
}

/// The chaos report (`--report FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// One entry per phase, in order.
    pub phases: Vec<PhaseReport>,
    /// Orders.
    pub orders: OrdersReport,
}

impl Report {
    /// No phase had errors and no order was lost or duplicated.
    pub fn passed(&self) -> bool {
        self.phases.iter().all(|p| p.errors == 0)
            && self.orders.lost == 0
            && self.orders.duplicated == 0
    }

    /// Why the run failed, or `None`.
    pub fn verdict(&self) -> Option<String> {
        let mut why = Vec::new();
        for p in &self.phases {
            if p.errors > 0 {
                why.push(format!("{} errors in phase {}", p.errors, p.name));
            }
        }
        if self.orders.lost > 0 {
            why.push(format!("{} orders lost", self.orders.lost));
        }
        if self.orders.duplicated > 0 {
            why.push(format!("{} orders duplicated", self.orders.duplicated));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }

    /// The report as a fixed-width table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9}",
            "phase",
            "requests",
            "ok",
            "degraded",
            "apology",
            "errors",
            "p50 ms",
            "p99 ms",
            "max ms"
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "{:<22} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9.1} {:>9.1} {:>9.1}",
                p.name,
                p.requests,
                p.ok,
                p.degraded,
                p.apology,
                p.errors,
                p.p50_ms,
                p.p99_ms,
                p.max_ms
            );
        }
        let o = &self.orders;
        let _ = writeln!(
            out,
            "orders: submitted {}, acknowledged {}, confirmed {}, lost {}, duplicated {}",
            o.submitted, o.acknowledged, o.confirmed, o.lost, o.duplicated
        );
        out
    }

    /// The report as a Markdown table (for CHAOS.md).
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| phase | requests | ok | degraded | apology | errors | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
                p.name,
                p.requests,
                p.ok,
                p.degraded,
                p.apology,
                p.errors,
                p.p50_ms,
                p.p99_ms,
                p.max_ms
            );
        }
        let o = &self.orders;
        let _ = writeln!(
            out,
            "\nOrders: submitted {}, acknowledged {}, confirmed {}, lost {}, duplicated {}.",
            o.submitted, o.acknowledged, o.confirmed, o.lost, o.duplicated
        );
        out
    }
}

/// Facts of one phase the runner counts besides the report (the side file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseFacts {
    /// The phase.
    pub name: String,
    /// Responses with status 503.
    pub responses_503: u64,
    /// 503 responses carrying `Retry-After` (the apology).
    pub apology_with_retry_after: u64,
    /// Apologies the edge itself served (`x-edge-apology`), by trigger.
    pub edge_apologies: BTreeMap<String, u64>,
    /// Pages marked stale (`x-rampart-stale`, or `Age` without the marker).
    pub stale_pages: u64,
    /// Stale pages carrying `Age`.
    pub stale_with_age: u64,
    /// Search pages that said search was unavailable (the shop has no header for these;
    /// they are recognised by their text).
    pub partial_pages: u64,
    /// Checkouts answered 202 (order received, confirmation pending).
    pub pending_orders: u64,
    /// Checkouts answered 303 (confirmed at once).
    pub confirmed_orders: u64,
    /// Errors by kind (`status 500`, `timeout`, `transport: ...`).
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// What happened around the SIGKILL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KillFacts {
    /// Seconds from the start of the load when shop instance A was killed.
    pub killed_at_s: f64,
    /// Checkouts in flight (sent, not answered; to either shop) when it was killed.
    pub checkouts_in_flight: u64,
    /// Orders shop A had recorded in its outbox and not answered when it was killed, its
    /// customers still waiting (checked on the frozen process, see the module docs): the
    /// kill was mid-checkout when this is non-zero.
    pub caught_orders: u64,
    /// Their idempotency keys.
    pub caught_keys: Vec<String>,
    /// How many times shop A was frozen (SIGSTOP) to look for such a moment.
    pub freezes: u32,
    /// Checkouts the runner sent straight to shop A while checkout held every order (see
    /// the module docs): at least one of them is among the caught orders.
    #[serde(default)]
    pub held_checkouts: u32,
    /// What became of each of them (`202 after 2.6 s`: answered before the runner caught it;
    /// `connection closed after 0.1 s`: shop A was killed holding it).
    #[serde(default)]
    pub held_outcomes: Vec<String>,
    /// Of the caught orders, how many the other shop also recorded (the edge retried them
    /// there); `None` when the outboxes could not be read.
    pub caught_retried_on_other_shop: Option<u64>,
    /// Of the caught orders, how many checkout confirmed exactly once.
    pub caught_confirmed_once: u64,
    /// Seconds from the start of the load when it was restarted.
    pub restarted_at_s: f64,
    /// Seconds from the restart until it answered `/healthz`.
    pub ready_after_s: f64,
}

/// Details of the order accounting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderFacts {
    /// Orders confirmed although the customer never got an acknowledgement (an error or an
    /// apology reached them, yet the order went through): not lost, reported for honesty.
    pub confirmed_unacknowledged: u64,
    /// Acknowledged-but-unconfirmed idempotency keys (at most 20), if any.
    pub lost_keys: Vec<String>,
    /// Seconds spent after the last phase waiting for pending orders to be confirmed.
    pub settle_s: f64,
    /// Orders recorded in *both* shops' outboxes: a shop had recorded it when it was killed
    /// and the edge retried the request on the other one (`None` when the outboxes could not
    /// be read).
    pub in_both_outboxes: Option<u64>,
}

/// The side file (`--facts FILE`, by default next to the report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// Per phase.
    pub phases: Vec<PhaseFacts>,
    /// The SIGKILL.
    pub kill: KillFacts,
    /// The `edge-region-down` phase: when the DNS answers and the load's cached answer
    /// stopped naming the killed edge (`None` when the run had no such phase).
    #[serde(default)]
    pub edge_region: Option<super::region::EdgeRegionFacts>,
    /// Orders.
    pub orders: OrderFacts,
    /// How the surge was sized (the start-up calibration) and the same surge without the
    /// shops' limit.
    #[serde(default)]
    pub surge: super::compare::SurgeFacts,
    /// The phases' targets and whether they were met.
    #[serde(default)]
    pub targets: Vec<super::tail::Target>,
    /// Arrival rate, requests per second.
    pub rate: f64,
    /// Length of each phase, seconds.
    pub phase_s: f64,
    /// Where the processes' data and logs are.
    pub dir: String,
    /// The machine's load average (`/proc/loadavg`: 1, 5, 15 minutes) before and after the
    /// run, when known: latency figures on a shared machine depend on it.
    pub load_average: Vec<String>,
}

/// Largest latency recorded, in microseconds (10 minutes).
const MAX_US: u64 = 600_000_000;

#[allow(clippy::expect_used)]
fn histogram() -> Histogram<u64> {
    // Constant, valid bounds (1 µs to 10 minutes, 3 significant digits): cannot fail.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Counts and latencies of a set of samples.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    pub(crate) degraded: u64,
    pub(crate) apology: u64,
    pub(crate) errors: u64,
    pub(crate) checkouts_attempted: u64,
    pub(crate) checkouts_acknowledged: u64,
    pub(crate) latency_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            requests: 0,
            ok: 0,
            degraded: 0,
            apology: 0,
            errors: 0,
            checkouts_attempted: 0,
            checkouts_acknowledged: 0,
            latency_us: histogram(),
        }
    }
}

impl Tally {
    pub(crate) fn add(&mut self, s: &Sample) {
        self.requests += 1;
        match s.class {
            Class::Ok => self.ok += 1,
            Class::Degraded => self.degraded += 1,
            Class::Apology => self.apology += 1,
            Class::Error => self.errors += 1,
        }
        if s.order_key.is_some() {
            self.checkouts_attempted += 1;
            self.checkouts_acknowledged += u64::from(s.acknowledged);
        }
        let us = (s.latency.as_micros() as u64).clamp(1, MAX_US);
        self.latency_us.saturating_record(us);
    }

    pub(crate) fn percentile_ms(&self, q: f64) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    pub(crate) fn max_ms(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.latency_us.max() as f64 / 1000.0
    }
}

/// Everything collected during a run.
#[derive(Debug)]
pub(crate) struct Collector {
    pub(crate) phases: Vec<(Tally, PhaseFacts)>,
    /// One tally per second of intended send time.
    pub(crate) seconds: Vec<Tally>,
    /// Idempotency keys of the checkouts sent, and whether each was acknowledged.
    pub(crate) orders: BTreeMap<String, bool>,
}

impl Collector {
    pub(crate) fn new(names: &[&str]) -> Self {
        Self {
            phases: names
                .iter()
                .map(|n| {
                    (
                        Tally::default(),
                        PhaseFacts {
                            name: (*n).to_owned(),
                            ..PhaseFacts::default()
                        },
                    )
                })
                .collect(),
            seconds: Vec::new(),
            orders: BTreeMap::new(),
        }
    }

    pub(crate) fn add(&mut self, s: &Sample) {
        let sec = s.intended.as_secs() as usize;
        if self.seconds.len() <= sec {
            self.seconds.resize_with(sec + 1, Tally::default);
        }
        self.seconds[sec].add(s);
        if let Some(key) = &s.order_key {
            let ack = self.orders.entry(key.clone()).or_insert(false);
            *ack |= s.acknowledged;
        }
        let Some((tally, facts)) = self.phases.get_mut(s.phase) else {
            return;
        };
        tally.add(s);
        let f = &s.facts;
        facts.responses_503 += u64::from(f.status_503);
        facts.apology_with_retry_after += u64::from(f.status_503 && f.retry_after);
        if let Some(t) = &f.edge_apology {
            *facts.edge_apologies.entry(t.clone()).or_default() += 1;
        }
        facts.stale_pages += u64::from(f.stale);
        facts.stale_with_age += u64::from(f.stale && f.age);
        facts.partial_pages += u64::from(f.partial);
        facts.pending_orders += u64::from(f.pending);
        facts.confirmed_orders += u64::from(f.confirmed);
        if let Some(kind) = &s.error {
            *facts.errors_by_kind.entry(kind.clone()).or_default() += 1;
        }
    }

    /// Totals over every phase (for the progress line).
    pub(crate) fn totals(&self) -> (u64, u64, u64, u64, u64) {
        self.phases.iter().fold((0, 0, 0, 0, 0), |a, (t, _)| {
            (
                a.0 + t.requests,
                a.1 + t.ok,
                a.2 + t.degraded,
                a.3 + t.apology,
                a.4 + t.errors,
            )
        })
    }

    pub(crate) fn phase_reports(&self) -> Vec<PhaseReport> {
        self.phases
            .iter()
            .map(|(t, f)| PhaseReport {
                name: f.name.clone(),
                requests: t.requests,
                ok: t.ok,
                degraded: t.degraded,
                apology: t.apology,
                errors: t.errors,
                p50_ms: round1(t.percentile_ms(0.50)),
                p99_ms: round1(t.percentile_ms(0.99)),
                max_ms: round1(t.max_ms()),
                checkouts: None,
                shed: None,
            })
            .collect()
    }

    /// The report: the phases' lines, the surge's with its checkouts and what the shops shed
    /// during it (their counters before and after), and `orders`.
    pub(crate) fn report(
        &self,
        orders: OrdersReport,
        shed_before: Option<BTreeMap<String, u64>>,
        shed_after: Option<BTreeMap<String, u64>>,
    ) -> Report {
        let mut phase_reports = self.phase_reports();
        if let Some((p, (t, _))) = phase_reports
            .iter_mut()
            .zip(&self.phases)
            .find(|(p, _)| p.name == SURGE)
        {
            p.checkouts = Some(CheckoutCounts {
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
        Report {
            phases: phase_reports,
            orders,
        }
    }
}

/// Prints the table and the targets, writes the report, the facts side file and the chart
/// where `args` ask, and says where the run's data is; `Err` when the run failed.
pub(crate) fn publish(
    args: &ChaosArgs,
    report: &Report,
    facts: &Facts,
    chart: &ChartData,
    dir: &Path,
) -> Result<(), String> {
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", report.table());
        let _ = write!(out, "{}", tail::lines(&facts.targets));
        let _ = out.flush();
    }
    if let Some(p) = &args.report {
        write_json(p, report)?;
    }
    if let Some(p) = facts_path(args) {
        write_json(&p, facts)?;
    }
    if let Some(p) = &args.chart {
        chart::draw(p, chart)?;
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

/// Writes `value` as pretty JSON, with a final newline, to `path`.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `12.3s`-style duration for the progress line.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, errors: u64) -> PhaseReport {
        PhaseReport {
            name: name.into(),
            requests: 10,
            ok: 10 - errors,
            degraded: 0,
            apology: 0,
            errors,
            p50_ms: 1.0,
            p99_ms: 2.0,
            max_ms: 3.0,
            checkouts: None,
            shed: None,
        }
    }

    #[test]
    fn verdict_names_every_failure() {
        let mut r = Report {
            phases: vec![phase("baseline", 0), phase("everything-down", 2)],
            orders: OrdersReport {
                submitted: 5,
                acknowledged: 5,
                confirmed: 4,
                lost: 1,
                duplicated: 0,
            },
        };
        assert!(!r.passed());
        let v = r.verdict().unwrap();
        assert!(v.contains("2 errors in phase everything-down"), "{v}");
        assert!(v.contains("1 orders lost"), "{v}");
        r.phases[1].errors = 0;
        r.orders.lost = 0;
        r.orders.duplicated = 3;
        assert_eq!(r.verdict().unwrap(), "3 orders duplicated");
        r.orders.duplicated = 0;
        assert!(r.passed() && r.verdict().is_none());
        assert!(r.table().contains("everything-down"));
        assert!(r.markdown().starts_with("| phase |"));
    }

    #[test]
    fn tally_counts_classes_and_latency() {
        let mut t = Tally::default();
        for (class, ms) in [
            (Class::Ok, 1),
            (Class::Degraded, 2),
            (Class::Apology, 3),
            (Class::Error, 100),
        ] {
            t.add(&Sample {
                phase: 0,
                intended: Duration::ZERO,
                latency: Duration::from_millis(ms),
                class,
                facts: Default::default(),
                error: None,
                order_key: None,
                acknowledged: false,
            });
        }
        assert_eq!(
            (t.requests, t.ok, t.degraded, t.apology, t.errors),
            (4, 1, 1, 1, 1)
        );
        assert!((t.max_ms() - 100.0).abs() < 0.2, "{}", t.max_ms());
        assert!(t.percentile_ms(0.5) <= 2.01);
    }
}
