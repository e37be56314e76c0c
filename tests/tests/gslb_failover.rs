//! Region failover across two sites, each a rampart-balance balancer over real loopback axum
//! backends, under a rampart-gslb selector.
//!
//! The primary region's backends are shut down while two clients keep sending GET requests:
//! the balancer's active checks (interval `CHECK_INTERVAL`, probe timeout `PROBE_TIMEOUT`,
//! fall 1) turn its health report red, the selector moves the traffic to the secondary, and
//! requests caught in the window (connection refused at every primary endpoint: a
//! `NeverReached` failure) are replayed on the secondary, so no request fails. The primary is
//! then brought back: its checks turn green at once, but traffic returns only after the
//! selector's failback hold.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rampart::balance::{Balance, HttpEndpoint, HttpPolicy};
use rampart::gslb::replay::HttpReplay;
use rampart::gslb::{Gslb, GslbConfig, Mode, Site, Sites, Snapshot};
use rampart::health::CheckerConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

const CHECK_INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
const FAILBACK_HOLD: Duration = Duration::from_secs(1);
/// Allowance for scheduling on a loaded 2-core machine, on top of interval + timeout. This is
/// a generous upper bound for a hang, not a performance claim; the measured figure is printed.
const SCHEDULING_ALLOWANCE: Duration = Duration::from_secs(2);

type Req = http::Request<Empty<Bytes>>;
type Endpoint = HttpEndpoint<Empty<Bytes>>;
type SiteService = Balance<Endpoint, HttpPolicy>;

