//! Turning the raw results of `bench/run.sh` into the tables of `BENCHMARKS.md`.
//!
//! The script leaves one file per run, `r{round}.{scenario}.{target}.wrk` (wrk's output) and,
//! for the apology scenarios, `….probe` (curl's header dump of one request). The report gives
//! medians across rounds, ratios to direct traffic and to nginx and HAProxy, and a verdict for
//! each benchmark target. Generated text sits between HTML comment markers in
//! `BENCHMARKS.md`, so hand-written sections around it survive a re-run ([`splice`]).
//!
//! ```
//! use rampart_bench::report::splice;
//! let doc = "# B\nintro\n<!-- x:begin -->\nold\n<!-- x:end -->\nnotes\n";
//! assert_eq!(splice(doc, "x", "new\n"), "# B\nintro\n<!-- x:begin -->\nnew\n<!-- x:end -->\nnotes\n");
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::wrk::{Criterion, Probe, WrkRun};

/// The targets, in report order.
pub const TARGETS: [&str; 5] = ["direct", "nginx", "haproxy", "rampart", "lean"];
/// The scenarios, in report order.
pub const SCENARIOS: [&str; 4] = ["steady", "kill-one", "kill-all", "all-down"];

/// One measured run.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// wrk's figures (`None` when wrk failed).
    pub wrk: Option<WrkRun>,
    /// The probe request's answer, for the apology scenarios.
    pub probe: Option<Probe>,
    /// CPU time the measured process (and its children) spent during the run, seconds.
    pub cpu_secs: Option<f64>,
}

impl Run {
    /// CPU microseconds per completed request.
    pub fn cpu_us_per_request(&self) -> Option<f64> {
        let w = self.wrk.as_ref()?;
        let secs = self.cpu_secs?;
        (w.requests > 0).then(|| secs * 1e6 / w.requests as f64)
    }
}

/// Parses the script's `TICKS HZ` CPU record.
pub fn parse_cpu(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let ticks: f64 = it.next()?.parse().ok()?;
    let hz: f64 = it.next()?.parse().ok()?;
    (hz > 0.0).then(|| ticks / hz)
}

/// All runs, keyed by (scenario, target), in round order.
#[derive(Debug, Clone, Default)]
pub struct Results {
    runs: BTreeMap<(String, String), Vec<Run>>,
    rounds: usize,
}

impl Results {
    /// Adds the run of `round` (1-based) for `scenario` and `target`.
    pub fn insert(&mut self, round: usize, scenario: &str, target: &str, run: Run) {
        let runs = self
            .runs
            .entry((scenario.to_owned(), target.to_owned()))
            .or_default();
        runs.push(run);
        self.rounds = self.rounds.max(round);
    }

    /// The runs of one scenario and target.
    pub fn get(&self, scenario: &str, target: &str) -> &[Run] {
        self.runs
            .get(&(scenario.to_owned(), target.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    fn wrk(&self, scenario: &str, target: &str) -> Vec<&WrkRun> {
        self.get(scenario, target)
            .iter()
            .filter_map(|r| r.wrk.as_ref())
            .collect()
    }

    /// The median of `f` over the rounds of one scenario and target.
    pub fn median(&self, scenario: &str, target: &str, f: impl Fn(&WrkRun) -> f64) -> Option<f64> {
        median(self.wrk(scenario, target).into_iter().map(f).collect())
    }

    /// The median CPU microseconds per request over the rounds.
    pub fn median_cpu(&self, scenario: &str, target: &str) -> Option<f64> {
        median(
            self.get(scenario, target)
                .iter()
                .filter_map(Run::cpu_us_per_request)
                .collect(),
        )
    }

    fn per_round(&self, scenario: &str, target: &str, f: impl Fn(&WrkRun) -> u64) -> String {
        let runs = self.get(scenario, target);
        let v: Vec<String> = runs
            .iter()
            .map(|r| {
                r.wrk
                    .as_ref()
                    .map_or("failed".to_owned(), |w| f(w).to_string())
            })
            .collect();
        v.join(", ")
    }

    fn present(&self, scenario: &str) -> Vec<&'static str> {
        TARGETS
            .into_iter()
            .filter(|t| !self.get(scenario, t).is_empty())
            .collect()
    }
}

/// The median (mean of the middle two for an even count); `None` for no values.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

fn ms(us: Option<f64>) -> String {
    us.map_or("–".to_owned(), |v| format!("{:.2}", v / 1e3))
}

fn cpu(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.1}"))
}

fn rps(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.0}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    }
}

