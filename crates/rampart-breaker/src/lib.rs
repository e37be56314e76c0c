//! A circuit breaker as tower middleware: Resilience4j's state machine, fixed where its users
//! hurt, with a lock-free hot path.
//!
//! - [`CircuitBreakerLayer`] / [`CircuitBreaker`] wrap any tower `Service`; results are
//!   classified by a [`Classify`](rampart_health::Classify) (HTTP:
//!   [`HttpClassifier`](rampart_health::HttpClassifier), 5xx and transport errors fail;
//!   gRPC: [`GrpcCircuitBreaker`], the final `grpc-status`, in the head or the trailers).
//! - [`Policy`] holds the knobs (sliding window by count or time, minimum calls, failure and
//!   slow-call rate thresholds, consecutive failures, open duration with exponential jittered
//!   backoff, half-open permits and maximum wait), validated by [`PolicyBuilder::build`].
//! - [`BreakerHandle`] is the breaker itself: state, [`snapshot`](BreakerHandle::snapshot),
//!   overrides (force open, disable, metrics only, reset), [`BreakerEvent`] subscription, and
//!   [`Permit`]s for code that is not a tower service.
//! - [`BreakerOpen`] is the fail-fast error; its source chain carries rampart-health's
//!   [`NeverReached`](rampart_health::NeverReached) marker with the time to the next probe.
//! - [`KeyedBreaker`] keeps one breaker per key (host, route), bounded by a `moka` cache;
//!   [`KeyedCircuitBreakerLayer`] is its middleware.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use rampart_breaker::{CircuitBreakerLayer, Policy, SlidingWindow};
//! use tower::ServiceBuilder;
//!
//! let policy = Policy::builder()
//!     .name("catalog")
//!     .sliding_window(SlidingWindow::count(50))
//!     .minimum_calls(10)
//!     .open_duration(Duration::from_secs(2))
//!     .build()?;
//! let layer = CircuitBreakerLayer::http(policy);
//! let breaker = layer.handle().clone();
//! let client = ServiceBuilder::new().layer(layer).service(tower::service_fn(
//!     |_req: http::Request<()>| async { Ok::<_, std::io::Error>(http::Response::new(())) },
//! ));
//! assert_eq!(breaker.state(), rampart_breaker::BreakerState::Closed);
//! # let _ = client;
//! # Ok::<(), rampart_health::ConfigError>(())
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod circuit_breaker;
mod clock;
pub mod event;
pub mod handle;
pub mod keyed;
mod machine;
pub mod policy;
mod snapshot;
mod state;
mod sync;
mod window;

pub use circuit_breaker::{
    BreakerOpen, CircuitBreaker, CircuitBreakerLayer, GrpcCircuitBreaker, GrpcCircuitBreakerLayer,
    ResponseFuture,
};
pub use event::{BreakerEvent, TransitionReason};
pub use handle::{BreakerHandle, BreakerSnapshot, Permit};
pub use keyed::{KeyedBreaker, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use policy::{Policy, PolicyBuilder, SlidingWindow};
pub use state::BreakerState;

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
