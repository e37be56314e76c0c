//! A headless browser (Debian's Chromium) loads the home page, a product page and the status
//! page during an outage, and checks what a person would see.
//!
//! Where Chromium is absent the test says loudly that it was skipped and passes, except in CI
//! (`CI` set to anything but empty, `0` or `false`, as CI services do with `CI=true`): there a
//! skipped browser test fails the run. `STOREFRONT_CHROMIUM=<path>` names the browser. Set
//! `STOREFRONT_SCREENSHOT=<file.png>` to also save a screenshot of the status page (the one
//! in the README was made this way).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use storefront::Demo;
use support::{Http, eventually, temp_dir, test_config};

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STOREFRONT_CHROMIUM") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Whether this run is CI's (`CI=true`, as GitHub Actions, GitLab CI and others set it).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim();
        !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false")
    })
}

fn base_args(profile: &std::path::Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

async fn run_chromium(bin: &PathBuf, args: Vec<String>) -> String {
    let child = tokio::process::Command::new(bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finished within 90 s")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's DOM after load, as Chromium rendered it.
async fn dump_dom(bin: &PathBuf, url: &str) -> String {
    let profile = temp_dir("chromium-profile");
    let mut args = base_args(&profile);
    args.push("--dump-dom".into());
    args.push(url.into());
    let dom = run_chromium(bin, args).await;
    let _ = std::fs::remove_dir_all(profile);
    dom
}

/// The text a person sees: the DOM's body without tags, scripts or styles, whitespace folded.
fn visible_text(dom: &str) -> String {
    let body = dom.split("<body").nth(1).unwrap_or(dom);
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_a_working_shop_and_an_honest_status_page_during_an_outage() {
    let Some(bin) = chromium() else {
        assert!(
            !in_ci(),
            "the headless-browser test cannot run: Chromium not found, and CI is set, where a \
             skipped browser test fails the run (install it with `apt-get install -y chromium`, \
             or point STOREFRONT_CHROMIUM at it)"
        );
        eprintln!();
        eprintln!("==================================================================");
        eprintln!("SKIPPED: headless-browser test — Chromium not found");
        eprintln!("(install it with `apt-get install -y chromium`; CI's .ci/run does)");
        eprintln!("==================================================================");
        eprintln!();
        return;
    };
    let demo = Demo::start(test_config("browser")).await.unwrap();
    let http = Http::new(demo.url());

    // The outage: the whole catalog in us-east is down, recommendations fail everywhere.
    http.fault("catalog", "us-east", "*", "down").await;
    http.fault("recommendations", "*", "*", "error").await;
    // Some traffic so the status page has something to show, until us-east's catalog is
    // known to be unhealthy.
    eventually(
        "us-east catalog seen unhealthy",
        Duration::from_secs(30),
        || {
            let http = http.clone();
            async move {
                for id in 1..=6 {
                    let _ = http.get(&format!("/products/{id}")).await;
                }
                let status: serde_json::Value =
                    serde_json::from_str(&http.get("/status.json").await.body).unwrap();
                let catalog = &status["services"][0];
                let us_east = &catalog["sites"][0];
                (us_east["replicas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["health"] != "healthy"))
                .then_some(())
            }
        },
    )
    .await;

    // Home page: the shop still sells (served by eu-west).
    let home = visible_text(&dump_dom(&bin, &format!("{}/", demo.url())).await);
    assert!(home.contains("Welcome to the Rampart Store"), "{home}");
    assert!(home.contains("Featured products"), "{home}");
    assert!(home.contains('$'), "no prices on the home page: {home}");
    assert!(!home.contains("taking a short break"), "{home}");

    // A product page without its optional recommendations: the section is left out.
    let product = visible_text(&dump_dom(&bin, &format!("{}/products/5", demo.url())).await);
    assert!(product.contains("Add to cart"), "{product}");
    assert!(!product.contains("Customers also bought"), "{product}");

    // The status page tells the truth about the outage.
    let status = visible_text(&dump_dom(&bin, &format!("{}/status", demo.url())).await);
    assert!(status.contains("Live status"), "{status}");
    for needle in [
        "catalog",
        "checkout",
        "recommendations",
        "us-east",
        "eu-west",
        "down",
        "error",
    ] {
        assert!(
            status.contains(needle),
            "status page lacks {needle:?}: {status}"
        );
    }
    assert!(status.contains("Circuit breaker"), "{status}");

    if let Some(path) = std::env::var_os("STOREFRONT_SCREENSHOT") {
        // Some traffic, so that the rates on the page are not all zero.
        let load = {
            let http = http.clone();
            tokio::spawn(async move {
                for i in 0u32.. {
                    let _ = http.get(&format!("/products/{}", 1 + i % 40)).await;
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let profile = temp_dir("chromium-shot");
        let mut args = base_args(&profile);
        args.push(format!("--screenshot={}", PathBuf::from(&path).display()));
        args.push("--window-size=1280,900".into());
        args.push(format!("{}/status", demo.url()));
        run_chromium(&bin, args).await;
        load.abort();
        let _ = std::fs::remove_dir_all(profile);
        assert!(PathBuf::from(&path).exists(), "no screenshot written");
    }
}

/// The browser test run alone, as a child process of this test binary, with Chromium missing
/// (`STOREFRONT_CHROMIUM` names no file) and `CI` as given.
fn run_browser_test_without_chromium(ci: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "a_browser_sees_a_working_shop_and_an_honest_status_page_during_an_outage",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(
        "STOREFRONT_CHROMIUM",
        temp_dir("no-chromium").join("chromium"),
    )
    .stdin(Stdio::null());
    match ci {
        Some(v) => cmd.env("CI", v),
        None => cmd.env_remove("CI"),
    };
    cmd.output().unwrap()
}

#[test]
fn a_skipped_browser_test_fails_in_ci_and_passes_loudly_elsewhere() {
    let ci = run_browser_test_without_chromium(Some("true"));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&ci.stdout),
        String::from_utf8_lossy(&ci.stderr)
    );
    assert!(!ci.status.success(), "passed under CI=true: {out}");
    assert!(out.contains("Chromium not found, and CI is set"), "{out}");

    for not_ci in [None, Some("false"), Some("")] {
        let run = run_browser_test_without_chromium(not_ci);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "CI={not_ci:?}: {err}");
        assert!(
            err.contains("SKIPPED: headless-browser test"),
            "CI={not_ci:?}: {err}"
        );
    }
}
