//! Rampart's HTTP benchmark harness (not built yet: lands with the benchmark issue).
