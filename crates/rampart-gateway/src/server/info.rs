//! What the server tells the handler about the connection a request arrived on.

use std::net::SocketAddr;

/// The connection a request arrived on: the client's address, the server's address it
/// connected to, and whether the server terminated TLS on it.
///
/// The server adds it to every request's extensions, together with axum's
/// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo) (the client's address), so both
/// `Extension<ConnectionInfo>` and `ConnectInfo<SocketAddr>` extract in an axum app served
/// through it.
///
/// ```
/// use std::net::SocketAddr;
/// use axum::extract::ConnectInfo;
/// use axum::routing::get;
///
/// let app: axum::Router = axum::Router::new().route(
///     "/",
///     get(|ConnectInfo(client): ConnectInfo<SocketAddr>| async move { client.ip().to_string() }),
/// );
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionInfo {
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
}

impl ConnectionInfo {
    /// A connection from `peer` to `local`; `tls`: the server terminated TLS on it.
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> Self {
        Self { peer, local, tls }
    }

    /// The client's address (the TCP peer).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The server's address the client connected to.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Did the server terminate TLS on this connection (`https`)?
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The connection with `tls` set.
    pub(crate) fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }
}
