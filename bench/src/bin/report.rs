//! Writes the results of `bench/run.sh` into `BENCHMARKS.md`.
//!
//! ```text
//! report macro --results DIR --machine FILE --commands FILE --mode full|quick --out BENCHMARKS.md
//! report micro --results DIR --out BENCHMARKS.md
//! ```
//!
//! Only the generated sections (between `<!-- rampart-bench:http:… -->` and
//! `<!-- rampart-bench:micro:… -->` markers) are replaced; the rest of the file is kept.

#![forbid(unsafe_code)]
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rampart_bench::args::Args;
use rampart_bench::report::{Results, Run, parse_cpu, render_macro, render_micro, splice};
use rampart_bench::wrk::{Probe, WrkRun};

const SKELETON: &str = "# Rampart benchmarks\n";

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(cmd) = argv.next() else {
        eprintln!("usage: report macro|micro --results DIR --out FILE [...]");
        return ExitCode::from(2);
    };
    match run(&cmd, argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: &str, argv: impl Iterator<Item = String>) -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(argv)?;
    let dir: PathBuf = args.value_or("results", ".")?;
    let out: PathBuf = args.value_or("out", "BENCHMARKS.md")?;
    let doc = std::fs::read_to_string(&out).unwrap_or_else(|_| SKELETON.to_owned());
    let doc = match cmd {
        "macro" => {
            let machine = read(&args.value_or::<PathBuf>("machine", "machine.md")?);
            let commands = read(&args.value_or::<PathBuf>("commands", "commands.txt")?);
            let mode: String = args.value_or("mode", "full")?;
            let results = load_macro(&dir)?;
            splice(
                &doc,
                "rampart-bench:http",
                &render_macro(&results, &machine, &commands, &mode),
            )
        }
        "micro" => {
            let mut benches = Vec::new();
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for p in entries {
                let Some(stem) = p.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                let Some((pkg, bench)) = stem.split_once('.') else {
                    continue;
                };
                benches.push((pkg.to_owned(), bench.to_owned(), read(&p)));
            }
            splice(&doc, "rampart-bench:micro", &render_micro(&benches))
        }
        other => return Err(format!("unknown command {other:?}").into()),
    };
    std::fs::write(&out, doc)?;
    Ok(())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Reads `r{round}.{scenario}.{target}.wrk` (and `.probe`) files.
fn load_macro(dir: &Path) -> Result<Results, Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wrk"))
        .collect();
    files.sort();
    let mut results = Results::default();
    for p in files {
        let Some(stem) = p.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let parts: Vec<&str> = stem.split('.').collect();
        let [round, scenario, target] = parts.as_slice() else {
            continue;
        };
        let Some(round) = round
            .strip_prefix('r')
            .and_then(|r| r.parse::<usize>().ok())
        else {
            continue;
        };
        let probe_path = p.with_extension("probe");
        let probe = probe_path
            .exists()
            .then(|| Probe::parse(&read(&probe_path)));
        let wrk = WrkRun::parse(&read(&p));
        let cpu_secs = parse_cpu(&read(&p.with_extension("cpu")));
        results.insert(
            round,
            scenario,
            target,
            Run {
                wrk,
                probe,
                cpu_secs,
            },
        );
    }
    Ok(results)
}
