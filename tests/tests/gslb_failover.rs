//! Region failover across two sites, each a rampart-balance balancer over real loopback axum
//! backends, under a rampart-gslb selector.
//!
//! The tests run on a current-thread runtime with tokio's clock paused: the sockets are
//! real, but every timer (health-check interval, probe timeout, failback hold, the clients'
//! pacing) runs on virtual time, which moves only when every task waits. Loopback I/O
//! completes within the syscalls, so the order of events is deterministic, and the bounds
//! below are asserted exactly, on virtual time, without a scheduling allowance.
//!
//! The primary region's backends are shut down while two clients keep sending GET requests:
//! the balancer's active checks (interval `CHECK_INTERVAL`, probe timeout `PROBE_TIMEOUT`,
//! fall 1) turn its health report red, and the selector moves the traffic to the secondary
//! within one interval plus the probe timeout of the kill. Requests caught in that window
//! fail at every primary endpoint before reaching one (refused connections, retried by the
//! balancer on its other endpoint, then a `NeverReached` failure) and are replayed by the
//! selector on the secondary, so no request fails. The primary is then brought back: its
//! checks turn green at once, but traffic returns only after the selector's default 30 s
//! failback hold, and then all of it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
/// The selector's default failback hold (the test relies on the default).
const FAILBACK_HOLD: Duration = Duration::from_secs(30);
/// Each client sends a request, waits for the answer, then waits this long.
const PACE: Duration = Duration::from_millis(20);

type Req = http::Request<Empty<Bytes>>;
type Endpoint = HttpEndpoint<Empty<Bytes>>;
type SiteService = Balance<Endpoint, HttpPolicy>;

