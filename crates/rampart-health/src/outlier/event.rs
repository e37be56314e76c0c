//! What a detector tells the world: [`OutlierEvent`]s, [`EjectionReason`]s and snapshots.

use std::sync::Arc;

use tokio::time::Instant;

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectionReason {
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// The failure percentage over an interval reached the threshold.
    FailurePercentage,
    /// The success rate over an interval fell below `mean − stdev × factor` of the pool.
    SuccessRate,
    /// [`OutlierTracker::eject`](super::OutlierTracker::eject).
    Manual,
}

impl EjectionReason {
    /// A lowercase name: `consecutive_failures`, `failure_percentage`, `success_rate` or `manual`.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectionReason::ConsecutiveFailures => "consecutive_failures",
            EjectionReason::FailurePercentage => "failure_percentage",
            EjectionReason::SuccessRate => "success_rate",
            EjectionReason::Manual => "manual",
        }
    }
}

impl std::fmt::Display for EjectionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An ejection or a return, as broadcast by [`OutlierDetector::subscribe`](super::OutlierDetector::subscribe).
#[derive(Clone, Debug)]
pub enum OutlierEvent {
    /// The endpoint was ejected until `until`; `count` is its ejection count after this one.
    Ejected {
        /// The endpoint.
        name: Arc<str>,
        /// When the ejection ends.
        until: Instant,
        /// The ejection count (the multiplier of `base_ejection_time`).
        count: u32,
        /// Why.
        reason: EjectionReason,
    },
    /// The endpoint is back (its ejection expired or it was restored manually).
    Restored {
        /// The endpoint.
        name: Arc<str>,
    },
}

/// One endpoint's state, as returned by [`OutlierDetector::snapshot`](super::OutlierDetector::snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointOutlierState {
    /// The endpoint's name.
    pub name: Arc<str>,
    /// When its ejection ends, if it is ejected.
    pub ejected_until: Option<Instant>,
    /// Its ejection count (decays while it is not ejected).
    pub ejection_count: u32,
    /// Its current streak of consecutive failures.
    pub consecutive_failures: u32,
}
