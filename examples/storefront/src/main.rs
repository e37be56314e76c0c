//! The Rampart reference storefront.
//!
//! Not built yet: the storefront lands with its own issue (the degrading storefront). Until
//! then this binary says so and exits with a failure status instead of pretending to run.

#![allow(clippy::print_stderr)]

fn main() -> std::process::ExitCode {
    eprintln!("storefront: not built yet (see the storefront issue); nothing to run");
    std::process::ExitCode::FAILURE
}
