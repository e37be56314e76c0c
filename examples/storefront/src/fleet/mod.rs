//! The simulated backend fleet: catalog, checkout and recommendations, each in `us-east` and
//! `eu-west` with N replicas (3 by default), every replica a real HTTP server on loopback.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use storefront::config::FleetConfig;
//! use storefront::fleet::{Fleet, Region, ServiceName};
//!
//! let dir = std::env::temp_dir().join("fleet-doc");
//! std::fs::create_dir_all(&dir)?;
//! let fleet = Fleet::start(&FleetConfig::default(), &dir).await?;
//! let addrs = &fleet.upstreams()[&ServiceName::Catalog][&Region::UsEast];
//! assert_eq!(addrs.len(), 3);
//! # Ok(()) }
//! ```

mod checkout_store;
mod fault;
mod protocol;
mod replica;
pub mod services;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub use checkout_store::CheckoutStore;
pub(crate) use checkout_store::open_durable;
pub use fault::{
    Fault, FaultCommand, FaultDefaults, FaultRegistry, FaultRequest, FaultRequestError, FaultSpec,
    FaultTarget, Region, ReplicaId, ServiceName,
};
pub use protocol::{CatalogProtocol, FleetPki, PkiError, UnknownProtocol, UpstreamDial};
pub use replica::{ReplicaServer, ReplicaStats};

use crate::config::FleetConfig;

/// Where each service's replicas listen: service → region → addresses (index order).
pub type Upstreams = BTreeMap<ServiceName, BTreeMap<Region, Vec<SocketAddr>>>;

/// The running fleet. Dropping it stops every replica.
#[derive(Debug)]
pub struct Fleet {
    replicas: Vec<ReplicaServer>,
    faults: FaultRegistry,
    upstreams: Upstreams,
    checkout_db: CheckoutStore,
    catalog: UpstreamDial,
}

/// Why the fleet could not start.
#[derive(Debug)]
pub enum FleetError {
    /// A replica could not bind.
    Bind(ReplicaId, std::io::Error),
    /// The checkout database could not be opened.
    Database(rusqlite::Error),
    /// The catalog's certificates could not be made.
    Certificates(PkiError),
}

impl std::fmt::Display for FleetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FleetError::Bind(id, e) => write!(f, "replica {id} could not bind: {e}"),
            FleetError::Database(e) => write!(f, "checkout database: {e}"),
            FleetError::Certificates(e) => write!(f, "catalog: {e}"),
        }
    }
}

impl std::error::Error for FleetError {}

impl Fleet {
    /// Starts every replica; the checkout database lives in `data_dir/checkout.db`.
    pub async fn start(config: &FleetConfig, data_dir: &Path) -> Result<Fleet, FleetError> {
        let faults = FaultRegistry::new(
            config.replicas,
            FaultDefaults {
                slow_latency: config.slow_latency,
                flaky_error_rate: config.flaky_error_rate,
                ..FaultDefaults::default()
            },
        );
        let products = Arc::new(crate::catalog::generate(config.products));
        let db_path = data_dir.join("checkout.db");
        let checkout_db = CheckoutStore::open(&db_path).map_err(FleetError::Database)?;
        let mut replicas = Vec::new();
        let mut upstreams = Upstreams::new();
        let mut port_offset = 0u16;
        // How the catalog is spoken (every other service speaks HTTP/1.1).
        let (catalog_wire, catalog) = match config.catalog_protocol {
            CatalogProtocol::Http1 => (protocol::Wire::Http1, UpstreamDial::default()),
            CatalogProtocol::H2c => (
                protocol::Wire::H2c,
                UpstreamDial::new(CatalogProtocol::H2c, None),
            ),
            CatalogProtocol::Https => {
                let pki = FleetPki::generate(&[config.bind]).map_err(FleetError::Certificates)?;
                (
                    protocol::Wire::Tls(pki.acceptor().map_err(FleetError::Certificates)?),
                    UpstreamDial::new(CatalogProtocol::Https, Some(pki.ca_pem().to_owned())),
                )
            }
        };
        for service in ServiceName::ALL {
            for region in Region::ALL {
                for index in 0..config.replicas {
                    let id = ReplicaId::new(service, region, index);
                    let app = match service {
                        ServiceName::Catalog => services::catalog(products.clone()),
                        ServiceName::Recommendations => services::recommendations(products.clone()),
                        ServiceName::Checkout => {
                            // Each replica has its own connection to the one shared file.
                            let store =
                                CheckoutStore::open(&db_path).map_err(FleetError::Database)?;
                            services::checkout(store, products.clone())
                        }
                    };
                    let port = if config.base_port == 0 {
                        0
                    } else {
                        config.base_port.saturating_add(port_offset)
                    };
                    port_offset += 1;
                    let addr = SocketAddr::new(config.bind, port);
                    let wire = match service {
                        ServiceName::Catalog => catalog_wire.clone(),
                        _ => protocol::Wire::Http1,
                    };
                    let server = ReplicaServer::start_on(id, addr, app, faults.subscribe(id), wire)
                        .await
                        .map_err(|e| FleetError::Bind(id, e))?;
                    upstreams
                        .entry(service)
                        .or_default()
                        .entry(region)
                        .or_default()
                        .push(server.addr());
                    replicas.push(server);
                }
            }
        }
        tracing::info!(
            replicas = replicas.len(),
            catalog = %config.catalog_protocol,
            "fleet started"
        );
        Ok(Fleet {
            replicas,
            faults,
            upstreams,
            checkout_db,
            catalog,
        })
    }

    /// The fault registry (shared with the admin API).
    pub fn faults(&self) -> &FaultRegistry {
        &self.faults
    }

    /// Where every replica listens.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// Every replica.
    pub fn replicas(&self) -> &[ReplicaServer] {
        &self.replicas
    }

    /// How a shop dials this fleet's catalog: its protocol, and for `https` the CA made at
    /// start-up.
    pub fn catalog_dial(&self) -> &UpstreamDial {
        &self.catalog
    }

    /// A connection to the checkout database (for inspection and tests).
    pub fn checkout_db(&self) -> &CheckoutStore {
        &self.checkout_db
    }

    /// The `[upstreams]` TOML section a separate `storefront shop` process needs.
    pub fn upstreams_toml(&self) -> String {
        upstreams_toml(&self.upstreams)
    }
}

/// Renders `upstreams` as the `[upstreams.<service>]` TOML sections of a shop config.
pub fn upstreams_toml(upstreams: &Upstreams) -> String {
    let mut out = String::new();
    for (service, regions) in upstreams {
        out.push_str(&format!("[upstreams.{service}]\n"));
        for (region, addrs) in regions {
            let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
            out.push_str(&format!("\"{region}\" = [{}]\n", list.join(", ")));
        }
        out.push('\n');
    }
    out
}
