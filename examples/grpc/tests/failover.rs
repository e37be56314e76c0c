//! The example's claims, over real TLS sockets on loopback: killing one of three servers fails
//! no call; with every server down each call ends at once in UNAVAILABLE with
//! `grpc-retry-pushback-ms`; brought back, they serve again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use grpc_example::{CallResult, Catalog, CatalogServer, Pki};

async fn until_served(client: &Catalog, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(CallResult::Item(_)) = client.get_item(1).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_one_then_all_then_bring_them_back() {
    let pki = Pki::generate().unwrap();
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        servers.push(CatalogServer::start(name, &pki).await.unwrap());
    }
    let uris: Vec<_> = servers.iter().map(CatalogServer::uri).collect();
    let client = Catalog::new(&uris, pki.client_tls().unwrap()).unwrap();
    assert!(until_served(&client, Duration::from_secs(10)).await);

    // One server killed in the middle of a concurrent run: no call fails.
    const WORKERS: usize = 4;
    const PER_WORKER: usize = 30;
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let client = client.clone();
        let sent = sent.clone();
        tasks.spawn(async move {
            let mut failed = Vec::new();
            for i in 0..PER_WORKER {
                sent.fetch_add(1, Ordering::SeqCst);
                let id = (w * PER_WORKER + i) as u64;
                match client.get_item(id).await {
                    Ok(CallResult::Item(item)) => assert_eq!(item.id, id),
                    other => failed.push(format!("{other:?}")),
                }
            }
            failed
        });
    }
    for _ in 0..1000 {
        if sent.load(Ordering::SeqCst) >= WORKERS * PER_WORKER / 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    servers[0].kill();
    let mut failed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failed.extend(done.unwrap());
    }
    assert!(failed.is_empty(), "failed calls: {failed:?}");

    // Every server down: each call ends in UNAVAILABLE with a pushback, within the client's
    // own request timeout (2 s), whatever state the breaker is in.
    for s in &mut servers {
        s.kill();
    }
    for id in 0..20 {
        let started = Instant::now();
        let result = client.get_item(id).await.unwrap();
        match result {
            CallResult::Status { code, pushback_ms } => {
                assert_eq!(code, tonic::Code::Unavailable);
                assert!(pushback_ms.is_some_and(|ms| ms > 0), "{pushback_ms:?}");
            }
            other => panic!("served while every server is down: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    // Back: served again.
    for s in &mut servers {
        s.restart().await.unwrap();
    }
    assert!(until_served(&client, Duration::from_secs(15)).await);
    for id in 0..10 {
        assert!(matches!(
            client.get_item(id).await.unwrap(),
            CallResult::Item(_)
        ));
    }
}
