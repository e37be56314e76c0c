//! The pool health report: what a balancer publishes and a GSLB selector consumes.
//!
//! A [`HealthReport`] says how many endpoints of a pool are healthy. A balancer owns a
//! [`HealthReporter`] and updates it whenever routability changes; anything that implements
//! [`ReportHealth`] hands out a [`tokio::sync::watch::Receiver`] of it, so a GSLB selector
//! learns a site's health without polling and without depending on the balancer's crate.
//!
//! # Example
//!
//! ```
//! use rampart_health::{HealthReport, HealthReporter, ReportHealth};
//!
//! struct Pool { reporter: HealthReporter }
//! impl ReportHealth for Pool {
//!     fn health_report(&self) -> tokio::sync::watch::Receiver<HealthReport> {
//!         self.reporter.subscribe()
//!     }
//! }
//!
//! let pool = Pool { reporter: HealthReporter::new(HealthReport::new(3, 3)) };
//! let rx = pool.health_report();
//! pool.reporter.publish(HealthReport::new(2, 3));
//! assert!((rx.borrow().healthy_share() - 2.0 / 3.0).abs() < 1e-9);
//! ```

use std::sync::Arc;

use tokio::sync::watch;

/// How much of a pool is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HealthReport {
    /// Endpoints that take traffic (healthy, not ejected, not draining).
    pub healthy: usize,
    /// All endpoints in the pool.
    pub total: usize,
}

impl HealthReport {
    /// `healthy` of `total` (clamped so that `healthy <= total`).
    pub const fn new(healthy: usize, total: usize) -> Self {
        let healthy = if healthy > total { total } else { healthy };
        Self { healthy, total }
    }

    /// The healthy share in `0.0..=1.0`; an empty pool has share `0.0`. A report written
    /// field by field with `healthy > total` counts as fully healthy, never above `1.0`.
    ///
    /// ```
    /// use rampart_health::HealthReport;
    /// assert_eq!(HealthReport::new(1, 4).healthy_share(), 0.25);
    /// assert_eq!(HealthReport::new(0, 0).healthy_share(), 0.0);
    /// assert_eq!(HealthReport { healthy: 5, total: 3 }.healthy_share(), 1.0);
    /// ```
    pub fn healthy_share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.healthy.min(self.total) as f64 / self.total as f64
        }
    }

    /// `true` when at least one endpoint is healthy.
    pub fn any_healthy(&self) -> bool {
        self.healthy > 0
    }
}

/// Something that publishes a [`HealthReport`] (a balancer, a site).
pub trait ReportHealth {
    /// A subscription to the report; it changes whenever the pool's health does.
    fn health_report(&self) -> watch::Receiver<HealthReport>;
}

/// The writing side of a [`HealthReport`]. Cloning shares the same report.
#[derive(Debug, Clone)]
pub struct HealthReporter {
    tx: Arc<watch::Sender<HealthReport>>,
}

impl HealthReporter {
    /// Starts with `initial`.
    pub fn new(initial: HealthReport) -> Self {
        let (tx, _) = watch::channel(initial);
        Self { tx: Arc::new(tx) }
    }

    /// Publishes `report`; subscribers wake only if it changed.
    pub fn publish(&self, report: HealthReport) {
        self.tx.send_if_modified(|current| {
            if *current == report {
                false
            } else {
                *current = report;
                true
            }
        });
    }

    /// The current report.
    pub fn current(&self) -> HealthReport {
        *self.tx.borrow()
    }

    /// A new subscription.
    pub fn subscribe(&self) -> watch::Receiver<HealthReport> {
        self.tx.subscribe()
    }
}

impl ReportHealth for HealthReporter {
    fn health_report(&self) -> watch::Receiver<HealthReport> {
        self.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_shares() {
        assert_eq!(HealthReport::new(5, 3), HealthReport::new(3, 3));
        assert_eq!(HealthReport::new(3, 3).healthy_share(), 1.0);
        assert!(!HealthReport::new(0, 3).any_healthy());
    }

    #[tokio::test]
    async fn subscribers_wake_on_change() {
        let r = HealthReporter::new(HealthReport::new(3, 3));
        let mut rx = r.health_report();
        r.publish(HealthReport::new(3, 3));
        assert!(!rx.has_changed().unwrap());
        r.publish(HealthReport::new(1, 3));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().healthy, 1);
    }
}
