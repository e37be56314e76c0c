//! Which partition a request belongs to: [`Class`] and [`PartitionBy`].

/// Which partition a request belongs to, or whether it bypasses the limiter.
///
/// Partitions are numbered in declaration order (0 is the first, highest-priority one);
/// [`Limiter::partition_class`](crate::Limiter::partition_class) looks one up by name. An
/// index past the last partition means the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The request counts against partition `n`.
    Partition(usize),
    /// The request is not limited at all (health checks, admin routes).
    Bypass,
}

/// Classifies requests into [`Class`]es. Implemented for every `Fn(&Req) -> Class`.
pub trait PartitionBy<Req> {
    /// The class of `req`.
    fn class(&self, req: &Req) -> Class;
}

impl<F, Req> PartitionBy<Req> for F
where
    F: Fn(&Req) -> Class,
{
    #[inline]
    fn class(&self, req: &Req) -> Class {
        self(req)
    }
}

/// Every request in the first partition (the default of [`LimitLayer`](crate::LimitLayer)).
#[derive(Debug, Clone, Copy, Default)]
pub struct SinglePartition;

impl<Req> PartitionBy<Req> for SinglePartition {
    #[inline]
    fn class(&self, _req: &Req) -> Class {
        Class::Partition(0)
    }
}
