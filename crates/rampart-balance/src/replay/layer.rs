//! [`ReplayBodyLayer`]: settings only; `layer` wraps the service.

use tower_layer::Layer;

use super::ReplayBodyService;

/// Buffers qualifying request bodies so the balancer can replay them (see the
/// [module docs](super)).
#[derive(Debug, Clone, Copy)]
pub struct ReplayBodyLayer {
    limit: u64,
}

impl Default for ReplayBodyLayer {
    fn default() -> Self {
        Self { limit: 64 * 1024 }
    }
}

impl ReplayBodyLayer {
    /// Buffers bodies of known length up to 64 KiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers bodies of known length up to `limit` bytes.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }
}

impl<S> Layer<S> for ReplayBodyLayer {
    type Service = ReplayBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReplayBodyService::new(inner, self.limit)
    }
}
