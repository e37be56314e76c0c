//! `storefront chaos --quick --database postgres`: both shops share one PostgreSQL order store
//! (a real server started by the run), shop A is SIGKILLed mid-checkout and **not**
//! restarted, and every order it had accepted is still confirmed exactly once, by shop B.
//! Without the PostgreSQL server binaries the test says loudly that it was skipped, and
//! fails when `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod pg;

use std::process::Command;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_chaos_run_on_postgres_confirms_the_killed_shops_orders_without_restarting_it() {
    // Only to learn whether the server binaries are there (skip or fail as the helper says).
    let Some(probe) = pg::postgres().await else {
        return;
    };
    drop(probe);
    let dir = std::env::temp_dir().join(format!(
        "storefront-chaos-pg-test-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let report_path = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_storefront"))
        // The surge at 5 × 60 = 300 requests/s, as in `tests/chaos.rs`.
        .args([
            "chaos",
            "--quick",
            "--sustainable-rate",
            "60",
            "--database",
            "postgres",
        ])
        .arg("--report")
        .arg(&report_path)
        .arg("--data-dir")
        .arg(dir.join("run"))
        .env_remove("STOREFRONT_ADMIN_TOKEN")
        .env_remove("STOREFRONT_DATABASE_URL")
        .output()
        .expect("storefront chaos runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chaos run failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stderr.contains("PostgreSQL"), "{stderr}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap())
        .expect("the report is JSON");
    for p in report["phases"].as_array().unwrap() {
        assert_eq!(p["errors"], 0, "no errors in any phase: {p}\n{stdout}");
    }
    let orders = &report["orders"];
    assert!(orders["acknowledged"].as_u64().unwrap() > 0, "{orders}");
    assert_eq!(orders["lost"], 0, "{orders}");
    assert_eq!(orders["duplicated"], 0, "{orders}");

    let facts: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.facts.json")).unwrap())
            .unwrap();
    let kill = &facts["kill"];
    assert!(kill["killed_at_s"].as_f64().unwrap() > 0.0, "{kill}");
    assert_eq!(
        kill["restarted_at_s"].as_f64(),
        Some(0.0),
        "not restarted: {kill}"
    );
    let caught = kill["caught_orders"].as_u64().unwrap();
    assert!(caught >= 1, "the kill was mid-checkout: {kill}");
    assert_eq!(
        kill["caught_confirmed_once"].as_u64(),
        Some(caught),
        "{kill}"
    );
    assert_eq!(
        kill["caught_retried_on_other_shop"].as_u64(),
        Some(caught),
        "shop B confirmed every order shop A held: {kill}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
