//! The Rampart reference storefront: a web shop that keeps selling while its backends fail.
//!
//! - [`fleet`]: the simulated backends — catalog, checkout and recommendations, each in
//!   `us-east` and `eu-west` with three replicas, every replica a real HTTP server on loopback
//!   that obeys an injected fault.
//! - [`shop`]: the storefront itself — server-rendered pages, a cookie cart, checkout through a
//!   durable order outbox, `/status`, `/metrics` and fault control.
//! - [`orders`]: where the outbox keeps its orders — the `OrderStore` trait, embedded SQLite
//!   by default, or PostgreSQL shared by every shop instance.
//! - [`Demo`]: both in one process, as `storefront demo` runs them (and the integration tests).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use storefront::{Demo, config::Config};
//!
//! let mut config = Config::default();
//! config.listen = "127.0.0.1:0".parse()?;
//! config.data_dir = std::env::temp_dir().join("storefront-doc");
//! let demo = Demo::start(config).await?;
//! println!("shop at {}", demo.url());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod api;
pub mod catalog;
pub mod chaos;
pub mod config;
pub mod dns;
pub mod edge;
pub mod fleet;
pub mod orders;
pub mod shop;

use std::net::SocketAddr;
use std::path::PathBuf;

use rampart_gateway::server::{self, Serving, TowerHandler};
use tokio::net::TcpListener;

use crate::config::{Config, ServerSettings};
use crate::fleet::{Fleet, Upstreams};
use crate::shop::{AdminState, FaultControl, Shop};

/// Aborts a task when dropped: no background task outlives its owner.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "storefront-{name}-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Why the demo (or one of its parts) could not start.
#[derive(Debug)]
pub enum StartError {
    /// The data directory could not be created.
    DataDir(PathBuf, std::io::Error),
    /// The listener could not bind.
    Listen(SocketAddr, std::io::Error),
    /// The fleet failed.
    Fleet(fleet::FleetError),
    /// The shop failed.
    Shop(shop::ShopError),
    /// `storefront shop` was not told where the fleet is.
    NoUpstreams,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::DataDir(p, e) => write!(f, "cannot create {}: {e}", p.display()),
            StartError::Listen(a, e) => write!(f, "cannot listen on {a}: {e}"),
            StartError::Fleet(e) => write!(f, "fleet: {e}"),
            StartError::Shop(e) => write!(f, "shop: {e}"),
            StartError::NoUpstreams => f.write_str(
                "no [upstreams] in the configuration: start `storefront fleet` and pass the file it writes with --config",
            ),
        }
    }
}

impl std::error::Error for StartError {}

/// Serves `router` on `listener` with rampart-gateway's hardened server and the limits of
/// `settings` (header-read, keep-alive and body timeouts, connection cap), until the returned
/// guard is dropped. `name` labels the server's metrics and events.
pub fn serve(
    listener: TcpListener,
    router: axum::Router,
    settings: &ServerSettings,
    name: &str,
) -> Result<Serving, StartError> {
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen(SocketAddr::from(([0, 0, 0, 0], 0)), e))?;
    let invalid = |e: rampart::health::ConfigError| {
        StartError::Listen(
            addr,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        )
    };
    let config = settings.to_server_config(name).map_err(invalid)?;
    server::spawn(listener, &config, TowerHandler::new(router))
        .map_err(|e| StartError::Listen(addr, e))
}

fn prepare(config: &Config) -> Result<String, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
    Ok(config
        .admin_token
        .clone()
        .unwrap_or_else(shop::generate_token))
}

/// The shop over its order store: PostgreSQL at `config.database_url`, else SQLite in the
/// data directory.
async fn start_shop(
    config: &Config,
    upstreams: &Upstreams,
    admin: AdminState,
) -> Result<Shop, StartError> {
    let store = orders::open(config.database_url.as_deref(), &config.data_dir)
        .await
        .map_err(|e| StartError::Shop(shop::ShopError::Outbox(e)))?;
    tracing::info!(store = store.kind(), "order store ready");
    Shop::start_with_store(&config.shop, &config.limit, upstreams, admin, store)
        .map_err(StartError::Shop)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    // The gateway's backlog (4,096): a burst of connections waits in the kernel instead of
    // being retried by the clients' TCP stacks.
    server::bind(addr, &server::ServerConfig::default()).map_err(|e| StartError::Listen(addr, e))
}

