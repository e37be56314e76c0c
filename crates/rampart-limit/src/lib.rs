#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod algorithm;
mod event;
pub mod limit;
pub mod limiter;
pub mod throttle;

pub use limit::{Limit, LimitLayer, Overloaded, ResponseFuture, ShedReason};
pub use limiter::{
    Class, CoDelQueue, Limiter, LimiterBuilder, LimiterSnapshot, PartitionBy, PartitionSnapshot,
    Permit, SinglePartition,
};
pub use throttle::{
    AdaptiveThrottle, AdaptiveThrottleBuilder, AdaptiveThrottleLayer, Throttle, ThrottleSnapshot,
};
