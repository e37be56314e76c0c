//! The balancer: a tower [`Service`] that spreads requests over healthy endpoints.
//!
//! An endpoint takes new requests only while it is **routable**: healthy (or `Unknown`, by
//! default) according to its active checks, not ejected by passive outlier detection, and not
//! draining. Among the routable endpoints a [`Picker`](crate::Picker) chooses (power of two choices over
//! peak-EWMA load by default).
//!
//! - **Panic mode** (Envoy's): when the routable share falls below `panic_threshold`
//!   (default 0.5), traffic spreads over every endpoint that is not draining, because an
//!   overloaded remainder would fail anyway. With a threshold of `0.0` the balancer instead
//!   fails fast with [`NoHealthyEndpoints`] when nothing is routable. An empty pool always
//!   fails fast: the balancer never queues a request waiting for endpoints.
//! - **Retry elsewhere**: an attempt whose error the [`BalancePolicy`] deems retryable
//!   (by default: it never reached the endpoint) goes to an endpoint not yet tried, at most
//!   `max_retries` times (default 2) and within a shared [`RetryBudget`](crate::RetryBudget).
//!   A response the policy wanted retried (a 503 to an idempotent request) is kept while the
//!   retry runs: if no later attempt produces a response, the caller gets that response, not
//!   the later transport error.
//! - **Slow start**: an endpoint that becomes routable again (recovered, un-ejected, undrained,
//!   discovered) ramps its weight from `min_weight` to full over a window (Envoy's formula
//!   `max(min_weight, (t / window)^(1 / aggression))`); endpoints of the initial set do not.
//! - Every change emits a `tracing` event, updates [`BalanceHandle::snapshot`] and publishes
//!   a [`rampart_health::HealthReport`] (this type implements
//!   [`ReportHealth`]).
//!
//! `poll_ready` is always ready: the balancer picks in `call` (the consistent-hashing key is in
//! the request) and drives the picked endpoint's own `poll_ready` inside the response future.
//!
//! # Example
//!
//! ```
//! use rampart_balance::{Balance, Endpoint, Picker, ServicePolicy};
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let a = tower::service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) });
//! let b = a.clone();
//! let mut balance = Balance::builder()
//!     .policy(ServicePolicy::new())
//!     .picker(Picker::PeakEwma)
//!     .endpoint(Endpoint::new("a", a))
//!     .endpoint(Endpoint::new("b", b))
//!     .build()
//!     .unwrap();
//! assert_eq!(balance.ready().await.unwrap().call(1).await.unwrap(), 2);
//! # }
//! ```

mod builder;
pub(crate) mod error;
pub(crate) mod future;
pub(crate) mod layer;
mod runtime;
pub(crate) mod shared;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use rampart_health::{BoxError, HealthReport, ReportHealth};
use tokio::sync::watch;
use tower_service::Service;

pub use builder::BalanceBuilder;
pub use error::NoHealthyEndpoints;
pub use future::ResponseFuture;
pub use layer::BalanceLayer;

use crate::endpoint::HealthSource;
use crate::handle::{BalanceHandle, DynBalancer, Snapshot};
use crate::pick::{Tried, pick};
use crate::policy::{BalancePolicy, HttpPolicy};
use crate::table::Table;
use runtime::TaskGuard;
use shared::Shared;

/// Makes the probe of an endpoint from its name (`None`: no active checks for it).
pub(crate) type ProbeFactory =
    Arc<dyn Fn(&str) -> Option<Box<dyn rampart_health::Probe>> + Send + Sync>;

/// Active-check settings: the checker configuration and where probes come from.
#[derive(Clone)]
pub(crate) struct Checks {
    pub(crate) config: rampart_health::CheckerConfig,
    pub(crate) probe_for: ProbeFactory,
}

impl fmt::Debug for Checks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checks")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A health-checked load balancer over endpoint services `S` (see the [module docs](self)).
pub struct Balance<S, P = HttpPolicy> {
    shared: Arc<Shared<S, P>>,
    guard: Arc<TaskGuard<S, P>>,
    table: Arc<Table<S>>,
    generation: u64,
    rng: fastrand::Rng,
}

impl<S, P> fmt::Debug for Balance<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("picker", &self.shared.config.picker)
            .field("routable", &self.table.routable.len())
            .field("total", &self.table.total)
            .field("panic", &self.table.panic)
            .finish_non_exhaustive()
    }
}

impl<S, P> Clone for Balance<S, P> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            guard: self.guard.clone(),
            table: self.table.clone(),
            generation: self.generation,
            rng: fastrand::Rng::new(),
        }
    }
}

impl Balance<(), HttpPolicy> {
    /// A builder with the HTTP policy; change it with [`BalanceBuilder::policy`]. The
    /// endpoint service type `S` is inferred from the endpoints added.
    pub fn builder<S>() -> BalanceBuilder<S, HttpPolicy> {
        BalanceBuilder::new(HttpPolicy::default())
    }
}

