//! The flags of `storefront chaos`, the run's pace they set (phase length and arrival rate,
//! checked before anything starts), and the places they name: the data directory, the
//! report, its facts side file and the chart.

use std::path::PathBuf;
use std::time::Duration;

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

/// The pace of a run: how long each phase lasts and the timeline's arrival rate.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    /// Length of each phase.
    pub(super) phase_len: Duration,
    /// Requests per second outside the surge.
    pub(super) rate: f64,
}

impl Pace {
    /// The pace `args` ask for (the defaults follow `--quick`); `Err` when a rate is out of
    /// range or the phases are shorter than 2 s.
    pub(super) fn of(args: &ChaosArgs) -> Result<Pace, String> {
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
        Ok(Pace { phase_len, rate })
    }
}

/// Where the run's processes keep data and logs: `--data-dir`, or a fresh directory under
/// the system's temporary directory.
pub(super) fn data_dir(args: &ChaosArgs) -> PathBuf {
    args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "storefront-chaos-{}-{:x}",
            std::process::id(),
            fastrand::u32(..)
        ))
    })
}

/// Where the facts side file goes: `--facts`, or next to the report.
pub(super) fn facts_path(args: &ChaosArgs) -> Option<PathBuf> {
    args.facts.clone().or_else(|| {
        args.report.as_ref().map(|r| {
            let stem = r
                .file_stem()
                .map_or_else(|| "report".into(), |s| s.to_string_lossy().into_owned());
            r.with_file_name(format!("{stem}.facts.json"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
