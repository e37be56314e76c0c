//! `storefront`: the Rampart reference storefront.
//!
//! - `storefront` or `storefront demo`: fleet and shop in one process.
//! - `storefront fleet`: the simulated backends alone, with their fault-control API.
//! - `storefront shop`: the shop alone, over a fleet described by `--config`.
//! - `storefront edge`: the edge gateway over several shop instances.
//! - `storefront chaos`: the scripted outage through edge, shops and fleet, with a report.
//! - `storefront dns`: the GSLB's DNS responder in front of edges in several regions.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use storefront::config::Config;
use storefront::fleet::upstreams_toml;
use storefront::{Demo, FleetProcess, ShopProcess};

/// The Rampart reference storefront: a web shop that keeps selling while its backends fail.
#[derive(Parser, Debug)]
#[command(name = "storefront", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fleet and shop in one process (the default).
    Demo,
    /// The simulated fleet alone, with its fault-control API on --listen.
    Fleet,
    /// The shop alone, over the fleet given by --config ([upstreams], fleet_control).
    Shop(ShopArgs),
    /// The edge gateway over several shop instances (--upstream URL..., or --config edge.toml).
    Edge(storefront::edge::EdgeArgs),
    /// The scripted outage: edge, two shops and the fleet as child processes, open-loop load,
    /// a timeline of faults and a SIGKILL; reports per phase (--report, --chart, --quick).
    Chaos(storefront::chaos::ChaosArgs),
    /// The GSLB's authoritative DNS responder in front of edges in several regions
    /// (--edge REGION=IP:PORT..., --listen, default 127.0.0.1:5353).
    Dns(storefront::dns::DnsArgs),
}

#[derive(Args, Debug, Clone, Default)]
struct Common {
    /// TOML configuration file (see the README for the keys).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Address to listen on (the shop; for `fleet`, the fault-control API).
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Directory for the order outbox and the checkout database.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The shop's order store in PostgreSQL (`postgres://user@host:port/db`), shared by every
    /// shop instance; default: SQLite in --data-dir.
    #[arg(
        long,
        global = true,
        env = "STOREFRONT_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Bearer token of the admin routes (else generated and printed).
    #[arg(
        long,
        global = true,
        env = "STOREFRONT_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Serve the pages without the adaptive concurrency limit (`[limit] enabled = false`).
    #[arg(long, global = true)]
    no_limit: bool,
    /// How the fleet's catalog replicas are spoken, and the shop dials them: `http1`, `h2c`
    /// (HTTP/2 with prior knowledge) or `https` (certificates made at start-up)
    /// (`[fleet] catalog_protocol`).
    #[arg(long, global = true, value_enum)]
    catalog_protocol: Option<storefront::fleet::CatalogProtocol>,
}

#[derive(Args, Debug, Clone)]
struct ShopArgs {
    /// Base URL of the fleet's fault-control API (`http://127.0.0.1:8090`).
    #[arg(long)]
    fleet_control: Option<String>,
}

fn load(common: &Common) -> Result<Config, String> {
    let mut cfg = match &common.config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(l) = common.listen {
        cfg.listen = l;
    }
    if let Some(d) = &common.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(t) = &common.admin_token {
        cfg.admin_token = Some(t.clone());
    }
    if let Some(u) = &common.database_url {
        cfg.database_url = Some(u.clone());
    }
    if common.no_limit {
        cfg.limit.enabled = false;
    }
    if let Some(p) = common.catalog_protocol {
        cfg.fleet.catalog_protocol = p;
    }
    cfg.validate()
        .map_err(|e| format!("invalid configuration: {e}"))?;
    Ok(cfg)
}

