//! Settings: [`GslbConfig`] (validated by its builder), [`Steering`] and [`LatencyConfig`].
//!
//! ```
//! use std::time::Duration;
//! use rampart_gslb::{GslbConfig, LatencyConfig};
//! use rampart_gslb::extract::Header;
//! use rampart_gslb::replay::HttpReplay;
//!
//! type Req = http::Request<String>;
//! let config = GslbConfig::<Req>::builder()
//!     .name("catalog")
//!     .failback_hold(Duration::from_secs(60))
//!     .geo(Header::new("x-client-region"))
//!     .replay(HttpReplay::new(64 * 1024))
//!     .build()
//!     .unwrap();
//! assert_eq!(config.failback_hold(), Duration::from_secs(60));
//!
//! let err = GslbConfig::<Req>::builder().overprovisioning_factor(0.9).build().unwrap_err();
//! assert_eq!(err.field(), "overprovisioning_factor");
//! let err = GslbConfig::<Req>::builder()
//!     .lowest_latency(LatencyConfig::default().hysteresis(-1.0))
//!     .build()
//!     .unwrap_err();
//! assert_eq!(err.field(), "latency.hysteresis");
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rampart_health::ConfigError;

use crate::extract::Extract;
use crate::failover::factor_percent;
use crate::replay::{CloneRequest, NoReplay};

/// The most retries on other sites a request may get (so at most 4 sites see it).
pub const MAX_RETRIES: u8 = 3;

/// How traffic is steered between the sites of one priority level.
pub enum Steering<Req> {
    /// Proportionally to `weight × availability` (Envoy's locality weighting).
    Weighted,
    /// By client region: the extractor names the client's region; the region's site order
    /// (see [`SitesBuilder::geo_order`](crate::SitesBuilder::geo_order), or the sites tagged
    /// with that region) is tried in turn, first routable site of the level wins. Requests
    /// without a known region are weighted.
    Geo(Arc<dyn Extract<Req>>),
    /// To the site with the lowest observed latency (EWMA), switching only when another site
    /// is faster by the hysteresis margin.
    LowestLatency(LatencyConfig),
}

impl<Req> Clone for Steering<Req> {
    fn clone(&self) -> Self {
        match self {
            Steering::Weighted => Steering::Weighted,
            Steering::Geo(e) => Steering::Geo(e.clone()),
            Steering::LowestLatency(c) => Steering::LowestLatency(*c),
        }
    }
}

impl<Req> fmt::Debug for Steering<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Steering::Weighted => f.write_str("Weighted"),
            Steering::Geo(_) => f.write_str("Geo(..)"),
            Steering::LowestLatency(c) => f.debug_tuple("LowestLatency").field(c).finish(),
        }
    }
}

/// Lowest-latency steering parameters.
///
/// Each site keeps an exponentially weighted moving average of its response latency
/// (`ewma ← alpha × sample + (1 − alpha) × ewma`, as in Finagle's and Linkerd's EWMA load
/// balancers). Within a level, the **leader** takes the traffic; another site becomes leader
/// only when `its EWMA × (1 + hysteresis) < the leader's EWMA`, so near-ties do not flap. A
/// small `explore` share of requests is spread by weight so that the other sites' EWMAs stay
/// fresh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyConfig {
    pub(crate) alpha: f64,
    pub(crate) hysteresis: f64,
    pub(crate) explore: f64,
}

impl Default for LatencyConfig {
    /// alpha 0.3, hysteresis 0.2 (20 % faster to take over), explore 0.05.
    fn default() -> Self {
        Self {
            alpha: 0.3,
            hysteresis: 0.2,
            explore: 0.05,
        }
    }
}

impl LatencyConfig {
    /// Weight of a new sample in the EWMA, in `(0, 1]`.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Relative margin another site must beat the leader by (≥ 0).
    pub fn hysteresis(mut self, hysteresis: f64) -> Self {
        self.hysteresis = hysteresis;
        self
    }

