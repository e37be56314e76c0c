//! The one place where the shop's upstream stack is assembled, per service:
//!
//! ```text
//! CircuitBreaker (rampart-breaker) ........ fail fast while the service as a whole is sick
//!   └── Gslb (rampart-gslb) ............... us-east (priority 0), then eu-west (priority 1)
//!         └── Balance (rampart-balance) ... the region's replicas: active checks (GET /healthz),
//!               │                           passive ejection, P2C, retry on another replica,
//!               │                           hedged reads, `Retry-After` backpressure
//!               └── HttpEndpoint .......... pooled hyper-util client, per-attempt timeout
//! ```
//!
//! The responses are then read in full (they are small JSON documents), so pages see plain
//! bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use rampart::balance::{Balance, BalanceHandle, Hedge, HttpEndpoint, HttpPolicy};
use rampart::breaker::{
    BreakerHandle, BreakerSnapshot, BreakerState, CircuitBreakerLayer, Policy, SlidingWindow,
};
use rampart::gslb::replay::HttpReplay;
use rampart::gslb::{Gslb, GslbConfig, GslbHandle, Site, SiteSnapshot, Sites};
use rampart::health::{BoxError, CheckerConfig, ConfigError, Health, OutlierConfig};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use super::upstream::{
    BreakerStatus, ReplicaStatus, ServiceStatus, SiteStatus, StackStatus, Upstream, UpstreamBody,
};
use crate::config::ShopConfig;
use crate::fleet::{CatalogProtocol, FaultRegistry, Region, ReplicaId, ServiceName, UpstreamDial};

/// Largest upstream body the shop reads.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Largest request body the GSLB keeps a copy of for a retry on the next site.
const MAX_REPLAY: u64 = 64 * 1024;

/// Builds the upstream for `service` over `addrs` (region → replica addresses).
pub(crate) fn build(
    service: ServiceName,
    addrs: &BTreeMap<Region, Vec<SocketAddr>>,
    cfg: &ShopConfig,
    faults: Option<FaultRegistry>,
) -> Result<Upstream, ConfigError> {
    let checks = CheckerConfig::builder()
        .interval(cfg.health_interval)
        .unhealthy_interval(cfg.health_interval)
        .timeout(cfg.health_timeout)
        .fall(2)
        .rise(2)
        .build()?;
    // One replica of three may be ejected at once (a strict 10 % would never eject one).
    let outliers = OutlierConfig::builder()
        .consecutive_failures(3)
        .base_ejection_time(cfg.ejection_time)
        .max_ejection_time(cfg.ejection_time * 10)
        .max_ejection_percent(34.0)
        .build()?;
    let mut sites = Sites::builder();
    let mut regions = Vec::new();
    for (priority, region) in Region::ALL.iter().enumerate() {
        let Some(list) = addrs.get(region).filter(|l| !l.is_empty()) else {
            continue;
        };
        let mut balance = Balance::builder()
            .name(format!("{}-{}", service.as_str(), region.as_str()))
            .policy(HttpPolicy::new())
            .health_checks(checks.clone())
            .http_health_checks("/healthz")
            .outlier_detection(outliers.clone())
            .max_retries(2);
        // Reads are hedged against a slow replica (checkout's orders are not: one attempt at
        // a time is enough for a write). A replica answering 429 or 503 with `Retry-After` is
        // left out of picking for that long (the balancer's default backpressure) and the
        // read is retried on a sibling.
        if let Some(hedge) = hedge_for(service, cfg) {
            balance = balance.hedge(hedge);
        }
        for addr in list {
            // The catalog may speak h2c or HTTPS (`[fleet] catalog_protocol`); its health
            // checks then dial the way its endpoints do.
            let dial = match service {
                ServiceName::Catalog => cfg.catalog_dial.clone(),
                _ => UpstreamDial::default(),
            };
            let base: Uri = format!("{}://{addr}", dial.scheme())
                .parse()
                .map_err(|_| ConfigError::new("upstreams", addr, "not a valid address"))?;
            let template = dial
                .endpoint(base.clone())?
                .connect_timeout(cfg.upstream_timeout.min(Duration::from_secs(1)))
                .request_timeout(cfg.upstream_timeout);
            let endpoint = template.clone().build::<UpstreamBody>()?;
            balance = if dial.protocol() == CatalogProtocol::Http1 {
                balance.endpoint(rampart::balance::Endpoint::new(addr.to_string(), endpoint))
            } else {
                let probe = template.http_probe(base).path("/healthz").build()?;
                balance.endpoint(
                    rampart::balance::Endpoint::new(addr.to_string(), endpoint).probe(probe),
                )
            };
        }
        let balance: Balance<HttpEndpoint<UpstreamBody>, HttpPolicy> = balance.build()?;
        regions.push(RegionStack {
            region: *region,
            balance: balance.handle(),
            addrs: list.clone(),
        });
        sites = sites.site(
            Site::new(region.as_str(), balance)
                .region(region.as_str())
                .priority(priority as u32)
                .reported(),
        );
    }
    let config = GslbConfig::<Request<UpstreamBody>>::builder()
        .name(service.as_str())
        .failback_hold(cfg.failback_hold)
        .retries(1)
        .replay(HttpReplay::new(MAX_REPLAY))
        .build()?;
    let gslb = Gslb::new(config, sites.build()?);
    let gslb_handle = gslb.handle();
    let breaker = CircuitBreakerLayer::http(breaker_policy(service, cfg)?);
    let breaker_handle = breaker.handle().clone();
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .service(gslb)
        .and_then(read_body);
    let status = Arc::new(ServiceStack {
        service,
        regions,
        gslb: gslb_handle,
        breaker: breaker_handle,
        faults,
        rates: Mutex::new(BTreeMap::new()),
    });
    Ok(Upstream::new(
        service,
        BoxCloneSyncService::new(svc),
        status,
    ))
}