/// A backend answering its name on `/` and 200 on `/healthz`, that can be shut down (its
/// listener closed, idle connections closed) and restarted on the same port, or frozen
/// (it accepts connections but never answers: a blackholed region).
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    frozen: Arc<AtomicBool>,
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
            frozen: Arc::new(AtomicBool::new(false)),
        };
        b.serve(listener);
        b
    }

    fn serve(&mut self, listener: TcpListener) {
        let name = self.name;
        let (f1, f2) = (self.frozen.clone(), self.frozen.clone());
        let app = Router::new()
            .route(
                "/",
                get(move || async move {
                    hang_if(&f1).await;
                    name
                }),
            )
            .route(
                "/healthz",
                get(move || async move {
                    hang_if(&f2).await;
                    "ok"
                }),
            );
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

    /// From now on, accepts connections but never answers.
    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Stops accepting (the listener is closed, idle connections are closed).
    fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until a connection attempt is refused.
    async fn wait_refused(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
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
                Err(_) => tokio::task::yield_now().await,
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

async fn hang_if(frozen: &AtomicBool) {
    if frozen.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
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
        // The balancer's own retry: a refused connection goes to the pool's other endpoint.
        .max_retries(2)
        .http_health_checks("/healthz")
        // Nothing routable: fail fast with NoHealthyEndpoints (a NeverReached failure)
        // instead of panic-routing to dead endpoints.
        .panic_threshold(0.0);
    for backend in backends {
        let ep = backend.endpoint();
        b = b.endpoint(rampart::balance::Endpoint::new(ep.name_arc(), ep));
    }
    b.build().unwrap()
}

/// One request's record: its ordinal over all clients, when it was sent (virtual time) and
/// which backend answered (or the error).
#[derive(Debug)]
struct Record {
    ordinal: usize,
    sent: Instant,
    answer: Result<String, String>,
}

impl Record {
    fn served_by(&self, prefix: &str) -> bool {
        self.answer.as_deref().is_ok_and(|a| a.starts_with(prefix))
    }
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
    ordinals: Arc<AtomicUsize>,
) -> JoinHandle<Vec<Record>> {
    tokio::spawn(async move {
        let mut records = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let ordinal = ordinals.fetch_add(1, Ordering::Relaxed);
            let sent = Instant::now();
            let answer = get_once(&mut gslb).await;
            records.push(Record {
                ordinal,
                sent,
                answer,
            });
            tokio::time::sleep(PACE).await;
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
    let deadline = Instant::now() + Duration::from_secs(120);
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

#[tokio::test(start_paused = true)]
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
        .replay(HttpReplay::new(64 * 1024))
        .retries(1)
        .build()
        .unwrap();
    assert_eq!(config.failback_hold(), FAILBACK_HOLD, "the default hold");
    let mut gslb = Gslb::new(config, sites);
    let mut handle = gslb.handle();

    // Healthy: the primary region serves everything (let the first checks pass first).
    tokio::time::sleep(CHECK_INTERVAL * 2).await;
    for _ in 0..20 {
        let who = get_once(&mut gslb).await.unwrap();
        assert!(who.starts_with("primary"), "{who}");
    }
    assert_eq!(handle.snapshot().active_priority, Some(0));

    // Two clients stream requests through the whole scenario.
    let stop = Arc::new(AtomicBool::new(false));
    let ordinals = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| spawn_client(gslb.clone(), stop.clone(), ordinals.clone()))
        .collect();
    // Kill at an instant that is not a check instant (checks run every 200 ms from the start).
    tokio::time::sleep(Duration::from_millis(330)).await;

    // The primary region goes dark.
    let killed = Instant::now();
    p0.kill();
    p1.kill();
    p0.wait_refused().await;
    p1.wait_refused().await;
    let snap = wait_for(&mut handle, "the primary to be reported down", |s| {
        s.site("primary").unwrap().admitted_share == 0.0
    })
    .await;
    let moved = Instant::now();
    let took = moved - killed;
    eprintln!(
        "gslb_failover: traffic moved to the secondary {took:?} (virtual) after the kill \
         (check interval {CHECK_INTERVAL:?} + probe timeout {PROBE_TIMEOUT:?})"
    );
    assert_eq!(snap.active_priority, Some(1));
    assert_eq!(snap.mode, Mode::Normal);
    assert_eq!(snap.site("secondary").unwrap().traffic_share, 1.0);
    // The promised bound, exactly: one health-check interval plus the probe timeout.
    assert!(
        took <= CHECK_INTERVAL + PROBE_TIMEOUT,
        "failover took {took:?} of virtual time"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The primary comes back: healthy at once, but held for the failback hold.
    let restarted = Instant::now();
    p0.restart().await;
    p1.restart().await;
    let snap = wait_for(&mut handle, "the primary's failback to be pending", |s| {
        s.site("primary").unwrap().failback_at.is_some()
    })
    .await;
    let healthy_again = Instant::now();
    let admitted_at = snap.site("primary").unwrap().failback_at.unwrap();
    assert_eq!(
        admitted_at - healthy_again,
        FAILBACK_HOLD,
        "failback is due exactly one hold after the primary turned healthy"
    );
    assert!(healthy_again - restarted <= CHECK_INTERVAL + PROBE_TIMEOUT);
    assert_eq!(
        snap.active_priority,
        Some(1),
        "no traffic back before the hold"
    );
    let snap = wait_for(&mut handle, "the primary to be admitted", |s| {
        s.active_priority == Some(0)
    })
    .await;
    let back = Instant::now();
    // (Timers have millisecond resolution.)
    assert!(
        back >= admitted_at && back - admitted_at <= Duration::from_millis(1),
        "admitted {:?} after the hold ended",
        back.saturating_duration_since(admitted_at)
    );
    assert_eq!(snap.site("primary").unwrap().traffic_share, 1.0);
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::Relaxed);
    let mut records = Vec::new();
    for c in clients {
        records.extend(c.await.unwrap());
    }
    records.sort_by_key(|r| r.ordinal);

    // Zero failed requests, across the kill and the return.
    let failed: Vec<_> = records.iter().filter(|r| r.answer.is_err()).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");

    // By ordinal: the primary served every request sent before the kill, the secondary every
    // request from the kill until the hold ended, the primary every request after it.
    let before: Vec<_> = records.iter().filter(|r| r.sent < killed).collect();
    let window: Vec<_> = records
        .iter()
        .filter(|r| r.sent >= killed && r.sent < moved)
        .collect();
    let held: Vec<_> = records
        .iter()
        .filter(|r| r.sent >= killed && r.sent < admitted_at)
        .collect();
    let after: Vec<_> = records.iter().filter(|r| r.sent > back).collect();
    eprintln!(
        "gslb_failover: {} requests: {} before the kill, {} in the failover window (replayed \
         on the secondary), {} from the kill to the end of the hold, {} after",
        records.len(),
        before.len(),
        window.len(),
        held.len(),
        after.len()
    );
    assert!(before.iter().all(|r| r.served_by("primary")));
    assert!(
        !window.is_empty(),
        "the window between kill and failover saw requests"
    );
    // The hold is 30 s of 20 ms-paced requests from two clients: about 3000 requests.
    assert!(
        held.len() > 2500,
        "{} requests during failover and hold",
        held.len()
    );
    let early: Vec<_> = held.iter().filter(|r| !r.served_by("secondary")).collect();
    assert!(
        early.is_empty(),
        "served by the primary before the hold ended: {early:?}"
    );
    assert!(after.len() > 50);
    let late: Vec<_> = after.iter().filter(|r| !r.served_by("primary")).collect();
    assert!(
        late.is_empty(),
        "not served by the primary after the hold: {late:?}"
    );
    // The first request the primary served again was sent when the hold had ended.
    let first_back = records
        .iter()
        .filter(|r| r.sent >= killed)
        .find(|r| r.served_by("primary"))
        .unwrap();
    assert!(first_back.sent >= admitted_at, "{first_back:?}");
    eprintln!(
        "gslb_failover: request #{} was the first served by the primary again, {:?} after it \
         turned healthy",
        first_back.ordinal,
        first_back.sent - healthy_again
    );
    drop(s0);
    drop(s1);
}

/// The other half of the bound: a region that still accepts connections but answers nothing
/// (blackholed) is only found out by probe timeouts, and the selector still moves within one
/// check interval plus the probe timeout. The region is frozen just after a check instant,
/// the worst case: the next check comes a whole interval later and needs the whole timeout.
#[tokio::test(start_paused = true)]
async fn blackholed_region_fails_over_within_interval_plus_probe_timeout() {
    let p0 = Backend::start("primary-0").await;
    let s0 = Backend::start("secondary-0").await;
    let checks_started = Instant::now();
    let sites = Sites::builder()
        .site(Site::new("primary", balancer(&[&p0])).reported())
        .site(
            Site::new("secondary", balancer(&[&s0]))
                .priority(1)
                .reported(),
        )
        .build()
        .unwrap();
    let mut gslb = Gslb::new(GslbConfig::<Req>::default(), sites);
    let mut handle = gslb.handle();
    // Checks run at checks_started + k × interval; freeze 1 ms after the third one.
    tokio::time::sleep_until(checks_started + CHECK_INTERVAL * 3 + Duration::from_millis(1)).await;
    assert_eq!(get_once(&mut gslb).await.unwrap(), "primary-0");
    let frozen = Instant::now();
    p0.freeze();
    let snap = wait_for(&mut handle, "the primary to be reported down", |s| {
        s.active_priority == Some(1)
    })
    .await;
    let took = Instant::now() - frozen;
    eprintln!("gslb_failover: blackholed primary left {took:?} (virtual) after it froze");
    assert!(
        took <= CHECK_INTERVAL + PROBE_TIMEOUT,
        "failover took {took:?} of virtual time"
    );
    // It did need the probe timeout: more than one interval.
    assert!(took > CHECK_INTERVAL, "{took:?}");
    assert_eq!(snap.site("secondary").unwrap().traffic_share, 1.0);
    assert_eq!(get_once(&mut gslb).await.unwrap(), "secondary-0");
}

/// The retry path alone: the selector is given no health signal at all, so it keeps routing
/// to the dead primary; every request fails there before reaching a backend (the balancer's
/// `NoHealthyEndpoints` or a refused connection, both `NeverReached`) and is replayed on the
/// secondary. Without a replay strategy the same requests fail.
#[tokio::test(start_paused = true)]
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

    p0.kill();
    p0.wait_refused().await;
    // Across the primary balancer's own check verdict (refused, then NoHealthyEndpoints).
    for _ in 0..20 {
        assert_eq!(get_once(&mut with_replay).await.unwrap(), "secondary-0");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        with_replay.handle().snapshot().active_priority,
        Some(0),
        "the selector never learnt about the failure: only the retry saved these requests"
    );
    let err = get_once(&mut without).await.unwrap_err();
    assert!(err.starts_with("error:"), "{err}");
}