    /// Share of requests spread by weight to keep measurements fresh, in `[0, 1]`.
    pub fn explore(mut self, explore: f64) -> Self {
        self.explore = explore;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(ConfigError::new(
                "latency.alpha",
                self.alpha,
                "must be in (0, 1]",
            ));
        }
        if !(self.hysteresis.is_finite() && self.hysteresis >= 0.0) {
            return Err(ConfigError::new(
                "latency.hysteresis",
                self.hysteresis,
                "must be a finite number >= 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.explore) {
            return Err(ConfigError::new(
                "latency.explore",
                self.explore,
                "must be in [0, 1]",
            ));
        }
        Ok(())
    }
}

/// The selector's settings (everything but the sites). Cheap to clone.
pub struct GslbConfig<Req> {
    pub(crate) name: Arc<str>,
    pub(crate) factor: f64,
    pub(crate) failback_hold: Duration,
    pub(crate) steering: Steering<Req>,
    pub(crate) retries: u8,
    pub(crate) replay: Arc<dyn CloneRequest<Req>>,
    /// `false` while the replay strategy is the default `NoReplay` (skips a dynamic call).
    pub(crate) replay_enabled: bool,
    pub(crate) all_down_as_healthy: bool,
    pub(crate) affinity: Option<Arc<dyn Extract<Req>>>,
    pub(crate) unknown_is_routable: bool,
}

impl<Req> Clone for GslbConfig<Req> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            factor: self.factor,
            failback_hold: self.failback_hold,
            steering: self.steering.clone(),
            retries: self.retries,
            replay: self.replay.clone(),
            replay_enabled: self.replay_enabled,
            all_down_as_healthy: self.all_down_as_healthy,
            affinity: self.affinity.clone(),
            unknown_is_routable: self.unknown_is_routable,
        }
    }
}

impl<Req> fmt::Debug for GslbConfig<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GslbConfig")
            .field("name", &self.name)
            .field("overprovisioning_factor", &self.factor)
            .field("failback_hold", &self.failback_hold)
            .field("steering", &self.steering)
            .field("retries", &self.retries)
            .field("all_down_as_healthy", &self.all_down_as_healthy)
            .field("affinity", &self.affinity.is_some())
            .field("unknown_is_routable", &self.unknown_is_routable)
            .finish_non_exhaustive()
    }
}

impl<Req> Default for GslbConfig<Req> {
    fn default() -> Self {
        Self {
            name: Arc::from("gslb"),
            factor: 1.4,
            failback_hold: Duration::from_secs(30),
            steering: Steering::Weighted,
            retries: 1,
            replay: Arc::new(NoReplay),
            replay_enabled: false,
            all_down_as_healthy: false,
            affinity: None,
            unknown_is_routable: true,
        }
    }
}

impl<Req> GslbConfig<Req> {
    /// A builder with the defaults: name `gslb`, overprovisioning factor 1.4, failback hold
    /// 30 s, weighted steering, 1 retry on another site (effective only with a replay
    /// strategy; none by default), fail fast when all sites are down, no affinity, `Unknown`
    /// probe health routable.
    pub fn builder() -> GslbConfigBuilder<Req> {
        GslbConfigBuilder {
            config: Self::default(),
        }
    }

    /// The selector's name (in events, metrics labels and errors).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The overprovisioning factor.
    pub fn overprovisioning_factor(&self) -> f64 {
        self.factor
    }

    /// The failback hold.
    pub fn failback_hold(&self) -> Duration {
        self.failback_hold
    }

    /// The steering policy.
    pub fn steering(&self) -> &Steering<Req> {
        &self.steering
    }

    /// Retries on other sites for never-reached failures.
    pub fn retries(&self) -> u8 {
        self.retries
    }

    /// Whether all sites count as healthy when none is.
    pub fn all_down_as_healthy(&self) -> bool {
        self.all_down_as_healthy
    }
}

