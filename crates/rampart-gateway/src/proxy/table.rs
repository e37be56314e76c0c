//! The routing table, host and path prefix to a cluster: what a reload builds and swaps,
//! keeping the balancers (and their health state) of clusters whose settings are unchanged.

use std::sync::Arc;

use super::cluster::{breaker_for, same_balancer, wrap_stack};
use super::{Cluster, ClusterClassifier, MakeBalance, Proxy, ProxyBalance, ReloadSummary};
use crate::config::{ConfigError, GatewayConfig};

pub(super) struct Route {
    host: Option<String>,
    prefix: String,
    cluster: usize,
}

/// The routing table: what a reload swaps.
pub(super) struct Table<B> {
    pub(super) routes: Vec<Route>,
    pub(super) clusters: Vec<Arc<Cluster<B>>>,
}

impl<B> Table<B> {
    pub(super) fn route(&self, host: Option<&str>, path: &str) -> Option<&Cluster<B>> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| {
                path.starts_with(r.prefix.as_str())
                    && r.host
                        .as_deref()
                        .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
            })
            .and_then(|r| self.clusters.get(r.cluster))
            .map(|c| &**c)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

impl<B: ProxyBalance> Proxy<B> {
    pub(super) fn build_table(
        config: &GatewayConfig,
        make_balance: MakeBalance<B>,
        old: Option<&Table<B>>,
    ) -> Result<(Table<B>, ReloadSummary), ConfigError> {
        let mut summary = ReloadSummary::default();
        let mut clusters = Vec::with_capacity(config.clusters.len());
        for (name, section) in &config.clusters {
            let previous = old.and_then(|t| t.clusters.iter().find(|c| &*c.name == name.as_str()));
            let (balance, balance_handle) = match previous {
                Some(p) if same_balancer(&p.section, section) => {
                    summary.kept.push(name.clone());
                    (p.balance.clone(), p.balance_handle.clone())
                }
                _ => {
                    if old.is_some() {
                        summary.rebuilt.push(name.clone());
                    }
                    make_balance(name, section)?
                }
            };
            let breaker = match previous {
                Some(p) if p.section.breaker == section.breaker => p.breaker.clone(),
                _ => breaker_for(name, section)?,
            };
            let stack = wrap_stack(name, section, balance.clone(), &breaker)?;
            clusters.push(Arc::new(Cluster {
                name: Arc::from(name.as_str()),
                section: section.clone(),
                balance,
                balance_handle,
                breaker,
                classifier: ClusterClassifier::for_cluster(section),
                stack,
            }));
        }
        if let Some(old) = old {
            for c in &old.clusters {
                if !config.clusters.contains_key(&*c.name) {
                    summary.removed.push(c.name.to_string());
                }
            }
        }
        let routes = config
            .routes
            .iter()
            .map(|r| Route {
                host: r.host.clone(),
                prefix: r.prefix.clone(),
                cluster: config
                    .clusters
                    .keys()
                    .position(|k| *k == r.cluster)
                    .unwrap_or(usize::MAX),
            })
            .collect();
        Ok((Table { routes, clusters }, summary))
    }
}
