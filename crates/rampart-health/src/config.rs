//! The configuration error every Rampart builder returns.
//!
//! Invalid configuration fails when it is built, with a message naming the field and the bad
//! value, never later at request time.
//!
//! ```
//! use rampart_health::ConfigError;
//! let e = ConfigError::new("rise", 0, "must be at least 1");
//! assert_eq!(e.to_string(), "invalid `rise` = 0: must be at least 1");
//! assert_eq!(e.field(), "rise");
//! ```

use std::fmt;

/// A configuration value was rejected by a builder's `build()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    value: String,
    reason: &'static str,
}

impl ConfigError {
    /// `field` had the bad `value`, for `reason`.
    pub fn new(field: &'static str, value: impl fmt::Debug, reason: &'static str) -> Self {
        Self {
            field,
            value: format!("{value:?}"),
            reason,
        }
    }

    /// The name of the rejected field.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rejected value, as written by `Debug`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid `{}` = {}: {}",
            self.field, self.value, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}
