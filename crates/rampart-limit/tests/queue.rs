//! The bounded queue: FIFO while it drains, newest first and CoDel drops once a queue
//! stands, bounded length and wait, priority between partitions. Paused tokio time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_health::BoxError;
use rampart_limit::algorithm::Fixed;
use rampart_limit::{Class, CoDelQueue, LimitLayer, Limiter, Overloaded, ShedReason};
use tokio::task::JoinHandle;
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

type Log = Arc<Mutex<Vec<u32>>>;

fn limiter(limit: usize, queue: CoDelQueue, partitions: &[(&str, f64)]) -> Limiter {
    let mut b = Limiter::builder()
        .name("queued")
        .algorithm(Fixed::new(limit).unwrap())
        .queue(queue);
    for (n, s) in partitions {
        b = b.partition(*n, *s);
    }
    b.build().unwrap()
}

/// A service that logs the order in which calls reach it, partitioned by `id / 100`.
fn service(
    limiter: &Limiter,
    log: &Log,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static {
    let log = Arc::clone(log);
    LimitLayer::new(limiter.clone())
        .partition_by(|id: &u32| Class::Partition((*id / 100) as usize))
        .layer(service_fn(move |id: u32| {
            log.lock().unwrap().push(id);
            async move { Ok::<_, std::io::Error>(id) }
        }))
}

fn spawn_call<S>(svc: &S, id: u32) -> JoinHandle<Result<u32, BoxError>>
where
    S: Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static,
{
    let svc = svc.clone();
    tokio::spawn(async move { svc.oneshot(id).await })
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn reason(r: Result<u32, BoxError>) -> ShedReason {
    Overloaded::find(&*r.unwrap_err()).unwrap().reason()
}

#[tokio::test(start_paused = true)]
async fn a_draining_queue_serves_first_come_first_served() {
    let limiter = limiter(1, CoDelQueue::new(10), &[]);
    let log = Log::default();
    let svc = service(&limiter, &log);
    let holder = limiter.try_acquire(Class::Partition(0)).unwrap();
    let calls: Vec<_> = (1..=3).map(|id| spawn_call(&svc, id)).collect();
    settle().await;
    assert_eq!(limiter.snapshot().queued, 3);
    advance(Duration::from_millis(30)).await;
    drop(holder);
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(*log.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.snapshot().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn a_standing_queue_serves_newest_first_and_drops_what_waited_past_the_target() {
    let q = CoDelQueue::new(10)
        .target(Duration::from_millis(20))
        .interval(Duration::from_millis(100));
    let limiter = limiter(1, q, &[]);
    let log = Log::default();
    let svc = service(&limiter, &log);
    let holder = limiter.try_acquire(Class::Partition(0)).unwrap();
    let c1 = spawn_call(&svc, 1);
    settle().await;
    advance(Duration::from_millis(70)).await;
    let c2 = spawn_call(&svc, 2);
    settle().await;
    advance(Duration::from_millis(20)).await;
    let c3 = spawn_call(&svc, 3);
    settle().await;
    advance(Duration::from_millis(5)).await;
    let c4 = spawn_call(&svc, 4);
    settle().await;
    // t = 95 ms; at 100 ms the first call reaches the longest wait.
    advance(Duration::from_millis(6)).await;
    settle().await;
    assert_eq!(reason(c1.await.unwrap()), ShedReason::QueueTimeout);
    // t = 101 ms: the queue has stood for a whole interval. Call 2 waited 31 ms > 20 ms.
    drop(holder);
    settle().await;
    assert_eq!(reason(c2.await.unwrap()), ShedReason::QueueTimeout);
    assert_eq!(c3.await.unwrap().unwrap(), 3);
    assert_eq!(c4.await.unwrap().unwrap(), 4);
    assert_eq!(*log.lock().unwrap(), vec![4, 3], "newest first");
    let snap = limiter.snapshot();
    assert_eq!(snap.partitions[0].shed, 2, "each drop counted once");
    assert_eq!((snap.in_flight, snap.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_sheds_the_newcomer_at_once() {
    let limiter = limiter(1, CoDelQueue::new(2), &[]);
    let log = Log::default();
    let svc = service(&limiter, &log);
    let holder = limiter.try_acquire(Class::Partition(0)).unwrap();
    let c1 = spawn_call(&svc, 1);
    let c2 = spawn_call(&svc, 2);
    settle().await;
    let r = svc.clone().oneshot(3).await;
    assert_eq!(reason(r), ShedReason::QueueFull);
    drop(holder);
    assert_eq!(c1.await.unwrap().unwrap(), 1);
    assert_eq!(c2.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn no_request_waits_longer_than_the_interval() {
    let q = CoDelQueue::new(10).interval(Duration::from_millis(50));
    let limiter = limiter(1, q, &[]);
    let log = Log::default();
    let svc = service(&limiter, &log);
    let _holder = limiter.try_acquire(Class::Partition(0)).unwrap();
    let start = tokio::time::Instant::now();
    let r = svc.clone().oneshot(1).await;
    assert_eq!(reason(r), ShedReason::QueueTimeout);
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert!(log.lock().unwrap().is_empty(), "never reached the service");
    assert_eq!(limiter.snapshot().partitions[0].shed, 1);
}

#[tokio::test(start_paused = true)]
async fn freed_slots_go_to_the_highest_priority_partition_first() {
    // Both may borrow (shares leave 40 % unreserved): only priority decides.
    let limiter = limiter(
        10,
        CoDelQueue::new(10),
        &[("checkout", 0.3), ("recommendations", 0.3)],
    );
    let log = Log::default();
    let svc = service(&limiter, &log);
    let checkout_holders: Vec<_> = (0..3)
        .map(|_| limiter.try_acquire(Class::Partition(0)).unwrap())
        .collect();
    let mut recs_holders: Vec<_> = (0..7)
        .map(|_| limiter.try_acquire(Class::Partition(1)).unwrap())
        .collect();
    assert_eq!(limiter.in_flight(), 10);
    let recs = spawn_call(&svc, 101);
    settle().await;
    let checkout = spawn_call(&svc, 1);
    settle().await;
    recs_holders.pop();
    assert_eq!(checkout.await.unwrap().unwrap(), 1);
    // Checkout first although it came later; its completion then frees the slot for
    // recommendations.
    assert_eq!(*log.lock().unwrap(), vec![1, 101]);
    drop(recs_holders);
    drop(checkout_holders);
    assert_eq!(recs.await.unwrap().unwrap(), 101);
    assert_eq!(limiter.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_the_queue_without_taking_a_slot() {
    let limiter = limiter(1, CoDelQueue::new(10), &[]);
    let log = Log::default();
    let svc = service(&limiter, &log);
    let holder = limiter.try_acquire(Class::Partition(0)).unwrap();
    let c1 = spawn_call(&svc, 1);
    let c2 = spawn_call(&svc, 2);
    settle().await;
    c1.abort();
    settle().await;
    drop(holder);
    assert_eq!(c2.await.unwrap().unwrap(), 2);
    assert_eq!(*log.lock().unwrap(), vec![2]);
    let snap = limiter.snapshot();
    assert_eq!((snap.in_flight, snap.queued), (0, 0));
}
