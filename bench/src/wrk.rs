//! Parsing wrk's text output, curl's header dumps and criterion's console output.
//!
//! ```
//! use rampart_bench::wrk::WrkRun;
//! let out = "Running 10s test @ http://127.0.0.1:8080/
//!   1 threads and 32 connections
//!   Thread Stats   Avg      Stdev     Max   +/- Stdev
//!     Latency   389.12us  120.55us   8.04ms   91.02%
//!     Req/Sec    82.11k     3.10k   88.20k    70.00%
//!   Latency Distribution
//!      50%  370.00us
//!      75%  420.00us
//!      90%  500.00us
//!      99%    1.02ms
//!   817261 requests in 10.00s, 100.02MB read
//! Requests/sec:  81726.10
//! Transfer/sec:     10.00MB
//! ";
//! let run = WrkRun::parse(out).unwrap();
//! assert_eq!(run.requests, 817_261);
//! assert_eq!(run.p99_us, 1020.0);
//! assert_eq!(run.socket_errors(), 0);
//! ```

use std::collections::BTreeMap;

/// One wrk run, as wrk printed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkRun {
    /// Completed requests.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Largest latency, microseconds.
    pub max_us: f64,
    /// Responses whose status was not 2xx or 3xx.
    pub non_2xx: u64,
    /// Connect errors.
    pub connect: u64,
    /// Read errors (includes connections reset or closed under wrk).
    pub read: u64,
    /// Write errors.
    pub write: u64,
    /// Requests that got no response within wrk's timeout (2 s by default).
    pub timeout: u64,
    /// Responses by status, when the status-counting Lua script ran.
    pub statuses: BTreeMap<u16, u64>,
}

impl WrkRun {
    /// Parses wrk's output; `None` when it has no `Requests/sec` line (wrk failed).
    pub fn parse(text: &str) -> Option<Self> {
        let mut run = Self::default();
        let mut saw_rps = false;
        for line in text.lines() {
            let t = line.trim();
            let words: Vec<&str> = t.split_whitespace().collect();
            match words.as_slice() {
                ["Requests/sec:", v, ..] => {
                    run.rps = v.parse().ok()?;
                    saw_rps = true;
                }
                ["Latency", _avg, _stdev, max, ..] => run.max_us = duration_us(max)?,
                ["50%", v] => run.p50_us = duration_us(v)?,
                ["99%", v] => run.p99_us = duration_us(v)?,
                [n, "requests", "in", ..] => run.requests = n.parse().ok()?,
                ["Non-2xx", "or", "3xx", "responses:", n] => run.non_2xx = n.parse().ok()?,
                ["Socket", "errors:", rest @ ..] => {
                    // connect 0, read 0, write 0, timeout 0
                    let mut it = rest.iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        let v: u64 = v.trim_end_matches(',').parse().ok()?;
                        match *k {
                            "connect" => run.connect = v,
                            "read" => run.read = v,
                            "write" => run.write = v,
                            "timeout" => run.timeout = v,
                            _ => {}
                        }
                    }
                }
                ["status", code, n] => {
                    run.statuses.insert(code.parse().ok()?, n.parse().ok()?);
                }
                _ => {}
            }
        }
        saw_rps.then_some(run)
    }

    /// Connect, read and write errors (not timeouts).
    pub fn socket_errors(&self) -> u64 {
        self.connect + self.read + self.write
    }
}

/// Parses wrk's durations (`370.00us`, `1.02ms`, `2.00s`, `1.00m`) into microseconds.
pub fn duration_us(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(v * scale)
}

/// The answer to one probe request, from curl's `-D` header dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The status code (`None` when the probe failed).
    pub status: Option<u16>,
    /// The `Retry-After` header, when present.
    pub retry_after: Option<String>,
}

impl Probe {
    /// Parses `HTTP/1.1 503 Service Unavailable` and the header lines after it.
    pub fn parse(text: &str) -> Self {
        let mut probe = Self::default();
        for line in text.lines() {
            let line = line.trim_end();
            if line.starts_with("HTTP/") {
                probe.status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            } else if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("retry-after")
            {
                probe.retry_after = Some(v.trim().to_owned());
            }
        }
        probe
    }
}

/// One criterion measurement: its id and the middle of its time interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Criterion {
    /// The benchmark id (`group/function/parameter`).
    pub id: String,
    /// The point estimate, nanoseconds.
    pub ns: f64,
}

/// Whether a line is criterion's or cargo's own chatter (not something the bench printed).
fn is_chatter(t: &str) -> bool {
    const PREFIXES: [&str; 16] = [
        "Benchmarking",
        "Compiling",
        "Finished",
        "Running",
        "Downloaded",
        "Downloading",
        "Locking",
        "Blocking",
        "warning",
        "Gnuplot",
        "Found ",
        "change:",
        "thrpt:",
        "Performance has",
        "No change in performance",
        "Change within noise",
    ];
    t.is_empty()
        || PREFIXES.iter().any(|p| t.starts_with(p))
        || t.contains("time:")
        || t.ends_with("high mild")
        || t.ends_with("high severe")
        || t.ends_with("low mild")
        || t.ends_with("low severe")
}

