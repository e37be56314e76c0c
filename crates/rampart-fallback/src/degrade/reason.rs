//! [`DegradeReason`]: why a dependency's answer was replaced by its fallback (a reason
//! recorded beside the value, not an error: a degraded call still succeeds).

use std::fmt;

/// Why a call was degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DegradeReason {
    /// The call returned an error after reaching the dependency (or without saying).
    Failed,
    /// The call never reached the dependency: its error chain holds a
    /// [`rampart_health::NeverReached`] (breaker open, no healthy endpoint).
    Unavailable,
    /// The deadline passed before the call answered; the call was dropped.
    DeadlineExceeded,
}

impl DegradeReason {
    /// A lowercase label: `failed`, `unavailable` or `deadline_exceeded`.
    pub fn as_str(self) -> &'static str {
        match self {
            DegradeReason::Failed => "failed",
            DegradeReason::Unavailable => "unavailable",
            DegradeReason::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

impl fmt::Display for DegradeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
