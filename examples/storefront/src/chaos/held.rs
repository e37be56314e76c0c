//! The checkout the runner places itself in `shop-killed`, so that the SIGKILL always finds
//! shop A in the middle of one.
//!
//! While the runner looks for the moment to kill, checkout holds every order it is sent (the
//! fleet's `hold` fault: its health checks pass, so the shops keep forwarding to it, and each
//! order waits inside the shop for the shop's checkout budget). The runner sends its own
//! checkout straight to shop A's address and registers it as a customer waiting: shop A
//! records it in its outbox and then waits on checkout, recorded and unanswered, for as long
//! as the budget lasts — seconds, where finding it takes milliseconds. If the budget runs out
//! first (a very loaded machine), the shop answers `202` and the runner sends another.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::load::{InFlight, Kind, build_request};

/// A checkout in flight; dropping it aborts the request.
#[derive(Debug)]
pub(crate) struct Held(pub(crate) tokio::task::JoinHandle<String>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends one checkout to `shop` (`http://<addr>`), its key in `inflight` until it is
/// answered, fails, or 10 s pass. The task ends with what became of it (`202 after 2.6 s`,
/// `connection closed after 0.1 s`).
pub(crate) fn send(shop: &str, inflight: &InFlight, rng: &mut fastrand::Rng) -> Held {
    let (req, key) = build_request(Kind::Checkout, shop, rng);
    let inflight = inflight.clone();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    if let Some(k) = &key {
        inflight.insert(k);
    }
    let sent = Instant::now();
    Held(tokio::spawn(async move {
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            match client.request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let _ = resp.into_body().collect().await;
                    status.to_string()
                }
                Err(_) => "connection closed".to_owned(),
            }
        })
        .await
        .unwrap_or_else(|_| "no answer".to_owned());
        if let Some(k) = &key {
            inflight.remove(k);
        }
        format!("{outcome} after {:.1} s", sent.elapsed().as_secs_f64())
    }))
}
