//! [`BalanceBuilder`]: configuration, validated by `build()`.

use std::fmt;
use std::fmt::Display;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use rampart_health::{BoxError, CheckerConfig, ConfigError, OutlierConfig, Probe};
use tower::discover::Discover;

use super::shared::Config;
use super::{Balance, BalanceLayer, ProbeFactory};
use crate::budget::RetryBudget;
use crate::discover::{DiscoverFn, boxed_discover};
use crate::endpoint::{Endpoint, HealthSource};
use crate::pick::{LatencyEstimate, Picker, Tried};
use crate::slow_start::SlowStart;

/// Validated settings shared by the builder and [`BalanceLayer`].
#[derive(Clone)]
pub(crate) struct Settings<P> {
    pub(super) config: Config,
    pub(super) budget: RetryBudget,
    pub(super) policy: P,
    pub(super) outlier: Option<OutlierConfig>,
    pub(super) checker: Option<CheckerConfig>,
    pub(super) probe_for: Option<ProbeFactory>,
    pub(super) clock: Option<quanta::Clock>,
}

impl<P: fmt::Debug> fmt::Debug for Settings<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("budget", &self.budget)
            .field("policy", &self.policy)
            .field("outlier", &self.outlier)
            .field("checker", &self.checker)
            .field("probe_factory", &self.probe_for.is_some())
            .finish_non_exhaustive()
    }
}

/// Configures and builds a [`Balance`]. Every setting is optional.
///
/// Defaults: name `balancer`, [`Picker::PeakEwma`] with the default [`LatencyEstimate`],
/// panic threshold 0.5, `Unknown` health routable, 2 retries elsewhere within the default
/// [`RetryBudget`], the default [`SlowStart`] (10 s from 10 % weight), back-offs up to 60 s, no
/// hedging, no passive outlier detection, no active checks, maintenance every 100 ms.
pub struct BalanceBuilder<S, P> {
    settings: Settings<P>,
    endpoints: Vec<Endpoint<S>>,
    discovers: Vec<DiscoverFn<S>>,
    slow_start: SlowStart,
}

impl<S, P: fmt::Debug> fmt::Debug for BalanceBuilder<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceBuilder")
            .field("settings", &self.settings)
            .field("endpoints", &self.endpoints.len())
            .field("discovers", &self.discovers.len())
            .finish()
    }
}

impl<S, P> BalanceBuilder<S, P> {
    /// A builder with `policy`.
    pub fn new(policy: P) -> Self {
        Self {
            settings: Settings {
                config: Config {
                    name: Arc::from("balancer"),
                    picker: Picker::default(),
                    panic_threshold: 0.5,
                    unknown_is_routable: true,
                    max_retries: 2,
                    default_rtt: Duration::from_millis(1),
                    decay: Duration::from_secs(10),
                    slow_start: Some(SlowStart::default()),
                    tick: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(60),
                    failure_penalty: Duration::ZERO,
                    hedge: None,
                },
                budget: RetryBudget::default(),
                policy,
                outlier: None,
                checker: None,
                probe_for: None,
                clock: None,
            },
            endpoints: Vec::new(),
            discovers: Vec::new(),
            slow_start: SlowStart::default(),
        }
    }

    /// Replaces the policy (e.g. [`ServicePolicy`](crate::ServicePolicy) for non-HTTP
    /// services).
    pub fn policy<P2>(self, policy: P2) -> BalanceBuilder<S, P2> {
        let s = self.settings;
        BalanceBuilder {
            settings: Settings {
                config: s.config,
                budget: s.budget,
                policy,
                outlier: s.outlier,
                checker: s.checker,
                probe_for: s.probe_for,
                clock: s.clock,
            },
            endpoints: self.endpoints,
            discovers: self.discovers,
            slow_start: self.slow_start,
        }
    }