fn name(target: &str) -> &str {
    match target {
        "direct" => "direct (one replica)",
        "nginx" => "nginx",
        "haproxy" => "HAProxy",
        "rampart" => "Rampart gateway",
        "lean" => "gateway without middleware (lean)",
        other => other,
    }
}

/// Renders the HTTP section: one table per scenario, then the verdicts.
pub fn render_macro(results: &Results, machine: &str, commands: &str, mode: &str) -> String {
    let mut s = String::new();
    let r = results;
    let direct = r.median("steady", "direct", |w| w.rps);
    let _ = writeln!(
        s,
        "Generated by `bench/run.sh` ({mode} mode, {} round(s), medians across rounds; the \
         order within a round is interleaved: direct, nginx, HAProxy, Rampart (and the lean gateway when measured) for each scenario).\n",
        r.rounds
    );
    let _ = writeln!(s, "Machine:\n\n{}\n", machine.trim_end());
    let _ = writeln!(s, "Commands:\n\n```text\n{}\n```\n", commands.trim_end());

    let _ = writeln!(s, "### Steady state (small GET, 32 connections)\n");
    let _ = writeln!(
        s,
        "| target | req/s | × direct | p50 ms | p99 ms | max ms | CPU µs/request | Rampart ÷ this (req/s) | req/s per round |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let ramp = r.median("steady", "rampart", |w| w.rps);
    for t in r.present("steady") {
        let v = r.median("steady", t, |w| w.rps);
        let rounds: Vec<String> = r
            .wrk("steady", t)
            .iter()
            .map(|w| format!("{:.0}", w.rps))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            name(t),
            rps(v),
            ratio(v, direct),
            ms(r.median("steady", t, |w| w.p50_us)),
            ms(r.median("steady", t, |w| w.p99_us)),
            ms(r.median("steady", t, |w| w.max_us)),
            cpu(r.median_cpu("steady", t)),
            ratio(ramp, v),
            rounds.join(", ")
        );
    }

    let _ = writeln!(
        s,
        "\n### One replica SIGKILLed mid-run (failover cost)\n\n\
         | target | req/s | non-2xx per round | socket errors (connect+read+write) per round | timeouts per round | p99 ms | max ms |"
    );
    let _ = writeln!(s, "|---|---:|---|---|---|---:|---:|");
    for t in r.present("kill-one") {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            name(t),
            rps(r.median("kill-one", t, |w| w.rps)),
            r.per_round("kill-one", t, |w| w.non_2xx),
            r.per_round("kill-one", t, WrkRun::socket_errors),
            r.per_round("kill-one", t, |w| w.timeout),
            ms(r.median("kill-one", t, |w| w.p99_us)),
            ms(r.median("kill-one", t, |w| w.max_us)),
        );
    }

    let _ = writeln!(
        s,
        "\n### All three replicas SIGKILLed mid-run (the switch to the apology)\n\n\
         | target | responses by status (median) | socket errors per round | timeouts per round | p99 ms | max ms | status after |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---:|---|");
    for t in r.present("kill-all") {
        let mut codes: BTreeMap<u16, Vec<f64>> = BTreeMap::new();
        for w in r.wrk("kill-all", t) {
            for (c, n) in &w.statuses {
                codes.entry(*c).or_default().push(*n as f64);
            }
        }
        let codes: Vec<String> = codes
            .into_iter()
            .map(|(c, v)| format!("{c}: {}", median(v).map_or(0.0, |m| m.round())))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            name(t),
            if codes.is_empty() {
                "–".to_owned()
            } else {
                codes.join(", ")
            },
            r.per_round("kill-all", t, WrkRun::socket_errors),
            r.per_round("kill-all", t, |w| w.timeout),
            ms(r.median("kill-all", t, |w| w.p99_us)),
            ms(r.median("kill-all", t, |w| w.max_us)),
            probes(r.get("kill-all", t)),
        );
    }

    let _ = writeln!(
        s,
        "\n### All replicas down (the apology)\n\n\
         | target | status, Retry-After | req/s | × direct (steady) | p50 ms | p99 ms | max ms | CPU µs/request | socket errors per round |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    for t in r.present("all-down") {
        let v = r.median("all-down", t, |w| w.rps);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            name(t),
            probes(r.get("all-down", t)),
            rps(v),
            ratio(v, direct),
            ms(r.median("all-down", t, |w| w.p50_us)),
            ms(r.median("all-down", t, |w| w.p99_us)),
            ms(r.median("all-down", t, |w| w.max_us)),
            cpu(r.median_cpu("all-down", t)),
            r.per_round("all-down", t, WrkRun::socket_errors),
        );
    }

    let _ = writeln!(s, "\n### Targets, judged on these medians\n");
    for line in verdicts(r) {
        let _ = writeln!(s, "- {line}");
    }
    s
}

