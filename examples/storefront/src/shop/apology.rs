//! The apology page the fallback layer serves when a page cannot be served at all.
//!
//! Rendered once at start-up from a compiled template and handed to rampart-fallback's
//! [`ApologyPage`]: 503, `Retry-After`, `Cache-Control: no-store`, and a body chosen by
//! `Accept` (this HTML, RFC 9457 `application/problem+json`, or text).

use askama::Template;
use bytes::Bytes;
use rampart::fallback::ApologyPage;
use rampart::health::ConfigError;

use super::views::ApologyTemplate;

/// The detail line of the problem document and the text body.
pub(crate) const DETAIL: &str =
    "Part of the shop is temporarily unavailable. Please try again shortly.";

/// The shop's apology page.
pub(crate) fn page() -> Result<ApologyPage, ConfigError> {
    let html = ApologyTemplate.render().unwrap_or_else(|_| {
        "<!doctype html><title>Sorry</title><p>Please try again shortly.</p>".into()
    });
    ApologyPage::builder()
        .html(Bytes::from(html))
        .title("Service Unavailable")
        .detail(DETAIL)
        .build()
}
