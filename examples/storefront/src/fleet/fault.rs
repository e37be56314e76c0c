//! Fault injection: what a replica is told to do, and the registry the admin API writes.
//!
//! Every replica of the simulated fleet watches its own [`FaultSpec`] in a [`FaultRegistry`];
//! the admin API (`POST /admin/faults`) changes them through [`FaultRegistry::apply`], which
//! validates a [`FaultRequest`] and reports precisely what was wrong with a bad one.
//!
//! ```
//! use storefront::fleet::{Fault, FaultRegistry, FaultRequest, Region, ServiceName};
//!
//! let registry = FaultRegistry::new(3, Default::default());
//! let req: FaultRequest = serde_json::from_str(
//!     r#"{"service": "catalog", "region": "us-east", "replica": "*", "fault": "down"}"#,
//! ).unwrap();
//! let changed = registry.apply(&req.validate(3).unwrap());
//! assert_eq!(changed.len(), 3);
//! let id = storefront::fleet::ReplicaId::new(ServiceName::Catalog, Region::UsEast, 1);
//! assert_eq!(registry.get(id).fault, Fault::Down);
//! assert!(FaultRequest::parse(br#"{"service": "cart", "region": "*", "replica": 0, "fault": "down"}"#, 3).is_err());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One of the three simulated services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    /// Products and search.
    Catalog,
    /// Takes orders.
    Checkout,
    /// Related products.
    Recommendations,
}

impl ServiceName {
    /// All services, in display order.
    pub const ALL: [ServiceName; 3] = [
        ServiceName::Catalog,
        ServiceName::Checkout,
        ServiceName::Recommendations,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Catalog => "catalog",
            ServiceName::Checkout => "checkout",
            ServiceName::Recommendations => "recommendations",
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceName {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ServiceName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or(())
    }
}

/// One of the two simulated regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Region {
    /// The primary region.
    #[serde(rename = "us-east")]
    UsEast,
    /// The secondary region.
    #[serde(rename = "eu-west")]
    EuWest,
}

impl Region {
    /// Both regions, primary first.
    pub const ALL: [Region; 2] = [Region::UsEast, Region::EuWest];

    /// `us-east` or `eu-west`.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::UsEast => "us-east",
            Region::EuWest => "eu-west",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Region {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Region::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// Names one replica: service, region, index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ReplicaId {
    /// The service.
    pub service: ServiceName,
    /// The region.
    pub region: Region,
    /// The replica index within the region, from 0.
    pub index: usize,
}

impl ReplicaId {
    /// A replica id.
    pub const fn new(service: ServiceName, region: Region, index: usize) -> Self {
        Self {
            service,
            region,
            index,
        }
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.service, self.region, self.index)
    }
}

/// What a replica does with its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Behaves.
    #[default]
    None,
    /// The listener is closed: connections are refused (the port stays reserved).
    Down,
    /// Accepts requests and never answers them.
    Hang,
    /// Answers after an added latency.
    Slow,
    /// Answers every request with a 500.
    Error,
    /// Answers a share of requests with a 500.
    Flaky,
    /// Answers every request but its health checks with `429 Too Many Requests` and
    /// `Retry-After` (a replica asking its callers to back off).
    #[serde(rename = "rate-limited")]
    RateLimited,
    /// Answers its health checks and holds every other request until the fault is lifted
    /// (then answers `503`): a request stuck inside the replica while it still looks healthy.
    Hold,
}

impl Fault {
    /// Every fault, in the admin API's order.
    pub const ALL: [Fault; 8] = [
        Fault::None,
        Fault::Down,
        Fault::Hang,
        Fault::Slow,
        Fault::Error,
        Fault::Flaky,
        Fault::RateLimited,
        Fault::Hold,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Down => "down",
            Fault::Hang => "hang",
            Fault::Slow => "slow",
            Fault::Error => "error",
            Fault::Flaky => "flaky",
            Fault::RateLimited => "rate-limited",
            Fault::Hold => "hold",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Fault {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Fault::ALL.into_iter().find(|f| f.as_str() == s).ok_or(())
    }
}

/// The defaults for the tunable faults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultDefaults {
    /// Latency added by `slow`.
    pub slow_latency: Duration,
    /// Share of 500s answered by `flaky`, in `0.0..=1.0`.
    pub flaky_error_rate: f64,
    /// `Retry-After` of `rate-limited`'s 429s.
    pub retry_after: Duration,
}

