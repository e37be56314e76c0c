//! A throw-away PostgreSQL server for the tests and `storefront chaos --database postgres`:
//! Debian's `postgresql` package, initialised in a temporary directory and run as an
//! unprivileged user (PostgreSQL refuses to run as root), listening on 127.0.0.1 only, on a
//! port found free by binding port 0 first, with trust authentication for user `postgres`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why the local server could not be used.
#[derive(Debug)]
pub struct LocalPostgresError {
    missing: bool,
    message: String,
}

impl LocalPostgresError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            missing: false,
            message: message.into(),
        }
    }

    /// The server binaries (`initdb`, `pg_ctl`, `postgres`) are not installed.
    pub fn is_missing(&self) -> bool {
        self.missing
    }
}

impl std::fmt::Display for LocalPostgresError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LocalPostgresError {}

/// A PostgreSQL server in a temporary directory, stopped and removed when dropped.
#[derive(Debug)]
pub struct LocalPostgres {
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `(user, uid, gid)` to run as, when this process is root.
    run_as: Option<(String, u32, u32)>,
    running: bool,
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian), else the `PATH`.
pub fn bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| has_all(d)))
}

/// The effective uid of this process (`/proc/self/status`).
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `(uid, gid)` of `user` from `/etc/passwd`.
fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

impl LocalPostgres {
    /// Initialises and starts a server in a fresh directory under `parent`. Blocks (run it
    /// in `spawn_blocking` from async code). Fails with [`LocalPostgresError::is_missing`]
    /// when the server binaries are not installed.
    pub fn start(parent: &Path) -> Result<LocalPostgres, LocalPostgresError> {
        let Some(bin) = bin_dir() else {
            return Err(LocalPostgresError {
                missing: true,
                message: "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found \
                          under /usr/lib/postgresql/*/bin or on PATH"
                    .into(),
            });
        };
        let run_as = if euid() == Some(0) {
            let (uid, gid) = lookup_user("nobody").ok_or_else(|| {
                LocalPostgresError::new("running as root and no user `nobody` to run PostgreSQL")
            })?;
            Some(("nobody".to_owned(), uid, gid))
        } else {
            None
        };
        let dir = parent.join(format!("pg-{}-{:x}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).map_err(|e| {
            LocalPostgresError::new(format!("cannot create {}: {e}", dir.display()))
        })?;
        if let Some((_, uid, gid)) = &run_as {
            std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)).map_err(|e| {
                LocalPostgresError::new(format!("cannot chown {}: {e}", dir.display()))
            })?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| LocalPostgresError::new(format!("no free port: {e}")))?
            .port();
        let mut pg = LocalPostgres {
            data: dir.join("data"),
            dir,
            bin,
            port,
            run_as,
            running: false,
        };
        let data = pg.data.to_string_lossy().into_owned();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ],
        )?;
        pg.start_again()?;
        Ok(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), LocalPostgresError> {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some((user, _, _)) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LocalPostgresError::new(format!("cannot run {tool}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(LocalPostgresError::new(format!(
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Starts the server (again, after [`LocalPostgres::stop`]) on the same port and data.
    pub fn start_again(&mut self) -> Result<(), LocalPostgresError> {
        let data = self.data.to_string_lossy().into_owned();
        let log = self.dir.join("postgres.log").to_string_lossy().into_owned();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=200",
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (fast shutdown: clients are disconnected at once).
    pub fn stop(&mut self) -> Result<(), LocalPostgresError> {
        let data = self.data.to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "60", "stop"],
        )?;
        self.running = false;
        Ok(())
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on it.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` (letters, digits and `_` only) and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, LocalPostgresError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(LocalPostgresError::new(format!(
                "invalid database name {name:?}"
            )));
        }
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(|e| LocalPostgresError::new(format!("cannot connect: {e}")))?;
        let task = crate::AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| LocalPostgresError::new(format!("cannot create database {name}: {e}")))?;
        drop(client);
        drop(task);
        Ok(self.url(name))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data.to_string_lossy().into_owned();
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
