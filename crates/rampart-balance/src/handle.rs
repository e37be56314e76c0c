//! The operator's view of a balancer: snapshot, drain, health report.
//!
//! A [`BalanceHandle`] is cheap to clone, has no type parameters, and does not keep the
//! balancer's background tasks alive (they stop when the last [`Balance`](crate::Balance)
//! clone is dropped).
//!
//! ```
//! use rampart_balance::{Balance, Endpoint, ServicePolicy};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) });
//! let balance = Balance::builder()
//!     .policy(ServicePolicy::new())
//!     .endpoint(Endpoint::new("a", svc.clone()))
//!     .endpoint(Endpoint::new("b", svc))
//!     .build()
//!     .unwrap();
//! let handle = balance.handle();
//! assert!(handle.drain("a"));
//! let snap = handle.snapshot();
//! assert_eq!((snap.routable, snap.total), (1, 2));
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rampart_health::{Health, HealthReport, ReportHealth};
use tokio::sync::watch;

/// One endpoint as the snapshot shows it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndpointSnapshot {
    /// Unique id within this balancer.
    pub id: u64,
    /// Address or name (the base URI for HTTP endpoints, the discovery key otherwise).
    pub name: String,
    /// Active health.
    pub health: Health,
    /// Ejected by passive outlier detection.
    pub ejected: bool,
    /// Time left in the current ejection.
    pub ejected_until: Option<Duration>,
    /// How often it was ejected (decays while healthy).
    pub ejection_count: u32,
    /// Time left in the back-off the endpoint asked for (`Retry-After` on a 429 or 503,
    /// `grpc-retry-pushback-ms`): out of picking until then, but not unhealthy.
    pub backing_off_until: Option<Duration>,
    /// Taken out of new traffic by an operator.
    pub draining: bool,
    /// Takes new requests (healthy or unknown per policy, not ejected, not draining).
    pub routable: bool,
    /// Requests in flight.
    pub outstanding: u64,
    /// Peak-EWMA latency.
    pub ewma: Duration,
    /// Static weight.
    pub weight: u32,
    /// Weight after slow start.
    pub effective_weight: f64,
    /// Ramping up after (re)joining.
    pub slow_start: bool,
    /// Attempts sent to it.
    pub requests: u64,
    /// Attempts classified as failures.
    pub failures: u64,
}

/// The balancer as a whole.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The balancer's name (its `balancer` metric label).
    pub name: Arc<str>,
    /// Every endpoint.
    pub endpoints: Vec<EndpointSnapshot>,
    /// Panic mode is on (traffic spread over all non-draining endpoints).
    pub panic: bool,
    /// Routable endpoints.
    pub routable: usize,
    /// All endpoints.
    pub total: usize,
}

impl Snapshot {
    /// The endpoint called `name`, if any.
    pub fn endpoint(&self, name: &str) -> Option<&EndpointSnapshot> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

/// A balancer without its type parameters: what a [`BalanceHandle`] reads and changes.
pub(crate) trait DynBalancer: Send + Sync {
    fn name(&self) -> Arc<str>;
    fn snapshot(&self) -> Snapshot;
    fn set_draining(&self, name: &str, draining: bool) -> bool;
    fn report(&self) -> watch::Receiver<HealthReport>;
}

/// Snapshot, drain and health report of one balancer (see the [module docs](self)).
#[derive(Clone)]
pub struct BalanceHandle {
    pub(crate) balancer: Arc<dyn DynBalancer>,
}

impl fmt::Debug for BalanceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceHandle").finish_non_exhaustive()
    }
}

impl BalanceHandle {
    /// The balancer's name.
    pub fn name(&self) -> Arc<str> {
        self.balancer.name()
    }

    /// Every endpoint's state.
    pub fn snapshot(&self) -> Snapshot {
        self.balancer.snapshot()
    }

    /// Takes the endpoint(s) called `name` out of new traffic; in-flight requests finish.
    /// `false` when no endpoint has that name.
    pub fn drain(&self, name: &str) -> bool {
        self.balancer.set_draining(name, true)
    }

    /// Puts drained endpoint(s) back into rotation (with slow start).
    pub fn undrain(&self, name: &str) -> bool {
        self.balancer.set_draining(name, false)
    }
}

impl ReportHealth for BalanceHandle {
    fn health_report(&self) -> watch::Receiver<HealthReport> {
        self.balancer.report()
    }
}
