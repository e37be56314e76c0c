//! Over a real loopback connection: a panicking handler and a refused upstream connection
//! give the apology, not a dropped connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rampart_fallback::FallbackLayer;
use rampart_health::{BoxError, NeverReached};
use rampart_test_support::loopback;
use tower_http::catch_panic::CatchPanicLayer;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An address nothing listens on (bound, then released).
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

#[tokio::test]
async fn panic_and_refused_upstream_give_the_apology_over_loopback() {
    let upstream = closed_port().await;
    // A proxying route: its upstream refuses connections.
    let proxy = tower::service_fn(move |req: Request<Body>| async move {
        let uri = format!("http://{upstream}{}", req.uri().path());
        let req = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
        match client().request(req).await {
            Ok(resp) => Ok(resp.map(Body::new)),
            // The connect error proves the request never left.
            Err(e) if e.is_connect() => {
                Err::<_, BoxError>(Box::new(NeverReached::new().with_source(e)))
            }
            Err(e) => Err(Box::new(e) as BoxError),
        }
    });
    let layer = FallbackLayer::new();
    let stats = layer.stats().clone();
    let app = Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route(
            "/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("handler blew up with secret state");
                }
                "unreachable"
            }),
        )
        .route_service("/proxy", tower::Layer::layer(&layer, proxy))
        .layer(CatchPanicLayer::new())
        .layer(layer);
    let server = loopback::serve(app).await;
    let addr = server.addr();
    let client = client();

    for round in 0..3 {
        let req = Request::get(format!("http://{addr}/boom"))
            .header("accept", "application/json")
            .header("x-request-id", format!("r-{round}"))
            .body(Empty::new())
            .unwrap();
        let resp = client.request(req).await.expect("connection must not drop");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert_eq!(resp.headers()["retry-after"], "5");
        assert_eq!(
            resp.headers()["x-request-id"],
            format!("r-{round}").as_str()
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], 503);
        assert_eq!(v["instance"], "/boom");
        assert!(!String::from_utf8_lossy(&body).contains("secret"));

        // The same client (and pooled connection) keeps working.
        let resp = client
            .request(
                Request::get(format!("http://{addr}/ok"))
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"fine");
    }

    let resp = client
        .request(
            Request::get(format!("http://{addr}/proxy"))
                .header("accept", "text/plain")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains("127.0.0.1"),
        "upstream address leaked: {text}"
    );
    assert!(
        !text.to_lowercase().contains("refused"),
        "error text leaked: {text}"
    );

    let snap = stats.snapshot();
    assert_eq!(snap.statuses, 3, "three panics became 500s, then apologies");
    assert_eq!(snap.never_reached, 1, "the refused connection");
    drop(server);
}