    /// The balancer's name (default `"balancer"`): the `balancer` label of every metric
    /// series and a field of its events. Give every balancer of a process its own name, or
    /// their series add up (e.g. `"catalog-us-east"`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.settings.config.name = name.into();
        self
    }

    /// The picker (default [`Picker::PeakEwma`]).
    pub fn picker(mut self, picker: Picker) -> Self {
        self.settings.config.picker = picker;
        self
    }

    /// Below this routable share, spread over all endpoints (default 0.5; `0.0` = never,
    /// fail fast instead).
    pub fn panic_threshold(mut self, share: f64) -> Self {
        self.settings.config.panic_threshold = share;
        self
    }

    /// Whether endpoints whose health is still `Unknown` take traffic (default `true`).
    pub fn unknown_is_routable(mut self, yes: bool) -> Self {
        self.settings.config.unknown_is_routable = yes;
        self
    }

    /// Extra attempts on other endpoints per request (default 2, at most 7; 0 disables).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.settings.config.max_retries = n;
        self
    }

    /// The retry budget shared by all requests.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.settings.budget = budget;
        self
    }

    /// The peak-EWMA latency estimate: its starting value, decay time and failure penalty
    /// (default [`LatencyEstimate::default`]).
    pub fn latency_estimate(mut self, estimate: LatencyEstimate) -> Self {
        let c = &mut self.settings.config;
        c.default_rtt = estimate.initial;
        c.decay = estimate.decay;
        c.failure_penalty = estimate.failure_penalty;
        self
    }

    /// Slow start (default [`SlowStart::default`]: 10 s from 10 % of the weight);
    /// [`SlowStart::off`] turns it off.
    pub fn slow_start(mut self, slow_start: SlowStart) -> Self {
        self.slow_start = slow_start;
        self
    }

    /// The longest back-off an endpoint can ask for with `Retry-After` or
    /// `grpc-retry-pushback-ms` (default 60 s; zero turns backpressure off). While backing off,
    /// an endpoint takes no new requests but stays healthy: it is not ejected, and the health
    /// report still counts it. It returns at the next maintenance tick after its time is up.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.settings.config.max_backoff = max;
        self
    }

    /// Hedged requests (off by default): a hedgeable request still unanswered after the
    /// delay is sent once more to another endpoint, and the first answer wins (see
    /// [`Hedge`](crate::Hedge)). Hedges spend from the retry budget.
    pub fn hedge(mut self, hedge: crate::Hedge) -> Self {
        self.settings.config.hedge = Some(hedge);
        self
    }

    /// How often the maintenance task runs: slow-start steps, ejection expiry, idle EWMA decay
    /// (default 100 ms).
    pub fn maintenance_interval(mut self, every: Duration) -> Self {
        self.settings.config.tick = every;
        self
    }

    /// The clock used for latency measurement (default: a TSC-backed [`quanta::Clock`]);
    /// unit tests pass [`quanta::Clock::mock`].
    #[cfg(test)]
    pub(crate) fn clock(mut self, clock: quanta::Clock) -> Self {
        self.settings.clock = Some(clock);
        self
    }

    /// Passive outlier detection (rampart-health's [`OutlierDetector`](rampart_health::OutlierDetector),
    /// Envoy's algorithm), fed with every attempt's outcome as the policy classifies it.
    /// Each balancer gets its own detector, so `max_ejection_percent` applies per pool.
    pub fn outlier_detection(mut self, config: OutlierConfig) -> Self {
        self.settings.outlier = Some(config);
        self
    }

    /// The checker settings (rise, fall, intervals, timeout) for endpoints with a probe
    /// (default [`CheckerConfig::default`]).
    pub fn health_checks(mut self, config: CheckerConfig) -> Self {
        self.settings.checker = Some(config);
        self
    }

    /// Makes a probe for every endpoint (static or discovered) that has no health source of
    /// its own, from the endpoint's name; `None` leaves that endpoint unchecked.
    pub fn probe_with<F, Pr>(mut self, factory: F) -> Self
    where
        F: Fn(&str) -> Option<Pr> + Send + Sync + 'static,
        Pr: Probe,
    {
        self.settings.probe_for = Some(Arc::new(move |name: &str| {
            factory(name).map(|p| Box::new(p) as Box<dyn Probe>)
        }));
        self
    }

    /// Active HTTP checks: `GET {endpoint base}{path}` expecting 2xx, for every endpoint whose
    /// name is a base URI (as [`HttpEndpoint`](crate::HttpEndpoint) names are) or a
    /// `host:port` (as DNS discovery names are).
    pub fn http_health_checks(self, path: impl Into<String>) -> Self {
        let path: String = path.into();
        self.probe_with(move |name: &str| {
            let uri = if name.contains("://") {
                name.to_string()
            } else {
                format!("http://{name}")
            };
            match uri.parse::<http::Uri>() {
                Ok(base) => rampart_health::HttpProbe::builder(base)
                    .path(path.clone())
                    .build()
                    .map_err(|e| tracing::warn!(endpoint = %name, error = %e, "no health probe"))
                    .ok(),
                Err(e) => {
                    tracing::warn!(endpoint = %name, error = %e, "no health probe");
                    None
                }
            }
        })
    }

    /// Adds an endpoint (see [`Endpoint`]: its weight and its own health source).
    pub fn endpoint(mut self, endpoint: Endpoint<S>) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds every endpoint: [`Endpoint`]s, or `(name, service)` pairs.
    pub fn endpoints<I>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Endpoint<S>>,
    {
        self.endpoints.extend(endpoints.into_iter().map(Into::into));
        self
    }

    /// Follows a discovery stream (inserts and removes).
    pub fn discover<D>(mut self, discover: D) -> Self
    where
        D: Discover<Service = S> + Send + Unpin + 'static,
        D::Key: Hash + Eq + Display + Send,
        S: Send + 'static,
        D::Error: Into<BoxError>,
    {
        self.discovers.push(boxed_discover(discover));
        self
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let c = &mut self.settings.config;
        if c.name.is_empty() {
            return Err(ConfigError::new("name", "", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&c.panic_threshold) {
            return Err(ConfigError::new(
                "panic_threshold",
                c.panic_threshold,
                "must be between 0.0 and 1.0",
            ));
        }
        if c.max_retries as usize >= Tried::CAP {
            return Err(ConfigError::new(
                "max_retries",
                c.max_retries,
                "must be at most 7",
            ));
        }
        if c.default_rtt.is_zero() {
            return Err(ConfigError::new(
                "latency_estimate.initial",
                c.default_rtt,
                "must be positive",
            ));
        }
        if c.decay < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "latency_estimate.decay",
                c.decay,
                "must be at least 1 ms",
            ));
        }
        if c.tick.is_zero() {
            return Err(ConfigError::new(
                "maintenance_interval",
                c.tick,
                "must be positive",
            ));
        }
        if let Some(hedge) = &c.hedge {
            hedge.validate()?;
        }
        if c.max_backoff > Duration::from_secs(24 * 60 * 60) {
            return Err(ConfigError::new(
                "max_backoff",
                c.max_backoff,
                "must be at most 24 h",
            ));
        }
        if c.failure_penalty > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "latency_estimate.failure_penalty",
                c.failure_penalty,
                "must be at most 60 s",
            ));
        }
        if let Picker::ConsistentHash { virtual_nodes } = c.picker
            && !(1..=10_000).contains(&virtual_nodes)
        {
            return Err(ConfigError::new(
                "virtual_nodes",
                virtual_nodes,
                "must be between 1 and 10000",
            ));
        }
        c.slow_start = self.slow_start.validated()?;
        for e in &self.endpoints {
            if e.weight == 0 {
                return Err(ConfigError::new(
                    "weight",
                    (e.name.to_string(), e.weight),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }

    /// Validates and starts the balancer. Discovery, active checks and passive detection need
    /// a tokio runtime (call `build` inside one).
    pub fn build(mut self) -> Result<Balance<S, P>, ConfigError>
    where
        S: Send + Sync + 'static,
        P: Send + Sync + 'static,
    {
        self.validate()?;
        let needs_runtime = !self.discovers.is_empty()
            || self.settings.outlier.is_some()
            || self.settings.probe_for.is_some()
            || self
                .endpoints
                .iter()
                .any(|e| !matches!(e.health, HealthSource::None));
        if needs_runtime && tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::new(
                "runtime",
                "none",
                "discovery and health tracking need a tokio runtime: build inside one",
            ));
        }
        Ok(self.settings.start(self.endpoints, self.discovers))
    }

    /// Validates the settings into a [`BalanceLayer`] that builds a balancer over a
    /// discovery stream (endpoints added to this builder are ignored).
    pub fn into_layer(mut self) -> Result<BalanceLayer<P>, ConfigError> {
        self.validate()?;
        Ok(BalanceLayer {
            settings: self.settings,
        })
    }
}

