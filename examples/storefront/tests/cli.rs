//! The binary itself: `storefront` with no subcommand is the demo, prints where to look and
//! the admin token (from the flag, from `STOREFRONT_ADMIN_TOKEN`, or generated), and a bad
//! configuration key is refused by name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http::{Method, StatusCode};
use support::Http;

/// The child, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `storefront <args>` and collects its stdout until the `admin token:` line; returns
/// the shop's URL and the token it printed.
fn start(args: &[&str], env_token: Option<&str>) -> (Running, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_storefront"));
    cmd.args(args)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(support::temp_dir("cli"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match env_token {
        Some(t) => cmd.env("STOREFRONT_ADMIN_TOKEN", t),
        None => cmd.env_remove("STOREFRONT_ADMIN_TOKEN"),
    };
    let mut child = cmd.spawn().expect("storefront starts");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut url = None;
    let mut lines = Vec::new();
    loop {
        // A safety net for a child that never prints, not a timing claim.
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no admin token line; stdout so far: {lines:#?}"));
        let trimmed = line.trim().to_owned();
        lines.push(line);
        if let Some(u) = trimmed.strip_prefix("shop:") {
            url = Some(u.trim().trim_end_matches('/').to_owned());
        }
        if let Some(t) = trimmed.strip_prefix("admin token:") {
            let token = t.split_whitespace().next().unwrap_or("").to_owned();
            let url = url.expect("the shop's URL is printed before the token");
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("Rampart storefront demo is running")),
                "{lines:#?}"
            );
            return (running, url, token);
        }
    }
}

async fn reset_status(http: &Http, token: &str) -> StatusCode {
    let auth = format!("Bearer {token}");
    http.send(
        Method::POST,
        "/admin/faults/reset",
        &[("authorization", &auth)],
        None,
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subcommand_is_the_demo_and_a_token_is_generated_when_none_is_given() {
    let (_child, url, token) = start(&[], None);
    assert!(token.len() >= 16, "a generated token: {token:?}");
    let http = Http::new(url);
    let r = http.get("/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Featured products"));
    // The printed token is the one the admin routes accept; another is refused.
    assert_eq!(reset_status(&http, &token).await, StatusCode::OK);
    assert_eq!(
        reset_status(&http, "not-the-token").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_takes_the_token_from_the_environment_or_the_flag() {
    let (_child, url, token) = start(&["demo"], Some("token-from-env-123"));
    assert_eq!(token, "token-from-env-123");
    let http = Http::new(url);
    assert_eq!(reset_status(&http, &token).await, StatusCode::OK);

    let (_child, url, token) = start(
        &["demo", "--admin-token", "token-from-flag-456"],
        Some("token-from-env-123"),
    );
    assert_eq!(
        token, "token-from-flag-456",
        "the flag wins over the environment"
    );
    let http = Http::new(url);
    assert_eq!(reset_status(&http, &token).await, StatusCode::OK);
    assert_eq!(
        reset_status(&http, "token-from-env-123").await,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn a_bad_configuration_key_is_named() {
    let dir = support::temp_dir("cli-config");
    let path = dir.join("storefront.toml");
    for (toml, says) in [
        ("[shop]\npage_deadline = \"1s\"\n", "shop.page_deadline"),
        ("[shop]\nno_such_key = 1\n", "no_such_key"),
        ("[fleet]\nreplicas = 0\n", "fleet.replicas"),
    ] {
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_storefront"))
            .arg("demo")
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("STOREFRONT_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{toml} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{toml}: {stderr}");
    }
}