async fn read_body(resp: Response<Incoming>) -> Result<Response<Bytes>, BoxError> {
    let (head, body) = resp.into_parts();
    let bytes = Limited::new(body, MAX_BODY).collect().await?.to_bytes();
    Ok(Response::from_parts(head, bytes))
}

/// The hedge of `service`'s reads: after the `hedge_quantile` of the latencies each region's
/// balancer observed over the last 30 s, between `hedge_floor` and `hedge_cap`; none for
/// checkout, or when `hedge_quantile` is 0.
fn hedge_for(service: ServiceName, cfg: &ShopConfig) -> Option<Hedge> {
    (service != ServiceName::Checkout && cfg.hedge_quantile > 0.0).then(|| {
        Hedge::percentile(cfg.hedge_quantile)
            .floor(cfg.hedge_floor)
            .cap(cfg.hedge_cap)
            .window(Duration::from_secs(30))
    })
}

/// The breaker of one service: over the last 20 calls (at least 5), a failure rate of 50 %
/// or 5 failures in a row open it for `breaker_open_for`, backing off to 6× that.
fn breaker_policy(service: ServiceName, cfg: &ShopConfig) -> Result<Policy, ConfigError> {
    Policy::builder()
        .name(service.as_str())
        .sliding_window(SlidingWindow::count(20))
        .minimum_calls(5)
        .failure_rate_threshold(50.0)
        .consecutive_failures(5)
        .open_duration(cfg.breaker_open_for)
        .max_open_duration(cfg.breaker_open_for * 6)
        .permitted_calls_in_half_open(2)
        .build()
}

struct RegionStack {
    region: Region,
    balance: BalanceHandle,
    addrs: Vec<SocketAddr>,
}

/// The handles of one service's layers, read by `/status`.
struct ServiceStack {
    service: ServiceName,
    regions: Vec<RegionStack>,
    gslb: GslbHandle,
    breaker: BreakerHandle,
    faults: Option<FaultRegistry>,
    /// Endpoint name → (attempts at the last sample, when, attempts per second).
    rates: Mutex<BTreeMap<String, (u64, Instant, f64)>>,
}

impl StackStatus for ServiceStack {
    fn sample(&self) {
        let mut rates = self.rates.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        for r in &self.regions {
            for ep in r.balance.snapshot().endpoints {
                let entry = rates
                    .entry(ep.name.clone())
                    .or_insert((ep.requests, now, 0.0));
                let secs = now.duration_since(entry.1).as_secs_f64();
                if secs > 0.0 {
                    *entry = (
                        ep.requests,
                        now,
                        ep.requests.saturating_sub(entry.0) as f64 / secs,
                    );
                }
            }
        }
    }