impl<B, P> BalanceBuilder<crate::HttpEndpoint<B>, P>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Adds one [`HttpEndpoint`](crate::HttpEndpoint) per base URI, built from `template`
    /// (timeouts, pool settings), each named by its base URI.
    ///
    /// ```
    /// use rampart_balance::{Balance, HttpEndpoint, ReplayBody};
    /// use http_body_util::Empty;
    /// use bytes::Bytes;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let template = HttpEndpoint::builder("http://127.0.0.1".parse().unwrap());
    /// let balance = Balance::builder::<HttpEndpoint<ReplayBody<Empty<Bytes>>>>()
    ///     .http_endpoints(
    ///         ["http://127.0.0.1:8081".parse().unwrap(), "http://127.0.0.1:8082".parse().unwrap()],
    ///         &template,
    ///     )
    ///     .unwrap()
    ///     .http_health_checks("/healthz")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(balance.snapshot().total, 2);
    /// # }
    /// ```
    pub fn http_endpoints<I>(
        mut self,
        bases: I,
        template: &crate::HttpEndpointBuilder,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = http::Uri>,
    {
        for base in bases {
            let endpoint: crate::HttpEndpoint<B> = template.clone().base(base).build()?;
            let name = endpoint.name_arc();
            self = self.endpoint(Endpoint::new(name, endpoint));
        }
        Ok(self)
    }
}