fn fault_curl(url: &str, token: &str) -> String {
    format!(
        "curl -X POST {url}/admin/faults -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n       -d '{{\"service\": \"catalog\", \"region\": \"us-east\", \"replica\": \"*\", \"fault\": \"down\"}}'"
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    // Warnings only by default, so that what the program prints (the demo's banner: where to
    // look, the admin token) is the first thing a person reads; `RUST_LOG=info` shows the
    // shop's and the libraries' events as well.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None | Some(Command::Demo) => demo(cli.common).await,
        Some(Command::Fleet) => fleet(cli.common).await,
        Some(Command::Shop(s)) => shop(cli.common, s.fleet_control).await,
        Some(Command::Edge(mut e)) => {
            e.listen = cli.common.listen;
            e.config = cli.common.config.clone();
            storefront::edge::run(e).await
        }
        Some(Command::Chaos(mut c)) => {
            c.data_dir = cli.common.data_dir.clone();
            c.admin_token = cli.common.admin_token.clone();
            c.no_limit = cli.common.no_limit;
            c.catalog_protocol = cli.common.catalog_protocol.unwrap_or_default();
            storefront::chaos::run(c).await
        }
        Some(Command::Dns(mut d)) => {
            d.listen = cli.common.listen;
            dns(d).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storefront: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dns(args: storefront::dns::DnsArgs) -> Result<(), String> {
    let front = storefront::dns::start(&args).await?;
    let addr = front.addr();
    println!();
    println!("Rampart GSLB DNS responder is running on {addr} (UDP and TCP)");
    for site in front.gslb().snapshot().sites {
        println!(
            "  {:10} priority {}  {}",
            &*site.region, site.priority, &*site.name
        );
    }
    println!();
    println!("Ask it:");
    println!("  dig @{} -p {} {} A", addr.ip(), addr.port(), args.name);
    println!();
    println!("Press Ctrl-C to stop.");
    wait_for_ctrl_c().await;
    Ok(())
}

async fn wait_for_ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
    println!("\nshutting down");
}

async fn demo(common: Common) -> Result<(), String> {
    let cfg = load(&common)?;
    let demo = Demo::start(cfg).await.map_err(|e| e.to_string())?;
    let url = demo.url();
    println!();
    println!("Rampart storefront demo is running");
    println!("  shop:         {url}/");
    println!("  live status:  {url}/status   (JSON: {url}/status.json)");
    println!("  metrics:      {url}/metrics");
    println!("  admin token:  {}", demo.admin_token());
    println!();
    println!("Take the catalog down in us-east and watch /status fail over to eu-west:");
    println!("  {}", fault_curl(&url, demo.admin_token()));
    println!("Heal everything:");
    println!(
        "  curl -X POST {url}/admin/faults/reset -H 'Authorization: Bearer {}'",
        demo.admin_token()
    );
    println!();
    println!("Press Ctrl-C to stop.");
    wait_for_ctrl_c().await;
    Ok(())
}

async fn fleet(common: Common) -> Result<(), String> {
    let cfg = load(&common)?;
    let data_dir = cfg.data_dir.clone();
    let fleet = FleetProcess::start(cfg).await.map_err(|e| e.to_string())?;
    let control = format!("http://{}", fleet.addr());
    let shop_toml = format!(
        "# written by `storefront fleet`: pass it to `storefront shop --config`\nfleet_control = \"{control}\"\n\n{}{}",
        catalog_toml(fleet.fleet().catalog_dial(), &data_dir)?,
        upstreams_toml(fleet.fleet().upstreams())
    );
    let path = data_dir.join("fleet.toml");
    std::fs::write(&path, &shop_toml)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!();
    println!("Rampart storefront fleet is running");
    println!("  fault control: {control}/admin/faults");
    println!("  admin token:   {}", fleet.admin_token());
    println!("  shop config:   {}", path.display());
    println!();
    println!("{shop_toml}");
    println!("Start the shop with (use another --data-dir if it runs on the same machine):");
    println!(
        "  storefront shop --config {} --data-dir ./storefront-shop --listen 127.0.0.1:8080 --admin-token {}",
        path.display(),
        fleet.admin_token()
    );
    println!("Inject a fault:");
    println!("  {}", fault_curl(&control, fleet.admin_token()));
    println!();
    println!("Press Ctrl-C to stop.");
    wait_for_ctrl_c().await;
    Ok(())
}

/// The `[fleet]` table a shop needs to dial the catalog (empty for HTTP/1.1); for `https` the
/// CA is written to `<data-dir>/catalog-ca.pem` first.
fn catalog_toml(
    dial: &storefront::fleet::UpstreamDial,
    data_dir: &std::path::Path,
) -> Result<String, String> {
    use storefront::fleet::CatalogProtocol;
    match (dial.protocol(), dial.ca_pem()) {
        (CatalogProtocol::Http1, _) => Ok(String::new()),
        (CatalogProtocol::Https, Some(pem)) => {
            let path = data_dir.join("catalog-ca.pem");
            std::fs::write(&path, pem)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let path = toml::Value::String(path.display().to_string());
            Ok(format!(
                "[fleet]\ncatalog_protocol = \"https\"\ncatalog_ca_file = {path}\n\n"
            ))
        }
        (p, _) => Ok(format!("[fleet]\ncatalog_protocol = \"{p}\"\n\n")),
    }
}

async fn shop(common: Common, fleet_control: Option<String>) -> Result<(), String> {
    let mut cfg = load(&common)?;
    if fleet_control.is_some() {
        cfg.fleet_control = fleet_control;
        cfg.validate()
            .map_err(|e| format!("invalid configuration: {e}"))?;
    }
    let shop = ShopProcess::start(cfg).await.map_err(|e| e.to_string())?;
    let url = format!("http://{}", shop.addr());
    println!();
    println!("Rampart storefront shop is running");
    println!("  shop:         {url}/");
    println!("  live status:  {url}/status");
    println!("  admin token:  {}", shop.admin_token());
    println!("  inject a fault (forwarded to the fleet):");
    println!("  {}", fault_curl(&url, shop.admin_token()));
    println!();
    println!("Press Ctrl-C to stop.");
    wait_for_ctrl_c().await;
    Ok(())
}
