//! The `rampart-gateway` binary under a low open-file limit (`ulimit -n 64`): more client
//! connections than it may open files make `accept` fail with `EMFILE`. The process stays up,
//! backs off, logs the failure at most about once per second with a count of the ones not
//! logged (no storm), and once the extra connections are gone answers a normal request.
//! Bounded in connections (200) and time.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

mod proxy_support;

use std::io::BufRead as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_support::{BOUND, Client, backend, temp_dir};
use tokio::net::TcpStream;

const WARNING: &str = "accept failed; backing off";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_emfile_the_binary_backs_off_logs_once_a_second_and_recovers() {
    let a = backend("a").await;
    let config = temp_dir("emfile").join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\nheader_read_timeout = \"60s\"\n\
             [admin]\nenabled = false\n[[routes]]\ncluster = \"a\"\n\
             [clusters.a]\nendpoints = [\"{}\"]\n[clusters.a.checks]\nenabled = false\n",
            a.addr
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_rampart-gateway"))
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = Kill(child);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line);
            }
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr: std::net::SocketAddr = loop {
        let line = rx
            .recv_timeout(BOUND)
            .expect("the gateway printed its address");
        if let Some(a) = line.strip_prefix("listening on http://") {
            break a.parse().unwrap();
        }
    };

    // 200 idle connections: about 50 are accepted before the 64 files are used up; the rest
    // wait in the listen backlog while every accept fails.
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(
            tokio::time::timeout(BOUND, TcpStream::connect(addr))
                .await
                .expect("connected (the backlog holds what is not accepted)")
                .unwrap(),
        );
    }
    // Hold them for three seconds (a scenario length, not an assertion).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held_for = started.elapsed();
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the gateway exited under EMFILE"
    );
    let warnings: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(WARNING))
        .cloned()
        .collect();
    eprintln!("back-off warnings over {held_for:?}: {warnings:#?}");
    assert!(
        !warnings.is_empty(),
        "no back-off warning: {:?}",
        log.lock().unwrap()
    );
    assert!(
        warnings.iter().all(|l| l.contains("suppressed=")),
        "a warning without its count: {warnings:?}"
    );
    // At most one a second (plus the first): not a storm.
    let allowed = held_for.as_secs() as usize + 2;
    assert!(
        warnings.len() <= allowed,
        "{} warnings in {held_for:?}: {warnings:?}",
        warnings.len()
    );
    assert!(
        warnings.iter().any(|l| l.contains("Too many open files")),
        "{warnings:?}"
    );

    // The extra connections go; a normal request is answered.
    drop(held);
    let deadline = Instant::now() + BOUND;
    let mut client = loop {
        // The first tries may still meet the back-off; each waits its turn in the backlog.
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
        {
            drop(stream);
            break Client::connect(addr).await;
        }
        assert!(Instant::now() < deadline, "the gateway did not recover");
    };
    let (status, headers, _) = client.get("x", "/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-backend"], "a");
    assert!(child.0.try_wait().unwrap().is_none());
}
