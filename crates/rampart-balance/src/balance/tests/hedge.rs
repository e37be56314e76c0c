//! Hedging: a hedge wins against a slow endpoint, and a fast first attempt sends none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

/// An in-memory endpoint that answers 200 after `delay` (tokio time), counting requests
/// started and requests dropped before answering.
#[derive(Clone)]
struct Slow {
    delay: Duration,
    started: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
}

struct CountDrop(Arc<AtomicUsize>, bool);
impl CountDrop {
    fn done(mut self) {
        self.1 = true;
    }
}
impl Drop for CountDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Service<Req> for Slow {
    type Response = Res;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Res, BoxError>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Req) -> Self::Future {
        self.started.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay;
        let guard = CountDrop(self.cancelled.clone(), false);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            guard.done();
            Ok(http::Response::new(String::new()))
        })
    }
}

fn slow(ms: u64) -> Slow {
    Slow {
        delay: Duration::from_millis(ms),
        started: Arc::default(),
        cancelled: Arc::default(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_hedge_after_the_delay_wins_against_a_slow_endpoint_and_the_loser_is_dropped() {
    let (a, bb) = (slow(1000), slow(10));
    let mut b = Balance::builder()
        .picker(Picker::RoundRobin)
        .hedge(crate::Hedge::fixed(Duration::from_millis(50)))
        .endpoint(Endpoint::new("a", a.clone()))
        .endpoint(Endpoint::new("b", bb.clone()))
        .build()
        .unwrap();
    // Round robin sends the first request to `a`: the hedge goes to `b` at 50 ms.
    let start = tokio::time::Instant::now();
    let res = send(&mut b, get()).await.unwrap();
    assert_eq!(served_by(&res), "b");
    assert_eq!(start.elapsed(), Duration::from_millis(60));
    assert_eq!(a.started.load(Ordering::SeqCst), 1);
    assert_eq!(
        a.cancelled.load(Ordering::SeqCst),
        1,
        "the loser was dropped"
    );
    // A POST is not hedged: it waits for `a`... round robin now picks `b` first, then `a`.
    let post = || http::Request::post("/").body(String::new()).unwrap();
    send(&mut b, post()).await.unwrap();
    let res = send(&mut b, post()).await.unwrap();
    assert_eq!(served_by(&res), "a");
    assert_eq!(bb.started.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_fast_first_attempt_sends_no_hedge_and_hedging_is_off_by_default() {
    let (a, bb) = (slow(10), slow(10));
    let mut b = Balance::builder()
        .hedge(crate::Hedge::fixed(Duration::from_millis(50)))
        .endpoint(Endpoint::new("a", a.clone()))
        .endpoint(Endpoint::new("b", bb.clone()))
        .build()
        .unwrap();
    for _ in 0..10 {
        send(&mut b, get()).await.unwrap();
    }
    let started = a.started.load(Ordering::SeqCst) + bb.started.load(Ordering::SeqCst);
    assert_eq!(started, 10);
    let (a, bb) = (slow(1000), slow(1000));
    let mut b = Balance::builder()
        .endpoint(Endpoint::new("a", a.clone()))
        .endpoint(Endpoint::new("b", bb.clone()))
        .build()
        .unwrap();
    send(&mut b, get()).await.unwrap();
    assert_eq!(
        a.started.load(Ordering::SeqCst) + bb.started.load(Ordering::SeqCst),
        1
    );
}
