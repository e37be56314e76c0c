//! Rampart: resilience primitives as tower middleware — the four lines of defense of a web shop.
//!
//! This umbrella crate re-exports the Rampart crates behind features (`full`, the default,
//! turns on all of them):
//!
//! | feature | module | crate | line of defense |
//! |---|---|---|---|
//! | `health` | `rampart::health` | `rampart-health` | shared vocabulary: probes, checker, outlier ejection, classification |
//! | `http` | | | the vocabulary's HTTP client side: `rampart::health::HttpProbe`, `transport`, `TowerHttpClassify` (hyper-util, tower-http) |
//! | `breaker` | `rampart::breaker` | `rampart-breaker` | circuit breaker |
//! | `balance` | `rampart::balance` | `rampart-balance` | health-checked load balancer |
//! | `gslb` | `rampart::gslb` | `rampart-gslb` | failover across sites and regions |
//! | `fallback` | `rampart::fallback` | `rampart-fallback` | apology page, stale-if-error, degradation |
//! | `limit` | `rampart::limit` | `rampart-limit` | adaptive concurrency limit, priority load shedding, client-side throttling |
//! | `full` | all of the above | | |
//! | `metrics` | | | counters and gauges through the [`metrics`](https://docs.rs/metrics) facade in every enabled crate |
//! | `tls` | | | `https://` for HTTP probes and balancer endpoints (rustls on the ring provider) in every enabled crate that dials |
//! | `grpc` | | | the gRPC health-checking probe, `rampart::health::GrpcHealthProbe` (tonic-health) |
//!
//! `breaker`, `balance`, `gslb`, `fallback` and `limit` each turn on `health`, since their APIs speak
//! its vocabulary; only `balance` (and `http`, `tls`, `grpc`) pull in an HTTP client, so
//! `default-features = false, features = ["breaker"]` builds without hyper. `metrics` turns on the `metrics` feature of each crate that is enabled and
//! enables no crate by itself: `default-features = false, features = ["breaker", "metrics"]`
//! gives the breaker (and the health vocabulary) with their metrics, and nothing else.
//!
//! ```
//! # #[cfg(feature = "health")] {
//! use rampart::health::{Health, HealthPublisher};
//! let p = HealthPublisher::new();
//! p.set(Health::Healthy);
//! assert_eq!(p.get(), Health::Healthy);
//! # }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "health")]
#[doc(inline)]
pub use rampart_health as health;

#[cfg(feature = "breaker")]
#[doc(inline)]
pub use rampart_breaker as breaker;

#[cfg(feature = "balance")]
#[doc(inline)]
pub use rampart_balance as balance;

#[cfg(feature = "gslb")]
#[doc(inline)]
pub use rampart_gslb as gslb;

#[cfg(feature = "fallback")]
#[doc(inline)]
pub use rampart_fallback as fallback;

#[cfg(feature = "limit")]
#[doc(inline)]
pub use rampart_limit as limit;

/// The crate README's examples, compiled as doctests. (The workspace README's tour is compiled
/// by the workspace's cross-crate tests: a published package holds only its own files.)
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
