//! Rampart: resilience primitives as tower middleware — the four lines of defense of a web shop.
//!
//! This umbrella crate re-exports the Rampart crates behind features (all on by default):
//!
//! | feature | crate | line of defense |
//! |---|---|---|
//! | `health` (always) | [`health`] (`rampart-health`) | shared vocabulary: probes, checker, outlier ejection, classification |
//! | `breaker` | `rampart-breaker` | circuit breaker |
//! | `balance` | `rampart-balance` | health-checked load balancer |
//! | `gslb` | `rampart-gslb` | failover across sites and regions |
//! | `fallback` | `rampart-fallback` | apology page, stale-if-error, degradation |
//!
//! ```
//! use rampart::health::{Health, HealthPublisher};
//! let p = HealthPublisher::new();
//! p.set(Health::Healthy);
//! assert_eq!(p.get(), Health::Healthy);
//! ```

#![forbid(unsafe_code)]

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

/// The workspace README's tour, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
