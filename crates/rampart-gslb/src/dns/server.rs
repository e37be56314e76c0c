//! Transports: a fixed set of UDP workers on one socket, and TCP through hickory-server's
//! listener (framing, idle timeout, one query at a time per connection).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, MessageType, ResponseCode};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tokio::net::UdpSocket;

use super::answer::{Authority, Worker, error_header};
use super::query::Transport;
use super::stats::Rcode;

/// The largest query datagram read; longer ones arrive cut short and fail to parse (FORMERR).
const MAX_QUERY: usize = 4096;

/// TCP answers reuse at most this many idle workers.
const TCP_POOL: usize = 8;

/// One UDP worker: receive, answer, send; one query at a time, buffers reused.
pub(crate) async fn udp_worker(auth: Arc<Authority>, socket: Arc<UdpSocket>) {
    let mut worker = auth.worker();
    let mut buf = vec![0u8; MAX_QUERY];
    let mut out: Vec<u8> = Vec::with_capacity(usize::from(auth.udp_payload));
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                if matches!(
                    error.kind(),
                    io::ErrorKind::NotConnected | io::ErrorKind::ConnectionAborted
                ) {
                    tracing::warn!(
                        target: "rampart_gslb::dns",
                        gslb = %auth.label,
                        %error,
                        "dns udp socket failed: worker stops"
                    );
                    return;
                }
                tracing::debug!(target: "rampart_gslb::dns", gslb = %auth.label, %error, "dns udp receive error");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let packet = buf.get(..n).unwrap_or_default();
        if answer_udp(&auth, &mut worker, packet, src, &mut out)
            && let Err(error) = socket.send_to(&out, src).await
        {
            tracing::debug!(target: "rampart_gslb::dns", gslb = %auth.label, %src, %error, "dns udp send failed");
        }
    }
}

/// Answers one datagram into `out`; `false` means drop it unanswered.
pub(crate) fn answer_udp(
    auth: &Authority,
    worker: &mut Worker,
    packet: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    let mut decoder = BinDecoder::new(packet);
    let Ok(header) = Header::read(&mut decoder) else {
        // Shorter than a header: nothing to answer to.
        tracing::debug!(target: "rampart_gslb::dns", gslb = %auth.label, %src, len = packet.len(), "dns datagram too short: dropped");
        auth.stats.dropped();
        return false;
    };
    if header.metadata.message_type == MessageType::Response {
        // Never answer a response: that is how reflection loops start.
        auth.stats.dropped();
        return false;
    }
    let request = match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(target: "rampart_gslb::dns", gslb = %auth.label, %src, %error, "malformed dns query: formerr");
            auth.stats.query(None, Transport::Udp, Rcode::FormErr);
            return error_header(&header, ResponseCode::FormErr, out);
        }
    };
    let plan = auth.plan(worker, &request, src, Transport::Udp);
    let limit = auth.udp_limit(&request);
    let mut encoder = BinEncoder::new(out);
    encoder.set_max_size(limit);
    match auth
        .response(&request, &plan, &worker.scratch)
        .destructive_emit(&mut encoder)
    {
        Ok(info) => {
            if info.truncation {
                auth.stats.truncated(plan.zone);
                tracing::debug!(target: "rampart_gslb::dns", gslb = %auth.label, %src, limit, "dns answer truncated: client retries over tcp");
            }
            true
        }
        Err(error) => {
            tracing::warn!(target: "rampart_gslb::dns", gslb = %auth.label, %src, %error, "dns answer could not be encoded: servfail");
            error_header(&header, ResponseCode::ServFail, out)
        }
    }
}

/// Answers queries that hickory-server read from TCP connections.
pub(crate) struct TcpHandler {
    pub(crate) auth: Arc<Authority>,
    pool: Mutex<Vec<Worker>>,
}

impl TcpHandler {
    pub(crate) fn new(auth: Arc<Authority>) -> Self {
        Self {
            auth,
            pool: Mutex::new(Vec::new()),
        }
    }

    async fn handle<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut worker = pooled.unwrap_or_else(|| self.auth.worker());
        let plan = self
            .auth
            .plan(&mut worker, request, request.src(), Transport::Tcp);
        let fallback: ResponseInfo = Header {
            metadata: plan.metadata,
            counts: Default::default(),
        }
        .into();
        let sent = response
            .send_response(self.auth.response(request, &plan, &worker.scratch))
            .await;
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < TCP_POOL {
            pool.push(worker);
        }
        drop(pool);
        match sent {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(target: "rampart_gslb::dns", gslb = %self.auth.label, src = %request.src(), %error, "dns tcp send failed");
                fallback
            }
        }
    }
}

impl RequestHandler for TcpHandler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.handle(request, response_handle))
    }
}
