//! Where endpoints come from: a static list (the builder), any tower
//! [`Discover`] stream, or DNS names (feature `dns`).
//!
//! A discovery stream yields [`Change::Insert`] and
//! [`Change::Remove`] keyed by any `Hash + Eq + Display`
//! key; the key's `Display` form becomes the endpoint's name. Inserting a key that exists
//! replaces its endpoint. Changes that arrive together form a batch: the endpoints of the
//! first batch join at full weight, later ones ramp up (slow start). The stream is polled by
//! a task that stops when the balancer is dropped; when the stream ends or fails, the
//! endpoints known so far stay.
//!
//! ```
//! use rampart_balance::{Balance, ServicePolicy};
//! use tower::discover::Change;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let svc = tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) });
//! let changes = futures_util::stream::iter(vec![
//!     Ok::<_, std::io::Error>(Change::Insert("a", svc.clone())),
//!     Ok(Change::Insert("b", svc)),
//! ]);
//! let balance = Balance::builder()
//!     .policy(ServicePolicy::new())
//!     .discover(changes)
//!     .build()
//!     .unwrap();
//! # let _ = balance;
//! # }
//! ```

#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "dns")]
pub use dns::{DnsDiscover, DnsDiscoverBuilder};

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::Poll;

use rampart_health::BoxError;
use tokio::task::JoinHandle;
use tower::discover::{Change, Discover};

/// The balancer as a discovery task sees it.
pub(crate) trait EndpointSink<S>: Send + Sync {
    fn insert_endpoint(self: Arc<Self>, name: Arc<str>, service: S, ramp: bool) -> u64;
    fn remove_endpoint(&self, id: u64) -> bool;
    fn routable_now(&self) -> usize;
}

/// Starts following a discovery stream on a runtime, feeding a balancer (type-erased: the
/// builder keeps these until it knows the runtime).
pub(crate) type DiscoverFn<S> =
    Box<dyn FnOnce(&tokio::runtime::Handle, Weak<dyn EndpointSink<S>>) -> JoinHandle<()> + Send>;

pub(crate) fn boxed_discover<D>(discover: D) -> DiscoverFn<D::Service>
where
    D: Discover + Send + Unpin + 'static,
    D::Key: Hash + Eq + Display + Send,
    D::Service: Send + 'static,
    D::Error: Into<BoxError>,
{
    Box::new(move |rt, sink| spawn_discover(rt, sink, discover))
}

pub(crate) fn spawn_discover<D>(
    rt: &tokio::runtime::Handle,
    sink: Weak<dyn EndpointSink<D::Service>>,
    mut discover: D,
) -> JoinHandle<()>
where
    D: Discover + Send + Unpin + 'static,
    D::Key: Hash + Eq + Display + Send,
    D::Service: Send,
    D::Error: Into<BoxError>,
{
    rt.spawn(async move {
        let mut keys: HashMap<D::Key, u64> = HashMap::new();
        let mut batch_joins_live_pool = sink.upgrade().is_some_and(|s| s.routable_now() > 0);
        loop {
            let mut immediate = true;
            let (change, was_immediate) = std::future::poll_fn(|cx| {
                match Pin::new(&mut discover).poll_discover(cx) {
                    Poll::Ready(c) => Poll::Ready((c, immediate)),
                    Poll::Pending => {
                        immediate = false;
                        Poll::Pending
                    }
                }
            })
            .await;
            let Some(sink) = sink.upgrade() else {
                break;
            };
            if !was_immediate {
                // A new batch: it ramps up only if it joins a pool that already takes traffic.
                batch_joins_live_pool = sink.routable_now() > 0;
            }
            match change {
                None => {
                    tracing::debug!("discovery stream ended; keeping the endpoints known so far");
                    break;
                }
                Some(Err(e)) => {
                    let e: BoxError = e.into();
                    tracing::warn!(error = %e, "discovery failed; keeping the endpoints known so far");
                    break;
                }
                Some(Ok(Change::Insert(key, service))) => {
                    if let Some(old) = keys.remove(&key) {
                        sink.remove_endpoint(old);
                    }
                    let name: Arc<str> = key.to_string().into();
                    let id = sink.clone().insert_endpoint(name, service, batch_joins_live_pool);
                    keys.insert(key, id);
                }
                Some(Ok(Change::Remove(key))) => {
                    if let Some(id) = keys.remove(&key) {
                        sink.remove_endpoint(id);
                    }
                }
            }
        }
    })
}
