//! Tracing events and metrics of a limiter (one place, so names stay consistent).

#[cfg(feature = "metrics")]
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "metrics")]
use crate::ShedReason;

/// Nanoseconds between two rate-limited events of one kind.
const EVENT_INTERVAL_NS: u64 = 1_000_000_000;

/// At most one event per interval; counts what it suppressed.
#[derive(Debug)]
pub(crate) struct LogGate {
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogGate {
    pub(crate) fn new() -> Self {
        Self {
            last: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last one)` when an event may be emitted at `now_ns`.
    pub(crate) fn pass(&self, now_ns: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if (last == u64::MAX || now_ns.saturating_sub(last) >= EVENT_INTERVAL_NS)
            && self
                .last
                .compare_exchange(last, now_ns, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// A limiter's metric handles (registered once, at build time).
#[cfg(feature = "metrics")]
#[derive(Debug)]
pub(crate) struct LimiterMetrics {
    pub(crate) limit: metrics::Gauge,
    pub(crate) in_flight: metrics::Gauge,
    pub(crate) rtt: metrics::Gauge,
    pub(crate) queue_length: metrics::Gauge,
    pub(crate) bypassed: metrics::Counter,
    pub(crate) limit_changes: metrics::Counter,
}

#[cfg(feature = "metrics")]
impl LimiterMetrics {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        let l = name.to_string();
        Self {
            limit: metrics::gauge!("rampart_limit_limit", "limiter" => l.clone()),
            in_flight: metrics::gauge!("rampart_limit_in_flight", "limiter" => l.clone()),
            rtt: metrics::gauge!("rampart_limit_rtt_seconds", "limiter" => l.clone()),
            queue_length: metrics::gauge!("rampart_limit_queue_length", "limiter" => l.clone()),
            bypassed: metrics::counter!("rampart_limit_bypassed_total", "limiter" => l.clone()),
            limit_changes: metrics::counter!("rampart_limit_limit_changes_total", "limiter" => l),
        }
    }
}

/// One partition's metric handles.
#[cfg(feature = "metrics")]
#[derive(Debug)]
pub(crate) struct PartitionMetrics {
    pub(crate) admitted: metrics::Counter,
    pub(crate) in_flight: metrics::Gauge,
    shed: [metrics::Counter; 3],
}

#[cfg(feature = "metrics")]
impl PartitionMetrics {
    pub(crate) fn new(limiter: &Arc<str>, partition: &Arc<str>) -> Self {
        let l = limiter.to_string();
        let p = partition.to_string();
        let shed = |reason: ShedReason| metrics::counter!("rampart_limit_shed_total", "limiter" => l.clone(), "partition" => p.clone(), "reason" => reason.as_str());
        Self {
            admitted: metrics::counter!("rampart_limit_admitted_total", "limiter" => l.clone(), "partition" => p.clone()),
            in_flight: metrics::gauge!("rampart_limit_partition_in_flight", "limiter" => l.clone(), "partition" => p.clone()),
            shed: [
                shed(ShedReason::Limit),
                shed(ShedReason::QueueFull),
                shed(ShedReason::QueueTimeout),
            ],
        }
    }

    pub(crate) fn shed(&self, reason: ShedReason) {
        let i = match reason {
            ShedReason::Limit | ShedReason::Throttled => 0,
            ShedReason::QueueFull => 1,
            ShedReason::QueueTimeout => 2,
        };
        self.shed[i].increment(1);
    }
}

/// An adaptive throttle's metric handles.
#[cfg(feature = "metrics")]
#[derive(Debug)]
pub(crate) struct ThrottleMetrics {
    pub(crate) accepted: metrics::Counter,
    pub(crate) rejected_upstream: metrics::Counter,
    pub(crate) throttled: metrics::Counter,
    pub(crate) probability: metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl ThrottleMetrics {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        let t = name.to_string();
        let requests = |outcome: &'static str| metrics::counter!("rampart_limit_throttle_requests_total", "throttle" => t.clone(), "outcome" => outcome);
        Self {
            accepted: requests("accepted"),
            rejected_upstream: requests("rejected_upstream"),
            throttled: requests("throttled"),
            probability: metrics::gauge!("rampart_limit_throttle_probability", "throttle" => t.clone()),
        }
    }
}
