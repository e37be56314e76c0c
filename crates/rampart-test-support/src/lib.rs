//! What every Rampart crate's tests share, written once.
//!
//! - [`metrics::Captured`]: an in-memory `metrics` recorder that keeps every counter, gauge
//!   and histogram under its rendered key `name{label=value,…}`.
//! - [`tracing::Capture`]: a `tracing` subscriber that keeps every event with its level,
//!   message and fields.
//! - [`loopback::serve`]: an axum router on `127.0.0.1:0`, stopped when the guard drops.
//! - [`poll::poll_once`]: polls a future once with a no-op waker (allocation tests, no runtime).
//! - [`series::counter`] and [`series::gauge`]: one captured series, which must exist.
//! - [`boom::Boom`]: a zero-sized error for services that fail on purpose.
//! - `bench` (feature `bench`): the benchmarks' per-call timing scaffold, one thread and two.
//! - `h2c` (feature `h2c`): an HTTP/2 cleartext server on loopback with a per-connection
//!   stream limit, a delay per request, counters and graceful GOAWAY on demand.
//! - `tls` (feature `tls`): a test certificate authority (valid, expired and unknown-CA
//!   certificates), rustls server settings and HTTPS servers on loopback.
//!
//! Dev-only (`publish = false`): the published crates depend on it only as a dev-dependency.
//!
//! ```
//! use rampart_test_support::metrics::Captured;
//!
//! let captured = Captured::default();
//! metrics::with_local_recorder(&captured, || {
//!     metrics::counter!("requests_total", "breaker" => "catalog").increment(2);
//! });
//! assert_eq!(captured.counter("requests_total{breaker=catalog}"), 2);
//! ```

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod boom;
#[cfg(feature = "h2c")]
pub mod h2c;
pub mod loopback;
pub mod metrics;
pub mod poll;
pub mod series;
#[cfg(feature = "tls")]
pub mod tls;
pub mod tracing;
