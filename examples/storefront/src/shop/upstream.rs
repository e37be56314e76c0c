//! How the shop reaches one service: a type-erased tower service plus a status probe.
//!
//! Pages only see [`Upstream`]; which resilience stack sits behind it is decided in one place,
//! [`super::stack`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use rampart::health::{BoxError, Deadline, is_never_reached, retry_after};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::fleet::ServiceName;

tokio::task_local! {
    /// The deadline of the page being served. Every upstream call made while serving it
    /// carries it as a [`Deadline`] request extension, which the balancer turns into
    /// per-attempt timeouts (never past it), refuses to send or retry past, and passes on in
    /// `x-rampart-deadline-ms`: no call to catalog, checkout or recommendations outlives the
    /// page that asked for it.
    static PAGE_DEADLINE: Deadline;
}

/// Runs `fut` with its upstream calls bounded by `deadline`, or by the enclosing one (the
/// page's) when that is earlier.
pub async fn within<F: Future>(deadline: Deadline, fut: F) -> F::Output {
    let deadline = PAGE_DEADLINE
        .try_with(|outer| Deadline::min(*outer, deadline))
        .unwrap_or(deadline);
    PAGE_DEADLINE.scope(deadline, fut).await
}

/// [`within`] a budget from now.
pub async fn within_budget<F: Future>(budget: Duration, fut: F) -> F::Output {
    within(Deadline::after(budget), fut).await
}

/// Runs `f` (one poll of a page's handler) with its upstream calls bounded by `deadline`: the
/// page guard sets it for every poll of the page.
pub(crate) fn with_page_deadline<R>(deadline: Deadline, f: impl FnOnce() -> R) -> R {
    PAGE_DEADLINE.sync_scope(deadline, f)
}

/// The deadline of the page being served, if any.
#[cfg(test)]
pub(crate) fn current_page_deadline() -> Option<Deadline> {
    PAGE_DEADLINE.try_with(|d| *d).ok()
}

/// The request body every upstream takes.
pub type UpstreamBody = Full<Bytes>;

/// The service type behind an [`Upstream`]: requests in, fully read responses out.
pub type UpstreamService = BoxCloneSyncService<Request<UpstreamBody>, Response<Bytes>, BoxError>;

/// The live state of an upstream's stack, for `/status`.
pub trait StackStatus: Send + Sync {
    /// Takes a sample of the request counters (called about once a second) for the rates.
    fn sample(&self) {}
    /// The current state of every layer.
    fn status(&self) -> ServiceStatus;
}

/// A shared [`StackStatus`].
pub type StatusProbe = Arc<dyn StackStatus>;

/// One service as the shop reaches it.
#[derive(Clone)]
pub struct Upstream {
    service: ServiceName,
    svc: UpstreamService,
    status: StatusProbe,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Why an upstream call failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// The service could not be reached or answered with a server error; `retry_after` when a
    /// layer (the breaker) knows when trying again makes sense.
    Unavailable {
        /// A hint for `Retry-After`.
        retry_after: Option<Duration>,
        /// The request never reached a backend.
        never_reached: bool,
        /// What happened (for logs only, never shown to customers).
        detail: String,
    },
    /// The service answered 404.
    NotFound,
    /// The service refused the request (a 4xx other than 404).
    Rejected(StatusCode, String),
    /// The service answered something that is not the expected JSON.
    Decode(String),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Unavailable { detail, .. } => write!(f, "unavailable: {detail}"),
            UpstreamError::NotFound => f.write_str("not found"),
            UpstreamError::Rejected(s, m) => write!(f, "rejected with {s}: {m}"),
            UpstreamError::Decode(m) => write!(f, "bad answer: {m}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

impl UpstreamError {
    /// The retry hint, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn from_box(e: &BoxError) -> Self {
        let mut detail = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            src = s.source();
        }
        UpstreamError::Unavailable {
            retry_after: retry_after(&**e),
            never_reached: is_never_reached(&**e),
            detail,
        }
    }
}

impl Upstream {
    /// Wraps a stack.
    pub fn new(service: ServiceName, svc: UpstreamService, status: StatusProbe) -> Self {
        Self {
            service,
            svc,
            status,
        }
    }

    /// Which service.
    pub fn service(&self) -> ServiceName {
        self.service
    }

    /// The live status of the stack.
    pub fn status(&self) -> ServiceStatus {
        self.status.status()
    }

    /// Samples the stack's request counters (for the rates on `/status`).
    pub fn sample(&self) {
        self.status.sample();
    }

