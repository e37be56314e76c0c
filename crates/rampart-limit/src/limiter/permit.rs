//! [`Permit`]: one admitted call's slot.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rampart_health::Outcome;

use super::Shared;

/// One admitted call's slot. Return it by [`record`](Self::record)ing the call's outcome
/// (which also feeds the limit algorithm) or by dropping it (no measurement: the call was
/// cancelled).
pub struct Permit {
    pub(super) shared: Option<Arc<Shared>>,
    pub(super) partition: u32,
    pub(super) start: u64,
    pub(super) in_flight: usize,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("partition", &self.partition)
            .field("bypass", &self.shared.is_none())
            .finish_non_exhaustive()
    }
}

impl Permit {
    pub(super) fn bypass(shared: &Arc<Shared>) -> Self {
        shared.bypassed.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        shared.metrics.bypassed.increment(1);
        Self {
            shared: None,
            partition: 0,
            start: 0,
            in_flight: 0,
        }
    }

    /// Returns the slot, recording the call's round-trip time (since the permit was granted)
    /// and outcome: a [`Failure`](Outcome::Failure) counts as a drop, an
    /// [`Ignored`](Outcome::Ignored) call is not measured.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        if let Some(shared) = self.shared.take() {
            shared.release(&self, Some(outcome), true);
        }
    }

    pub(super) fn release_quietly(mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release(&self, None, false);
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release(self, None, true);
        }
    }
}
