//! `/metrics` shows every series the README lists, each with its labels, and every middleware
//! series names its instance; over real HTTP against the demo started in-process on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http::StatusCode;
use storefront::Demo;
use support::{Http, eventually, test_config};

/// The README's metrics table: series name → the labels it must carry.
fn readme_series() -> BTreeMap<String, BTreeSet<String>> {
    let readme = include_str!("../README.md");
    let section = readme
        .split("<!-- metrics table -->")
        .nth(1)
        .expect("the README's metrics table is marked with <!-- metrics table -->");
    let mut series = BTreeMap::new();
    for line in section.lines().map(str::trim) {
        if !line.starts_with('|') {
            if !series.is_empty() {
                break; // the end of the table
            }
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(name) = cells[0].strip_prefix('`').and_then(|n| n.strip_suffix('`')) else {
            continue; // the header and its rule
        };
        let labels = cells
            .get(2)
            .map(|l| {
                l.split(',')
                    .map(|x| x.trim().trim_matches('`').to_owned())
                    .filter(|x| !x.is_empty() && x != "—")
                    .collect()
            })
            .unwrap_or_default();
        series.insert(name.to_owned(), labels);
    }
    series
}

/// The scrape: series name → every label set it was rendered with (`_sum` and `_count` of a
/// summary count as the summary itself).
fn scraped(text: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.rsplit_once('}').unwrap().0),
            None => (line.split_once(' ').unwrap().0, ""),
        };
        let name = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
            .filter(|base| text.contains(&format!("# TYPE {base} summary")))
            .unwrap_or(name);
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        out.entry(name.to_owned()).or_default().push(labels);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_series_the_readme_lists_with_its_labels() {
    let demo = Demo::start(test_config("metrics")).await.unwrap();
    let http = Http::new(demo.url());

    // Ordinary traffic: pages over the catalog and recommendations.
    for path in ["/", "/products", "/products/1", "/products/2", "/status"] {
        assert_eq!(http.get(path).await.status, StatusCode::OK, "{path}");
    }
    // Recommendations fail: their breaker opens, the pages leave them out.
    http.fault("recommendations", "*", "*", "error").await;
    eventually(
        "the recommendations breaker opens",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move {
                let _ = http.get("/products/3").await;
                let status: serde_json::Value =
                    serde_json::from_str(&http.get("/status.json").await.body).unwrap();
                (status["services"][2]["breaker"] == "open").then_some(())
            }
        },
    )
    .await;
    // The catalog goes down: a kept page is served stale, another one is an apology.
    http.fault("catalog", "*", "*", "down").await;
    eventually(
        "a stale copy and an apology",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move {
                let stale = http.get("/products/1").await.header("x-rampart-stale") == Some("1");
                let apology =
                    http.get("/products/77").await.status == StatusCode::SERVICE_UNAVAILABLE;
                (stale && apology).then_some(())
            }
        },
    )
    .await;
    http.reset_faults().await;

    let r = http.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    let scrape = scraped(&r.body);
    let listed = readme_series();
    assert!(listed.len() >= 30, "the README's table: {listed:?}");
    let mut missing = Vec::new();
    for (name, labels) in &listed {
        match scrape.get(name) {
            None => missing.push(format!("{name}: absent")),
            Some(sets) => {
                if !sets
                    .iter()
                    .all(|set| labels.iter().all(|l| set.contains_key(l)))
                {
                    missing.push(format!("{name}: without all of {labels:?} in {sets:?}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "series the README promises:\n{}\n\nscrape:\n{}",
        missing.join("\n"),
        r.body
    );

    // Every middleware series names its instance, and the instances are the stack's.
    for (name, sets) in &scrape {
        let instance = [
            ("rampart_breaker_", "breaker"),
            ("rampart_gslb_", "gslb"),
            ("rampart_balance_", "balancer"),
        ]
        .into_iter()
        .find(|(prefix, _)| name.starts_with(prefix));
        let Some((_, label)) = instance else {
            continue;
        };
        for set in sets {
            let value = set
                .get(label)
                .unwrap_or_else(|| panic!("{name} {set:?} has no {label} label"));
            let service = value.split('-').next().unwrap();
            assert!(
                ["catalog", "checkout", "recommendations"].contains(&service),
                "{name}: unexpected {label} {value:?}"
            );
        }
    }
    // The page layers and the recommendations' degradation name theirs.
    for (name, sets) in scrape
        .iter()
        .filter(|(name, _)| name.starts_with("rampart_fallback_"))
    {
        for set in sets {
            let layer = set
                .get("layer")
                .unwrap_or_else(|| panic!("{name} {set:?} has no layer label"));
            assert!(
                ["pages", "recommendations"].contains(&layer.as_str()),
                "{name}: unexpected layer {layer:?}"
            );
        }
    }
    // Six balancers, six series: one per service and region.
    let balancers: BTreeSet<&str> = scrape["rampart_balance_endpoints"]
        .iter()
        .map(|set| set["balancer"].as_str())
        .collect();
    assert_eq!(
        balancers.into_iter().collect::<Vec<_>>(),
        [
            "catalog-eu-west",
            "catalog-us-east",
            "checkout-eu-west",
            "checkout-us-east",
            "recommendations-eu-west",
            "recommendations-us-east"
        ]
    );
}
