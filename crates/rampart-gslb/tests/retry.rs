//! Retry on the next site for failures that never reached a backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use bytes::Bytes;
use common::{FAIL, Mock, NEVER_REACHED, NOT_READY, REFUSED, RESET, SiteDown};
use http_body_util::Full;
use rampart_gslb::replay::{CloneReplay, HttpReplay};
use rampart_gslb::{Gslb, GslbConfig, Site, Sites};
use rampart_health::{find_in_chain, is_never_reached};
use tower::{Service, ServiceExt};

fn three<R: 'static>(config: GslbConfig<R>) -> (Gslb<Mock, R>, [Mock; 3]) {
    let mocks = [Mock::new("p0"), Mock::new("p1"), Mock::new("p2")];
    let sites = Sites::builder()
        .site(Site::new("p0", mocks[0].clone()))
        .site(Site::new("p1", mocks[1].clone()).priority(1))
        .site(Site::new("p2", mocks[2].clone()).priority(2))
        .build()
        .unwrap();
    (Gslb::new(config, sites), mocks)
}

/// The window between a site dying and its health turning red costs nothing: the request is
/// replayed on the next site.
#[tokio::test(start_paused = true)]
async fn never_reached_is_retried_on_the_next_site() {
    let config = GslbConfig::<u32>::builder()
        .replay(CloneReplay)
        .build()
        .unwrap();
    let (mut gslb, [p0, p1, _]) = three(config);
    p0.set(NEVER_REACHED);
    for i in 0..10 {
        assert_eq!(gslb.ready().await.unwrap().call(i).await.unwrap(), "p1");
    }
    assert_eq!(p0.calls(), 10);
    assert_eq!(p1.calls(), 10);
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded() {
    let config = GslbConfig::<u32>::builder()
        .replay(CloneReplay)
        .retries(1)
        .build()
        .unwrap();
    let (mut gslb, [p0, p1, p2]) = three(config);
    p0.set(NEVER_REACHED);
    p1.set(NEVER_REACHED);
    let err = gslb.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(is_never_reached(&*err));
    assert_eq!((p0.calls(), p1.calls(), p2.calls()), (1, 1, 0));

    let config = GslbConfig::<u32>::builder()
        .replay(CloneReplay)
        .retries(2)
        .build()
        .unwrap();
    let (mut gslb, [p0, p1, p2]) = three(config);
    p0.set(NEVER_REACHED);
    p1.set(NEVER_REACHED);
    assert_eq!(gslb.ready().await.unwrap().call(1).await.unwrap(), "p2");
    assert_eq!((p0.calls(), p1.calls(), p2.calls()), (1, 1, 1));

    let err = GslbConfig::<u32>::builder().retries(4).build().unwrap_err();
    assert_eq!(err.field(), "retries");
}

#[tokio::test(start_paused = true)]
async fn failures_that_reached_a_backend_are_not_retried() {
    let config = GslbConfig::<u32>::builder()
        .replay(CloneReplay)
        .build()
        .unwrap();
    let (mut gslb, [p0, p1, _]) = three(config);
    p0.set(FAIL);
    let err = gslb.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(find_in_chain::<SiteDown>(&*err).is_some());
    assert_eq!((p0.calls(), p1.calls()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn no_replay_no_retry() {
    let (mut gslb, [p0, p1, _]) = three(GslbConfig::<u32>::default());
    p0.set(NEVER_REACHED);
    let err = gslb.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(is_never_reached(&*err));
    assert_eq!((p0.calls(), p1.calls()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn http_bodies_replay_only_when_buffered_and_small() {
    type Req = http::Request<Full<Bytes>>;
    let config = GslbConfig::<Req>::builder()
        .replay(HttpReplay::new(8))
        .build()
        .unwrap();
    let (mut gslb, [p0, p1, _]) = three(config);
    p0.set(NEVER_REACHED);
    let small = http::Request::new(Full::new(Bytes::from_static(b"tiny")));
    assert_eq!(gslb.ready().await.unwrap().call(small).await.unwrap(), "p1");
    let big = http::Request::new(Full::new(Bytes::from_static(b"far too large")));
    assert!(gslb.ready().await.unwrap().call(big).await.is_err());
    assert_eq!(p1.calls(), 1);
}

/// A drained site is not a retry target; the fallback site is the last one.
#[tokio::test(start_paused = true)]
async fn retry_skips_drained_sites_and_ends_at_the_fallback() {
    let (p0, p1, sorry) = (Mock::new("p0"), Mock::new("p1"), Mock::new("sorry"));
    let sites = Sites::builder()
        .site(Site::new("p0", p0.clone()))
        .site(Site::new("p1", p1.clone()).priority(1))
        .fallback(Site::new("sorry", sorry.clone()))
        .build()
        .unwrap();
    let config = GslbConfig::<u32>::builder()
        .replay(CloneReplay)
        .build()
        .unwrap();
    let mut gslb = Gslb::new(config, sites);
    gslb.handle().drain("p1").unwrap();
    p0.set(NEVER_REACHED);
    assert_eq!(gslb.ready().await.unwrap().call(1).await.unwrap(), "sorry");
    assert_eq!((p0.calls(), p1.calls(), sorry.calls()), (1, 0, 1));
}

/// A site whose `poll_ready` fails with `NeverReached` never saw the request: it goes to the
/// next site (with a replay strategy configured, like every retry).
#[tokio::test(start_paused = true)]
async fn poll_ready_failures_move_to_the_next_site() {
    let config = GslbConfig::<u32>::builder()
        .replay(CloneReplay)
        .build()
        .unwrap();
    let (mut gslb, [p0, p1, _]) = three(config);
    p0.set(NOT_READY);
    assert_eq!(gslb.ready().await.unwrap().call(1).await.unwrap(), "p1");
    assert_eq!((p0.calls(), p1.calls()), (0, 1));

    let (mut gslb, [p0, p1, _]) = three(GslbConfig::<u32>::default());
    p0.set(NOT_READY);
    let err = gslb.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(is_never_reached(&*err));
    assert_eq!((p0.calls(), p1.calls()), (0, 0));
}

/// A refused connection is a never-reached failure even when the site is a plain client
/// that does not mark it (`io::ErrorKind::ConnectionRefused` anywhere in the chain); a reset
/// connection may have delivered the request and is not retried.
#[tokio::test(start_paused = true)]
async fn refused_connections_are_retried_but_resets_are_not() {
    let config = GslbConfig::<u32>::builder()
        .replay(CloneReplay)
        .build()
        .unwrap();
    let (mut gslb, [p0, p1, _]) = three(config);
    p0.set(REFUSED);
    assert_eq!(gslb.ready().await.unwrap().call(1).await.unwrap(), "p1");
    assert_eq!((p0.calls(), p1.calls()), (1, 1));

    p0.set(RESET);
    let err = gslb.ready().await.unwrap().call(2).await.unwrap_err();
    let io = find_in_chain::<std::io::Error>(&*err).expect("the reset is returned");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!((p0.calls(), p1.calls()), (2, 1), "a reset is not retried");
}