impl Default for FaultDefaults {
    fn default() -> Self {
        Self {
            slow_latency: Duration::from_millis(1500),
            flaky_error_rate: 0.5,
            retry_after: Duration::from_secs(2),
        }
    }
}

/// A fault with its parameters, as one replica sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FaultSpec {
    /// The fault.
    pub fault: Fault,
    /// Latency added when `slow`.
    #[serde(with = "humantime_serde_ms")]
    pub latency: Duration,
    /// Share of 500s when `flaky`.
    pub error_rate: f64,
    /// `Retry-After` when `rate-limited` (whole seconds).
    #[serde(with = "humantime_serde_ms")]
    pub retry_after: Duration,
}

mod humantime_serde_ms {
    use std::time::Duration;
    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl FaultSpec {
    /// No fault, with the given defaults for later.
    pub fn healthy(defaults: FaultDefaults) -> Self {
        Self {
            fault: Fault::None,
            latency: defaults.slow_latency,
            error_rate: defaults.flaky_error_rate,
            retry_after: defaults.retry_after,
        }
    }
}

/// Which replicas a fault request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultTarget {
    /// The service.
    pub service: ServiceName,
    /// One region, or all (`None`).
    pub region: Option<Region>,
    /// One replica index, or all (`None`).
    pub replica: Option<usize>,
}

impl FaultTarget {
    /// Whether `id` is targeted.
    pub fn matches(&self, id: ReplicaId) -> bool {
        id.service == self.service
            && self.region.is_none_or(|r| r == id.region)
            && self.replica.is_none_or(|i| i == id.index)
    }
}

/// A validated fault request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultCommand {
    /// Whom.
    pub target: FaultTarget,
    /// The fault.
    pub fault: Fault,
    /// Override of the `slow` latency.
    pub latency: Option<Duration>,
    /// Override of the `flaky` error rate.
    pub error_rate: Option<f64>,
    /// Override of the `rate-limited` `Retry-After`.
    pub retry_after: Option<Duration>,
}

/// The admin API's JSON body, before validation.
///
/// `{"service": "catalog", "region": "us-east" | "eu-west" | "*", "replica": 0 | 1 | 2 | "*",
/// "fault": "none" | "down" | "hang" | "slow" | "error" | "flaky" | "rate-limited" | "hold"}`,
/// with optional `"latency": "800ms"` (for `slow`, at most one hour), `"error_rate": 0.3`
/// (for `flaky`) and `"retry_after": "2s"` (for `rate-limited`, whole seconds from 1 s to
/// one hour). A key left out takes its default (`"*"` for `region` and `replica`); an unknown
/// key or an explicit `null` is refused, naming the key, so that a typo never widens the
/// target (`"regoin": "us-east"` would otherwise hit every region).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// Service name.
    pub service: serde_json::Value,
    /// Region or `"*"` (`None`, left out: `"*"`; `Some(Null)` is refused).
    #[serde(default, deserialize_with = "present")]
    pub region: Option<serde_json::Value>,
    /// Replica index or `"*"` (`None`, left out: `"*"`; `Some(Null)` is refused).
    #[serde(default, deserialize_with = "present")]
    pub replica: Option<serde_json::Value>,
    /// Fault name.
    pub fault: serde_json::Value,
    /// Latency for `slow`, humantime (`"800ms"`).
    #[serde(default, deserialize_with = "present")]
    pub latency: Option<serde_json::Value>,
    /// Error share for `flaky`, a number in `0.0..=1.0`.
    #[serde(default, deserialize_with = "present")]
    pub error_rate: Option<serde_json::Value>,
    /// `Retry-After` for `rate-limited`, humantime in whole seconds (`"2s"`).
    #[serde(default, deserialize_with = "present")]
    pub retry_after: Option<serde_json::Value>,
}

/// The longest latency a `slow` fault may add.
const MAX_LATENCY: Duration = Duration::from_secs(3600);