    fn status(&self) -> ServiceStatus {
        let rates = self.rates.lock().unwrap_or_else(PoisonError::into_inner);
        let gslb = self.gslb.snapshot();
        let breaker = self.breaker.snapshot();
        let detail = breaker_detail(&breaker);
        let sites = self
            .regions
            .iter()
            .enumerate()
            .map(|(priority, r)| {
                let snap = r.balance.snapshot();
                let site = gslb.site(r.region.as_str());
                let replicas = r
                    .addrs
                    .iter()
                    .enumerate()
                    .map(|(index, addr)| {
                        let name = addr.to_string();
                        let ep = snap.endpoint(&name);
                        ReplicaStatus {
                            index,
                            addr: name.clone(),
                            health: ep.map_or(Health::Unknown, |e| e.health).as_str().to_owned(),
                            ejected: ep.is_some_and(|e| e.ejected),
                            outstanding: ep.map_or(0, |e| e.outstanding),
                            requests_per_sec: rates.get(&name).map_or(0.0, |x| x.2),
                            fault: self.faults.as_ref().map(|f| {
                                f.get(ReplicaId::new(self.service, r.region, index))
                                    .fault
                                    .to_string()
                            }),
                        }
                    })
                    .collect();
                let traffic_share = site.map_or(0.0, |s| s.traffic_share);
                SiteStatus {
                    region: r.region.to_string(),
                    priority: priority as u32,
                    health: site.map_or_else(|| "unknown".to_owned(), site_health),
                    traffic_share,
                    panic: snap.panic,
                    replicas,
                    balancer: snap.name.to_string(),
                    routable: site.is_some_and(|s| s.routable),
                    observed_share: site.map_or(0.0, |s| s.observed_share),
                    held_for_failback: site.is_some_and(SiteSnapshot::held_for_failback),
                    failback_in_secs: site
                        .filter(|s| s.held_for_failback())
                        .and_then(|s| s.failback_in)
                        .map(|d| d.as_secs_f64()),
                    panic_note: panic_note(snap.panic, traffic_share),
                }
            })
            .collect();
        ServiceStatus {
            service: self.service,
            breaker: breaker.state.as_str().to_owned(),
            breaker_detail: detail,
            mode: gslb.mode.as_str().to_owned(),
            sites,
            breaker_status: BreakerStatus {
                state: breaker.state.as_str().to_owned(),
                recorded_state: breaker.recorded_state.as_str().to_owned(),
                calls: breaker.calls,
                failures: breaker.failures,
                minimum_calls: breaker.minimum_calls,
                below_minimum: breaker.below_minimum(),
                failure_rate: breaker.failure_rate,
                awaiting_trial: breaker.awaiting_trial(),
                retry_after_secs: breaker.retry_after.map(|d| d.as_secs_f64()),
                half_open_in_flight: breaker.half_open_in_flight,
                half_open_time_left_secs: breaker.half_open_time_left.map(|d| d.as_secs_f64()),
            },
        }
    }
}

/// What the breaker's state means right now, in words: the window against its minimum, the
/// time to the next trial, or the trials' progress. Time-driven transitions are reported as
/// the next call will see them (the breaker reads its state lazily).
fn breaker_detail(b: &BreakerSnapshot) -> String {
    let window = if b.calls == 0 {
        "no calls in the window".to_owned()
    } else if b.below_minimum() {
        format!(
            "{}/{} failed, below the minimum of {}",
            b.failures, b.calls, b.minimum_calls
        )
    } else {
        format!(
            "{}/{} failed ({:.0}%)",
            b.failures,
            b.calls,
            b.failure_rate.unwrap_or(0.0)
        )
    };
    match b.state {
        BreakerState::Closed => window,
        BreakerState::Open => match b.retry_after {
            Some(left) => format!("next trial call in {:.1}s", left.as_secs_f64()),
            None => "the trial calls got no verdict in time: the next call re-opens it".to_owned(),
        },
        BreakerState::HalfOpen if b.awaiting_trial() => {
            "open duration over: the next call is a trial".to_owned()
        }
        BreakerState::HalfOpen => {
            let mut d = format!(
                "trial calls: {} in flight, {} passed, {} failed (of {})",
                b.half_open_in_flight,
                b.half_open_successes,
                b.half_open_failures,
                b.half_open_permits
            );
            if let Some(left) = b.half_open_time_left {
                d.push_str(&format!("; verdict due within {:.0}s", left.as_secs_f64()));
            }
            d
        }
        BreakerState::ForcedOpen => "forced open by an operator".to_owned(),
        BreakerState::Disabled => "disabled: every call passes, nothing is recorded".to_owned(),
        BreakerState::MetricsOnly => format!("metrics only, never opens; {window}"),
    }
}

/// A site's health in words. A site whose replicas are healthy again but which waits out the
/// failback hold is "healthy, held for failback", not down.
fn site_health(s: &SiteSnapshot) -> String {
    if s.drained {
        "drained".to_owned()
    } else if s.held_for_failback() {
        let left = s.failback_in.map_or(0, |d| d.as_secs_f64().ceil() as u64);
        let what = if s.observed_share >= 0.999 {
            "healthy".to_owned()
        } else {
            format!("{:.0}% healthy", s.observed_share * 100.0)
        };
        format!("{what}, held for failback, {left} s left")
    } else if !s.routable {
        "down".to_owned()
    } else if s.observed_share >= 0.999 {
        "healthy".to_owned()
    } else {
        format!("degraded ({:.0}% healthy)", s.observed_share * 100.0)
    }
}

/// Panic mode (too few healthy replicas: the site's balancer spreads requests over all of
/// them) explained where it matters, and left out on a site that takes no traffic (there it
/// only says what would happen to requests that are not being sent).
fn panic_note(panic: bool, traffic_share: f64) -> Option<String> {
    (panic && traffic_share > 0.0).then(|| {
        "panic mode: too few healthy replicas, requests spread over all of them".to_owned()
    })
}
