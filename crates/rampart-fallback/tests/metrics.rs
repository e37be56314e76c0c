//! The `metrics` feature: counters are emitted with the documented names and labels.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use rampart_fallback::{Degrade, FallbackLayer};
use rampart_health::{BoxError, NeverReached};
use rampart_test_support::metrics::Captured;
use rampart_test_support::poll::poll_ready;
use rampart_test_support::series;
use tower::{Layer, Service, service_fn};

/// Polls a future that completes without waiting (everything here is immediate).
fn now<F: Future>(f: F) -> F::Output {
    poll_ready(f, 1).expect("an immediate result")
}

#[test]
fn apologies_and_degradations_are_counted() {
    let captured = Captured::default();
    metrics::with_local_recorder(&captured, || {
        let mut svc = FallbackLayer::new().layer(service_fn(|_req: Request<()>| {
            std::future::ready(Err::<Response<Empty<Bytes>>, BoxError>(Box::new(
                NeverReached::new(),
            )))
        }));
        now(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap();
        let resp = now(svc.call(Request::new(()))).unwrap();
        assert_eq!(resp.status(), 503);

        // A named layer writes its own series.
        let mut named =
            FallbackLayer::new()
                .name("checkout")
                .layer(service_fn(|_req: Request<()>| {
                    std::future::ready(Err::<Response<Empty<Bytes>>, BoxError>(
                        std::io::Error::other("reset").into(),
                    ))
                }));
        now(std::future::poll_fn(|cx| named.poll_ready(cx))).unwrap();
        assert_eq!(now(named.call(Request::new(()))).unwrap().status(), 503);

        let degrade = Degrade::new("recommendations");
        let out = now(degrade.or_default(async { Err::<u8, _>(std::io::Error::other("x")) }));
        assert!(out.is_degraded());
    });
    let counter = |key: &str| series::counter(&captured, key);
    assert_eq!(
        counter("rampart_fallback_apologies_total{layer=fallback,trigger=never_reached}"),
        1
    );
    assert_eq!(
        counter("rampart_fallback_apologies_total{layer=checkout,trigger=error}"),
        1
    );
    assert_eq!(
        counter(
            "rampart_fallback_degraded_total{layer=recommendations,dependency=recommendations,reason=failed}"
        ),
        1
    );
}