/// A key that is present keeps its value, `null` included (serde maps `null` to `None` for an
/// `Option` otherwise, which would make `null` mean "left out").
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// Refuses an explicit `null`, naming the key.
fn not_null<'a>(
    key: &str,
    value: &'a serde_json::Value,
) -> Result<&'a serde_json::Value, FaultRequestError> {
    if value.is_null() {
        Err(FaultRequestError(format!(
            "`{key}` must not be null (leave the key out to use its default)"
        )))
    } else {
        Ok(value)
    }
}

/// Why a fault request was refused; the message says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRequestError(pub String);

impl fmt::Display for FaultRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FaultRequestError {}

fn names<T: fmt::Display>(all: &[T]) -> String {
    all.iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl FaultRequest {
    /// Parses and validates a JSON body for a fleet of `replicas` per region.
    pub fn parse(body: &[u8], replicas: usize) -> Result<FaultCommand, FaultRequestError> {
        let req: FaultRequest = serde_json::from_slice(body)
            .map_err(|e| FaultRequestError(format!("invalid JSON body: {e}")))?;
        req.validate(replicas)
    }

    /// Validates the request for a fleet of `replicas` per region.
    pub fn validate(&self, replicas: usize) -> Result<FaultCommand, FaultRequestError> {
        let service = match not_null("service", &self.service)? {
            serde_json::Value::String(s) => s.parse::<ServiceName>().map_err(|()| {
                FaultRequestError(format!(
                    "unknown service \"{s}\": expected one of {}",
                    names(&ServiceName::ALL)
                ))
            })?,
            other => {
                return Err(FaultRequestError(format!(
                    "`service` must be a string, got {other}"
                )));
            }
        };
        let region = match self
            .region
            .as_ref()
            .map(|v| not_null("region", v))
            .transpose()?
        {
            None => None,
            Some(serde_json::Value::String(s)) if s == "*" => None,
            Some(serde_json::Value::String(s)) => Some(s.parse::<Region>().map_err(|()| {
                FaultRequestError(format!(
                    "unknown region \"{s}\": expected one of {} or \"*\"",
                    names(&Region::ALL)
                ))
            })?),
            Some(other) => {
                return Err(FaultRequestError(format!(
                    "`region` must be a string, got {other}"
                )));
            }
        };
        let replica = match self
            .replica
            .as_ref()
            .map(|v| not_null("replica", v))
            .transpose()?
        {
            None => None,
            Some(serde_json::Value::String(s)) if s == "*" => None,
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(i) if (i as usize) < replicas => Some(i as usize),
                _ => {
                    return Err(FaultRequestError(format!(
                        "unknown replica {n}: each region has replicas 0 to {} (or \"*\")",
                        replicas.saturating_sub(1)
                    )));
                }
            },
            Some(other) => {
                return Err(FaultRequestError(format!(
                    "unknown replica {other}: expected a number from 0 to {} or \"*\"",
                    replicas.saturating_sub(1)
                )));
            }
        };
        let fault = match not_null("fault", &self.fault)? {
            serde_json::Value::String(s) => s.parse::<Fault>().map_err(|()| {
                FaultRequestError(format!(
                    "unknown fault \"{s}\": expected one of {}",
                    names(&Fault::ALL)
                ))
            })?,
            other => {
                return Err(FaultRequestError(format!(
                    "`fault` must be a string, got {other}"
                )));
            }
        };
        let latency = match self
            .latency
            .as_ref()
            .map(|v| not_null("latency", v))
            .transpose()?
        {
            None => None,
            Some(serde_json::Value::String(s)) => {
                let d = humantime::parse_duration(s).map_err(|e| {
                    FaultRequestError(format!("invalid `latency` \"{s}\": {e} (e.g. \"800ms\")"))
                })?;
                if d > MAX_LATENCY {
                    return Err(FaultRequestError(format!(
                        "invalid `latency` \"{s}\": at most {}",
                        humantime::format_duration(MAX_LATENCY)
                    )));
                }
                Some(d)
            }
            Some(other) => {
                return Err(FaultRequestError(format!(
                    "`latency` must be a string such as \"800ms\", got {other}"
                )));
            }
        };
        let error_rate = match self
            .error_rate
            .as_ref()
            .map(|v| not_null("error_rate", v))
            .transpose()?
        {
            None => None,
            Some(serde_json::Value::Number(n)) => match n.as_f64() {
                Some(r) if (0.0..=1.0).contains(&r) => Some(r),
                _ => {
                    return Err(FaultRequestError(format!(
                        "invalid `error_rate` {n}: must be between 0.0 and 1.0"
                    )));
                }
            },
            Some(other) => {
                return Err(FaultRequestError(format!(
                    "`error_rate` must be a number between 0.0 and 1.0, got {other}"
                )));
            }
        };
        let retry_after = match self
            .retry_after
            .as_ref()
            .map(|v| not_null("retry_after", v))
            .transpose()?
        {
            None => None,
            Some(serde_json::Value::String(s)) => {
                let d = humantime::parse_duration(s).map_err(|e| {
                    FaultRequestError(format!("invalid `retry_after` \"{s}\": {e} (e.g. \"2s\")"))
                })?;
                if d < Duration::from_secs(1) || d > MAX_LATENCY || d.subsec_nanos() != 0 {
                    return Err(FaultRequestError(format!(
                        "invalid `retry_after` \"{s}\": whole seconds from 1s to {}",
                        humantime::format_duration(MAX_LATENCY)
                    )));
                }
                Some(d)
            }
            Some(other) => {
                return Err(FaultRequestError(format!(
                    "`retry_after` must be a string such as \"2s\", got {other}"
                )));
            }
        };
        Ok(FaultCommand {
            target: FaultTarget {
                service,
                region,
                replica,
            },
            fault,
            latency,
            error_rate,
            retry_after,
        })
    }
}

