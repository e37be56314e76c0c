//! gRPC through Rampart: a tonic client whose `Channel` is replaced by
//! `Fallback → CircuitBreaker → Balance` of TLS endpoints, health-checked with the gRPC health
//! checking protocol, in front of three tonic servers.
//!
//! - [`proto`]: the `rampart.example.Catalog` service's messages (prost, written by hand: no
//!   `protoc` is needed) and its method path.
//! - [`Pki`]: a CA and a server certificate made at start-up (rcgen).
//! - [`CatalogServer`]: one server over TLS (ALPN `h2`): the catalog service and tonic-health's
//!   health service, killable and restartable on the same port.
//! - [`Catalog`]: the client stack, and [`Catalog::get_item`], one unary call through it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart::balance::{Balance, HttpEndpoint, HttpPolicy};
use rampart::breaker::{CircuitBreaker, CircuitBreakerLayer, Policy, SlidingWindow};
use rampart::fallback::{Fallback, FallbackLayer};
use rampart::health::transport::HttpVersion;
use rampart::health::{BoxError, CheckerConfig, GrpcClassifier, GrpcHealthProbe, TlsConfig};
use tokio_rustls::rustls;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::{Layer, Service, ServiceExt};

/// The catalog service's messages, as prost types written by hand.
pub mod proto {
    /// `rampart.example.GetItemRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetItemRequest {
        /// The item's id.
        #[prost(uint64, tag = "1")]
        pub id: u64,
    }

    /// `rampart.example.Item`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Item {
        /// The item's id.
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// Its name.
        #[prost(string, tag = "2")]
        pub name: String,
        /// The server that answered.
        #[prost(string, tag = "3")]
        pub served_by: String,
    }

    /// The service's name, as the health service knows it.
    pub const SERVICE: &str = "rampart.example.Catalog";
    /// The unary method's path.
    pub const GET_ITEM: &str = "/rampart.example.Catalog/GetItem";
}

/// A CA and a certificate for `localhost` / `127.0.0.1` signed by it, made at start-up.
#[derive(Debug)]
pub struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    /// Generates the CA and the server certificate.
    pub fn generate() -> Result<Self, BoxError> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "rampart grpc example ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: issuer.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The client's TLS settings: trust this CA only.
    pub fn client_tls(&self) -> Result<TlsConfig, BoxError> {
        Ok(TlsConfig::builder().ca_pem(self.ca_pem.clone()).build()?)
    }

    /// The CA certificate (PEM), for clients configured another way (tonic's own TLS).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, BoxError> {
        self.server_tls(&[b"h2"])
    }

    /// A server's TLS settings with this certificate, offering `alpn` (e.g. `[b"http/1.1"]`).
    pub fn server_tls(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, BoxError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

/// The catalog service and the health service behind one tower service.
#[derive(Clone)]
struct Router {
    name: Arc<str>,
    calls: Arc<AtomicUsize>,
    health: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
}

#[derive(Clone)]
struct GetItem {
    name: Arc<str>,
}

impl tonic::server::UnaryService<proto::GetItemRequest> for GetItem {
    type Response = proto::Item;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<proto::Item>, tonic::Status>> + Send>>;

    fn call(&mut self, req: tonic::Request<proto::GetItemRequest>) -> Self::Future {
        let name = self.name.clone();
        Box::pin(async move {
            let id = req.into_inner().id;
            Ok(tonic::Response::new(proto::Item {
                id,
                name: format!("item {id}"),
                served_by: name.to_string(),
            }))
        })
    }
}

impl<B> Service<http::Request<B>> for Router
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == proto::GET_ITEM {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let svc = GetItem {
                name: self.name.clone(),
            };
            return Box::pin(async move {
                let codec =
                    tonic_prost::ProstCodec::<proto::Item, proto::GetItemRequest>::default();
                Ok(tonic::server::Grpc::new(codec).unary(svc, req).await)
            });
        }
        let health = self.health.clone();
        Box::pin(async move { health.oneshot(req).await })
    }
}

/// One catalog server over TLS (see the [crate docs](crate)).
#[derive(Debug)]
pub struct CatalogServer {
    addr: SocketAddr,
    name: Arc<str>,
    reporter: HealthReporter,
    calls: Arc<AtomicUsize>,
    tls: Arc<rustls::ServerConfig>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl CatalogServer {
    /// Starts a server named `name` on `127.0.0.1:0`.
    pub async fn start(name: &str, pki: &Pki) -> Result<Self, BoxError> {
        let (reporter, _) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(proto::SERVICE, ServingStatus::Serving)
            .await;
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: name.into(),
            reporter,
            calls: Arc::new(AtomicUsize::new(0)),
            tls: pki.server_config()?,
            task: None,
        };
        server.listen().await?;
        Ok(server)
    }

