//! What the server calls for each request: a [`Handler`], or any tower service through
//! [`TowerHandler`].

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use rampart_health::BoxError;
use tower::ServiceExt as _;
use tower_service::Service;

/// Turns a request into a response. Errors are already answered (a 502, an apology page), so
/// the future yields a response, never an error.
///
/// The future is a concrete type chosen by the implementation: the server dispatches to it
/// statically and boxes nothing per request. One clone of the handler serves each connection.
pub trait Handler: Clone + Send + 'static {
    /// The response body.
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;

    /// Answers one request.
    fn handle(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static + use<Self>;
}

/// Serves any tower service that never fails (an axum `Router`, a stack ending in a
/// fallback layer) as a [`Handler`]: a clone of the service and a `Oneshot` per request, as
/// hyper-util's `TowerToHyperService` does.
///
/// ```
/// use rampart_gateway::server::TowerHandler;
///
/// use rampart_gateway::server::Handler;
///
/// fn is_handler(_: &impl Handler) {}
///
/// let app: axum::Router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
/// is_handler(&TowerHandler::new(app));
/// ```
#[derive(Debug, Clone)]
pub struct TowerHandler<S> {
    service: S,
}

impl<S> TowerHandler<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        Self { service }
    }

    /// The service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// The service back.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S, B> Handler for TowerHandler<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;

    fn handle(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<B>> + Send + 'static + use<S, B> {
        let call = self.service.clone().oneshot(req);
        async move {
            match call.await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    }
}
