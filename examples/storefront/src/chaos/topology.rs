//! The production-like topology as child processes of this very binary (`/proc/self/exe` on
//! Linux, else `std::env::current_exe()`): the fleet, two shop instances (each with its own
//! data directory, so its own order outbox, unless both share a PostgreSQL order store) and
//! two edge gateways in front of them, one per region.
//!
//! Each child's stdout and stderr go to `<dir>/logs/<name>.log`. A child is killed with
//! SIGKILL (`std::process::Child::kill`) when its [`Proc`] is dropped, so no process outlives
//! the run.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::config::Config;

/// One child process.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    args: Vec<OsString>,
    child: Option<Child>,
    log: PathBuf,
    starts: u32,
}

impl Proc {
    fn spawn(name: &str, args: Vec<OsString>, logs: &Path) -> Result<Proc, String> {
        let mut p = Proc {
            name: name.to_owned(),
            args,
            child: None,
            log: logs.join(format!("{name}.log")),
            starts: 0,
        };
        p.start()?;
        Ok(p)
    }

    fn start(&mut self) -> Result<(), String> {
        let exe = own_binary()?;
        self.starts += 1;
        let log = if self.starts == 1 {
            self.log.clone()
        } else {
            self.log
                .with_file_name(format!("{}.{}.log", self.name, self.starts))
        };
        let out =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
        let level = std::env::var("STOREFRONT_CHAOS_LOG").unwrap_or_else(|_| "warn".into());
        let child = Command::new(exe)
            .args(&self.args)
            .env("RUST_LOG", level)
            .env_remove("STOREFRONT_ADMIN_TOKEN")
            .env_remove("STOREFRONT_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.name))?;
        self.log = log;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL (on Unix `Child::kill` sends SIGKILL), then reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id, while it runs.
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails when the process has exited, quoting the end of its log.
    fn check_alive(&mut self) -> Result<(), String> {
        let Some(c) = self.child.as_mut() else {
            return Err(format!("{} is not running", self.name));
        };
        match c.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 15)
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// This very binary: on Linux `/proc/self/exe`, which runs the same build even when the file
/// was replaced on disk (a rebuild) during the run; elsewhere `std::env::current_exe()`.
fn own_binary() -> Result<PathBuf, String> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe.to_path_buf());
    }
    std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free loopback port (bound, then released).
fn free_addr() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

type AdminClient = Client<HttpConnector, Full<Bytes>>;

/// The running topology.
#[derive(Debug)]
pub(crate) struct Topology {
    token: String,
    client: AdminClient,
    fleet_control: String,
    fleet_dir: PathBuf,
    // Field order is drop order: the edges first, then the shops, then the fleet.
    /// One edge per region (primary first), each in front of both shops.
    edges: Vec<(Proc, SocketAddr)>,
    shops: Vec<(Proc, SocketAddr)>,
    shop_dirs: Vec<PathBuf>,
    _fleet: Proc,
}

/// How long a child may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Topology {
    /// Starts fleet, two shops and one edge per address of `edge_addrs` (one per region,
    /// primary first) under `dir`; `shop_settings` is appended to the shops' configuration as
    /// its `[shop]` table. With `database_url`, both shops keep their orders in that
    /// PostgreSQL database (one shared outbox). The fleet's catalog speaks `catalog_protocol`
    /// (the shops read how from the file the fleet writes).
    pub(crate) async fn start(
        dir: &Path,
        token: &str,
        shop_settings: &str,
        edge_check_interval: Duration,
        database_url: Option<&str>,
        edge_addrs: &[SocketAddr],
        catalog_protocol: crate::fleet::CatalogProtocol,
    ) -> Result<Topology, String> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        let client: AdminClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());

        // 1. The fleet; it writes the shops' configuration into its data directory.
        let fleet_dir = dir.join("fleet");
        let fleet_toml = fleet_dir.join("fleet.toml");
        let _ = std::fs::remove_file(&fleet_toml);
        let mut fleet = Proc::spawn(
            "fleet",
            args(&[
                "fleet",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &fleet_dir.to_string_lossy(),
                "--admin-token",
                token,
                "--catalog-protocol",
                catalog_protocol.as_str(),
            ]),
            &logs,
        )?;
        let deadline = Instant::now() + START_TIMEOUT;
        let (fleet_text, fleet_cfg) = loop {
            if let Ok(text) = std::fs::read_to_string(&fleet_toml)
                && let Ok(cfg) = Config::from_toml_str(&text)
                && cfg.upstreams.is_some()
            {
                break (text, cfg);
            }
            fleet.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!("the fleet did not write {}", fleet_toml.display()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let fleet_control = fleet_cfg
            .fleet_control
            .ok_or_else(|| format!("{} names no fleet_control", fleet_toml.display()))?;
        wait_healthy(&client, &fleet_control, &mut fleet).await?;

        // 2. Two shop instances over the fleet, each with its own outbox.
        let shop_toml = dir.join("shop.toml");
        std::fs::write(&shop_toml, format!("{fleet_text}\n[shop]\n{shop_settings}"))
            .map_err(|e| format!("cannot write {}: {e}", shop_toml.display()))?;
        let mut shops = Vec::new();
        let mut shop_dirs = Vec::new();
        for name in ["shop-a", "shop-b"] {
            shop_dirs.push(dir.join(name));
            let addr = free_addr()?;
            let mut shop_args = args(&[
                "shop",
                "--config",
                &shop_toml.to_string_lossy(),
                "--data-dir",
                &dir.join(name).to_string_lossy(),
                "--listen",
                &addr.to_string(),
                "--admin-token",
                token,
            ]);
            if let Some(url) = database_url {
                shop_args.extend(args(&["--database-url", url]));
            }
            let mut p = Proc::spawn(name, shop_args, &logs)?;
            wait_healthy(&client, &format!("http://{addr}"), &mut p).await?;
            shops.push((p, addr));
        }

        // 3. The edges, one per region on its own loopback address, each in front of both
        //    shops; the first line of an edge's stdout is its address.
        let interval = humantime::format_duration(edge_check_interval).to_string();
        let upstreams: Vec<String> = shops.iter().map(|(_, a)| format!("http://{a}")).collect();
        let mut edges = Vec::new();
        for (addr, (region, _)) in edge_addrs.iter().zip(super::region::EDGE_REGIONS) {
            let listen = addr.to_string();
            let mut edge_args = vec!["edge", "--listen", &listen, "--check-interval"];
            edge_args.push(&interval);
            for u in &upstreams {
                edge_args.push("--upstream");
                edge_args.push(u);
            }
            let mut edge = Proc::spawn(&format!("edge-{region}"), args(&edge_args), &logs)?;
            let bound = wait_edge(&mut edge).await?;
            edges.push((edge, bound));
        }
        Ok(Topology {
            token: token.to_owned(),
            client,
            fleet_control,
            fleet_dir,
            edges,
            shops,
            shop_dirs,
            _fleet: fleet,
        })
    }

    /// Where edge `i` listens (0: the primary region's).
    pub(crate) fn edge_addr(&self, i: usize) -> Result<SocketAddr, String> {
        self.edges
            .get(i)
            .map(|(_, a)| *a)
            .ok_or_else(|| format!("no edge {i}"))
    }

    /// Every edge's address, primary first.
    pub(crate) fn edge_addrs(&self) -> Vec<SocketAddr> {
        self.edges.iter().map(|(_, a)| *a).collect()
    }

    /// SIGKILLs edge `i`.
    pub(crate) fn kill_edge(&mut self, i: usize) {
        if let Some((p, _)) = self.edges.get_mut(i) {
            p.kill();
        }
    }

    /// Restarts edge `i` on its address; returns once it printed its address.
    pub(crate) async fn restart_edge(&mut self, i: usize) -> Result<(), String> {
        let Some((p, _)) = self.edges.get_mut(i) else {
            return Err(format!("no edge {i}"));
        };
        p.start()?;
        wait_edge(p).await?;
        Ok(())
    }

    /// The checkout service's database.
    pub(crate) fn checkout_db(&self) -> PathBuf {
        self.fleet_dir.join("checkout.db")
    }

    /// `POST /admin/faults` on the fleet's control API.
    pub(crate) async fn fault(&self, body: serde_json::Value) -> Result<(), String> {
        self.admin("/admin/faults", body.to_string()).await
    }

    /// `POST /admin/faults/reset`.
    pub(crate) async fn reset(&self) -> Result<(), String> {
        self.admin("/admin/faults/reset", String::new()).await
    }

    /// The requests the shops' concurrency limiters shed so far, summed by partition over
    /// the shops that answer; `None` when no shop has a limiter (`--no-limit`).
    pub(crate) async fn limiter_sheds(&self) -> Option<std::collections::BTreeMap<String, u64>> {
        let mut total: Option<std::collections::BTreeMap<String, u64>> = None;
        for (_, addr) in &self.shops {
            let Ok(req) =
                Request::get(format!("http://{addr}/status.json")).body(Full::new(Bytes::new()))
            else {
                continue;
            };
            let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(5), self.client.request(req)).await
            else {
                continue;
            };
            let Ok(body) = resp.into_body().collect().await else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
                continue;
            };
            let Some(parts) = v["limiter"]["partitions"].as_array() else {
                continue;
            };
            let t = total.get_or_insert_with(Default::default);
            for p in parts {
                if let (Some(name), Some(shed)) = (p["name"].as_str(), p["shed"].as_u64()) {
                    *t.entry(name.to_owned()).or_default() += shed;
                }
            }
        }
        total
    }

    async fn admin(&self, path: &str, body: String) -> Result<(), String> {
        let req = Request::post(format!("{}{path}", self.fleet_control))
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(5), self.client.request(req))
            .await
            .map_err(|_| format!("{path} timed out"))?
            .map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("{path} {body} answered {status}: {text}"))
        }
    }

    /// The order outbox of shop instance `i`.
    pub(crate) fn shop_outbox(&self, i: usize) -> Option<PathBuf> {
        self.shop_dirs.get(i).map(|d| d.join("outbox.db"))
    }

    /// Freezes shop instance `i` with SIGSTOP and waits until every one of its threads is
    /// stopped (`/proc/<pid>/task/*/stat` in state `T`): from then on it can neither answer
    /// a request nor change its outbox. `Ok(false)` when it did not stop within a second
    /// (it is resumed then).
    pub(crate) async fn freeze_shop(&self, i: usize) -> Result<bool, String> {
        let pid = self.shop_pid(i)?;
        signal(pid, "STOP")?;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if all_threads_stopped(pid) {
                return Ok(true);
            }
            if Instant::now() > deadline {
                signal(pid, "CONT")?;
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Resumes shop instance `i` after [`Topology::freeze_shop`].
    pub(crate) fn thaw_shop(&self, i: usize) -> Result<(), String> {
        signal(self.shop_pid(i)?, "CONT")
    }

    /// The process id of shop instance `i`, while it runs.
    pub(crate) fn shop_pid(&self, i: usize) -> Result<u32, String> {
        self.shops
            .get(i)
            .and_then(|(p, _)| p.pid())
            .ok_or_else(|| format!("shop {i} is not running"))
    }

    /// SIGKILLs shop instance `i` (frozen or not).
    pub(crate) fn kill_shop(&mut self, i: usize) {
        if let Some((p, _)) = self.shops.get_mut(i) {
            p.kill();
        }
    }

    /// Restarts shop instance `i` on its address and data directory; returns how long it
    /// took to answer `/healthz`.
    pub(crate) async fn restart_shop(&mut self, i: usize) -> Result<Duration, String> {
        let started = Instant::now();
        let client = self.client.clone();
        let Some((p, addr)) = self.shops.get_mut(i) else {
            return Err(format!("no shop {i}"));
        };
        p.start()?;
        wait_healthy(&client, &format!("http://{addr}"), p).await?;
        Ok(started.elapsed())
    }

    /// Whether shop instance `i` sends its checkouts to the checkout service now: its
    /// `/status.json` shows the checkout breaker closed and a routable site with a healthy
    /// replica.
    pub(crate) async fn shop_checkout_ready(&self, i: usize) -> bool {
        let Some((_, addr)) = self.shops.get(i) else {
            return false;
        };
        let Ok(req) =
            Request::get(format!("http://{addr}/status.json")).body(Full::new(Bytes::new()))
        else {
            return false;
        };
        let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(2), self.client.request(req)).await
        else {
            return false;
        };
        let Ok(body) = resp.into_body().collect().await else {
            return false;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
            return false;
        };
        v["services"].as_array().into_iter().flatten().any(|s| {
            s["service"] == "checkout"
                && s["breaker"] == "closed"
                && s["sites"].as_array().into_iter().flatten().any(|site| {
                    site["routable"] == true
                        && site["replicas"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|r| r["health"] == "healthy" && r["ejected"] == false)
                })
        })
    }

    /// `http://<addr>` of shop instance `i`.
    pub(crate) fn shop_url(&self, i: usize) -> Result<String, String> {
        self.shops
            .get(i)
            .map(|(_, a)| format!("http://{a}"))
            .ok_or_else(|| format!("no shop {i}"))
    }

    /// Restarts every shop instance (running or killed) on its address and data directory
    /// with `extra` arguments added (`--no-limit`); returns once each answers `/healthz`.
    pub(crate) async fn restart_shops_with(&mut self, extra: &[&str]) -> Result<(), String> {
        let client = self.client.clone();
        for (p, addr) in &mut self.shops {
            p.kill();
            p.args.extend(args(extra));
            p.start()?;
            wait_healthy(&client, &format!("http://{addr}"), p).await?;
        }
        Ok(())
    }

    /// Fails when a process of the topology died unexpectedly (a shop killed on purpose and
    /// not restarted is not checked).
    pub(crate) fn check_alive(&mut self) -> Result<(), String> {
        for (p, _) in self.edges.iter_mut().chain(&mut self.shops) {
            if p.child.is_some() {
                p.check_alive()?;
            }
        }
        Ok(())
    }
}

/// Sends `SIG<name>` with kill(1) (the crate forbids `unsafe`, so no direct `kill(2)`).
fn signal(pid: u32, name: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("kill -{name} {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{name} {pid}: {status}"))
    }
}

/// Every thread of `pid` is stopped by a signal (`T` in `/proc/<pid>/task/<tid>/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            return false;
        };
        // `pid (comm) S ...`: the state follows the last `)`.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        if state != Some('T') {
            return false;
        }
        any = true;
    }
    any
}

/// Waits until edge `p` printed its address (the first line of its log).
async fn wait_edge(p: &mut Proc) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(f) = File::open(&p.log) {
            let mut first = String::new();
            if BufReader::new(f).read_line(&mut first).is_ok()
                && first.ends_with('\n')
                && let Ok(a) = first.trim().parse::<SocketAddr>()
            {
                return Ok(a);
            }
        }
        p.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!("{} did not print its address", p.name));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn args(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

async fn wait_healthy(client: &AdminClient, base: &str, p: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(req) = Request::get(format!("{base}/healthz")).body(Full::default())
            && let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(1), client.request(req)).await
            && resp.status() == StatusCode::OK
        {
            return Ok(());
        }
        p.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!("{} did not become healthy at {base}", p.name));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
