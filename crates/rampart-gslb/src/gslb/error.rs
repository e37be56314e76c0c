//! The selector's own errors.
//!
//! - [`NoHealthySite`]: every site is down (or drained) and neither a fallback site nor the
//!   all-as-healthy rule applies. It carries a [`NeverReached`] marker as its source, so
//!   [`is_never_reached`](rampart_health::is_never_reached) recognises it anywhere in a chain
//!   and a fallback layer answers with the apology page.
//! - [`UnknownSite`]: an operator named a site the selector does not have.
//!
//! ```
//! use rampart_gslb::NoHealthySite;
//! use rampart_health::{BoxError, is_never_reached};
//!
//! let err: BoxError = Box::new(NoHealthySite::new("catalog"));
//! assert_eq!(err.to_string(), "no healthy site in gslb `catalog`");
//! assert!(is_never_reached(&*err));
//! ```

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use rampart_health::NeverReached;

/// Every site of the selector is unavailable; the request was not sent anywhere.
#[derive(Debug)]
pub struct NoHealthySite {
    gslb: Arc<str>,
    marker: NeverReached,
}

impl NoHealthySite {
    /// For the selector named `gslb`.
    pub fn new(gslb: impl Into<Arc<str>>) -> Self {
        Self {
            gslb: gslb.into(),
            marker: NeverReached::new(),
        }
    }

    /// The name of the selector that had no healthy site.
    pub fn gslb(&self) -> &str {
        &self.gslb
    }
}

impl fmt::Display for NoHealthySite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no healthy site in gslb `{}`", self.gslb)
    }
}

impl Error for NoHealthySite {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.marker)
    }
}

/// An operator action named a site that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSite {
    name: Box<str>,
}

impl UnknownSite {
    pub(crate) fn new(name: &str) -> Self {
        Self { name: name.into() }
    }

    /// The name that matched no site.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for UnknownSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown site `{}`", self.name)
    }
}

impl Error for UnknownSite {}
