//! The fourth line of defense: when everything behind it fails, users get a fast, honest
//! answer instead of a hang or a raw error page.
//!
//! - [`FallbackLayer`] / [`Fallback`] ([`fallback`]): errors and failed responses of an HTTP
//!   service become the apology — `503`, `Retry-After` (from the error chain when a breaker
//!   knows it), `Cache-Control: no-store`, and an HTML page, an RFC 9457 problem document or
//!   plain text chosen by `Accept`. The service never fails (`Infallible`), so it sits
//!   directly in an axum `Router`.
//! - [`StaleIfErrorLayer`] / [`StaleIfError`] ([`stale`]): keeps recent cacheable `GET`
//!   responses (RFC 9111, bounded by bytes) and serves a stale copy, marked and aged, when the
//!   service fails within the copy's `stale-if-error` window (RFC 5861).
//! - [`Degrade`] ([`degrade`]): for non-critical dependencies, a default value (or a fallback
//!   future) when the call fails or exceeds its deadline, recording why.
//!
//! Stack them outermost first: `FallbackLayer`, then `StaleIfErrorLayer`, then tower-http's
//! `CatchPanicLayer` and `TimeoutLayer`, then the routes. A stale copy is then preferred to
//! the apology, and a panic or timeout inside becomes a failure the outer layers handle.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use rampart_fallback::{FallbackLayer, StaleIfErrorLayer};
//! use tower::ServiceBuilder;
//! use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};
//!
//! # fn main() -> Result<(), rampart_health::ConfigError> {
//! let stale = StaleIfErrorLayer::builder()
//!     .max_bytes(64 << 20)
//!     .default_window(Duration::from_secs(300))
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "catalog" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(FallbackLayer::new())
//!             .layer(stale)
//!             .layer(CatchPanicLayer::new())
//!             .layer(TimeoutLayer::with_status_code(
//!                 http::StatusCode::GATEWAY_TIMEOUT,
//!                 Duration::from_secs(2),
//!             )),
//!     );
//! # let _ = app;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod classify;
pub mod degrade;
pub mod fallback;
pub mod negotiate;
pub mod stale;

pub use body::{ApologyBody, FallbackBody};
pub use classify::FailureStatuses;
pub use degrade::{
    Degrade, DegradeBuilder, DegradeLayer, DegradeReason, DegradeSnapshot, Degraded,
};
pub use fallback::{
    Apologize, Apologized, ApologyPage, ApologyPageBuilder, ApologyRequest, Fallback,
    FallbackLayer, FallbackSnapshot, FallbackStats, Trigger,
};
pub use negotiate::{Format, negotiate};
pub use stale::{
    STALE_HEADER, StaleBody, StaleIfError, StaleIfErrorBuilder, StaleIfErrorLayer, StaleSnapshot,
};

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
