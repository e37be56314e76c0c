//! [`LimiterSnapshot`] and [`PartitionSnapshot`]: a limiter's state for operators.

/// A limiter's state, for an operator endpoint.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LimiterSnapshot {
    /// The limiter's name.
    pub name: String,
    /// The algorithm's name (`"gradient2"`, …).
    pub algorithm: &'static str,
    /// The current limit.
    pub limit: usize,
    /// Calls in flight.
    pub in_flight: usize,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// Requests that bypassed the limiter since it was built.
    pub bypassed: u64,
    /// Per partition, in priority order.
    pub partitions: Vec<PartitionSnapshot>,
}

impl LimiterSnapshot {
    /// Requests shed since the limiter was built, over all partitions.
    pub fn shed(&self) -> u64 {
        self.partitions.iter().map(|p| p.shed).sum()
    }
}

/// One partition's state in a [`LimiterSnapshot`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PartitionSnapshot {
    /// The partition's name.
    pub name: String,
    /// Its guaranteed share of the limit.
    pub share: f64,
    /// Its guaranteed slots at the current limit.
    pub guaranteed: usize,
    /// Its calls in flight.
    pub in_flight: usize,
    /// Its requests waiting in the queue.
    pub queued: usize,
    /// Requests admitted since the limiter was built.
    pub admitted: u64,
    /// Requests shed since the limiter was built.
    pub shed: u64,
}
