//! Rampart's HTTP benchmark harness.
//!
//! The binaries of this package are the moving parts of `bench/run.sh`, which measures a
//! Rampart gateway side by side with nginx and HAProxy over the same three backend replicas
//! (see `BENCHMARKS.md` at the repository root):
//! - `backend`: a small axum replica that prints its bound address;
//! - `gateway`: the Rampart gateway.
//!
//! The library holds what those binaries share; nothing here is a stable API.

#![forbid(unsafe_code)]

pub mod args;
pub mod gateway;
pub mod report;
pub mod wrk;
