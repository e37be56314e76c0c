//! Endpoints as the user gives them to a balancer, and as a response names the one that
//! served it.
//!
//! An [`Endpoint`] is a named service with a static weight and, optionally, a health source of
//! its own: a [`HealthWatch`] published elsewhere, or a [`Probe`] the balancer runs with its
//! checker settings. Without one, the balancer's probe factory
//! ([`BalanceBuilder::probe_with`](crate::BalanceBuilder::probe_with)) decides, and without
//! that the endpoint counts as healthy.
//!
//! ```
//! use rampart_balance::{Balance, Endpoint, ServicePolicy};
//! use rampart_health::{Health, HealthPublisher};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) });
//! let control_plane = HealthPublisher::with_initial(Health::Healthy);
//! let balance = Balance::builder()
//!     .policy(ServicePolicy::new())
//!     .endpoint(Endpoint::new("a", svc.clone()).weight(3))
//!     .endpoint(Endpoint::new("b", svc).health_watch(control_plane.subscribe()))
//!     .build()
//!     .unwrap();
//! assert_eq!(balance.snapshot().endpoint("a").unwrap().weight, 3);
//! # }
//! ```
//!
//! The served endpoint is recorded in HTTP response extensions as a [`ServedBy`]:
//!
//! ```
//! use rampart_balance::ServedBy;
//! let served = ServedBy::new("http://10.0.0.7:8080".into());
//! assert_eq!(served.endpoint(), "http://10.0.0.7:8080");
//! ```

use std::fmt;
use std::sync::Arc;

use rampart_health::{HealthWatch, Probe};

/// One endpoint for [`BalanceBuilder::endpoint`](crate::BalanceBuilder::endpoint): a named
/// service, its weight (default 1) and its own health source (default none).
pub struct Endpoint<S> {
    pub(crate) name: Arc<str>,
    pub(crate) service: S,
    pub(crate) weight: u32,
    pub(crate) health: HealthSource,
}

impl<S> fmt::Debug for Endpoint<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("weight", &self.weight)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl<S> Endpoint<S> {
    /// The endpoint `name` (its address or discovery key: the name snapshots, events and
    /// [`ServedBy`] show) served by `service`, weight 1, no health source of its own.
    pub fn new(name: impl Into<Arc<str>>, service: S) -> Self {
        Self {
            name: name.into(),
            service,
            weight: 1,
            health: HealthSource::None,
        }
    }

    /// The static weight, at least 1 (used by P2C and weighted round robin; checked by
    /// `build()`).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Follows a health value published elsewhere (a rampart-health checker's watch, a
    /// control plane).
    pub fn health_watch(mut self, health: HealthWatch) -> Self {
        self.health = HealthSource::Watch(health);
        self
    }

    /// Checks the endpoint with `probe`, run with the balancer's
    /// [`health_checks`](crate::BalanceBuilder::health_checks) settings.
    pub fn probe<Pr: Probe>(mut self, probe: Pr) -> Self {
        self.health = HealthSource::Probe(Box::new(probe));
        self
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<N: Into<Arc<str>>, S> From<(N, S)> for Endpoint<S> {
    /// `(name, service)`: weight 1, no health source of its own.
    fn from((name, service): (N, S)) -> Self {
        Self::new(name, service)
    }
}

/// The endpoint that served a response, recorded in HTTP response extensions by
/// [`HttpPolicy`](crate::HttpPolicy).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServedBy {
    endpoint: Arc<str>,
}

impl ServedBy {
    /// The endpoint named `endpoint` (its base URI or discovery key).
    pub fn new(endpoint: Arc<str>) -> Self {
        Self { endpoint }
    }

    /// The endpoint's name.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The endpoint's name, shared.
    pub fn endpoint_arc(&self) -> &Arc<str> {
        &self.endpoint
    }
}

impl fmt::Display for ServedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint)
    }
}

/// Where an endpoint's active health comes from.
pub(crate) enum HealthSource {
    /// No active checks: health stays `Healthy`.
    None,
    /// A health value published elsewhere (a checker, a control plane).
    Watch(HealthWatch),
    /// An active checker owned by this endpoint (dropping it stops the checker).
    Checker(rampart_health::CheckerHandle),
    /// A probe to run with the balancer's checker settings.
    Probe(Box<dyn rampart_health::Probe>),
}

impl std::fmt::Debug for HealthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthSource::None => "None",
            HealthSource::Watch(_) => "Watch",
            HealthSource::Checker(_) => "Checker",
            HealthSource::Probe(_) => "Probe",
        })
    }
}