/// Builds a [`GslbConfig`]; [`build`](Self::build) validates.
pub struct GslbConfigBuilder<Req> {
    config: GslbConfig<Req>,
}

impl<Req> fmt::Debug for GslbConfigBuilder<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GslbConfigBuilder")
            .field(&self.config)
            .finish()
    }
}

impl<Req> GslbConfigBuilder<Req> {
    /// The selector's name (events, metrics labels, errors). Default `gslb`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Envoy's overprovisioning factor (≥ 1; default 1.4): a priority level counts as fully
    /// healthy while `healthy share × factor ≥ 100 %`.
    pub fn overprovisioning_factor(mut self, factor: f64) -> Self {
        self.config.factor = factor;
        self
    }

    /// How long a recovered site must stay healthy, continuously, before it gets traffic back
    /// (default 30 s). Health losses apply at once. When no site is serving at all, a
    /// recovering site is admitted immediately.
    pub fn failback_hold(mut self, hold: Duration) -> Self {
        self.config.failback_hold = hold;
        self
    }

    /// The steering policy within a priority level.
    pub fn steering(mut self, steering: Steering<Req>) -> Self {
        self.config.steering = steering;
        self
    }

    /// Weighted steering (the default).
    pub fn weighted(self) -> Self {
        self.steering(Steering::Weighted)
    }

    /// Geo steering with the client region taken by `region`.
    pub fn geo(self, region: impl Extract<Req>) -> Self {
        self.steering(Steering::Geo(Arc::new(region)))
    }

    /// Lowest-latency steering.
    pub fn lowest_latency(self, config: LatencyConfig) -> Self {
        self.steering(Steering::LowestLatency(config))
    }

    /// Retries on the next site for failures that never reached a backend (default 1, at most
    /// [`MAX_RETRIES`]). Takes effect only with a [`replay`](Self::replay) strategy.
    pub fn retries(mut self, retries: u8) -> Self {
        self.config.retries = retries;
        self
    }

    /// How a request is copied for a retry on another site (default: never).
    pub fn replay(mut self, replay: impl CloneRequest<Req>) -> Self {
        self.config.replay = Arc::new(replay);
        self.config.replay_enabled = true;
        self
    }

    /// When no site is healthy and there is no fallback site, treat every undrained site as
    /// healthy (Route 53's rule) instead of failing fast. Default: fail fast.
    pub fn all_down_as_healthy(mut self, enabled: bool) -> Self {
        self.config.all_down_as_healthy = enabled;
        self
    }

    /// Session affinity: `key` extracts a site name from the request (a cookie or header the
    /// application sets to the site that served the session); such a request goes to that
    /// site while it is routable, whatever the split says.
    pub fn affinity(mut self, key: impl Extract<Req>) -> Self {
        self.config.affinity = Some(Arc::new(key));
        self
    }

    /// Whether a site whose probe says `Unknown` (no verdict yet) takes traffic (default yes).
    pub fn unknown_is_routable(mut self, routable: bool) -> Self {
        self.config.unknown_is_routable = routable;
        self
    }

    /// Validates: factor finite and ≥ 1, retries ≤ [`MAX_RETRIES`], latency parameters in
    /// range, a non-empty name.
    pub fn build(self) -> Result<GslbConfig<Req>, ConfigError> {
        let c = self.config;
        if c.name.is_empty() {
            return Err(ConfigError::new("name", "", "must not be empty"));
        }
        if !(c.factor.is_finite() && c.factor >= 1.0) {
            return Err(ConfigError::new(
                "overprovisioning_factor",
                c.factor,
                "must be a finite number >= 1",
            ));
        }
        if factor_percent(c.factor) > 100_000 {
            return Err(ConfigError::new(
                "overprovisioning_factor",
                c.factor,
                "must be at most 1000",
            ));
        }
        if c.retries > MAX_RETRIES {
            return Err(ConfigError::new("retries", c.retries, "must be at most 3"));
        }
        if let Steering::LowestLatency(l) = &c.steering {
            l.validate()?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests;
