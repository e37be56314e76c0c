//! The failback hold: a site whose health rises gets the extra traffic only after it stayed
//! at least that healthy for the hold time, so a flapping site never gets traffic back.
//!
//! Health that falls is taken at once. A rise is taken at once too when nothing else is
//! serving (holding it back would leave requests nowhere to go) or when no hold is set.

use std::time::Duration;

use tokio::time::Instant;

/// Tolerance when comparing healthy shares.
pub(crate) const EPS: f64 = 1e-9;

/// One site's progress through the hold: the share the split uses and since when a higher
/// observed share has been waiting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hold {
    /// The share the split uses (increases wait for the hold).
    pub(crate) admitted: f64,
    /// Since when the observed share has been continuously above `admitted`.
    pub(crate) pending_since: Option<Instant>,
}

/// What [`Hold::observe`] did, for the caller's `tracing` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to report (no change, a fall taken at once, or still waiting).
    Quiet,
    /// A pending failback was cancelled: the site dipped before the hold ran out.
    Cancelled,
    /// A rise started waiting for the hold.
    Pending,
    /// A rise was admitted after waiting the whole hold.
    Admitted,
}

impl Hold {
    /// Applies a newly observed share at `now`. `any_serving`: some undrained site currently
    /// takes traffic.
    pub(crate) fn observe(
        &mut self,
        observed: f64,
        hold: Duration,
        any_serving: bool,
        now: Instant,
    ) -> Step {
        if observed <= self.admitted + EPS {
            if observed < self.admitted - EPS {
                self.admitted = observed;
            }
            if self.pending_since.take().is_some() {
                return Step::Cancelled;
            }
            Step::Quiet
        } else if !any_serving || hold.is_zero() {
            // Nothing else is serving (or no hold configured): take it at once.
            self.admitted = observed;
            self.pending_since = None;
            Step::Quiet
        } else {
            match self.pending_since {
                None => {
                    self.pending_since = Some(now);
                    Step::Pending
                }
                Some(since) if now.saturating_duration_since(since) >= hold => {
                    self.admitted = observed;
                    self.pending_since = None;
                    Step::Admitted
                }
                Some(_) => Step::Quiet,
            }
        }
    }

    /// When a pending rise will be admitted, if one is pending.
    pub(crate) fn deadline(&self, hold: Duration) -> Option<Instant> {
        self.pending_since.map(|since| since + hold)
    }
}

#[cfg(test)]
mod tests;
