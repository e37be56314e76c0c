//! [`Boom`]: the error of a test service that fails on purpose.

use std::fmt;

/// A zero-sized error (`"boom"`): failing with it allocates nothing, and neither does boxing it
/// into a `BoxError`, so allocation tests can fail calls on purpose.
///
/// ```
/// use rampart_test_support::boom::Boom;
/// let err: Box<dyn std::error::Error + Send + Sync> = Box::new(Boom);
/// assert_eq!(err.to_string(), "boom");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Boom;

impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}
