//! The one place where the shop's upstream stack is assembled.
//!
//! `CircuitBreaker` (rampart-breaker) over the transport. The transport is, for now, a plain
//! hyper-util client that tries the primary region's replicas in turn, then the secondary's,
//! with a per-attempt timeout (to be replaced by `Gslb` → `Balance` → `HttpEndpoint`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart::breaker::{BreakerHandle, CircuitBreakerLayer, Policy, SlidingWindow};
use rampart::health::{BoxError, ConfigError, NeverReached};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::upstream::{
    ReplicaStatus, ServiceStatus, SiteStatus, StatusProbe, Upstream, UpstreamBody,
};
use crate::config::ShopConfig;
use crate::fleet::{FaultRegistry, Region, ReplicaId, ServiceName};

/// Largest upstream body the shop reads.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Per-replica counters kept by the shop's side of the connection.
#[derive(Debug)]
pub(crate) struct EndpointStats {
    pub(crate) addr: SocketAddr,
    pub(crate) outstanding: AtomicU64,
    pub(crate) sent: AtomicU64,
    /// 0 unknown, 1 healthy, 2 unhealthy (last attempt's outcome).
    last: AtomicU8,
    rate: Mutex<(Instant, u64, f64)>,
}

impl EndpointStats {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            outstanding: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            last: AtomicU8::new(0),
            rate: Mutex::new((Instant::now(), 0, 0.0)),
        }
    }

    /// Requests per second since the previous reading at least a second ago.
    pub(crate) fn rate(&self) -> f64 {
        let sent = self.sent.load(Ordering::Relaxed);
        let mut r = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = r.0.elapsed();
        if elapsed >= Duration::from_secs(1) {
            r.2 = (sent - r.1) as f64 / elapsed.as_secs_f64();
            *r = (Instant::now(), sent, r.2);
        }
        r.2
    }
}

/// Guard that counts one request in flight.
struct InFlight<'a>(&'a EndpointStats);

