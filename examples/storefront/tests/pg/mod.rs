//! A PostgreSQL server for a test (Debian's `postgresql` package, initialised in a temporary
//! directory and run as an unprivileged user). Without the server binaries a test says
//! loudly that it was skipped, and fails when `CI` is set.

#![allow(
    clippy::panic,
    clippy::print_stderr,
    clippy::unwrap_used,
    dead_code,
    unreachable_pub
)]

use storefront::orders::LocalPostgres;

/// Whether CI is running us (then a skipped PostgreSQL test is a failure).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A PostgreSQL server for this test, or `None` (skipped, said loudly) when the binaries are
/// missing outside CI.
pub async fn postgres() -> Option<LocalPostgres> {
    let started = tokio::task::spawn_blocking(|| LocalPostgres::start(&std::env::temp_dir()))
        .await
        .unwrap();
    match started {
        Ok(pg) => Some(pg),
        Err(e) if e.is_missing() && !in_ci() => {
            eprintln!();
            eprintln!("==================================================================");
            eprintln!("SKIPPED: PostgreSQL test — {e}");
            eprintln!("(install it with `apt-get install -y postgresql`; CI's .ci/run does)");
            eprintln!("==================================================================");
            eprintln!();
            None
        }
        Err(e) => panic!("cannot start PostgreSQL for this test: {e}"),
    }
}