/// A backend answering its name on `/` and 200 on `/healthz`, that can be shut down (its
/// listener closed, idle connections closed) and restarted on the same port.
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut b = Self {
            name,
            addr,
            stop: None,
            task: None,
        };
        b.serve(listener);
        b
    }

    fn serve(&mut self, listener: TcpListener) {
        let name = self.name;
        let app = Router::new()
            .route("/", get(move || async move { name }))
            .route("/healthz", get(|| async { "ok" }));
        let (tx, rx) = oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        }));
    }

    /// Stops accepting and waits until a connection attempt is refused.
    async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{} still accepts connections", self.name);
    }

    async fn restart(&mut self) {
        for _ in 0..200 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.serve(listener);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        panic!("cannot rebind {}", self.addr);
    }

    fn endpoint(&self) -> Endpoint {
        HttpEndpoint::builder(format!("http://{}", self.addr).parse().unwrap())
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

fn balancer(backends: &[&Backend]) -> SiteService {
    let checks = CheckerConfig::builder()
        .interval(CHECK_INTERVAL)
        .unhealthy_interval(CHECK_INTERVAL)
        .timeout(PROBE_TIMEOUT)
        .jitter(0.0)
        .rise(1)
        .fall(1)
        .build()
        .unwrap();
    let mut b = Balance::builder()
        .health_checks(checks)
        .http_health_checks("/healthz")
        // Nothing routable: fail fast with NoHealthyEndpoints (a NeverReached failure)
        // instead of panic-routing to dead endpoints.
        .panic_threshold(0.0);
    for backend in backends {
        let ep = backend.endpoint();
        b = b.endpoint(ep.name_arc(), ep);
    }
    b.build().unwrap()
}

/// One request's record: when it was sent and which backend answered (or the error).
#[derive(Debug)]
struct Record {
    sent: Instant,
    answer: Result<String, String>,
}

async fn get_once(gslb: &mut Gslb<SiteService, Req>) -> Result<String, String> {
    let req = http::Request::get("/").body(Empty::new()).unwrap();
    let svc = gslb.ready().await.map_err(|e| e.to_string())?;
    let resp = svc.call(req).await.map_err(|e| format!("error: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("status {status}: {body}"))
    }
}

fn spawn_client(
    mut gslb: Gslb<SiteService, Req>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<Record>> {
    tokio::spawn(async move {
        let mut records = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let answer = get_once(&mut gslb).await;
            records.push(Record { sent, answer });
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        records
    })
}

/// Waits (bounded) until `done` holds for a snapshot.
async fn wait_for(
    handle: &mut rampart::gslb::GslbHandle,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snap = handle.snapshot();
        if done(&snap) {
            return snap;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}: {snap:?}");
        let _ = tokio::time::timeout(left, handle.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_failover_and_failback_with_balancers_over_real_backends() {
    let mut p0 = Backend::start("primary-0").await;
    let mut p1 = Backend::start("primary-1").await;
    let s0 = Backend::start("secondary-0").await;
    let s1 = Backend::start("secondary-1").await;

    let sites = Sites::builder()
        .site(
            Site::new("primary", balancer(&[&p0, &p1]))
                .region("eu")
                .priority(0)
                .reported(),
        )
        .site(
            Site::new("secondary", balancer(&[&s0, &s1]))
                .region("us")
                .priority(1)
                .reported(),
        )
        .build()
        .unwrap();
    let config = GslbConfig::<Req>::builder()
        .name("it")
        .failback_hold(FAILBACK_HOLD)
        .replay(HttpReplay::new(64 * 1024))
        .retries(1)
        .build()
        .unwrap();
    let mut gslb = Gslb::new(config, sites);
    let mut handle = gslb.handle();

    // Healthy: the primary region serves everything.
    for _ in 0..20 {
        let who = get_once(&mut gslb).await.unwrap();
        assert!(who.starts_with("primary"), "{who}");
    }
    assert_eq!(handle.snapshot().active_priority, Some(0));

    // Two clients stream requests through the whole scenario.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| spawn_client(gslb.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The primary region goes dark.
    let killed = Instant::now();
    p0.kill().await;
    p1.kill().await;
    let snap = wait_for(&mut handle, "the primary to be reported down", |s| {
        s.site("primary").unwrap().admitted_share == 0.0
    })
    .await;
    let moved = Instant::now();
    let took = moved - killed;
    eprintln!(
        "gslb_failover: traffic moved to the secondary {took:?} after the kill \
         (check interval {CHECK_INTERVAL:?} + probe timeout {PROBE_TIMEOUT:?})"
    );
    assert_eq!(snap.active_priority, Some(1));
    assert_eq!(snap.mode, Mode::Normal);
    assert!(
        took <= CHECK_INTERVAL + PROBE_TIMEOUT + SCHEDULING_ALLOWANCE,
        "failover took {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The primary comes back: healthy at once, but held for FAILBACK_HOLD.
    p0.restart().await;
    p1.restart().await;
    let snap = wait_for(&mut handle, "the primary's failback to be pending", |s| {
        s.site("primary").unwrap().failback_at.is_some()
    })
    .await;
    let admitted_at = snap.site("primary").unwrap().failback_at.unwrap();
    assert_eq!(
        snap.active_priority,
        Some(1),
        "no traffic back before the hold"
    );
    let snap = wait_for(&mut handle, "the primary to be admitted", |s| {
        s.active_priority == Some(0)
    })
    .await;
    assert_eq!(snap.site("primary").unwrap().traffic_share, 1.0);
    let back = Instant::now();
    assert!(back >= admitted_at, "admitted before its hold ended");
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    let mut records = Vec::new();
    for c in clients {
        records.extend(c.await.unwrap());
    }

    // Zero failed requests, across the kill and the return.
    let failed: Vec<_> = records.iter().filter(|r| r.answer.is_err()).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let served =
        |r: &Record, prefix: &str| r.answer.as_deref().is_ok_and(|a| a.starts_with(prefix));

    // After the move and until the hold ended, the secondary served everything.
    let held: Vec<_> = records
        .iter()
        // (A margin before the end: a request sent just before it may be routed just after.)
        .filter(|r| r.sent >= moved && r.sent + Duration::from_millis(50) < admitted_at)
        .collect();
    assert!(!held.is_empty());
    assert!(
        held.iter().all(|r| served(r, "secondary")),
        "primary served during failover or hold"
    );
    // Requests sent in the window between the kill and the move were served too (by the
    // secondary, through the selector's retry).
    let window = records
        .iter()
        .filter(|r| r.sent >= killed && r.sent < moved)
        .count();
    eprintln!(
        "gslb_failover: {} requests, {window} sent in the failover window, {} during the hold",
        records.len(),
        held.len()
    );
    // After the hold, the primary is back.
    assert!(
        records
            .iter()
            .filter(|r| r.sent >= back)
            .any(|r| served(r, "primary")),
        "traffic did not return to the primary"
    );
    drop(s0);
    drop(s1);
}

/// The retry path alone, deterministically: the selector is given no health signal at all, so
/// it keeps routing to the dead primary; every request fails there before reaching a backend
/// (the balancer's `NoHealthyEndpoints` or a refused connection, both `NeverReached`) and is
/// replayed on the secondary. Without a replay strategy the same requests fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reached_failures_are_replayed_on_the_next_site() {
    let mut p0 = Backend::start("primary-0").await;
    let s0 = Backend::start("secondary-0").await;
    let build = |replay: bool| {
        let sites = Sites::builder()
            .site(Site::new("primary", balancer(&[&p0])).priority(0))
            .site(Site::new("secondary", balancer(&[&s0])).priority(1))
            .build()
            .unwrap();
        let mut config = GslbConfig::<Req>::builder().name("retry-it");
        if replay {
            config = config.replay(HttpReplay::default());
        }
        Gslb::new(config.build().unwrap(), sites)
    };
    let mut with_replay = build(true);
    let mut without = build(false);
    assert_eq!(get_once(&mut with_replay).await.unwrap(), "primary-0");

    p0.kill().await;
    for _ in 0..20 {
        assert_eq!(get_once(&mut with_replay).await.unwrap(), "secondary-0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        with_replay.handle().snapshot().active_priority,
        Some(0),
        "the selector never learnt about the failure: only the retry saved these requests"
    );
    let err = get_once(&mut without).await.unwrap_err();
    assert!(err.starts_with("error:"), "{err}");
}
