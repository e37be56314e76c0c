//! The balancer's policy for proxied requests: which are copied and retried elsewhere, how
//! answers are judged, and how a request's deadline reaches each attempt.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use rampart_balance::{BalancePolicy, LateOutcome};
use rampart_health::deadline::{GRPC_TIMEOUT_HEADER, format_grpc_timeout};
use rampart_health::{BoxError, Classify, Deadline, Outcome, is_never_reached};

use super::{ClusterClassifier, UpBody, clone_request};

/// The balancer's policy for proxied HTTP requests.
///
/// - Replay: requests without a body are copied for a retry (see [`clone_request`]).
/// - Retry elsewhere: a request that never reached its endpoint always; one whose exchange
///   failed or timed out, or that got a 502/503/504, only when its method is idempotent or it
///   carries an `Idempotency-Key` (nginx's `proxy_next_upstream error timeout http_502
///   http_503`).
/// - Health: 5xx and transport errors are failures ([`HttpClassifier`](rampart_health::HttpClassifier)), or, for a `grpc`
///   cluster, the `grpc-status` decides ([`ClusterClassifier::grpc`]): at the head for a
///   Trailers-Only answer, else in the trailers ([`BalancePolicy::defers`]: the response
///   carries a [`LateOutcome`] that the proxy's body records).
/// - Deadline: a request's [`Deadline`] extension (the handler sets it from `grpc-timeout`
///   for a `grpc` cluster): no attempt starts past it, and each attempt's `grpc-timeout` says
///   what is left.
#[derive(Debug, Clone, Default)]
pub struct GatewayPolicy {
    classify: ClusterClassifier,
}

impl GatewayPolicy {
    /// The policy with this classifier.
    pub fn with_classifier(classify: ClusterClassifier) -> Self {
        Self { classify }
    }
}

fn retryable(req: &Request<UpBody>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || req.headers().contains_key("idempotency-key")
}

impl BalancePolicy<Request<UpBody>, Response<Incoming>> for GatewayPolicy {
    fn clone_request(&self, req: &Request<UpBody>) -> Option<Request<UpBody>> {
        clone_request(req)
    }

    fn retry_error(&self, req: &Request<UpBody>, error: &BoxError) -> bool {
        is_never_reached(&**error) || retryable(req)
    }

    fn retry_response(&self, req: &Request<UpBody>, response: &Response<Incoming>) -> bool {
        matches!(
            response.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) && retryable(req)
    }

    fn classify(&self, result: Result<&Response<Incoming>, &BoxError>) -> Outcome {
        self.classify.classify(result)
    }

    /// A gRPC answer whose status comes in the trailers is judged there: the handler hands
    /// the [`LateOutcome`] to the response body, which records the trailers' verdict.
    #[inline]
    fn defers(&self, response: &Response<Incoming>) -> bool {
        self.classify
            .grpc_classifier()
            .is_some_and(|g| g.classify_head(response).is_none())
    }

    fn defer(&self, response: &mut Response<Incoming>, late: LateOutcome) {
        response.extensions_mut().insert(late);
    }

    fn deadline(&self, req: &Request<UpBody>) -> Option<Deadline> {
        // Only a gRPC cluster's handler sets one (from `grpc-timeout`): other clusters skip
        // the extension lookup.
        if self.classify.grpc_classifier().is_some() {
            Deadline::of(req)
        } else {
            None
        }
    }

    fn write_deadline(&self, req: &mut Request<UpBody>, remaining: Duration) {
        if req.headers().contains_key(GRPC_TIMEOUT_HEADER) {
            req.headers_mut()
                .insert(GRPC_TIMEOUT_HEADER, format_grpc_timeout(remaining));
        }
    }
}
