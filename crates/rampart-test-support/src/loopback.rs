//! Real servers on loopback for tests: bound to `127.0.0.1:0`, stopped when dropped.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;

/// A server running on loopback; it stops when this is dropped.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    _task: AbortOnDropHandle<()>,
}

impl Server {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves `router` on `127.0.0.1:0` on the current runtime.
pub async fn serve(router: axum::Router) -> Server {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    }));
    Server { addr, _task: task }
}
