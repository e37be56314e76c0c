//! Request extractors: where a request's client region (geo steering) or affinity key
//! (session affinity) comes from.
//!
//! An [`Extract`] borrows a string out of the request (a header value, a cookie value) or out
//! of its own table (an [`IpTable`] maps a client address to a region name). Extraction runs on
//! the request path, so the provided extractors neither allocate nor lock.
//!
//! # Example
//!
//! ```
//! use rampart_gslb::extract::{Cookie, Extract, Header, IpTable};
//!
//! let req = http::Request::builder()
//!     .header("x-client-region", "eu")
//!     .header("cookie", "theme=dark; gslb_site=eu-west")
//!     .body(())
//!     .unwrap();
//! assert_eq!(Header::new("x-client-region").extract(&req), Some("eu"));
//! assert_eq!(Cookie::new("gslb_site").extract(&req), Some("eu-west"));
//!
//! // A client-IP table: longest prefix wins.
//! let table = IpTable::new(|_req: &http::Request<()>| "10.1.2.3".parse().ok())
//!     .route("10.0.0.0".parse().unwrap(), 8, "eu")
//!     .route("10.1.0.0".parse().unwrap(), 16, "us");
//! assert_eq!(table.extract(&req), Some("us"));
//! ```

use std::fmt;
use std::net::IpAddr;

use http::HeaderName;

/// Borrows a string (a region name, an affinity key) from a request.
pub trait Extract<Req>: Send + Sync + 'static {
    /// The value for `req`, if it carries one.
    fn extract<'a>(&'a self, req: &'a Req) -> Option<&'a str>;
}

impl<Req, F> Extract<Req> for F
where
    F: for<'a> Fn(&'a Req) -> Option<&'a str> + Send + Sync + 'static,
{
    fn extract<'a>(&'a self, req: &'a Req) -> Option<&'a str> {
        self(req)
    }
}

/// The value of an HTTP header (the first one, if it is visible ASCII).
#[derive(Debug, Clone)]
pub struct Header {
    name: Option<HeaderName>,
}

impl Header {
    /// Reads header `name` (case-insensitive). A string that is not a valid header name
    /// never matches anything.
    pub fn new(name: &str) -> Self {
        Self {
            name: HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok(),
        }
    }

    /// Reads header `name`.
    pub fn from_name(name: HeaderName) -> Self {
        Self { name: Some(name) }
    }
}

impl<B> Extract<http::Request<B>> for Header {
    fn extract<'a>(&'a self, req: &'a http::Request<B>) -> Option<&'a str> {
        req.headers().get(self.name.as_ref()?)?.to_str().ok()
    }
}

/// The value of one cookie, from the request's `Cookie` headers (RFC 6265 §5.4 syntax:
/// `name=value` pairs separated by `; `).
#[derive(Debug, Clone)]
pub struct Cookie {
    name: Box<str>,
}

impl Cookie {
    /// Reads cookie `name`.
    pub fn new(name: impl Into<Box<str>>) -> Self {
        Self { name: name.into() }
    }
}

impl<B> Extract<http::Request<B>> for Cookie {
    fn extract<'a>(&'a self, req: &'a http::Request<B>) -> Option<&'a str> {
        for value in req.headers().get_all(http::header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                let pair = pair.trim_start();
                if let Some((name, v)) = pair.split_once('=')
                    && name.trim_end() == &*self.name
                {
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v);
                    return Some(v);
                }
            }
        }
        None
    }
}

/// Maps a client IP address to a region name by longest-prefix match over a table of networks.
///
/// Where the address comes from is yours to say (`F`): a request extension such as axum's
/// `ConnectInfo`, or a trusted `X-Forwarded-For` header. Lookup is a linear scan without
/// allocation, meant for tables of tens of entries.
pub struct IpTable<F> {
    client_ip: F,
    routes: Vec<(IpAddr, u8, Box<str>)>,
}

impl<F> fmt::Debug for IpTable<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpTable")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl<F> IpTable<F> {
    /// An empty table reading the client's address with `client_ip`.
    pub fn new(client_ip: F) -> Self {
        Self {
            client_ip,
            routes: Vec::new(),
        }
    }

    /// Adds `network/prefix_len → region`. A prefix longer than the address (33+ for IPv4,
    /// 129+ for IPv6) is clamped to the full address.
    pub fn route(mut self, network: IpAddr, prefix_len: u8, region: impl Into<Box<str>>) -> Self {
        let max = if network.is_ipv4() { 32 } else { 128 };
        self.routes
            .push((network, prefix_len.min(max), region.into()));
        self
    }

    /// The region for `ip`, by longest matching prefix.
    pub fn lookup(&self, ip: IpAddr) -> Option<&str> {
        let mut best: Option<(u8, &str)> = None;
        for (net, len, region) in &self.routes {
            if prefix_matches(*net, *len, ip) && best.is_none_or(|(l, _)| *len > l) {
                best = Some((*len, region));
            }
        }
        best.map(|(_, r)| r)
    }
}

fn prefix_matches(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

impl<Req, F> Extract<Req> for IpTable<F>
where
    F: Fn(&Req) -> Option<IpAddr> + Send + Sync + 'static,
{
    fn extract<'a>(&'a self, req: &'a Req) -> Option<&'a str> {
        self.lookup((self.client_ip)(req)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn header_present_and_absent() {
        let h = Header::new("X-Region");
        assert_eq!(h.extract(&req(&[("x-region", "us")])), Some("us"));
        assert_eq!(h.extract(&req(&[])), None);
    }

    #[test]
    fn cookie_among_several_headers() {
        let c = Cookie::new("site");
        let r = req(&[("cookie", "a=1"), ("cookie", "b=2; site=\"eu\"")]);
        assert_eq!(c.extract(&r), Some("eu"));
        assert_eq!(c.extract(&req(&[("cookie", "sites=x")])), None);
    }

    #[test]
    fn ip_table_longest_prefix_and_families() {
        let t = IpTable::new(|r: &http::Request<()>| {
            r.headers().get("x-ip")?.to_str().ok()?.parse().ok()
        })
        .route("0.0.0.0".parse().unwrap(), 0, "default")
        .route("192.168.0.0".parse().unwrap(), 16, "lan")
        .route("2001:db8::".parse().unwrap(), 32, "v6");
        assert_eq!(t.extract(&req(&[("x-ip", "192.168.4.4")])), Some("lan"));
        assert_eq!(t.extract(&req(&[("x-ip", "8.8.8.8")])), Some("default"));
        assert_eq!(t.extract(&req(&[("x-ip", "2001:db8::1")])), Some("v6"));
        assert_eq!(t.extract(&req(&[("x-ip", "2001:db9::1")])), None);
        assert_eq!(t.extract(&req(&[])), None);
    }
}
