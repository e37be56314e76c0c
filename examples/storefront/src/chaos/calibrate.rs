//! The sustainable rate, measured at start-up: a short closed-loop run of the usual mix
//! through the edge.
//!
//! A fixed number of workers each send one request, read the whole answer and send the next,
//! as fast as the topology answers. Closed-loop load cannot overload anything (a worker waits
//! for its answer), so the rate of complete answers it gets, ok or degraded (an apology or an
//! error is not an answer the shop sustained), is what the machine sustains with the mix;
//! the `surge` phase runs open-loop at five times that (or at the rate the flags give).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::args::ChaosArgs;
use super::compare::SurgeFacts;
use super::load::{Class, build_request, classify, pick_kind};
use super::say;
use super::topology::Topology;

/// What the calibration measured (in the facts side file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Complete answers (ok or degraded) per second: the sustainable rate.
    pub rate: f64,
    /// Concurrent closed-loop workers.
    pub workers: u32,
    /// Seconds measured (after a short warm-up).
    pub seconds: f64,
    /// Complete answers counted.
    pub answered: u64,
    /// Apologies and errors counted (not part of the rate).
    pub refused: u64,
}

/// Sizes the surge: `--surge-rate`, else 5 × `--sustainable-rate`, else 5 × the rate
/// measured through `topo`'s primary edge; at least `rate` and at most 20 000 requests/s.
pub(super) async fn size_surge(
    args: &ChaosArgs,
    topo: &Topology,
    rate: f64,
) -> Result<SurgeFacts, String> {
    let mut surge = SurgeFacts::default();
    let surge_rate = match (args.surge_rate, args.sustainable_rate) {
        (Some(r), _) => {
            surge.rate_from = "--surge-rate".into();
            r
        }
        (None, Some(s)) => {
            surge.rate_from = "--sustainable-rate".into();
            surge.sustainable_rate = Some(s);
            s * 5.0
        }
        (None, None) => {
            let (warmup, measure) = if args.quick { (0.5, 2.0) } else { (1.0, 4.0) };
            let c = sustainable_rate(
                &format!("http://{}", topo.edge_addr(0)?),
                args.seed,
                Duration::from_secs_f64(warmup),
                Duration::from_secs_f64(measure),
            )
            .await;
            say(&format!(
                "chaos: sustainable rate {:.0} requests/s ({} answers in {measure} s, closed loop of {}); the surge runs at 5 ×",
                c.rate, c.answered, c.workers
            ));
            surge.rate_from = "measured".into();
            surge.sustainable_rate = Some(c.rate);
            surge.calibration = Some(c);
            c.rate * 5.0
        }
    }
    .clamp(rate, 20_000.0);
    surge.rate = surge_rate;
    Ok(surge)
}

/// Workers of the closed loop: enough to keep both shops' handlers busy on a small machine,
/// few enough to stay under the shops' concurrency limits.
const WORKERS: u32 = 12;

/// Runs the closed loop against `base` for `warmup + measure` and returns the rate over the
/// `measure` part.
pub(crate) async fn sustainable_rate(
    base: &str,
    seed: u64,
    warmup: Duration,
    measure: Duration,
) -> Calibration {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let from = Instant::now() + warmup;
    let until = from + measure;
    let answered = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let client = client.clone();
        let base = base.to_owned();
        let answered = answered.clone();
        let refused = refused.clone();
        let mut rng = fastrand::Rng::with_seed(seed ^ (0x9e37_79b9 + u64::from(w)));
        workers.spawn(async move {
            while Instant::now() < until {
                let kind = pick_kind(&mut rng);
                let (req, _) = build_request(kind, &base, &mut rng);
                let answer = tokio::time::timeout(Duration::from_secs(5), async {
                    let resp = client.request(req).await.ok()?;
                    let (parts, body) = resp.into_parts();
                    let body = Limited::new(body, 4 << 20).collect().await.ok()?;
                    Some(classify(kind, parts.status, &parts.headers, &body.to_bytes()).0)
                })
                .await
                .ok()
                .flatten();
                let done = Instant::now();
                if done < from || done > until {
                    continue;
                }
                match answer {
                    Some(Class::Ok | Class::Degraded) => answered.fetch_add(1, Ordering::Relaxed),
                    _ => refused.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let answered = answered.load(Ordering::Relaxed);
    Calibration {
        rate: answered as f64 / measure.as_secs_f64().max(0.001),
        workers: WORKERS,
        seconds: measure.as_secs_f64(),
        answered,
        refused: refused.load(Ordering::Relaxed),
    }
}
