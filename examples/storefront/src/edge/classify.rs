//! What the edge counts as a failed shop response.
//!
//! A shop instance that cannot serve a page answers with its own apology: `503` with
//! `Retry-After`. That is the shop working as designed (its backends are down, it says so
//! honestly), not a sick instance, so [`ShopFailures`] lets it through: the edge neither
//! ejects the instance for it nor replaces the page. Everything else the fallback layer knows
//! as a failure — `500`, `502`, `504`, a `503` without `Retry-After`, and every transport
//! error — is one.
//!
//! ```
//! use rampart::health::{BoxError, Classify, Outcome};
//! use storefront::edge::ShopFailures;
//!
//! let apology = http::Response::builder().status(503).header("retry-after", "5").body(()).unwrap();
//! let bare = http::Response::builder().status(503).body(()).unwrap();
//! let c = ShopFailures;
//! assert_eq!(c.classify(Ok::<_, &BoxError>(&apology)), Outcome::Success);
//! assert_eq!(c.classify(Ok::<_, &BoxError>(&bare)), Outcome::Failure);
//! ```

use http::header::RETRY_AFTER;
use http::{Response, StatusCode};
use rampart::health::{Classify, Outcome};

/// Classifies shop responses for the edge's balancer and fallback: transport errors, 500,
/// 502, 504 and a 503 without `Retry-After` are failures; a shop's apology is not.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShopFailures;

impl<B, E> Classify<Response<B>, E> for ShopFailures {
    #[inline]
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        let Ok(resp) = result else {
            return Outcome::Failure;
        };
        match resp.status() {
            StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT => Outcome::Failure,
            StatusCode::SERVICE_UNAVAILABLE if !resp.headers().contains_key(RETRY_AFTER) => {
                Outcome::Failure
            }
            _ => Outcome::Success,
        }
    }
}
