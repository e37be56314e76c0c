//! [`OutlierTracker`]: one endpoint's handle into a detector.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{EjectionReason, EndpointState, Shared};
use crate::Outcome;

/// One endpoint's handle into an [`OutlierDetector`](super::OutlierDetector): record outcomes, ask whether it is
/// ejected. `Send + Sync`; share it (for example in an `Arc`) between the tasks that call the
/// endpoint. Dropping it unregisters the endpoint (without a [`OutlierEvent::Restored`](super::OutlierEvent::Restored)).
#[derive(Debug)]
pub struct OutlierTracker {
    pub(super) shared: Arc<Shared>,
    pub(super) state: Arc<EndpointState>,
}

impl OutlierTracker {
    /// Records the outcome of one call. Lock-free and allocation-free for
    /// [`Outcome::Success`] and [`Outcome::Ignored`]; a failure may eject the endpoint (or,
    /// once an interval has passed, run an evaluation).
    #[inline]
    pub fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ignored => {}
            Outcome::Success => {
                if self.shared.counts_calls {
                    self.state.successes.fetch_add(1, Ordering::Relaxed);
                }
                if self.state.consecutive.load(Ordering::Relaxed) != 0 {
                    self.state.consecutive.store(0, Ordering::Relaxed);
                }
            }
            Outcome::Failure => self.record_failure(),
        }
    }

    #[cold]
    fn record_failure(&self) {
        let now = Instant::now();
        self.shared.maybe_evaluate(now);
        let ep = &self.state;
        if ep.ejected.load(Ordering::Acquire) {
            if self.shared.nanos(now) < ep.until_nanos.load(Ordering::Acquire) {
                // A call that was in flight when the endpoint was ejected: not counted.
                return;
            }
            self.expire(now);
        }
        if self.shared.counts_calls {
            ep.failures.fetch_add(1, Ordering::Relaxed);
        }
        let streak = ep
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let threshold = self.shared.config.consecutive_failures;
        if threshold > 0 && streak >= threshold {
            let mut registry = self.shared.lock();
            self.shared
                .try_eject(&mut registry, ep, now, EjectionReason::ConsecutiveFailures);
        }
    }

    /// Ends the ejection if its time is up at `now`.
    fn expire(&self, now: Instant) {
        let mut registry = self.shared.lock();
        let until = self.state.until_nanos.load(Ordering::Acquire);
        if self.state.ejected.load(Ordering::Acquire) && self.shared.nanos(now) >= until {
            self.shared
                .restore_locked(&mut registry, &self.state, until);
        }
    }

    /// Whether the endpoint is ejected now. Lazily ends an ejection whose time is up; reads
    /// the clock only while ejected.
    #[inline]
    pub fn is_ejected(&self) -> bool {
        if !self.state.ejected.load(Ordering::Acquire) {
            return false;
        }
        let now = Instant::now();
        if self.shared.nanos(now) < self.state.until_nanos.load(Ordering::Acquire) {
            return true;
        }
        self.expire(now);
        self.state.ejected.load(Ordering::Acquire)
    }

    /// When the current ejection ends, if the endpoint is ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        if self.is_ejected() {
            Some(
                self.shared
                    .instant(self.state.until_nanos.load(Ordering::Acquire)),
            )
        } else {
            None
        }
    }

    /// The ejection count: how many ejections the current ejection time is based on (it
    /// decays by one per `interval` spent not ejected, applied at evaluations and before each
    /// ejection, so between those this reading may be higher than the count the next
    /// ejection will use).
    pub fn ejection_count(&self) -> u32 {
        self.state.count.load(Ordering::Relaxed)
    }

    /// The current streak of consecutive failures.
    pub fn consecutive_failures(&self) -> u32 {
        self.state.consecutive.load(Ordering::Relaxed)
    }

    /// Ejects the endpoint now, whatever `max_ejection_percent` says (the ejection counts
    /// toward the cap). Its ejection time follows the usual backoff. Returns `false` if it was
    /// already ejected.
    ///
    /// ```
    /// use rampart_health::{OutlierConfig, OutlierDetector};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let detector = OutlierDetector::new(OutlierConfig::default());
    /// let a = detector.track("a");
    /// assert!(a.eject()); // an operator takes it out (even past the 10 % cap)…
    /// assert!(a.is_ejected());
    /// a.restore(); // …and puts it back before its time is up
    /// assert!(!a.is_ejected());
    /// assert_eq!(a.ejection_count(), 1); // the backoff remembers it
    /// # }
    /// ```
    pub fn eject(&self) -> bool {
        let now = Instant::now();
        let mut registry = self.shared.lock();
        let ep = &self.state;
        if ep.ejected.load(Ordering::Acquire) {
            let until = ep.until_nanos.load(Ordering::Acquire);
            if self.shared.nanos(now) < until {
                return false;
            }
            self.shared.restore_locked(&mut registry, ep, until);
        }
        self.shared
            .eject_locked(&mut registry, ep, now, EjectionReason::Manual);
        true
    }

    /// Ends the endpoint's ejection now, if it is ejected (its ejection count is kept and
    /// decays as usual).
    pub fn restore(&self) {
        let now = Instant::now();
        let mut registry = self.shared.lock();
        if self.state.ejected.load(Ordering::Acquire) {
            let now_nanos = self.shared.nanos(now);
            self.shared
                .restore_locked(&mut registry, &self.state, now_nanos);
        }
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }
}

impl Drop for OutlierTracker {
    fn drop(&mut self) {
        let mut registry = self.shared.lock();
        let id = self.state.id;
        if let Some(pos) = registry.endpoints.iter().position(|ep| ep.id == id) {
            registry.endpoints.remove(pos);
            if self.state.ejected.swap(false, Ordering::AcqRel) {
                registry.ejected = registry.ejected.saturating_sub(1);
            }
        }
    }
}