/// Extracts criterion's `id  time: [low mid high]` results (the id may stand on the line
/// before) and the lines the bench printed itself (its summary and ratios).
pub fn parse_criterion(text: &str) -> (Vec<Criterion>, Vec<String>) {
    let mut results = Vec::new();
    let mut printed: Vec<String> = Vec::new();
    let mut previous = "";
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("time:") && printed.last().is_some_and(|l| l.trim() == previous) {
            // A long id that criterion put on its own line: not the bench's output.
            printed.pop();
        }
        if !is_chatter(t) {
            printed.push(line.trim_end().to_owned());
        }
        if let Some(pos) = t.find("time:") {
            let id = t[..pos].trim();
            let id = if id.is_empty() { previous } else { id };
            let inner = t[pos + 5..]
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let w: Vec<&str> = inner.split_whitespace().collect();
            if let [_, _, mid, unit, ..] = w.as_slice()
                && let (Ok(v), Some(scale)) = (mid.parse::<f64>(), unit_ns(unit))
            {
                results.push(Criterion {
                    id: id.to_owned(),
                    ns: v * scale,
                });
            }
        }
        if !t.is_empty() {
            previous = t;
        }
    }
    (results, printed)
}

fn unit_ns(unit: &str) -> Option<f64> {
    Some(match unit {
        "ps" => 1e-3,
        "ns" => 1.0,
        "µs" | "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KILL_ALL: &str = "Running 10s test @ http://127.0.0.1:1/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms    9.00ms   1.01s    99.00%
    Req/Sec    30.00k     3.10k   38.20k    70.00%
  Latency Distribution
     50%  700.00us
     75%  800.00us
     90%  900.00us
     99%    2.50ms
  300000 requests in 10.00s, 30.02MB read
  Socket errors: connect 0, read 4, write 1, timeout 7
  Non-2xx or 3xx responses: 150000
Requests/sec:  30000.00
Transfer/sec:      3.00MB
status 200 150000
status 503 150000
";

    #[test]
    fn parses_errors_timeouts_and_status_counts() {
        let run = WrkRun::parse(KILL_ALL).unwrap();
        assert_eq!(run.max_us, 1.01e6);
        assert_eq!(run.p50_us, 700.0);
        assert_eq!(
            (run.connect, run.read, run.write, run.timeout),
            (0, 4, 1, 7)
        );
        assert_eq!(run.socket_errors(), 5);
        assert_eq!(run.non_2xx, 150_000);
        assert_eq!(run.statuses.get(&503), Some(&150_000));
        assert_eq!(run.rps, 30_000.0);
    }

    #[test]
    fn failed_wrk_output_is_none() {
        assert_eq!(
            WrkRun::parse("unable to connect to 127.0.0.1:1 Connection refused"),
            None
        );
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(duration_us("12.5us"), Some(12.5));
        assert_eq!(duration_us("2.00s"), Some(2e6));
        assert_eq!(duration_us("1.00m"), Some(60e6));
        assert_eq!(duration_us("3x"), None);
    }

    #[test]
    fn probe_reads_status_and_retry_after() {
        let p = Probe::parse(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 5\r\ncontent-length: 3\r\n\r\n",
        );
        assert_eq!(p.status, Some(503));
        assert_eq!(p.retry_after.as_deref(), Some("5"));
        assert_eq!(Probe::parse("probe failed").status, None);
    }

    #[test]
    fn criterion_ids_on_the_same_or_previous_line() {
        let text = "Benchmarking breaker/closed/rampart: Analyzing
breaker/closed/rampart  time:   [20.000 ns 20.500 ns 21.000 ns]
a/very/long/benchmark/name/that/wraps
                        time:   [1.0000 µs 1.5000 µs 2.0000 µs]
ratio rampart/failsafe = 0.31
";
        let (r, ratios) = parse_criterion(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].id, "breaker/closed/rampart");
        assert_eq!(r[0].ns, 20.5);
        assert_eq!(r[1].id, "a/very/long/benchmark/name/that/wraps");
        assert_eq!(r[1].ns, 1500.0);
        assert_eq!(ratios, ["ratio rampart/failsafe = 0.31"]);
        let (_, printed) = parse_criterion(
            "Found 3 outliers among 100 measurements (3.00%)\n  3 (3.00%) high mild\n\nsummary (ns):\n    size  tower\n       3   40.1\n",
        );
        assert_eq!(
            printed,
            ["summary (ns):", "    size  tower", "       3   40.1"]
        );
    }
}
