//! Reading one captured series strictly: the series must have been registered.
//!
//! [`Captured::counter`] answers 0 for a series nobody registered, so an assertion of zero
//! cannot tell "counted nothing" from "never exported". These helpers panic instead, naming
//! every key that was captured, so a misspelt key or a label in another order shows at once.
//! Keys are rendered as [`metrics::render`](crate::metrics::render) does: labels in the order
//! the code gives them.
//!
//! ```
//! use rampart_test_support::metrics::Captured;
//! use rampart_test_support::series;
//!
//! let captured = Captured::default();
//! metrics::with_local_recorder(&captured, || {
//!     metrics::counter!("shed_total", "limiter" => "m").absolute(0);
//!     metrics::gauge!("limit", "limiter" => "m").set(2.0);
//! });
//! assert_eq!(series::counter(&captured, "shed_total{limiter=m}"), 0);
//! assert_eq!(series::gauge(&captured, "limit{limiter=m}"), 2.0);
//! ```

use crate::metrics::Captured;

/// A registered counter's value; panics, listing every captured key, if `key` was never
/// registered.
#[track_caller]
pub fn counter(captured: &Captured, key: &str) -> u64 {
    assert!(
        captured.keys().iter().any(|k| k == key),
        "no series {key} in {:?}",
        captured.keys()
    );
    captured.counter(key)
}

/// A registered gauge's value; panics, listing every captured key, if `key` is not a gauge.
#[track_caller]
pub fn gauge(captured: &Captured, key: &str) -> f64 {
    let value = captured.gauge(key);
    assert!(value.is_some(), "no gauge {key} in {:?}", captured.keys());
    value.unwrap_or_default()
}
