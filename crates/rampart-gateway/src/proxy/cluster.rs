//! One upstream cluster: its balancer (endpoints, checks, DNS discovery), its breaker, and the
//! fallback, breaker and timeout stack around them, built from its `[clusters.<name>]` table.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use rampart_balance::discover::DnsDiscover;
use rampart_balance::{Balance, BalanceHandle, Endpoint, Picker};
use rampart_breaker::{BreakerHandle, CircuitBreaker, CircuitBreakerLayer};
use rampart_fallback::{ApologyPage, FailureStatuses, Fallback, FallbackLayer};
use rampart_health::BoxError;
use tower::timeout::Timeout;
use tower::{Layer, Service};

use super::endpoints::{self, EndpointMaker};
use super::{ClusterClassifier, GatewayPolicy, UpBody};
use crate::config::{self, ClusterSection, ConfigError};

/// Builds a cluster's balancer (its checkers and its DNS discovery start on the current
/// runtime).
pub(super) fn build_balance(
    name: &str,
    c: &ClusterSection,
) -> Result<
    (
        impl Service<Request<UpBody>, Response = Response<Incoming>, Error = BoxError, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
        + use<>,
        BalanceHandle,
    ),
    ConfigError,
> {
    let key = |k: &str| format!("clusters.{name}.{k}");
    let wrap = |k: &str, e: &dyn std::fmt::Display| ConfigError::new(key(k), "", e);
    let parts = c.parts(name)?;
    let (checks, outlier, budget) = (parts.checks, parts.outlier, parts.budget);
    let maker = EndpointMaker::new(name, c)?;
    let mut builder = Balance::builder()
        .name(name.to_owned())
        .policy(GatewayPolicy::with_classifier(
            ClusterClassifier::for_cluster(c),
        ))
        .picker(Picker::PeakEwma)
        .max_retries(c.retries)
        .retry_budget(budget)
        .outlier_detection(outlier);
    if maker.checks_enabled() {
        builder = builder.health_checks(checks);
    }
    for (i, e) in c.endpoints.iter().enumerate() {
        let ekey = format!("endpoints[{i}]");
        let bad = |why: &dyn std::fmt::Display| ConfigError::new(key(&ekey), format!("{e:?}"), why);
        let addr = config::resolve(e).map_err(|why| bad(&why))?;
        let authority = config::authority(e);
        let host = endpoints::host_header(c, authority).map_err(|why| bad(&why))?;
        let svc = maker.service(addr, authority, host);
        let mut endpoint = Endpoint::new(authority.to_owned(), svc);
        if let Some(probe) = maker.probe(authority).map_err(|why| bad(&why))? {
            endpoint = endpoint.probe(probe);
        }
        builder = builder.endpoint(endpoint);
    }
    if let Some(dns) = &c.dns {
        let bad =
            |why: &dyn std::fmt::Display| ConfigError::new(key("dns"), format!("{dns:?}"), why);
        let (host, port) = config::dns_name(dns).map_err(|why| bad(&why))?;
        let mut discover = DnsDiscover::builder()
            .name(host, port)
            .ttl_floor(c.dns_ttl_floor)
            .ttl_ceiling(c.dns_ttl_ceiling);
        if let Some(server) = c.dns_server {
            discover = discover
                .name_server(server)
                .map_err(|e| ConfigError::new(key("dns_server"), server, e))?;
        }
        // `host = "upstream"` sends the name the endpoints were found by.
        let host_header = endpoints::host_header(c, dns).map_err(|why| bad(&why))?;
        let make = maker.clone();
        let discover = discover
            .build(move |addr| make.service(addr, &addr.to_string(), host_header.clone()))
            .map_err(|e| bad(&e))?;
        builder = builder.discover(discover);
        if maker.checks_enabled() {
            let make = maker.clone();
            builder = builder.probe_with(move |endpoint: &str| match make.probe(endpoint) {
                Ok(probe) => probe,
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "no health check for a discovered endpoint");
                    None
                }
            });
        }
    }
    let balance = builder.build().map_err(|e| wrap("endpoints", &e))?;
    let handle = balance.handle();
    Ok((balance, handle))
}

/// The per-cluster stack around a balancer `B`.
pub type ClusterStack<B> =
    Fallback<CircuitBreaker<Timeout<B>, ClusterClassifier>, ApologyPage, FailureStatuses>;

/// One upstream cluster: its balancer, breaker and the stack around them.
#[derive(Debug)]
pub struct Cluster<B> {
    pub(super) name: Arc<str>,
    pub(super) section: ClusterSection,
    pub(super) balance: B,
    pub(super) balance_handle: BalanceHandle,
    pub(super) breaker: BreakerHandle,
    pub(super) classifier: ClusterClassifier,
    pub(super) stack: ClusterStack<B>,
}

impl<B> Cluster<B> {
    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its balancer's handle (endpoints, health, ejections).
    pub fn balance_handle(&self) -> &BalanceHandle {
        &self.balance_handle
    }

    /// Its breaker.
    pub fn breaker(&self) -> &BreakerHandle {
        &self.breaker
    }
}

/// The settings that, unchanged, let a reload keep a cluster's balancer and its checks.
pub(super) fn same_balancer(a: &ClusterSection, b: &ClusterSection) -> bool {
    a.endpoints == b.endpoints
        && a.host == b.host
        && a.connect_timeout == b.connect_timeout
        && a.attempt_timeout == b.attempt_timeout
        && a.retries == b.retries
        && a.retry_budget_ratio == b.retry_budget_ratio
        && a.retry_budget_min_per_second == b.retry_budget_min_per_second
        && a.checks == b.checks
        && a.ejection == b.ejection
        && a.dns == b.dns
        && a.dns_ttl_floor == b.dns_ttl_floor
        && a.dns_ttl_ceiling == b.dns_ttl_ceiling
        && a.dns_server == b.dns_server
        && a.protocol == b.protocol
        && a.grpc == b.grpc
        && a.tls == b.tls
}

pub(super) fn wrap_stack<B>(
    name: &str,
    c: &ClusterSection,
    balance: B,
    breaker: &BreakerHandle,
) -> Result<ClusterStack<B>, ConfigError> {
    let page = match &c.apology_page {
        Some(path) => ApologyPage::builder()
            .html_file(path.clone())
            .build()
            .map_err(|e| {
                ConfigError::new(
                    format!("clusters.{name}.apology_page"),
                    format!("{:?}", path.display().to_string()),
                    e,
                )
            })?,
        None => ApologyPage::default(),
    };
    // A gRPC call whose status comes in the trailers gets its verdict there (`ProxyBody`).
    let breaker = CircuitBreakerLayer::from_handle(breaker.clone())
        .classifier(ClusterClassifier::for_cluster(c).deferring_trailers());
    Ok(FallbackLayer::with_page(page)
        .name(name.to_owned())
        .retry_after(c.retry_after)
        .layer(breaker.layer(Timeout::new(balance, c.total_timeout))))
}

pub(super) fn breaker_for(name: &str, c: &ClusterSection) -> Result<BreakerHandle, ConfigError> {
    Ok(BreakerHandle::new(c.parts(name)?.breaker))
}
