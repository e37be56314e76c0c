//! [`GslbLayer`]: builds a [`Gslb`] over a set of sites with a [`GslbConfig`].

use std::fmt;

use tower_layer::Layer;

use super::Gslb;
use super::config::GslbConfig;
use crate::site::Sites;

/// A [`Layer`] that turns a validated [`Sites`] set into a [`Gslb`] with these settings.
///
/// # Why `Layer<Sites<S>>` and not `Layer<S>`
///
/// A selector does not wrap *one* inner service: it chooses between several, so the thing it
/// layers over is the whole set of sites. That makes it the innermost layer of a stack (the
/// one given to [`ServiceBuilder::service`](https://docs.rs/tower/latest/tower/struct.ServiceBuilder.html#method.service)),
/// with per-request layers (timeouts, a fallback that turns errors into an apology page)
/// outside it and per-site layers (breakers, balancers) inside each site. It cannot be given
/// to axum's `Router::layer`, which wraps every route's single service; mount the finished
/// stack instead, with `Router::fallback_service` or `Router::route_service`.
///
/// # With axum
///
/// axum wants a service that never fails, and a `Gslb`'s error is a `BoxError` (for instance
/// [`NoHealthySite`](crate::NoHealthySite)). Mounted as is, the stack does not compile, and
/// the message names that mismatch: `Infallible: From<Box<dyn Error + Send + Sync>>` is not
/// satisfied (in short, `Infallible: From<BoxError>`). Put a layer that turns errors into
/// responses outside it, such as rampart-fallback's `FallbackLayer` or axum's
/// `HandleErrorLayer`. The sites take axum's request type (`axum::extract::Request`); they
/// can be axum `Router`s themselves, or balancers over HTTP clients. axum's streaming body
/// cannot be copied, so [`HttpReplay`](crate::replay::HttpReplay) does not apply: buffer the
/// body first (rampart-balance's `ReplayBodyLayer`) and replay with a closure, or leave
/// retries to each site's balancer.
///
/// ```
/// use axum::{BoxError, Router, error_handling::HandleErrorLayer, extract::Request};
/// use axum::{http::StatusCode, routing::get};
/// use rampart_gslb::{GslbConfig, GslbLayer, Site, Sites};
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), rampart_health::ConfigError> {
/// let region = |name: &'static str| Router::new().route("/", get(move || async move { name }));
/// let sites = Sites::builder()
///     .site(Site::new("eu-west", region("eu-west")))
///     .site(Site::new("us-east", region("us-east")).priority(1))
///     .build()?;
/// let selector = ServiceBuilder::new()
///     .layer(GslbLayer::new(GslbConfig::<Request>::default()))
///     .service(sites);
/// let handle = selector.handle(); // take the operator handle before wrapping
/// let api = ServiceBuilder::new()
///     .layer(HandleErrorLayer::new(|e: BoxError| async move {
///         (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
///     }))
///     .service(selector);
/// let app: Router = Router::new()
///     .route("/healthz", get(|| async { "ok" }))
///     .fallback_service(api);
/// # let _ = (app, handle);
/// # Ok(()) }
/// ```
///
/// Without the error layer it does not compile:
///
/// ```compile_fail,E0277
/// use axum::{Router, extract::Request, routing::get};
/// use rampart_gslb::{GslbConfig, GslbLayer, Site, Sites};
/// use tower::ServiceBuilder;
///
/// let region = |name: &'static str| Router::new().route("/", get(move || async move { name }));
/// let sites = Sites::builder().site(Site::new("eu-west", region("eu-west"))).build().unwrap();
/// let selector = ServiceBuilder::new()
///     .layer(GslbLayer::new(GslbConfig::<Request>::default()))
///     .service(sites);
/// let app: Router = Router::new().fallback_service(selector); // Infallible: From<BoxError>
/// ```
///
/// # Example
///
/// ```
/// use rampart_gslb::{GslbConfig, GslbLayer, Site, Sites};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let region = |name: &'static str| service_fn(move |_: ()| async move { Ok::<_, std::io::Error>(name) });
/// let sites = Sites::builder()
///     .site(Site::new("eu", region("eu")))
///     .site(Site::new("us", region("us")).priority(1))
///     .build()
///     .unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(GslbLayer::new(GslbConfig::<()>::default()))
///     .service(sites);
/// assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "eu");
/// assert_eq!(svc.handle().snapshot().sites.len(), 2);
/// # }
/// ```
pub struct GslbLayer<Req> {
    config: GslbConfig<Req>,
}

impl<Req> Clone for GslbLayer<Req> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
        }
    }
}

impl<Req> fmt::Debug for GslbLayer<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GslbLayer").field(&self.config).finish()
    }
}

impl<Req> GslbLayer<Req> {
    /// A layer with `config`.
    pub fn new(config: GslbConfig<Req>) -> Self {
        Self { config }
    }

    /// The settings every selector made by this layer gets.
    pub fn config(&self) -> &GslbConfig<Req> {
        &self.config
    }
}

impl<S, Req: 'static> Layer<Sites<S>> for GslbLayer<Req> {
    type Service = Gslb<S, Req>;

    fn layer(&self, sites: Sites<S>) -> Self::Service {
        Gslb::new(self.config.clone(), sites)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_is_clone_and_debug_and_keeps_its_config() {
        let layer = GslbLayer::new(GslbConfig::<()>::builder().name("edge").build().unwrap());
        let copy = layer.clone();
        assert_eq!(copy.config().name(), "edge");
        assert_eq!(layer.config().name(), "edge");
        assert!(format!("{copy:?}").contains("edge"));
    }
}