/// The faults of every replica, shared by the fleet and the admin API. Cloning shares it.
#[derive(Debug, Clone)]
pub struct FaultRegistry {
    inner: Arc<RegistryInner>,
}

#[derive(Debug)]
struct RegistryInner {
    replicas_per_region: usize,
    defaults: FaultDefaults,
    slots: Mutex<BTreeMap<ReplicaId, watch::Sender<FaultSpec>>>,
}

impl FaultRegistry {
    /// A registry for `replicas_per_region` replicas of each service in each region, all
    /// healthy.
    pub fn new(replicas_per_region: usize, defaults: FaultDefaults) -> Self {
        let mut slots = BTreeMap::new();
        for service in ServiceName::ALL {
            for region in Region::ALL {
                for index in 0..replicas_per_region {
                    let (tx, _) = watch::channel(FaultSpec::healthy(defaults));
                    slots.insert(ReplicaId::new(service, region, index), tx);
                }
            }
        }
        Self {
            inner: Arc::new(RegistryInner {
                replicas_per_region,
                defaults,
                slots: Mutex::new(slots),
            }),
        }
    }

    /// Replicas per region.
    pub fn replicas_per_region(&self) -> usize {
        self.inner.replicas_per_region
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<ReplicaId, watch::Sender<FaultSpec>>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A subscription to one replica's fault (healthy forever if `id` is unknown).
    pub fn subscribe(&self, id: ReplicaId) -> watch::Receiver<FaultSpec> {
        match self.slots().get(&id) {
            Some(tx) => tx.subscribe(),
            None => watch::channel(FaultSpec::healthy(self.inner.defaults)).1,
        }
    }

    /// One replica's current fault.
    pub fn get(&self, id: ReplicaId) -> FaultSpec {
        self.slots()
            .get(&id)
            .map_or(FaultSpec::healthy(self.inner.defaults), |tx| *tx.borrow())
    }

    /// Applies a validated command; returns the replicas it changed.
    pub fn apply(&self, cmd: &FaultCommand) -> Vec<ReplicaId> {
        let spec = FaultSpec {
            fault: cmd.fault,
            latency: cmd.latency.unwrap_or(self.inner.defaults.slow_latency),
            error_rate: cmd
                .error_rate
                .unwrap_or(self.inner.defaults.flaky_error_rate),
            retry_after: cmd.retry_after.unwrap_or(self.inner.defaults.retry_after),
        };
        let mut changed = Vec::new();
        for (id, tx) in self.slots().iter() {
            if cmd.target.matches(*id) {
                tx.send_replace(spec);
                changed.push(*id);
                tracing::info!(replica = %id, fault = %spec.fault, "fault injected");
            }
        }
        changed
    }

    /// Heals every replica.
    pub fn reset(&self) {
        let healthy = FaultSpec::healthy(self.inner.defaults);
        for tx in self.slots().values() {
            tx.send_if_modified(|s| {
                let changed = *s != healthy;
                *s = healthy;
                changed
            });
        }
        tracing::info!("all faults reset");
    }

    /// Every replica's current fault.
    pub fn snapshot(&self) -> Vec<(ReplicaId, FaultSpec)> {
        self.slots()
            .iter()
            .map(|(id, tx)| (*id, *tx.borrow()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FaultCommand, FaultRequestError> {
        FaultRequest::parse(s.as_bytes(), 3)
    }

    #[test]
    fn bad_requests_name_what_was_wrong() {
        let e = parse(r#"{"service":"cart","region":"*","replica":0,"fault":"down"}"#).unwrap_err();
        assert!(e.0.contains("unknown service \"cart\""), "{e}");
        let e = parse(r#"{"service":"catalog","region":"mars","replica":0,"fault":"down"}"#)
            .unwrap_err();
        assert!(e.0.contains("unknown region \"mars\""), "{e}");
        let e =
            parse(r#"{"service":"catalog","region":"*","replica":3,"fault":"down"}"#).unwrap_err();
        assert!(e.0.contains("unknown replica 3"), "{e}");
        let e = parse(r#"{"service":"catalog","region":"*","replica":"x","fault":"down"}"#)
            .unwrap_err();
        assert!(e.0.contains("unknown replica \"x\""), "{e}");
        let e =
            parse(r#"{"service":"catalog","region":"*","replica":0,"fault":"melt"}"#).unwrap_err();
        assert!(e.0.contains("unknown fault \"melt\""), "{e}");
        let e = parse("nope").unwrap_err();
        assert!(e.0.contains("invalid JSON"), "{e}");
    }

    #[test]
    fn unknown_keys_nulls_and_huge_latencies_are_refused() {
        let e = parse(
            r#"{"service":"recommendations","regoin":"us-east","replcia":0,"fault":"error"}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("unknown field `regoin`"), "{e}");
        for key in [
            "region",
            "replica",
            "latency",
            "error_rate",
            "service",
            "fault",
        ] {
            let mut body = serde_json::json!(
                {"service":"catalog","region":"us-east","replica":0,"fault":"slow"}
            );
            body[key] = serde_json::Value::Null;
            let e = parse(&body.to_string()).unwrap_err();
            assert!(
                e.0.contains(&format!("`{key}` must not be null")),
                "{key}: {e}"
            );
        }
        let e = parse(r#"{"service":"catalog","fault":"slow","latency":"2h"}"#).unwrap_err();
        assert!(e.0.contains("at most 1h"), "{e}");
        let ok = parse(r#"{"service":"catalog","fault":"slow","latency":"1h"}"#).unwrap();
        assert_eq!(ok.latency, Some(Duration::from_secs(3600)));
        let e = parse(r#"{"service":"catalog","fault":"flaky","error_rate":"0.5"}"#).unwrap_err();
        assert!(e.0.contains("`error_rate` must be a number"), "{e}");
    }

    #[test]
    fn wildcards_and_reset() {
        let reg = FaultRegistry::new(3, FaultDefaults::default());
        let cmd =
            parse(r#"{"service":"checkout","region":"*","replica":"*","fault":"error"}"#).unwrap();
        assert_eq!(reg.apply(&cmd).len(), 6);
        let cmd =
            parse(r#"{"service":"catalog","region":"eu-west","replica":2,"fault":"slow","latency":"10ms"}"#)
                .unwrap();
        assert_eq!(
            reg.apply(&cmd),
            vec![ReplicaId::new(ServiceName::Catalog, Region::EuWest, 2)]
        );
        let spec = reg.get(ReplicaId::new(ServiceName::Catalog, Region::EuWest, 2));
        assert_eq!(spec.fault, Fault::Slow);
        assert_eq!(spec.latency, Duration::from_millis(10));
        reg.reset();
        assert!(reg.snapshot().iter().all(|(_, s)| s.fault == Fault::None));
    }
}
