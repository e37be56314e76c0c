//! The gRPC breaker over a real HTTP/2 connection: a server that answers every call with a
//! 200 head and `grpc-status: 14` in the trailers opens the breaker, judged at the end of the
//! stream; bodies dropped before their end never do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_breaker::{BreakerOpen, BreakerState, CircuitBreakerLayer, Policy, SlidingWindow};
use tokio_util::task::AbortOnDropHandle;
use tower::{Layer, Service, ServiceExt};

/// An h2c server on `127.0.0.1:0` whose every answer is a 200 head, one message and
/// `grpc-status: <status>` in the trailers.
async fn grpc_server(status: &'static str) -> (SocketAddr, AbortOnDropHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
                    trailers.insert("grpc-message", http::HeaderValue::from_static("down"));
                    // A length-prefixed empty message, then the status in the trailers.
                    let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
                        .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, AbortOnDropHandle::new(task))
}

fn h2c_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn call(addr: SocketAddr) -> http::Request<Empty<Bytes>> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/shop.Catalog/Get"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::new())
        .unwrap()
}

fn policy() -> Policy {
    Policy::builder()
        .name("catalog")
        .sliding_window(SlidingWindow::count(4))
        .minimum_calls(4)
        .build()
        .unwrap()
}

#[tokio::test]
async fn unavailable_in_the_trailers_after_a_200_head_opens_the_breaker() {
    let (addr, _server) = grpc_server("14").await;
    let layer = CircuitBreakerLayer::grpc(policy());
    let breaker = layer.handle().clone();
    let mut client = layer.layer(h2c_client());

    for i in 0..4 {
        let response = client
            .ready()
            .await
            .unwrap()
            .call(call(addr))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // The head alone says nothing yet: the verdict is in the trailers.
        assert_eq!(
            breaker.snapshot().calls,
            i,
            "judged before the end of call {i}"
        );
        let body = response.into_body().collect().await.unwrap();
        let trailers = body.trailers().expect("trailers");
        assert_eq!(trailers["grpc-status"], "14");
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let err = client
        .ready()
        .await
        .unwrap()
        .call(call(addr))
        .await
        .unwrap_err();
    assert!(BreakerOpen::find(&*err).is_some(), "{err}");
}

#[tokio::test]
async fn ok_in_the_trailers_keeps_the_breaker_closed_and_counts_successes() {
    let (addr, _server) = grpc_server("0").await;
    let layer = CircuitBreakerLayer::grpc(policy());
    let breaker = layer.handle().clone();
    let mut client = layer.layer(h2c_client());
    for _ in 0..6 {
        let response = client
            .ready()
            .await
            .unwrap()
            .call(call(addr))
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
    }
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, BreakerState::Closed);
    assert_eq!((snapshot.calls, snapshot.failures), (4, 0));
}

#[tokio::test]
async fn bodies_dropped_before_their_trailers_record_no_verdict() {
    let (addr, _server) = grpc_server("14").await;
    let layer = CircuitBreakerLayer::grpc(policy());
    let breaker = layer.handle().clone();
    let mut client = layer.layer(h2c_client());
    for _ in 0..6 {
        let response = client
            .ready()
            .await
            .unwrap()
            .call(call(addr))
            .await
            .unwrap();
        drop(response);
    }
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, BreakerState::Closed);
    assert_eq!(snapshot.calls, 0);
}

#[tokio::test]
async fn a_trailers_only_answer_is_judged_from_the_head() {
    // A server answering 503 (no gRPC at all): UNAVAILABLE from the HTTP status, at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = AbortOnDropHandle::new(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(503)
                            .body(Empty::<Bytes>::new())
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }));
    let layer = CircuitBreakerLayer::grpc(policy());
    let breaker = layer.handle().clone();
    let mut client = layer.layer(h2c_client());
    for i in 1..=3 {
        let response = client
            .ready()
            .await
            .unwrap()
            .call(call(addr))
            .await
            .unwrap();
        assert_eq!(breaker.snapshot().failures, i);
        drop(response);
    }
}
