//! The stage of a run: what the runner starts before the load and stops after it. That is
//! the PostgreSQL order store (with `--database postgres`), the topology (the fleet, two
//! shops, two edges), the DNS responder in front of the edges, the load's resolver, and the
//! runner's own connection to the shared order store.
//!
//! The runner stops the responder once the load is over and the processes before it reads
//! their outboxes; the order store's server goes last.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::args::{ChaosArgs, ChaosDatabase, Pace};
use super::phases::{PHASES, shop_settings};
use super::region::{self, ShopResolver};
use super::store::{self, SharedDb};
use super::topology::Topology;
use super::{report, say};
use crate::dns::DnsFront;
use crate::orders::{LocalPostgres, instance_name_for};

/// The run's processes and the clients that reach them.
pub(super) struct Stage {
    // Field order is drop order: the runner's clients first, then the responder, the
    // processes, and last the order store's server.
    /// The shared order store, as the runner reads it (with `--database postgres`).
    pub(super) shared: Option<SharedDb>,
    /// The load's resolver of the shop's name.
    pub(super) resolver: Arc<ShopResolver>,
    /// The DNS responder naming the edges that are up.
    pub(super) dns: DnsFront,
    /// The fleet, the shops and the edges.
    pub(super) topo: Topology,
    /// The PostgreSQL server of the shared order store (with `--database postgres`).
    _postgres: Option<LocalPostgres>,
}

impl Stage {
    /// Starts the order store's server (with `--database postgres`), the topology under
    /// `dir`, and the DNS responder in front of the edges, and says so.
    pub(super) async fn start(args: &ChaosArgs, dir: &Path, pace: Pace) -> Result<Stage, String> {
        let token = args
            .admin_token
            .clone()
            .unwrap_or_else(crate::shop::generate_token);
        say(&format!(
            "chaos: starting fleet, two shops and two edges in {}",
            dir.display()
        ));
        let postgres = match args.database {
            ChaosDatabase::Sqlite => None,
            ChaosDatabase::Postgres => Some(store::start_postgres(dir).await?),
        };
        let database_url = postgres.as_ref().map(|(_, url)| url.as_str());
        let shop_settings = shop_settings(args.no_limit);
        let edge_addrs = region::edge_addrs()?;
        let topo = Topology::start(
            dir,
            &token,
            &shop_settings,
            Duration::from_millis(250),
            database_url,
            &edge_addrs,
            args.catalog_protocol,
        )
        .await?;
        // The shop's name in DNS: the responder in front of the two edges, and the load's
        // resolver pointed at it.
        let dns = region::start_responder(&topo.edge_addrs()).await?;
        let resolver = Arc::new(ShopResolver::new(dns.addr(), edge_addrs[0].port())?);
        let shared = match database_url {
            Some(url) => Some(SharedDb::connect(url, instance_name_for(topo.shop_pid(0)?)).await?),
            None => None,
        };
        say(&format!(
            "chaos: {} resolved by the DNS responder at {} (edges {:?}); {} phases of {} at {} requests/s",
            region::SHOP_NAME,
            dns.addr(),
            topo.edge_addrs(),
            PHASES.len(),
            report::secs(pace.phase_len),
            pace.rate
        ));
        Ok(Stage {
            shared,
            resolver,
            dns,
            topo,
            _postgres: postgres.map(|(server, _)| server),
        })
    }
}
