//! `rampart-gateway --config gateway.toml`: the reverse proxy as a program.
//!
//! - `--check FILE` validates the file and exits 0 (valid) or 1 (the error, naming the key).
//! - On start it prints `listening on http://ADDR` (`https://` with `[server.tls]`; and
//!   `admin on http://ADDR`) on stdout.
//! - SIGTERM or Ctrl-C: graceful shutdown. SIGHUP: re-read the file; if valid, swap the
//!   routing table (connections stay open, unchanged clusters keep their health state); if
//!   not, log the error and keep the running configuration.
//! - Memory: the program allocates with jemalloc (the default `jemalloc` feature), whose
//!   background thread returns freed pages to the system; under glibc's allocator the memory
//!   that 10,000 idle connections once took stayed with the process after they left.
#![forbid(unsafe_code)]

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rampart_gateway::admin;
use rampart_gateway::config::GatewayConfig;
use rampart_gateway::proxy::Proxy;
use rampart_gateway::server::{self, ServerConfig, TowerHandler};

/// Rampart's reverse proxy, run from a TOML configuration file.
#[derive(Debug, Parser)]
#[command(name = "rampart-gateway", version, about)]
struct Args {
    /// The configuration file to run.
    #[arg(long, value_name = "FILE", required_unless_present = "check")]
    config: Option<PathBuf>,
    /// Validate this configuration file and exit: 0 when valid, 1 with the error otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(path) = args.check {
        return match GatewayConfig::from_file(&path) {
            Ok(_) => {
                let _ = writeln!(std::io::stdout(), "{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "{}: {e}", path.display());
                ExitCode::FAILURE
            }
        };
    }
    let Some(path) = args.config else {
        return ExitCode::FAILURE;
    };
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "rampart-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let config = GatewayConfig::from_file(path)?;
    // The recorder first: the balancers and breakers register their series when built.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let server_config = config.server.to_server_config("gateway")?;
    // This runtime runs the active checks, the admin listener and the signal handling; the
    // workers run the proxied requests on their own runtimes.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let workers = rt.block_on(async {
        let proxy = Proxy::build(&config)?;
        let listeners = server::bind_workers(config.server.listen, &server_config)?;
        let mut out = std::io::stdout();
        let scheme = if server_config.tls().is_some() {
            "https"
        } else {
            "http"
        };
        writeln!(out, "listening on {scheme}://{}", listeners.local_addr())?;
        let _admin = if config.admin.enabled {
            let admin_config = ServerConfig::builder().name("admin").build()?;
            let listener = server::bind(config.admin.listen, &admin_config)?;
            let status = proxy.clone();
            let app = admin::router(metrics.clone(), move || status.status());
            let serving = server::spawn(listener, &admin_config, TowerHandler::new(app))?;
            writeln!(out, "admin on http://{}", serving.local_addr())?;
            Some(serving)
        } else {
            None
        };
        out.flush()?;
        let handler = proxy.clone();
        let workers = listeners.spawn(&server_config, move |_| handler.clone())?;
        wait_for_signals(path, &proxy).await;
        Ok::<_, Box<dyn std::error::Error>>(workers)
    })?;
    tracing::info!("shutting down");
    workers.shutdown();
    workers.join();
    Ok(())
}

/// Reloads on SIGHUP until SIGTERM or Ctrl-C.
async fn wait_for_signals<B: rampart_gateway::proxy::ProxyBalance>(
    path: &std::path::Path,
    proxy: &Proxy<B>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload disabled");
                server::shutdown_signal().await;
                return;
            }
        };
        let stop = server::shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = hup.recv() => {
                    match GatewayConfig::from_file(path).and_then(|c| proxy.reload(&c)) {
                        Ok(summary) => tracing::info!(
                            kept = ?summary.kept,
                            rebuilt = ?summary.rebuilt,
                            removed = ?summary.removed,
                            "reloaded {}", path.display()
                        ),
                        Err(e) => tracing::error!(error = %e, "reload refused; the running configuration stays"),
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        let _ = proxy;
        server::shutdown_signal().await;
    }
}
