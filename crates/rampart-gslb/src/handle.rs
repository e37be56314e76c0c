//! The operator handle: drain and restore sites, read a snapshot, wait for decisions.
//!
//! Every [`Gslb`](crate::Gslb) clone shares one control block; [`GslbHandle`] is a cheap clone
//! of it for an admin endpoint or a test. Drain and restore take effect before they return:
//! the split is recomputed synchronously and the next request sees it.
//!
//! # Example
//!
//! ```
//! use rampart_gslb::{Gslb, GslbConfig, Mode, Site, Sites};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) });
//! let sites = Sites::builder()
//!     .site(Site::new("eu", svc))
//!     .site(Site::new("us", svc).priority(1))
//!     .build()
//!     .unwrap();
//! let gslb = Gslb::new(GslbConfig::<()>::default(), sites);
//! let handle = gslb.handle();
//! assert_eq!(handle.snapshot().active_priority, Some(0));
//!
//! handle.drain("eu").unwrap();
//! let snap = handle.snapshot();
//! assert_eq!(snap.active_priority, Some(1));
//! assert_eq!(snap.site("us").unwrap().traffic_share, 1.0);
//! assert!(handle.drain("nowhere").is_err());
//! handle.restore("eu").unwrap();
//! assert_eq!(handle.snapshot().mode, Mode::Normal);
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use crate::gslb::error::UnknownSite;
use crate::snapshot::Table;
pub use crate::snapshot::{LevelSnapshot, Mode, SiteSnapshot, Snapshot};
use crate::state::Control;

/// Operator controls for a [`Gslb`](crate::Gslb): drain, restore, snapshot, change
/// notification. Cheap to clone.
#[derive(Clone)]
pub struct GslbHandle {
    control: Arc<Control>,
    rx: watch::Receiver<Arc<Table>>,
}

impl fmt::Debug for GslbHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GslbHandle")
            .field("name", &self.control.name)
            .finish_non_exhaustive()
    }
}

impl GslbHandle {
    pub(crate) fn new(control: Arc<Control>) -> Self {
        let rx = control.subscribe();
        Self { control, rx }
    }

    /// Stops sending new requests to `site` (requests in flight finish). Takes effect before
    /// this returns.
    pub fn drain(&self, site: &str) -> Result<(), UnknownSite> {
        let i = self.index(site)?;
        self.control.set_drained(i, true);
        Ok(())
    }

    /// Undoes [`drain`](Self::drain): the site takes traffic again as its health allows.
    pub fn restore(&self, site: &str) -> Result<(), UnknownSite> {
        let i = self.index(site)?;
        self.control.set_drained(i, false);
        Ok(())
    }

    /// The current state: sites, health, traffic shares, active priority.
    pub fn snapshot(&self) -> Snapshot {
        self.control.snapshot()
    }

    /// Waits until the selector recomputes its split (a health change, a failback admitted,
    /// an operator action), then returns the new snapshot. Returns at once if a recompute
    /// happened since the last call.
    pub async fn changed(&mut self) -> Snapshot {
        // The sender lives in the control block that this handle holds: it cannot be dropped.
        let _ = self.rx.changed().await;
        self.rx.borrow_and_update();
        self.snapshot()
    }

    /// The selector's name.
    pub fn name(&self) -> &str {
        &self.control.name
    }

    fn index(&self, site: &str) -> Result<usize, UnknownSite> {
        self.control
            .index_of(site)
            .ok_or_else(|| UnknownSite::new(site))
    }
}
