//! rampart-fallback: not built yet.
//!
//! This crate is a placeholder in the workspace until its issue lands; it exports nothing.