impl<S, P> Balance<S, P>
where
    S: Send + Sync + 'static,
    P: Send + Sync + 'static,
{
    pub(crate) fn from_shared(shared: Arc<Shared<S, P>>) -> Self {
        let (table, generation) = shared.table();
        Self {
            guard: Arc::new(TaskGuard {
                shared: shared.clone(),
            }),
            shared,
            table,
            generation,
            rng: fastrand::Rng::new(),
        }
    }

    /// Snapshot, drain and health report, without type parameters.
    pub fn handle(&self) -> BalanceHandle {
        BalanceHandle {
            balancer: self.shared.clone(),
        }
    }

    /// The balancer's name (the `balancer` label of its metric series).
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Every endpoint's state (same as [`BalanceHandle::snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// Adds an endpoint at run time (with slow start); returns its id.
    pub fn insert(&self, name: impl Into<Arc<str>>, service: S) -> u64 {
        self.shared
            .insert(name.into(), service, 1, HealthSource::None, true)
    }

    /// Removes the endpoint with id `id`; its in-flight requests finish.
    pub fn remove(&self, id: u64) -> bool {
        self.shared.remove(id)
    }

    /// Takes endpoints called `name` out of new traffic (see [`BalanceHandle::drain`]).
    pub fn drain(&self, name: &str) -> bool {
        self.shared.set_draining(name, true)
    }

    /// The policy.
    ///
    /// `Balance` has no `get_ref`, `get_mut` or `into_inner`, unlike single-service middleware:
    /// it wraps many endpoint services, not one, and they, the policy and the background tasks are shared by every clone of the balancer and by its discovery and
    /// health tasks. Endpoints are managed through [`insert`](Self::insert),
    /// [`remove`](Self::remove), [`drain`](Self::drain) and the [`BalanceHandle`], and observed
    /// through [`snapshot`](Self::snapshot).
    pub fn policy(&self) -> &P {
        &self.shared.policy
    }

    #[inline]
    fn refresh(&mut self) {
        let generation = self
            .shared
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        if generation != self.generation {
            let (table, generation) = self.shared.table();
            self.table = table;
            self.generation = generation;
        }
    }
}

impl<S, P> DynBalancer for Shared<S, P>
where
    S: Send + Sync + 'static,
    P: Send + Sync + 'static,
{
    fn name(&self) -> Arc<str> {
        self.config.name.clone()
    }

    fn snapshot(&self) -> Snapshot {
        Shared::snapshot(self)
    }

    fn set_draining(&self, name: &str, draining: bool) -> bool {
        Shared::set_draining(self, name, draining)
    }

    fn report(&self) -> watch::Receiver<HealthReport> {
        self.reporter.subscribe()
    }
}

impl<S, P> ReportHealth for Balance<S, P> {
    fn health_report(&self) -> watch::Receiver<HealthReport> {
        self.shared.reporter.subscribe()
    }
}

impl<S, P, Req> Service<Req> for Balance<S, P>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    P: BalancePolicy<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, P, Req>;

    /// Always ready. The balancer reports ready although no endpoint has been polled: the
    /// endpoint is picked in `call` (hash keys live in the request) and its `poll_ready` is
    /// driven inside the response future; an empty or all-down pool fails the call fast with
    /// [`NoHealthyEndpoints`] instead of parking the caller here.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.refresh();
        let shared = &self.shared;
        shared.budget.deposit();
        let picker = shared.config.picker;
        let key = if picker.needs_key() {
            shared.policy.hash_key(&req)
        } else {
            None
        };
        let set = self.table.set();
        let Some(i) = pick(picker, &set, &mut self.rng, key, &Tried::default()) else {
            tracing::debug!(
                routable = self.table.routable.len(),
                total = self.table.total,
                "no healthy endpoints"
            );
            #[cfg(feature = "metrics")]
            metrics::counter!("rampart_balance_no_healthy_endpoints_total", "balancer" => shared.config.name.clone())
                .increment(1);
            return ResponseFuture::failed(Box::new(NoHealthyEndpoints::new(
                self.table.routable.len(),
                self.table.total,
            )));
        };
        let svc = set.endpoints[i].service.clone();
        let retries = shared.config.max_retries;
        let deadline = shared.policy.deadline(&req);
        let copy = if retries > 0 || shared.config.hedge.is_some() {
            shared.policy.clone_request(&req)
        } else {
            None
        };
        ResponseFuture::new(
            shared.clone(),
            self.table.clone(),
            i,
            svc,
            req,
            copy,
            retries,
            key,
            self.rng.u64(..),
            deadline,
        )
    }
}

#[cfg(test)]
mod tests;
