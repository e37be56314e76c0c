//! [`BalanceLayer`]: builds a [`Balance`] over a discovery stream.

use std::fmt::Display;
use std::hash::Hash;

use rampart_health::BoxError;
use tower::discover::Discover;
use tower_layer::Layer;

use super::Balance;
use super::builder::Settings;
use crate::policy::HttpPolicy;

/// Turns a [`Discover`] stream into a [`Balance`] with validated settings.
///
/// Build it with [`BalanceBuilder::into_layer`](super::BalanceBuilder::into_layer). `layer`
/// must run inside a tokio runtime (it spawns the discovery task); outside one the balancer
/// stays empty and fails fast with [`NoHealthyEndpoints`](super::NoHealthyEndpoints).
///
/// ```
/// use rampart_balance::{Balance, ServicePolicy};
/// use tower::discover::Change;
/// use tower_layer::Layer;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) });
/// let layer = rampart_balance::BalanceBuilder::<(), _>::new(ServicePolicy::new())
///     .into_layer()
///     .unwrap();
/// let changes = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Change::Insert(1, svc))]);
/// let balance = layer.layer(changes);
/// # let _ = balance;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BalanceLayer<P = HttpPolicy> {
    pub(crate) settings: Settings<P>,
}

impl<D, P> Layer<D> for BalanceLayer<P>
where
    D: Discover + Send + Unpin + 'static,
    D::Key: Hash + Eq + Display + Send,
    D::Service: Send + Sync + 'static,
    D::Error: Into<BoxError>,
    P: Clone + Send + Sync + 'static,
{
    type Service = Balance<D::Service, P>;

    fn layer(&self, discover: D) -> Self::Service {
        self.settings
            .clone()
            .start(Vec::new(), vec![crate::discover::boxed_discover(discover)])
    }
}
