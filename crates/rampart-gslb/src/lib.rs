//! rampart-gslb: a failover selector across sites and regions, as tower middleware.
//!
//! When a whole data center goes dark, traffic must already be going somewhere else. A
//! [`Gslb`] routes each request to one of several [`Site`]s (each usually a balancer over one
//! region's endpoints) with the arithmetic and safety rails of Envoy's priority levels,
//! Route 53 and Cloudflare Load Balancing:
//!
//! - **Priority failover** with Envoy's arithmetic ([`failover`]): a level's health is
//!   `min(100 %, healthy share × overprovisioning factor 1.4)` and traffic spills to the next
//!   level in proportion to what is missing (P0 71 % healthy → 99/1, 50 % → 70/30).
//! - **Steering** within a level ([`Steering`]): weighted, geo (client region → site order)
//!   or lowest latency (EWMA with hysteresis).
//! - **Failback hold**: a recovered site gets traffic back only after it stayed healthy for
//!   `failback_hold` (30 s), so a flapping primary never gets it back.
//! - **Retry on the next site** when a site fails a request before reaching any backend
//!   ([`NeverReached`](rampart_health::NeverReached)), bounded, for replayable requests
//!   ([`replay`]).
//! - **All down**: the fallback site, or all-as-healthy, or a fast typed [`NoHealthySite`].
//! - **Operators** ([`GslbHandle`]): drain/restore, [`Snapshot`], and a `tracing` event (plus
//!   `metrics`, feature `metrics`) on every change of decision. Optional session affinity.
//!
//! Health comes from each site's inner service ([`ReportHealth`](rampart_health::ReportHealth),
//! which rampart-balance implements), from an active probe of the site (a rampart-health
//! checker's [`HealthWatch`](rampart_health::HealthWatch)), or both. The split is recomputed
//! off the request path whenever health changes, and published to the request path through
//! a `tokio::sync::watch`: picking a site takes no lock and allocates nothing.
//!
//! # Example: two regions, the second one a standby
//!
//! ```
//! use std::time::Duration;
//! use rampart_gslb::{Gslb, GslbConfig, Site, Sites};
//! use rampart_health::{HealthReport, HealthReporter};
//! use tower::{Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // Stand-ins for two balancers; `reporter`s stand for their health reports.
//! let region = |name: &'static str| service_fn(move |_: ()| async move { Ok::<_, std::io::Error>(name) });
//! let (eu, us) = (region("eu"), region("us"));
//! let eu_health = HealthReporter::new(HealthReport::new(10, 10));
//!
//! let sites = Sites::builder()
//!     .site(Site::new("eu-west", eu).region("eu").priority(0).health_report(eu_health.subscribe()))
//!     .site(Site::new("us-east", us).region("us").priority(1))
//!     .build()
//!     .unwrap();
//! let config = GslbConfig::builder().failback_hold(Duration::from_secs(30)).build().unwrap();
//! let mut gslb = Gslb::new(config, sites);
//! let mut handle = gslb.handle();
//!
//! // Half of eu's endpoints die: eu keeps 70 %, us takes 30 % (Envoy: 50 % × 1.4).
//! eu_health.publish(HealthReport::new(5, 10));
//! let snap = handle.changed().await;
//! assert_eq!(snap.level(0).unwrap().load_percent, 70);
//! assert_eq!(snap.level(1).unwrap().load_percent, 30);
//!
//! // All of eu dies: everything goes to us.
//! eu_health.publish(HealthReport::new(0, 10));
//! handle.changed().await;
//! assert_eq!(gslb.ready().await.unwrap().call(()).await.unwrap(), "us");
//!
//! // eu recovers, but traffic returns only after the failback hold.
//! eu_health.publish(HealthReport::new(10, 10));
//! let snap = handle.changed().await;
//! assert_eq!(snap.active_priority, Some(1));
//! tokio::time::sleep(Duration::from_secs(31)).await;
//! assert_eq!(handle.snapshot().active_priority, Some(0));
//! # }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "dns")]
pub mod dns;
pub mod extract;
pub mod failover;
mod gslb;
pub mod handle;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod replay;
pub mod site;
mod snapshot;
mod state;

pub use gslb::Gslb;
pub use gslb::config::{GslbConfig, GslbConfigBuilder, LatencyConfig, MAX_RETRIES, Steering};
pub use gslb::error::{NoHealthySite, UnknownSite};
pub use gslb::future::ResponseFuture;
pub use gslb::layer::GslbLayer;
pub use handle::{GslbHandle, LevelSnapshot, Mode, SiteSnapshot, Snapshot};
pub use site::{Site, Sites, SitesBuilder};

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