    /// Sends one request through the stack, bounded by the page's deadline when it is sent
    /// while serving a page (see [`within`]).
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Bytes>, UpstreamError> {
        if let Ok(page) = PAGE_DEADLINE.try_with(|d| *d) {
            let deadline = Deadline::of(&req).map_or(page, |own| own.min(page));
            req.extensions_mut().insert(deadline);
        }
        let resp = self
            .svc
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| UpstreamError::from_box(&e))?;
        let status = resp.status();
        if status.is_success() {
            Ok(resp)
        } else if status == StatusCode::NOT_FOUND {
            Err(UpstreamError::NotFound)
        } else if status.is_client_error() {
            Err(UpstreamError::Rejected(
                status,
                String::from_utf8_lossy(resp.body()).trim().to_owned(),
            ))
        } else {
            Err(UpstreamError::Unavailable {
                retry_after: None,
                never_reached: false,
                detail: format!("answered {status}"),
            })
        }
    }

    /// `GET path` and decode JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> Result<T, UpstreamError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(path_and_query)
            .body(Full::new(Bytes::new()))
            .map_err(|e| UpstreamError::Decode(e.to_string()))?;
        let resp = self.send(req).await?;
        serde_json::from_slice(resp.body()).map_err(|e| UpstreamError::Decode(e.to_string()))
    }

    /// `POST path` with a JSON body and an `Idempotency-Key`, and decode JSON.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        idempotency_key: &str,
        body: &B,
    ) -> Result<T, UpstreamError> {
        let bytes = serde_json::to_vec(body).map_err(|e| UpstreamError::Decode(e.to_string()))?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| UpstreamError::Decode(e.to_string()))?;
        if let Ok(v) = HeaderValue::from_str(idempotency_key) {
            req.headers_mut().insert("idempotency-key", v);
        }
        let resp = self.send(req).await?;
        serde_json::from_slice(resp.body()).map_err(|e| UpstreamError::Decode(e.to_string()))
    }
}

/// The live state of one service's stack, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// The service.
    pub service: ServiceName,
    /// Breaker state as the next call will see it (`closed`, `open`, `half_open`, ...).
    pub breaker: String,
    /// The breaker's state in words: the window against its minimum ("3/4 failed, below the
    /// minimum of 20"), the time to the next trial call, or the trials' progress.
    pub breaker_detail: String,
    /// The GSLB selector's mode (`normal`, `fallback`, `unavailable`, ...).
    pub mode: String,
    /// Sites, in priority order.
    pub sites: Vec<SiteStatus>,
    /// The breaker's snapshot, field by field.
    pub breaker_status: BreakerStatus,
}

/// A service's circuit breaker, as `/status.json` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStatus {
    /// The state the next call will see (same as [`ServiceStatus::breaker`]).
    pub state: String,
    /// The state entered by the last transition (time-driven transitions happen on the next
    /// call, so this lags behind `state` while no calls come).
    pub recorded_state: String,
    /// Calls in the sliding window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Calls the window must hold before its failure rate can open the breaker.
    pub minimum_calls: u64,
    /// `calls < minimum_calls`: however many failed, the rate cannot open it yet.
    pub below_minimum: bool,
    /// Failure rate in percent, once the minimum is reached.
    pub failure_rate: Option<f64>,
    /// The open duration is over and no call came since: the next call is a trial.
    pub awaiting_trial: bool,
    /// Open: seconds until the next trial call.
    pub retry_after_secs: Option<f64>,
    /// Half-open: trial calls in flight.
    pub half_open_in_flight: u32,
    /// Half-open: seconds left for the trials' verdict.
    pub half_open_time_left_secs: Option<f64>,
}

/// One site (region) of a service.
#[derive(Debug, Clone, Serialize)]
pub struct SiteStatus {
    /// The region.
    pub region: String,
    /// Priority (0 = primary).
    pub priority: u32,
    /// The site's health as the selector sees it.
    pub health: String,
    /// The share of this service's traffic the GSLB selector sends here, `0.0..=1.0`.
    pub traffic_share: f64,
    /// The site's balancer spreads traffic over every replica (panic mode).
    pub panic: bool,
    /// Its replicas.
    pub replicas: Vec<ReplicaStatus>,
    /// The site's balancer (the `balancer` label of its metrics).
    pub balancer: String,
    /// The selector sends it new requests.
    pub routable: bool,
    /// The healthy share its signals report now, `0.0..=1.0`.
    pub observed_share: f64,
    /// Healthy again, but waiting out the failback hold before it takes traffic back.
    pub held_for_failback: bool,
    /// Seconds left of the failback hold.
    pub failback_in_secs: Option<f64>,
    /// What panic mode means here, when it matters (`None` on a site without traffic).
    pub panic_note: Option<String>,
}

/// One replica of a site.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    /// Index within the site.
    pub index: usize,
    /// Its address.
    pub addr: String,
    /// Active-check health (`healthy`, `unhealthy`, `unknown`).
    pub health: String,
    /// Whether passive outlier detection ejected it.
    pub ejected: bool,
    /// Requests in flight to it.
    pub outstanding: u64,
    /// Attempts sent to it per second, over the last second or so.
    pub requests_per_sec: f64,
    /// The injected fault, when the shop runs the fleet itself.
    pub fault: Option<String>,
}
