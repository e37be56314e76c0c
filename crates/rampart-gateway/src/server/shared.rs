//! What every connection of one server shares: its limits, metric handles, connection cap
//! and hyper's HTTP/1 settings.

use std::sync::Arc;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::sync::Semaphore;

use super::ServerConfig;
use super::metrics::Metrics;

/// hyper's read buffer may grow to this for bodies (its default is ~400 KiB per connection).
const MAX_BUF_SIZE: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) metrics: Metrics,
    /// One permit per open connection (over all workers).
    pub(crate) limit: Arc<Semaphore>,
    pub(crate) http1: http1::Builder,
}

impl Shared {
    pub(crate) fn new(config: &ServerConfig) -> Arc<Self> {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .keep_alive(true)
            // The connection's watchdog enforces the header-read timeout (see `conn`).
            .header_read_timeout(None)
            .max_headers(config.max_headers())
            .max_header_size(config.max_header_size())
            .max_buf_size(MAX_BUF_SIZE.max(config.max_header_size() + 1024));
        if let Some(limit) = open_file_limit()
            && config.max_connections() as u64 > limit
        {
            tracing::warn!(
                server = config.name(),
                max_connections = config.max_connections(),
                open_file_limit = limit,
                "max_connections is above the open-file limit: accepts will fail with EMFILE \
                 (and back off) before the cap is reached"
            );
        }
        Arc::new(Self {
            metrics: Metrics::new(config.name()),
            limit: Arc::new(Semaphore::new(
                config.max_connections().min(Semaphore::MAX_PERMITS),
            )),
            config: config.clone(),
            http1: h1,
        })
    }
}

/// The soft limit of open files, from `/proc/self/limits` (Linux; `None` elsewhere).
fn open_file_limit() -> Option<u64> {
    parse_open_file_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_open_file_limit(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::parse_open_file_limit;

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             127431               127431               processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_file_limit(limits), Some(1024));
        assert_eq!(
            parse_open_file_limit("Max open files unlimited unlimited files"),
            None
        );
    }
}