    async fn listen(&mut self) -> Result<(), BoxError> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.addr = listener.local_addr()?;
        let router = Router {
            name: self.name.clone(),
            calls: self.calls.clone(),
            health: tonic_health::pb::health_server::HealthServer::new(
                tonic_health::server::HealthService::from_health_reporter(self.reporter.clone()),
            ),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the task closes them all, like a kill.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let svc = hyper_util::service::TowerToHyperService::new(router.clone());
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        }));
        Ok(())
    }

    /// The base URI clients dial.
    pub fn uri(&self) -> http::Uri {
        http::Uri::from_maybe_shared(format!("https://{}", self.addr))
            .unwrap_or_else(|_| http::Uri::from_static("https://127.0.0.1"))
    }

    /// The server's name (it answers with it in `Item::served_by`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Catalog calls served so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Kills the server: the listener and every connection close at once.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) -> Result<(), BoxError> {
        self.kill();
        self.listen().await
    }

    /// Sets what its health service says about the catalog.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter
            .set_service_status(proto::SERVICE, status)
            .await;
    }
}

impl Drop for CatalogServer {
    fn drop(&mut self) {
        self.kill();
    }
}

type Endpoint = HttpEndpoint<Full<Bytes>>;
type Stack =
    Fallback<CircuitBreaker<Balance<Endpoint, HttpPolicy<GrpcClassifier>>, GrpcClassifier>>;

/// The client: `Fallback → CircuitBreaker → Balance` of HTTP/2 TLS endpoints, health-checked by
/// the gRPC health checking protocol, classified by gRPC status.
#[derive(Clone)]
pub struct Catalog {
    stack: Stack,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

/// An error of the transport under the gRPC client (a concrete type: tonic's client wants
/// its service's error convertible into a boxed error for every lifetime).
#[derive(Debug)]
struct CallError(BoxError);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// The item, and the server that served it.
    Item(proto::Item),
    /// A gRPC error status, with the server's `grpc-retry-pushback-ms` if any.
    Status {
        /// The code.
        code: tonic::Code,
        /// The pushback in milliseconds.
        pushback_ms: Option<i64>,
    },
}

impl Catalog {
    /// A client of `servers`, trusting `tls`.
    pub fn new(servers: &[http::Uri], tls: TlsConfig) -> Result<Self, BoxError> {
        let template = HttpEndpoint::builder(http::Uri::from_static("https://127.0.0.1"))
            .http_version(HttpVersion::Http2)
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_secs(2))
            .tls(tls.clone());
        let balance = Balance::builder()
            .policy(HttpPolicy::new().with_classifier(GrpcClassifier::new()))
            .http_endpoints(servers.iter().cloned(), &template)?
            .probe_with(move |name: &str| {
                GrpcHealthProbe::builder(name.parse().ok()?)
                    .service(proto::SERVICE)
                    .tls(tls.clone())
                    .timeout(Duration::from_millis(500))
                    .build()
                    .ok()
            })
            .health_checks(
                CheckerConfig::builder()
                    .interval(Duration::from_millis(500))
                    .unhealthy_interval(Duration::from_millis(500))
                    .timeout(Duration::from_millis(500))
                    .rise(1)
                    .fall(2)
                    .build()?,
            )
            .max_retries(2)
            .build()?;
        let breaker = CircuitBreakerLayer::new(
            Policy::builder()
                .sliding_window(SlidingWindow::count(10))
                .minimum_calls(5)
                .failure_rate_threshold(50.0)
                .open_duration(Duration::from_millis(500))
                .max_open_duration(Duration::from_secs(2))
                .build()?,
        )
        .classifier(GrpcClassifier::new());
        let stack = FallbackLayer::new().layer(breaker.layer(balance));
        Ok(Self { stack })
    }

    /// One `GetItem` call through the stack.
    pub fn get_item(
        &self,
        id: u64,
    ) -> Pin<Box<dyn Future<Output = Result<CallResult, BoxError>> + Send + 'static>> {
        Box::pin(self.clone().call_get_item(id))
    }

    async fn call_get_item(self, id: u64) -> Result<CallResult, BoxError> {
        // GetItem is a read: it may be retried on another server whatever happened to the
        // first attempt, so it says so.
        let stack = self.stack.clone();
        let svc = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
            let stack = stack.clone();
            async move {
                let (mut parts, body) = req.into_parts();
                parts.headers.insert(
                    http::HeaderName::from_static("idempotency-key"),
                    http::HeaderValue::from_static("get-item"),
                );
                // Buffered, so that a retry elsewhere can send it again.
                let body = body
                    .collect()
                    .await
                    .map_err(|e| CallError(Box::new(e)))?
                    .to_bytes();
                stack
                    .oneshot(http::Request::from_parts(parts, Full::new(body)))
                    .await
                    .map_err(|never: Infallible| -> CallError { match never {} })
            }
        });
        let mut grpc =
            tonic::client::Grpc::with_origin(svc, http::Uri::from_static("https://catalog"));
        grpc.ready()
            .await
            .map_err(|e| -> BoxError { Box::new(e) })?;
        let codec = tonic_prost::ProstCodec::<proto::GetItemRequest, proto::Item>::default();
        let path = http::uri::PathAndQuery::from_static(proto::GET_ITEM);
        match grpc
            .unary(
                tonic::Request::new(proto::GetItemRequest { id }),
                path,
                codec,
            )
            .await
        {
            Ok(res) => Ok(CallResult::Item(res.into_inner())),
            Err(status) => Ok(CallResult::Status {
                code: status.code(),
                pushback_ms: status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            }),
        }
    }
}
