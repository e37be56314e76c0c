//! The shared health vocabulary of Rampart.
//!
//! Every Rampart middleware crate (breaker, balancer, GSLB selector, fallback) builds on the
//! types in this crate, and only on these: the middleware crates never depend on each other.
//!
//! - [`Outcome`] and [`Classify`]: turning a call's result into success, failure or ignored
//!   ([`classify`]).
//! - [`Health`]: the tri-state health of an endpoint or site, published through a cheap
//!   [`HealthWatch`] subscription ([`health`]).
//! - The facts that cross crate lines ([`signal`]): [`NeverReached`] ("this request never
//!   reached a backend"), [`RetryAfter`] ("try again after D"), and [`find_in_chain`] to find
//!   either anywhere in a [`BoxError`] chain; and the pool [`HealthReport`] that a balancer
//!   publishes and a GSLB selector consumes ([`report`]).
//! - Active health checking: a [`Probe`] makes one attempt (`HttpProbe`, [`TcpProbe`],
//!   [`probe_fn`]; see [`probe`]) and a [`Checker`] runs it on a schedule with rise/fall
//!   hysteresis, publishing transitions ([`checker`]).
//! - Passive health checking: an [`OutlierDetector`] ejects endpoints whose real traffic
//!   fails, Envoy-style, with a lock-free success path ([`outlier`]).
//! - [`ConfigError`]: what every Rampart builder's `build()` returns ([`config`]).
//!
//! # Features
//!
//! - `http` (default): the HTTP client side: `HttpProbe`, the shared `transport` settings
//!   and connector (hyper-util's client), and `TowerHttpClassify` (tower-http's
//!   classifiers). Without it the crate is the bare vocabulary: everything above except those,
//!   with no hyper, hyper-util or tower-http in the dependency tree. [`HttpClassifier`],
//!   [`GrpcClassifier`] and the [`deadline`] layer need only the `http` types crate and stay.
//!   The breaker, limiter, fallback and GSLB crates depend on this crate without it.
//! - `tls` (implies `http`): `https://` for `HttpProbe` and the clients built on `transport`
//!   (rustls on the ring provider).
//! - `grpc` (implies `http`): `GrpcHealthProbe`, the gRPC health checking protocol on
//!   tonic-health's client.
//! - `metrics`: counters and gauges through the [`metrics`](https://docs.rs/metrics) facade
//!   (probe results, transitions, ejections).
//!
//! # Example
//!
//! ```
//! use rampart_health::{Classify, HttpClassifier, Outcome};
//!
//! let classify = HttpClassifier::default();
//! let ok = http::Response::builder().status(404).body(()).unwrap();
//! let bad = http::Response::builder().status(503).body(()).unwrap();
//! // Caller mistakes (4xx) are not failures; server errors are.
//! assert_eq!(classify.classify(Ok::<_, &std::io::Error>(&ok)), Outcome::Success);
//! assert_eq!(classify.classify(Ok::<_, &std::io::Error>(&bad)), Outcome::Failure);
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod checker;
pub mod classify;
pub mod config;
pub mod deadline;
pub mod grpc;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc_health;
pub mod health;
pub mod outlier;
pub mod probe;
pub mod report;
pub mod signal;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod transport;

pub use checker::{Checker, CheckerConfig, CheckerConfigBuilder, CheckerHandle, HealthTransition};
#[cfg(feature = "http")]
pub use classify::TowerHttpClassify;
pub use classify::{Classify, FnClassify, HttpClassifier, Outcome};
pub use config::ConfigError;
pub use deadline::{DEADLINE_HEADER, Deadline, DeadlineExceeded, DeadlineLayer, SetDeadline};
pub use grpc::{GrpcBody, GrpcClassifier, GrpcCode, RetryPushback};
#[cfg(feature = "grpc")]
pub use grpc_health::{GrpcHealthProbe, GrpcHealthProbeBuilder};
pub use health::{Health, HealthPublisher, HealthWatch};
pub use outlier::{
    EjectionReason, EndpointOutlierState, OutlierConfig, OutlierConfigBuilder, OutlierDetector,
    OutlierEvent, OutlierTracker,
};
pub use probe::{FnProbe, Probe, ProbeError, ProbeErrorKind, TcpProbe, TcpProbeBuilder, probe_fn};
#[cfg(feature = "http")]
pub use probe::{HttpProbe, HttpProbeBuilder};
pub use report::{HealthReport, HealthReporter, ReportHealth};
pub use signal::{NeverReached, RetryAfter, find_in_chain, is_never_reached, retry_after};
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsConfigBuilder};
#[cfg(feature = "http")]
pub use transport::{HttpVersion, Transport};

/// The README's examples, compiled as doctests (they use the HTTP probe).
#[doc = include_str!("../README.md")]
#[cfg(all(doctest, feature = "http"))]
pub struct ReadmeDoctests;

/// A type-erased error, as tower's generic layers return it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
