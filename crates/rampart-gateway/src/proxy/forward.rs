//! Forwarding headers (RFC 9110 §7.6): hop-by-hop removal, `Via`, `X-Forwarded-*`; and an
//! HTTP/2 request made forwardable on any upstream connection (RFC 9113 §8.3.1).

use http::Version;
use http::header::{
    CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
    VIA,
};

use crate::server::ConnectionInfo;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 rampart");

fn is_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name.as_str().starts_with("proxy-")
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1: `Connection` and every header it
/// names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, and every
/// `Proxy-*` header (`Proxy-Connection`, `Proxy-Authorization`, `Proxy-Authenticate`).
///
/// One pass over the (usually few) header names; the map is only changed when one is present.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop) {
        return;
    }
    // Names listed in `Connection` (comma-separated, possibly over several lines).
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Prepares a request's headers for the upstream: hop-by-hop headers removed,
/// `X-Forwarded-For` appended (the client's IP, or `unknown` when the server did not say),
/// `X-Forwarded-Proto` (`https` when the server terminated TLS, else `http`),
/// `X-Forwarded-Host` (the client's `Host`), `Via: 1.1 rampart` appended.
pub(crate) fn request_headers(headers: &mut HeaderMap, conn: Option<ConnectionInfo>) {
    strip_hop_by_hop(headers);
    let client = match conn {
        Some(c) => HeaderValue::from_str(&c.peer().ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        None => HeaderValue::from_static("unknown"),
    };
    append_list(headers, &X_FORWARDED_FOR, &client);
    let proto = if conn.is_some_and(|c| c.is_tls()) {
        "https"
    } else {
        "http"
    };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = headers.get(HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    append_list(headers, &VIA, &VIA_VALUE);
}

/// Prepares a response's headers for the client: hop-by-hop headers removed,
/// `Via: 1.1 rampart` appended.
pub(crate) fn response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    append_list(headers, &VIA, &VIA_VALUE);
}

/// Appends `value` to a comma-separated list header (one field line, as most readers of
/// `X-Forwarded-For` expect).
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    match headers.get(name) {
        None => {
            headers.insert(name.clone(), value.clone());
        }
        Some(prev) => {
            let mut joined = Vec::with_capacity(prev.len() + 2 + value.len());
            joined.extend_from_slice(prev.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(value.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

/// Makes an HTTP/2 request forwardable on any upstream connection (RFC 9113 §8.3.1): its
/// `:authority` becomes `Host` when it has none, its target the origin form, its version
/// HTTP/1.1 (the upstream connection decides the version on the wire).
pub(super) fn from_http2(parts: &mut http::request::Parts) {
    if let Some(authority) = parts.uri.authority()
        && !parts.headers.contains_key(HOST)
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(HOST, v);
    }
    if parts.uri.authority().is_some()
        && let Some(pq) = parts.uri.path_and_query()
        && let Ok(uri) = http::Uri::try_from(pq.as_str())
    {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_11;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn connection_named_and_proxy_headers_are_removed_and_others_kept() {
        let mut h = HeaderMap::new();
        h.insert("host", "a".parse().unwrap());
        h.insert(CONNECTION, "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert(TE, "trailers".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("host"));
    }

    #[test]
    fn forwarded_for_is_appended_to_an_existing_chain() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        let conn = ConnectionInfo::new(
            "192.0.2.7:5000".parse().unwrap(),
            "192.0.2.1:443".parse().unwrap(),
            true,
        );
        request_headers(&mut h, Some(conn));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h[VIA], "1.1 rampart");
    }
}