impl<'a> InFlight<'a> {
    fn start(s: &'a EndpointStats) -> Self {
        s.outstanding.fetch_add(1, Ordering::Relaxed);
        s.sent.fetch_add(1, Ordering::Relaxed);
        Self(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

type Sites = Vec<(Region, Vec<Arc<EndpointStats>>)>;

/// Builds the upstream for `service` over `addrs` (region → replica addresses).
pub(crate) fn build(
    service: ServiceName,
    addrs: &BTreeMap<Region, Vec<SocketAddr>>,
    cfg: &ShopConfig,
    faults: Option<FaultRegistry>,
) -> Result<Upstream, ConfigError> {
    let sites: Arc<Sites> = Arc::new(
        Region::ALL
            .iter()
            .filter_map(|r| addrs.get(r).map(|a| (*r, a)))
            .map(|(r, a)| {
                (
                    r,
                    a.iter().map(|x| Arc::new(EndpointStats::new(*x))).collect(),
                )
            })
            .collect(),
    );
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(cfg.upstream_timeout));
    connector.set_nodelay(true);
    let client: Client<HttpConnector, UpstreamBody> =
        Client::builder(TokioExecutor::new()).build(connector);
    let rr = Arc::new(AtomicUsize::new(0));
    let timeout = cfg.upstream_timeout;
    let call_sites = sites.clone();
    let svc = tower::service_fn(move |req: Request<UpstreamBody>| {
        let client = client.clone();
        let sites = call_sites.clone();
        let start = rr.fetch_add(1, Ordering::Relaxed);
        async move { plain_call(&client, &sites, start, timeout, req).await }
    });
    let breaker = CircuitBreakerLayer::http(breaker_policy(service, cfg)?);
    let handle = breaker.handle().clone();
    let svc = ServiceBuilder::new().layer(breaker).service(svc);
    let probe_sites = sites;
    let probe: StatusProbe = Arc::new(move || {
        let mut s = status(service, &probe_sites, faults.as_ref());
        (s.breaker, s.breaker_detail) = breaker_status(&handle);
        s
    });
    Ok(Upstream::new(service, BoxCloneSyncService::new(svc), probe))
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

fn breaker_status(handle: &BreakerHandle) -> (String, String) {
    let snap = handle.snapshot();
    let mut detail = format!("{} calls, {} failed", snap.calls, snap.failures);
    if let Some(rate) = snap.failure_rate {
        detail.push_str(&format!(" ({rate:.0}%)"));
    }
    if let Some(after) = snap.retry_after {
        detail.push_str(&format!("; next probe in {:.1}s", after.as_secs_f64()));
    }
    (snap.state.as_str().to_owned(), detail)
}

async fn plain_call(
    client: &Client<HttpConnector, UpstreamBody>,
    sites: &Sites,
    start: usize,
    timeout: Duration,
    req: Request<UpstreamBody>,
) -> Result<Response<Bytes>, BoxError> {
    const MAX_ATTEMPTS: usize = 4;
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut attempts = 0;
    let mut last_err: Option<BoxError> = None;
    for (_, eps) in sites.iter() {
        for k in 0..eps.len() {
            if attempts >= MAX_ATTEMPTS {
                break;
            }
            attempts += 1;
            let ep = &eps[(start + k) % eps.len()];
            let uri: Uri = format!("http://{}{}", ep.addr, path).parse()?;
            let mut attempt = Request::from_parts(parts.clone(), body.clone());
            *attempt.uri_mut() = uri;
            let _in_flight = InFlight::start(ep);
            let result = tokio::time::timeout(timeout, async {
                let resp = client.request(attempt).await?;
                let (head, body) = resp.into_parts();
                let bytes = Limited::new(body, MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| -> BoxError { e })?
                    .to_bytes();
                Ok::<_, BoxError>(Response::from_parts(head, bytes))
            })
            .await;
            match result {
                Ok(Ok(resp)) if !resp.status().is_server_error() => {
                    ep.last.store(1, Ordering::Relaxed);
                    return Ok(resp);
                }
                Ok(Ok(resp)) => {
                    ep.last.store(2, Ordering::Relaxed);
                    last_err = Some(format!("{} answered {}", ep.addr, resp.status()).into());
                }
                Ok(Err(e)) => {
                    ep.last.store(2, Ordering::Relaxed);
                    last_err = Some(e);
                }
                Err(_) => {
                    ep.last.store(2, Ordering::Relaxed);
                    last_err = Some(format!("{} timed out", ep.addr).into());
                }
            }
        }
    }
    Err(Box::new(NeverReached::new().with_source(
        last_err.unwrap_or_else(|| "no endpoints".into()),
    )))
}

fn status(service: ServiceName, sites: &Sites, faults: Option<&FaultRegistry>) -> ServiceStatus {
    let mut out = Vec::new();
    let mut total_rate = 0.0;
    let mut site_rates = Vec::new();
    for (region, eps) in sites {
        let replicas: Vec<ReplicaStatus> = eps
            .iter()
            .enumerate()
            .map(|(index, ep)| ReplicaStatus {
                index,
                addr: ep.addr.to_string(),
                health: match ep.last.load(Ordering::Relaxed) {
                    1 => "healthy",
                    2 => "unhealthy",
                    _ => "unknown",
                }
                .to_owned(),
                ejected: false,
                outstanding: ep.outstanding.load(Ordering::Relaxed),
                requests_per_sec: ep.rate(),
                fault: faults.map(|f| {
                    f.get(ReplicaId::new(service, *region, index))
                        .fault
                        .to_string()
                }),
            })
            .collect();
        let rate: f64 = replicas.iter().map(|r| r.requests_per_sec).sum();
        total_rate += rate;
        site_rates.push(rate);
        let healthy = replicas.iter().filter(|r| r.health != "unhealthy").count();
        out.push(SiteStatus {
            region: region.to_string(),
            priority: out.len() as u32,
            health: if healthy == 0 { "unhealthy" } else { "healthy" }.to_owned(),
            traffic_share: 0.0,
            replicas,
        });
    }
    for (site, rate) in out.iter_mut().zip(site_rates) {
        site.traffic_share = if total_rate > 0.0 {
            rate / total_rate
        } else {
            0.0
        };
    }
    ServiceStatus {
        service,
        breaker: "none (plain client)".to_owned(),
        breaker_detail: String::new(),
        sites: out,
    }
}
