//! Degradation of non-critical dependencies, on paused time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rampart_fallback::{Degrade, DegradeReason};
use rampart_health::{BoxError, NeverReached};
use tower::{Service, ServiceExt, service_fn};

/// Sets its flag when dropped: proves a call was cancelled.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn recs(deadline_ms: u64) -> Degrade {
    Degrade::builder("recommendations")
        .deadline(Duration::from_millis(deadline_ms))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn success_passes_through() {
    let d = recs(50);
    let out = d
        .or_default(async {
            tokio::time::sleep(Duration::from_millis(49)).await;
            Ok::<_, std::io::Error>(vec![1, 2, 3])
        })
        .await;
    assert!(!out.is_degraded());
    assert_eq!(out.value, vec![1, 2, 3]);
    assert_eq!(d.snapshot().ok, 1);
    assert_eq!(d.snapshot().degraded(), 0);
}

#[tokio::test(start_paused = true)]
async fn error_gives_the_default_and_records_why() {
    let d = recs(50);
    let out = d
        .or_default(async { Err::<Vec<u32>, _>(std::io::Error::other("boom")) })
        .await;
    assert_eq!(out.reason, Some(DegradeReason::Failed));
    assert!(out.value.is_empty());

    let out = d
        .or_value(
            async { Err::<&str, BoxError>(Box::new(NeverReached::new())) },
            "bestsellers",
        )
        .await;
    assert_eq!(out.reason, Some(DegradeReason::Unavailable));
    assert_eq!(out.value, "bestsellers");

    let s = d.snapshot();
    assert_eq!(
        (s.ok, s.failed, s.unavailable, s.deadline_exceeded),
        (0, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_cancels_the_call_and_degrades() {
    let d = recs(50);
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let start = tokio::time::Instant::now();
    let out = d
        .or_else(
            async move {
                let _flag = flag;
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<_, std::io::Error>(1)
            },
            |reason| async move {
                assert_eq!(reason, DegradeReason::DeadlineExceeded);
                7
            },
        )
        .await;
    assert_eq!(out.value, 7);
    assert_eq!(out.reason, Some(DegradeReason::DeadlineExceeded));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert!(dropped.load(Ordering::SeqCst), "the slow call was dropped");
    assert_eq!(d.snapshot().deadline_exceeded, 1);
}

#[tokio::test(start_paused = true)]
async fn deadline_starts_at_first_poll() {
    let d = recs(50);
    let fut = d.or_default(async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        Ok::<_, std::io::Error>(5u8)
    });
    tokio::time::advance(Duration::from_secs(1)).await;
    let out = fut.await;
    assert_eq!(out.reason, None);
    assert_eq!(out.value, 5);
}

#[tokio::test(start_paused = true)]
async fn no_deadline_waits() {
    let d = Degrade::new("reviews");
    assert_eq!(d.deadline(), None);
    let out = d
        .or_default(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, std::io::Error>(3u8)
        })
        .await;
    assert_eq!(out.into_inner(), 3);
}

#[tokio::test(start_paused = true)]
async fn as_a_tower_layer() {
    let d = recs(50);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let inner = service_fn(move |n: u32| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => Err::<u32, BoxError>("down".into()),
                1 => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok(1)
                }
                n => Ok(n * 10),
            }
        }
    });
    let mut svc = tower::ServiceBuilder::new()
        .layer(d.layer(|reason: DegradeReason| match reason {
            DegradeReason::DeadlineExceeded => 998,
            _ => 999,
        }))
        .service(inner);
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap().value, 20);
    let out = svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!((out.value, out.reason), (999, Some(DegradeReason::Failed)));
    let out = svc.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(
        (out.value, out.reason),
        (998, Some(DegradeReason::DeadlineExceeded))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let s = d.snapshot();
    assert_eq!((s.ok, s.failed, s.deadline_exceeded), (1, 1, 1));
}

#[tokio::test]
async fn poll_ready_failure_degrades_without_calling() {
    #[derive(Clone)]
    struct Broken(Arc<AtomicUsize>);
    impl Service<()> for Broken {
        type Response = u8;
        type Error = BoxError;
        type Future = std::future::Ready<Result<u8, BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Err(Box::new(NeverReached::new())))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(1))
        }
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let d = Degrade::new("ads");
    let svc = tower::Layer::layer(&d.layer(|_| 0u8), Broken(Arc::clone(&calls)));
    let out = svc.oneshot(()).await.unwrap();
    assert_eq!(
        (out.value, out.reason),
        (0, Some(DegradeReason::Unavailable))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(d.snapshot().unavailable, 1);
}

#[test]
fn builder_validates() {
    let e = Degrade::builder("x")
        .deadline(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "deadline");
    let e = Degrade::builder("").build().unwrap_err();
    assert_eq!(e.field(), "dependency");
    assert_eq!(Degrade::new("x").name(), "x");
}
