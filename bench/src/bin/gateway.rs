//! The Rampart gateway measured by `bench/run.sh`.
//!
//! ```text
//! gateway --listen 127.0.0.1:0 --upstream 127.0.0.1:8081 --upstream 127.0.0.1:8082 ...
//!         [--stack rampart|lean] [--workers N] [--runtime percore|percore-shared|multi]
//!         [--check-interval-ms 1000] [--fall 2] [--rise 2] [--retry-after 5]
//!         [--max-connections 10000] [--header-read-timeout-ms 10000]
//!         [--keep-alive-timeout-ms 60000]
//! ```
//!
//! Prints its bound address on stdout as the first line, then serves until SIGTERM or Ctrl-C
//! (graceful shutdown: requests in flight finish).
//! See the `rampart_bench::gateway` module docs for the design.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rampart::health::{Checker, CheckerConfig, Health, HttpProbe};
use rampart_bench::args::Args;
use rampart_bench::gateway::apology::Apology;
use rampart_bench::gateway::lean::{Lean, LeanBackend};
use rampart_gateway::config::GatewayConfig;
use rampart_gateway::proxy::{Proxy, Upstream};
use rampart_gateway::server::{Handler, ServerConfig, spawn_workers};

const USAGE: &str = "usage: gateway --listen ADDR --upstream ADDR... [--stack lean|rampart] \
[--workers N] [--runtime percore|percore-shared|multi] [--check-interval-ms MS] [--fall N] [--rise N] [--retry-after SECS] \
[--max-connections N] [--header-read-timeout-ms MS] [--keep-alive-timeout-ms MS]";

struct Settings {
    stack: String,
    listen: SocketAddr,
    upstreams: Vec<SocketAddr>,
    server: ServerConfig,
    interval: Duration,
    fall: u32,
    rise: u32,
    retry_after: u32,
}

fn settings() -> Result<Settings, Box<dyn std::error::Error>> {
    let args = Args::parse(std::env::args().skip(1))?;
    if args.switch("help") {
        return Err(USAGE.into());
    }
    let upstreams = args
        .all("upstream")
        .into_iter()
        .map(|u| u.parse().map_err(|e| format!("--upstream {u:?}: {e}")))
        .collect::<Result<Vec<SocketAddr>, _>>()?;
    if upstreams.is_empty() {
        return Err(format!("at least one --upstream is needed\n{USAGE}").into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stack: String = args.value_or("stack", "rampart")?;
    if stack != "rampart" && stack != "lean" {
        return Err(format!("--stack {stack:?}: lean or rampart").into());
    }
    Ok(Settings {
        stack,
        listen: args.value_or("listen", "127.0.0.1:0")?,
        upstreams,
        server: ServerConfig::builder()
            .name("gateway")
            .workers(args.value_or("workers", &cores.to_string())?)
            .runtime(args.value_or("runtime", "percore")?)
            .max_connections(args.value_or("max-connections", "10000")?)
            .header_read_timeout(Duration::from_millis(
                args.value_or("header-read-timeout-ms", "10000")?,
            ))
            .keep_alive_timeout(Duration::from_millis(
                args.value_or("keep-alive-timeout-ms", "60000")?,
            ))
            .build()?,
        interval: Duration::from_millis(args.value_or("check-interval-ms", "1000")?),
        fall: args.value_or("fall", "2")?,
        rise: args.value_or("rise", "2")?,
        retry_after: args.value_or("retry-after", "5")?,
    })
}

fn main() -> ExitCode {
    let s = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&s) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(s: &Settings) -> Result<(), Box<dyn std::error::Error>> {
    // Active checks run on their own small runtime, off the request path.
    let checks = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let config = CheckerConfig::builder()
        .interval(s.interval)
        .unhealthy_interval(s.interval)
        .timeout(s.interval.min(Duration::from_millis(500)))
        .fall(s.fall)
        .rise(s.rise)
        .initial(Health::Healthy)
        .build()?;
    let connect_timeout = Duration::from_secs(1);
    if s.stack == "rampart" {
        // The crate's proxy, from a configuration generated from the flags (what
        // `rampart-gateway --config` runs).
        let endpoints: Vec<String> = s.upstreams.iter().map(|a| format!("\"{a}\"")).collect();
        let toml = format!(
            "[[routes]]\ncluster = \"backends\"\n\
             [clusters.backends]\nendpoints = [{}]\nretry_after = \"{}s\"\n\
             retry_budget_ratio = 1.0\nconnect_timeout = \"{}ms\"\n\
             [clusters.backends.checks]\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\nfall = {}\nrise = {}\n\
             [clusters.backends.breaker]\nopen_duration = \"2s\"\n",
            endpoints.join(", "),
            s.retry_after,
            connect_timeout.as_millis(),
            s.interval.as_millis(),
            s.interval.min(Duration::from_millis(500)).as_millis(),
            s.fall,
            s.rise,
        );
        let gateway = GatewayConfig::from_toml(&toml)?;
        // Built inside the checks runtime: the balancer's checkers run there.
        let proxy = {
            let _guard = checks.enter();
            Proxy::build(&gateway)?
        };
        let checks_thread = std::thread::Builder::new()
            .name("checks".into())
            .spawn(move || checks.block_on(std::future::pending::<()>()))?;
        serve(s, move |_| proxy.clone())?;
        drop(checks_thread);
        return Ok(());
    }
    let backends: Arc<[LeanBackend]> = s
        .upstreams
        .iter()
        .map(|a| LeanBackend::new(Upstream::new(*a, connect_timeout)))
        .collect();
    let mut handles = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let addr = b.upstream().addr();
        let probe = HttpProbe::builder(format!("http://{addr}").parse()?)
            .path("/healthz")
            .build()?;
        let handle = Checker::spawn_on(
            checks.handle(),
            format!("upstream-{i}"),
            probe,
            config.clone(),
        );
        let mut watch = handle.watch();
        let backends = backends.clone();
        checks.spawn(async move {
            while let Some(h) = watch.changed().await {
                backends[i].set_checked_up(h != Health::Unhealthy);
            }
        });
        handles.push(handle);
    }
    let checks_thread = std::thread::Builder::new()
        .name("checks".into())
        .spawn(move || checks.block_on(std::future::pending::<()>()))?;

    let lean = Lean::new(
        backends,
        Apology::new(s.retry_after),
        Duration::from_secs(1),
    );
    serve(s, move |_| lean.for_worker())?;
    drop(handles);
    drop(checks_thread);
    Ok(())
}

/// Starts the workers, prints the bound address as the first line of stdout, and serves until
/// SIGTERM or Ctrl-C.
fn serve<H: Handler>(
    s: &Settings,
    make_handler: impl Fn(usize) -> H + Send + Sync + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    let workers = spawn_workers(s.listen, &s.server, make_handler)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", workers.local_addr());
        let _ = out.flush();
    }
    workers.run_until_signal()?;
    Ok(())
}
