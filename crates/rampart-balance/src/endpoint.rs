//! Endpoints as the user names them.
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

use rampart_health::HealthWatch;

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