/// Fleet and shop in one process (`storefront demo`).
#[derive(Debug)]
pub struct Demo {
    addr: SocketAddr,
    admin_token: String,
    shop: Shop,
    fleet: Fleet,
    _server: Serving,
}

impl Demo {
    /// Starts the fleet, then the shop on `config.listen` (port 0 for any).
    pub async fn start(mut config: Config) -> Result<Demo, StartError> {
        let admin_token = prepare(&config)?;
        let fleet = Fleet::start(&config.fleet, &config.data_dir)
            .await
            .map_err(StartError::Fleet)?;
        // The shop dials the catalog as this fleet serves it (h2c, or HTTPS with its CA).
        config.shop.catalog_dial = fleet.catalog_dial().clone();
        let admin = AdminState {
            token: admin_token.clone(),
            faults: FaultControl::Local(fleet.faults().clone()),
        };
        let shop = start_shop(&config, fleet.upstreams(), admin).await?;
        let listener = bind(config.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Listen(config.listen, e))?;
        let server = serve(listener, shop.router(), &config.server, "shop")?;
        tracing::info!(%addr, "storefront demo started");
        Ok(Demo {
            addr,
            admin_token,
            shop,
            fleet,
            _server: server,
        })
    }

    /// The shop's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The fleet.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The shop.
    pub fn shop(&self) -> &Shop {
        &self.shop
    }
}

/// The fleet alone, with its fault-control API (`storefront fleet`).
#[derive(Debug)]
pub struct FleetProcess {
    addr: SocketAddr,
    admin_token: String,
    fleet: Fleet,
    _server: Serving,
}

impl FleetProcess {
    /// Starts the fleet and serves the admin routes on `config.listen`.
    pub async fn start(config: Config) -> Result<FleetProcess, StartError> {
        let admin_token = prepare(&config)?;
        let fleet = Fleet::start(&config.fleet, &config.data_dir)
            .await
            .map_err(StartError::Fleet)?;
        let admin = AdminState {
            token: admin_token.clone(),
            faults: FaultControl::Local(fleet.faults().clone()),
        };
        let listener = bind(config.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Listen(config.listen, e))?;
        let router =
            shop::admin_router(admin).route("/healthz", axum::routing::get(|| async { "ok\n" }));
        let server = serve(listener, router, &config.server, "fleet-control")?;
        Ok(FleetProcess {
            addr,
            admin_token,
            fleet,
            _server: server,
        })
    }

    /// The control API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The fleet.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }
}

/// The shop alone, over a fleet elsewhere (`storefront shop`).
#[derive(Debug)]
pub struct ShopProcess {
    addr: SocketAddr,
    admin_token: String,
    shop: Shop,
    _server: Serving,
}

impl ShopProcess {
    /// Starts the shop over `config.upstreams`, forwarding fault control to
    /// `config.fleet_control` when set; the catalog is dialed as `[fleet] catalog_protocol`
    /// says (for `https`, trusting `[fleet] catalog_ca_file`).
    pub async fn start(mut config: Config) -> Result<ShopProcess, StartError> {
        let admin_token = prepare(&config)?;
        config.shop.catalog_dial = fleet::UpstreamDial::for_catalog(&config.fleet)
            .map_err(|e| StartError::Shop(shop::ShopError::Config(e)))?;
        let upstreams: &Upstreams = config.upstreams.as_ref().ok_or(StartError::NoUpstreams)?;
        let admin = AdminState {
            token: admin_token.clone(),
            faults: config
                .fleet_control
                .as_deref()
                .map_or(FaultControl::None, FaultControl::remote),
        };
        let shop = start_shop(&config, upstreams, admin).await?;
        let listener = bind(config.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Listen(config.listen, e))?;
        let server = serve(listener, shop.router(), &config.server, "shop")?;
        Ok(ShopProcess {
            addr,
            admin_token,
            shop,
            _server: server,
        })
    }

    /// The shop's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The shop.
    pub fn shop(&self) -> &Shop {
        &self.shop
    }
}
