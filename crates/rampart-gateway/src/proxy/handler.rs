//! The proxy as the server's [`Handler`]: a request is routed by host and path, its headers
//! made ready to forward, sent through its cluster's stack, and its answer (and, when on, its
//! access-log line) handed back.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HOST, HeaderValue, TE};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use rampart_balance::LateOutcome;
use rampart_fallback::{ApologyBody, FallbackBody};
use rampart_health::Deadline;
use rampart_health::grpc::GRPC_STATUS;
use tower::ServiceExt;
use tower::util::Oneshot;

use super::body::TrailerVerdict;
use super::forward::{self, from_http2};
use super::{ClusterStack, Proxy, ProxyBalance, ProxyBody, UpBody, up_body};
use crate::server::{ConnectionInfo, Handler};

fn no_route() -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::new(FallbackBody::apology(ApologyBody::new(
        Bytes::from_static(b"no route for this host and path\n"),
    ))));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

/// A routed request: the cluster's call, for a gRPC cluster its breaker's verdict to take
/// from the trailers, and, when the access log is on, its entry.
type Routed<B> = (
    Oneshot<ClusterStack<B>, Request<UpBody>>,
    Option<TrailerVerdict>,
    Option<AccessEntry>,
);

struct AccessEntry {
    method: Method,
    uri: http::Uri,
    cluster: Arc<str>,
    start: Instant,
}

impl<B: ProxyBalance> Handler for Proxy<B> {
    type Body = ProxyBody;

    fn handle(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static + use<B> {
        let (mut parts, body) = req.into_parts();
        if parts.version == Version::HTTP_2 {
            from_http2(&mut parts);
        }
        let table = self.table.load();
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.host());
        let routed: Option<Routed<B>> = match table.route(host, parts.uri.path()) {
            None => None,
            Some(cluster) => {
                let conn = parts.extensions.get::<ConnectionInfo>().copied();
                let grpc = cluster.section.grpc;
                // gRPC servers expect `TE: trailers` (the one TE value HTTP/2 allows).
                let te_trailers = grpc
                    && parts
                        .headers
                        .get(TE)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
                forward::request_headers(&mut parts.headers, conn);
                if grpc {
                    if te_trailers {
                        parts
                            .headers
                            .insert(TE, HeaderValue::from_static("trailers"));
                    }
                    // The caller's `grpc-timeout`: no attempt is sent past it.
                    if let Some(deadline) = Deadline::from_headers(&parts.headers) {
                        parts.extensions.insert(deadline);
                    }
                }
                let entry = self.access_log.then(|| AccessEntry {
                    method: parts.method.clone(),
                    uri: parts.uri.clone(),
                    cluster: cluster.name.clone(),
                    start: Instant::now(),
                });
                let verdict = cluster
                    .classifier
                    .grpc_classifier()
                    .map(|g| TrailerVerdict::new(g, cluster.breaker.clone()));
                let req = Request::from_parts(parts, up_body(body));
                Some((cluster.stack.clone().oneshot(req), verdict, entry))
            }
        };
        drop(table);
        async move {
            let Some((call, verdict, entry)) = routed else {
                return no_route();
            };
            let mut resp = match call.await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            // A gRPC answer whose status is still to come (no `grpc-status` in its head: not
            // Trailers-Only, not our apology) is judged by its trailers, for the breaker and
            // for the balancer's passive ejection (which left its outcome to come).
            let mut resp = match verdict {
                Some(v)
                    if resp.status() == StatusCode::OK
                        && !resp.headers().contains_key(GRPC_STATUS) =>
                {
                    let late = resp.extensions_mut().remove::<LateOutcome>();
                    resp.map(|b| ProxyBody::with_verdict(b, v.with_late(late)))
                }
                _ => resp.map(ProxyBody::new),
            };
            forward::response_headers(resp.headers_mut());
            if let Some(e) = entry {
                tracing::info!(
                    target: "rampart_gateway::access",
                    method = %e.method,
                    uri = %e.uri,
                    cluster = &*e.cluster,
                    status = resp.status().as_u16(),
                    micros = u64::try_from(e.start.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "request"
                );
            }
            resp
        }
    }
}