fn probes(runs: &[Run]) -> String {
    let mut seen: Vec<String> = runs
        .iter()
        .filter_map(|r| r.probe.as_ref())
        .map(|p| match (p.status, &p.retry_after) {
            (Some(c), Some(ra)) => format!("{c}, Retry-After: {ra}"),
            (Some(c), None) => format!("{c}, no Retry-After"),
            (None, _) => "no answer".to_owned(),
        })
        .collect();
    seen.dedup();
    if seen.is_empty() {
        "–".to_owned()
    } else {
        seen.join("; ")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

/// The throughput Rampart's gateway aims for, as a multiple of the better proxy's.
pub const TARGET_RATIO: f64 = 1.15;

/// One line per benchmark target, each saying met or missed and by how much.
pub fn verdicts(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let get = |sc: &str, t: &str, f: fn(&WrkRun) -> f64| r.median(sc, t, f);
    let (ra, ng, hp) = (
        get("steady", "rampart", |w| w.rps),
        get("steady", "nginx", |w| w.rps),
        get("steady", "haproxy", |w| w.rps),
    );
    let (rp99, np99, hp99) = (
        get("steady", "rampart", |w| w.p99_us),
        get("steady", "nginx", |w| w.p99_us),
        get("steady", "haproxy", |w| w.p99_us),
    );
    if let (Some(ra), Some(ng), Some(hp), Some(rp), Some(np), Some(hq)) =
        (ra, ng, hp, rp99, np99, hp99)
    {
        out.push(format!(
            "Steady state ≥ {TARGET_RATIO:.2}× the better of nginx and HAProxy in req/s: {} ({:.2}× nginx, {:.2}× HAProxy).",
            verdict(ra >= TARGET_RATIO * ng.max(hp)),
            ra / ng,
            ra / hp
        ));
        out.push(format!(
            "Steady-state p99 no higher than theirs: {} (Rampart {:.2} ms, nginx {:.2} ms, HAProxy {:.2} ms).",
            verdict(rp <= np && rp <= hq),
            rp / 1e3,
            np / 1e3,
            hq / 1e3
        ));
    }
    if let (Some(rc), Some(nc)) = (
        r.median_cpu("steady", "rampart"),
        r.median_cpu("steady", "nginx"),
    ) {
        out.push(format!(
            "Steady-state CPU per request no higher than nginx's: {} ({rc:.1} µs vs {nc:.1} µs).",
            verdict(rc <= nc)
        ));
    }
    let kill_one = r.wrk("kill-one", "rampart");
    if !kill_one.is_empty() {
        let bad: u64 = kill_one
            .iter()
            .map(|w| w.non_2xx + w.socket_errors() + w.timeout)
            .sum();
        out.push(format!(
            "One replica killed: zero non-2xx and zero socket errors: {} ({bad} in {} run(s)).",
            verdict(bad == 0),
            kill_one.len()
        ));
    }
    let kill_all = r.wrk("kill-all", "rampart");
    if !kill_all.is_empty() {
        let errors: u64 = kill_all.iter().map(|w| w.socket_errors() + w.timeout).sum();
        let other: u64 = kill_all
            .iter()
            .flat_map(|w| w.statuses.iter())
            .filter(|(c, _)| !matches!(**c, 200..=299 | 503))
            .map(|(_, n)| *n)
            .sum();
        let max = median(kill_all.iter().map(|w| w.max_us).collect()).unwrap_or(0.0);
        out.push(format!(
            "All replicas killed: no stall, every request answered (data, then the apology): {} \
             ({errors} socket errors/timeouts, {other} responses neither 2xx nor 503, max latency {:.1} ms).",
            verdict(errors == 0 && other == 0 && max < 1e6),
            max / 1e3
        ));
    }
    let down = r.get("all-down", "rampart");
    if !down.is_empty() {
        let ok503 = down
            .iter()
            .filter_map(|x| x.probe.as_ref())
            .all(|p| p.status == Some(503) && p.retry_after.is_some());
        out.push(format!(
            "All down: the apology is 503 with Retry-After: {}.",
            verdict(ok503)
        ));
        let (ra, hp) = (
            get("all-down", "rampart", |w| w.rps),
            get("all-down", "haproxy", |w| w.rps),
        );
        let (rp, hq) = (
            get("all-down", "rampart", |w| w.p99_us),
            get("all-down", "haproxy", |w| w.p99_us),
        );
        if let (Some(ra), Some(hp), Some(rp), Some(hq)) = (ra, hp, rp, hq) {
            out.push(format!(
                "All down: apology throughput ≥ {TARGET_RATIO:.2}× HAProxy's: {} ({:.2}× HAProxy); p99 no higher: {} ({:.2} ms vs {:.2} ms).",
                verdict(ra >= TARGET_RATIO * hp),
                ra / hp,
                verdict(rp <= hq),
                rp / 1e3,
                hq / 1e3
            ));
        }
    }
    out
}

/// Renders the micro-benchmark section from `(package, bench, output)` triples.
pub fn render_micro(benches: &[(String, String, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Generated by `bench/run.sh --micro` (short measurement times on a shared 2-core \
         machine: noisy): `cargo bench -p PACKAGE --bench NAME -- --warm-up-time 1 \
         --measurement-time 3`. Criterion point estimates; `− bare` and `÷ bare` compare each \
         with the bare call of its group measured in the same run; then each bench's own printed \
         summary (its ratios to its anchors, e.g. failsafe, tower-resilience, tower's p2c).\n"
    );
    for (pkg, bench, out) in benches {
        let _ = writeln!(s, "#### `{pkg}` — `{bench}`\n");
        if out.starts_with("skipped") {
            let _ = writeln!(s, "Not run: the bench does not exist yet.\n");
            continue;
        }
        let (results, ratios) = crate::wrk::parse_criterion(out);
        if results.is_empty() {
            let tail: Vec<&str> = out.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let _ = writeln!(
                s,
                "No results parsed; the output ended with:\n\n```text\n{}\n```\n",
                tail.join("\n")
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| benchmark | time | − bare | ÷ bare |\n|---|---:|---:|---:|"
        );
        for Criterion { id, ns } in &results {
            let (over, ratio) = match bare_anchor(&results, id) {
                Some(bare) if bare.id != *id => (
                    human_ns(ns - bare.ns),
                    if bare.ns > 0.0 {
                        format!("{:.1}×", ns / bare.ns)
                    } else {
                        "–".to_owned()
                    },
                ),
                _ => ("–".to_owned(), "–".to_owned()),
            };
            let _ = writeln!(s, "| `{id}` | {} | {over} | {ratio} |", human_ns(*ns));
        }
        if !ratios.is_empty() {
            let _ = writeln!(
                s,
                "\nWhat the bench printed (its summary and ratios):\n\n```text\n{}\n```",
                ratios.join("\n")
            );
        }
        let _ = writeln!(s);
    }
    s
}

/// The bare-call anchor of a benchmark: a result whose name (after its last `/`) contains
/// `bare` and whose group (before it) encloses the benchmark's id; the innermost such group,
/// the first such result in it.
fn bare_anchor<'a>(results: &'a [Criterion], id: &str) -> Option<&'a Criterion> {
    results
        .iter()
        .filter_map(|c| {
            let (g, name) = c.id.rsplit_once('/')?;
            (name.contains("bare") && id.starts_with(g) && id[g.len()..].starts_with('/'))
                .then_some((g.len(), c))
        })
        .fold(
            None,
            |best: Option<(usize, &Criterion)>, (len, c)| match best {
                Some((l, _)) if l >= len => best,
                _ => Some((len, c)),
            },
        )
        .map(|(_, c)| c)
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Replaces the text between `<!-- {key}:begin -->` and `<!-- {key}:end -->` in `doc` with
/// `body`, or appends a marked section when the markers are missing.
pub fn splice(doc: &str, key: &str, body: &str) -> String {
    let begin = format!("<!-- {key}:begin -->");
    let end = format!("<!-- {key}:end -->");
    match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            let head = &doc[..b + begin.len()];
            let tail = &doc[e..];
            format!("{head}\n{body}{tail}")
        }
        _ => {
            let mut out = doc.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            let _ = write!(out, "\n{begin}\n{body}{end}\n");
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rps: f64, p99_us: f64) -> Run {
        Run {
            wrk: Some(WrkRun {
                rps,
                p99_us,
                requests: 10,
                ..WrkRun::default()
            }),
            probe: None,
            cpu_secs: Some(1.0),
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn verdicts_compare_medians_to_nginx_and_haproxy() {
        let mut r = Results::default();
        for (round, (n, h, g)) in [
            (100.0, 90.0, 95.0),
            (110.0, 80.0, 120.0),
            (90.0, 85.0, 100.0),
        ]
        .into_iter()
        .enumerate()
        {
            r.insert(round + 1, "steady", "nginx", run(n, 2000.0));
            r.insert(round + 1, "steady", "haproxy", run(h, 2500.0));
            r.insert(round + 1, "steady", "rampart", run(g, 1900.0));
        }
        let v = verdicts(&r);
        // Medians: nginx 100, HAProxy 85, Rampart 100 → 1.00× the better one: missed (the
        // target is 1.15×); p99 lower → met.
        assert!(
            v[0].starts_with(
                "Steady state ≥ 1.15× the better of nginx and HAProxy in req/s: **missed** (1.00× nginx"
            ),
            "{}",
            v[0]
        );
        assert!(v[1].contains("**met**"), "{}", v[1]);
    }

    #[test]
    fn kill_one_counts_every_error_kind() {
        let mut r = Results::default();
        let mut w = WrkRun {
            read: 2,
            ..WrkRun::default()
        };
        w.rps = 1.0;
        r.insert(
            1,
            "kill-one",
            "rampart",
            Run {
                wrk: Some(w),
                probe: None,
                cpu_secs: None,
            },
        );
        let v = verdicts(&r);
        assert_eq!(
            v,
            [
                "One replica killed: zero non-2xx and zero socket errors: **missed** (2 in 1 run(s))."
            ]
        );
    }

    #[test]
    fn cpu_per_request_from_ticks() {
        assert_eq!(parse_cpu("250 100\n"), Some(2.5));
        assert_eq!(parse_cpu("x"), None);
        // 1 s of CPU over 10 requests: 100 ms each.
        assert_eq!(run(1.0, 1.0).cpu_us_per_request(), Some(100_000.0));
    }

    #[test]
    fn micro_ratios_use_the_bare_call_of_the_same_group() {
        let out = "g/bare  time: [1.0 ns 2.0 ns 3.0 ns]\ng/x  time: [5.0 ns 6.0 ns 7.0 ns]\nh/y  time: [1.0 ns 1.0 ns 1.0 ns]\ng/w/10  time: [3.0 ns 4.0 ns 5.0 ns]\n";
        let s = render_micro(&[("p".into(), "b".into(), out.into())]);
        assert!(s.contains("| `g/x` | 6.0 ns | 4.0 ns | 3.0× |"), "{s}");
        assert!(s.contains("| `h/y` | 1.0 ns | – | – |"), "{s}");
        assert!(s.contains("| `g/w/10` | 4.0 ns | 2.0 ns | 2.0× |"), "{s}");
    }

    #[test]
    fn splice_appends_when_markers_are_missing() {
        assert_eq!(
            splice("# T\n", "k", "x\n"),
            "# T\n\n<!-- k:begin -->\nx\n<!-- k:end -->\n"
        );
    }

    #[test]
    fn render_lists_each_present_target() {
        let mut r = Results::default();
        r.insert(1, "steady", "direct", run(200.0, 1000.0));
        r.insert(1, "steady", "rampart", run(100.0, 1500.0));
        let s = render_macro(&r, "- cpu", "wrk ...", "quick");
        assert!(s.contains("| Rampart gateway | 100 | 0.50× | "), "{s}");
        assert!(s.contains("| 100000.0 |"), "{s}");
        assert!(!s.contains("| nginx |"));
    }
}
