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
