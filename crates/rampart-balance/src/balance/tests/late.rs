//! Outcomes recorded after the head: a gRPC status in the trailers.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use rampart_health::{GrpcClassifier, Outcome, OutlierConfig};

use super::*;
use crate::late::{LateOutcome, record_trailers};

type Grpc = HttpPolicy<GrpcClassifier>;

/// An endpoint answering gRPC heads: HTTP 200 with a gRPC content type and `status` as its
/// `grpc-status` header (`None`: the status is still to come), or `plain` HTTP 200.
fn answers(
    status: Option<&'static str>,
    grpc: bool,
) -> impl Service<
    HttpReq,
    Response = http::Response<()>,
    Error = BoxError,
    Future = Ready<Result<http::Response<()>, BoxError>>,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_: HttpReq| {
        let mut b = http::Response::builder();
        if grpc {
            b = b.header("content-type", "application/grpc");
        }
        if let Some(s) = status {
            b = b.header("grpc-status", s);
        }
        ready(b.body(()).map_err(BoxError::from))
    })
}

fn one<S: Send + Sync + 'static>(svc: S, estimate: LatencyEstimate) -> Balance<S, Grpc> {
    Balance::builder()
        .policy(HttpPolicy::grpc())
        .latency_estimate(estimate)
        .outlier_detection(
            OutlierConfig::builder()
                .consecutive_failures(3)
                .max_ejection_percent(100.0)
                .build()
                .unwrap(),
        )
        .endpoint(Endpoint::new("e0", svc))
        .build()
        .unwrap()
}

async fn call<S>(balance: &mut Balance<S, Grpc>) -> http::Response<()>
where
    S: Service<HttpReq, Response = http::Response<()>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
{
    let req = http::Request::post("/catalog.v1.Catalog/List")
        .body(String::new())
        .unwrap();
    balance.ready().await.unwrap().call(req).await.unwrap()
}

#[tokio::test]
async fn a_deferred_head_counts_no_outcome_and_releases_the_attempt() {
    let mut balance = one(answers(None, true), LatencyEstimate::default());
    let mut lates = Vec::new();
    for _ in 0..3 {
        let res = call(&mut balance).await;
        let late = res.extensions().get::<LateOutcome>().unwrap().clone();
        assert!(!late.is_recorded());
        lates.push(late);
    }
    // The heads arrived: the attempts are over (nothing in flight), nothing judged yet.
    let e0 = balance.snapshot().endpoint("e0").cloned().unwrap();
    assert_eq!((e0.outstanding, e0.requests, e0.failures), (0, 3, 0));
    assert!(!e0.ejected);
    // Three late failures, in any order and long after their attempts: ejected.
    for late in lates.iter().rev() {
        assert!(late.record(Outcome::Failure));
    }
    let e0 = balance.snapshot().endpoint("e0").cloned().unwrap();
    assert_eq!((e0.outstanding, e0.failures), (0, 3));
    assert!(e0.ejected && e0.ejection_count == 1, "{e0:?}");
    // Each handle records once.
    assert!(!lates[0].record(Outcome::Failure));
    assert_eq!(balance.snapshot().endpoint("e0").unwrap().failures, 3);
}

#[tokio::test]
async fn trailers_only_and_plain_http_answers_are_judged_at_the_head() {
    // Trailers-Only UNAVAILABLE: a failure at once, no late outcome.
    let mut balance = one(answers(Some("14"), true), LatencyEstimate::default());
    let res = call(&mut balance).await;
    assert!(res.extensions().get::<LateOutcome>().is_none());
    assert_eq!(balance.snapshot().endpoint("e0").unwrap().failures, 1);
    // Not gRPC (no gRPC content type): judged at the head, as before.
    let mut balance = one(answers(None, false), LatencyEstimate::default());
    let res = call(&mut balance).await;
    assert!(res.extensions().get::<LateOutcome>().is_none());
    // The HTTP policy without `grpc_trailers` never defers.
    let mut balance = Balance::builder()
        .policy(HttpPolicy::new().with_classifier(GrpcClassifier::new()))
        .endpoint(Endpoint::new("e0", answers(None, true)))
        .build()
        .unwrap();
    let req = http::Request::post("/").body(String::new()).unwrap();
    let res = balance.ready().await.unwrap().call(req).await.unwrap();
    assert!(res.extensions().get::<LateOutcome>().is_none());
}

#[tokio::test]
async fn a_late_failure_weighs_in_the_latency_estimate_like_a_failure_at_the_head() {
    let penalty = Duration::from_secs(1);
    let estimate = LatencyEstimate::default().failure_penalty(penalty);
    let mut balance = one(answers(None, true), estimate);
    let res = call(&mut balance).await;
    // The head's latency was recorded as a success's: far below the penalty.
    assert!(balance.snapshot().endpoints[0].ewma < penalty);
    let late = res.extensions().get::<LateOutcome>().unwrap();
    late.record(Outcome::Failure);
    assert!(balance.snapshot().endpoints[0].ewma >= penalty);
}

#[tokio::test]
async fn bodies_record_the_end_they_reach_and_nothing_when_dropped() {
    let mut balance = one(answers(None, true), LatencyEstimate::default());
    let with_body = |res: http::Response<()>, body| res.map(|()| body);

    // Dropped before its end (the caller went away): nothing recorded.
    let res = call(&mut balance).await;
    let late = res.extensions().get::<LateOutcome>().unwrap().clone();
    let pending = StreamBody::new(futures_util::stream::pending::<
        Result<http_body::Frame<Bytes>, BoxError>,
    >());
    let res = record_trailers(with_body(res, pending.boxed()), GrpcClassifier::new());
    assert!(res.body().is_pending());
    drop(res);
    assert!(!late.is_recorded());
    assert_eq!(balance.snapshot().endpoints[0].failures, 0);

    // A body that ends without trailers: UNKNOWN, a failure.
    let res = call(&mut balance).await;
    let late = res.extensions().get::<LateOutcome>().unwrap().clone();
    let full = Full::new(Bytes::from_static(b"\0\0\0\0\0"))
        .map_err(|never| match never {})
        .boxed();
    let res = record_trailers(with_body(res, full), GrpcClassifier::new());
    res.into_body().collect().await.unwrap();
    assert!(late.is_recorded());
    assert_eq!(balance.snapshot().endpoints[0].failures, 1);

    // An `Ignored` record uses up the handle and counts for nothing.
    let res = call(&mut balance).await;
    let late = res.extensions().get::<LateOutcome>().unwrap().clone();
    assert!(late.record(Outcome::Ignored));
    assert!(!late.record(Outcome::Failure));
    assert_eq!(balance.snapshot().endpoints[0].failures, 1);
}
