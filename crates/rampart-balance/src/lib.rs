//! A health-checked load balancer as tower middleware.
//!
//! [`Balance`] spreads requests over endpoint services and takes dead ones out of rotation
//! before users notice: active checks, passive outlier ejection fed by every response, panic
//! mode, retries on another endpoint within a budget, slow start, drain, and discovery from a
//! static list, a tower [`Discover`](tower::discover::Discover) stream or DNS (feature `dns`).
//! [`HttpEndpoint`] is a pooled hyper-util client to one backend.
//!
//! At a glance:
//!
//! - [`Balance::builder`] → [`BalanceBuilder`]: endpoints ([`Endpoint`] values through
//!   [`BalanceBuilder::endpoint`], [`BalanceBuilder::http_endpoints`],
//!   [`BalanceBuilder::discover`]), active checks ([`BalanceBuilder::http_health_checks`],
//!   [`BalanceBuilder::probe_with`], [`BalanceBuilder::health_checks`]), passive ejection
//!   ([`BalanceBuilder::outlier_detection`]), [`Picker`] and its [`LatencyEstimate`], panic
//!   threshold, retries and [`RetryBudget`], [`SlowStart`], backpressure (`max_backoff`),
//!   hedging ([`Hedge`]); `build()` validates and starts the background tasks.
//! - [`Balance`]: the `Service` (clone it freely; tasks stop when the last clone drops),
//!   [`Balance::snapshot`], [`Balance::handle`] → [`BalanceHandle`] (drain, snapshot,
//!   [`ReportHealth`](rampart_health::ReportHealth)).
//! - Errors: [`NoHealthyEndpoints`] (carries `NeverReached`), endpoint errors as `BoxError`
//!   ([`RequestTimeout`], or `NeverReached` wrapping a failed connect).
//! - HTTP: [`HttpPolicy`] (default), [`ReplayBodyLayer`] in front of the balancer,
//!   [`ServedBy`] in response extensions; other request types: [`ServicePolicy`].
//! - gRPC: [`HttpPolicy::grpc`] judges answers by `grpc-status`, and, for a status that comes
//!   in the trailers, hands the response a [`LateOutcome`] that [`record_trailers`] records
//!   when the body reaches them ([`late`]).
//! - DNS (feature `dns`): `discover::DnsDiscover`.
//!
//! ```
//! use rampart_balance::{Balance, ServicePolicy};
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let backend = tower::service_fn(|name: &'static str| async move {
//!     Ok::<_, std::io::Error>(format!("hello {name}"))
//! });
//! let mut balance = Balance::builder()
//!     .policy(ServicePolicy::new())
//!     .endpoints([("a", backend.clone()), ("b", backend)])
//!     .build()
//!     .unwrap();
//! let reply = balance.ready().await.unwrap().call("you").await.unwrap();
//! assert_eq!(reply, "hello you");
//! # }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod balance;
pub mod budget;
pub mod client;
pub mod discover;
pub mod endpoint;
pub mod handle;
pub mod hedge;
pub mod late;
mod load;
pub mod pick;
pub mod policy;
pub mod replay;
mod ring;
mod slow_start;
mod table;

pub use balance::{Balance, BalanceBuilder, BalanceLayer, NoHealthyEndpoints, ResponseFuture};
pub use budget::{RetryBudget, RetryBudgetBuilder};
pub use client::{HttpEndpoint, HttpEndpointBuilder, RequestTimeout};
pub use endpoint::{Endpoint, ServedBy};
pub use handle::{BalanceHandle, EndpointSnapshot, Snapshot};
pub use hedge::Hedge;
pub use late::{GrpcOutcomeBody, LateOutcome, record_trailers};
pub use pick::{LatencyEstimate, Picker};
pub use policy::{
    BalancePolicy, HashKey, HttpPolicy, KeyFn, NoKey, ReplayableBody, ServicePolicy,
    clone_http_request,
};
pub use replay::{ReplayBody, ReplayBodyLayer, ReplayBodyService};
pub use slow_start::SlowStart;

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
