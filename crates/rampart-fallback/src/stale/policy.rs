//! What may be stored, and for how long it may be served on error (RFC 9111, RFC 5861).

use std::time::Duration;

use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The `Cache-Control` directives the stale cache reads (RFC 9111 §5.2, RFC 5861 §4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` field line of `headers`. Unknown directives are ignored;
    /// qualified forms (`private="x"`, `no-cache="x"`) are treated as unqualified, the
    /// conservative reading; a malformed delta-seconds is treated as 0 (RFC 9111 §1.2.2 asks
    /// a cache to treat an invalid value as stale).
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Unreadable: be conservative.
                cc.no_store = true;
                continue;
            };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let secs = || arg.map(|a| a.parse::<u64>().unwrap_or(0));
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    "max-age" => cc.max_age = secs().or(cc.max_age),
                    "s-maxage" => cc.s_maxage = secs().or(cc.s_maxage),
                    "stale-if-error" => cc.stale_if_error = secs().or(cc.stale_if_error),
                    _ => {}
                }
            }
        }
        cc
    }

    /// The freshness lifetime (RFC 9111 §4.2.1: `s-maxage`, else `max-age`; `Expires` and
    /// heuristic freshness are not used, so a response without either is stale at once).
    pub(crate) fn freshness(&self) -> Duration {
        Duration::from_secs(self.s_maxage.or(self.max_age).unwrap_or(0))
    }
}

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Status,
    NoStore,
    Private,
    SetCookie,
    VaryStar,
    Authorization,
    Revalidate,
    TooLarge,
    NoWindow,
}

impl NotStored {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status not cacheable",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary: *",
            NotStored::Authorization => "authorization without public/s-maxage/must-revalidate",
            NotStored::Revalidate => "no-cache/must-revalidate without stale-if-error",
            NotStored::TooLarge => "larger than max_entry_bytes",
            NotStored::NoWindow => "stale window is zero",
        }
    }
}

/// The decision to store: how long the copy may serve, and which request headers select it.
#[derive(Debug, Clone)]
pub(crate) struct StorePlan {
    /// Freshness lifetime + stale-if-error window: the largest current age it may be served at.
    pub(crate) usable_for: Duration,
    /// The request's values of the headers named in `Vary` (RFC 9111 §4.1).
    pub(crate) vary: Vec<(HeaderName, Option<HeaderValue>)>,
}

/// Statuses stored: the successful ones RFC 9110 §15.1 calls heuristically cacheable
/// (206 Partial Content is left out: ranges are not combined).
pub(crate) fn status_storable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308)
}

/// Decides whether a response to a GET may be stored (RFC 9111 §3, as a shared cache).
pub(crate) fn plan(
    request_headers: &HeaderMap,
    status: StatusCode,
    response_headers: &HeaderMap,
    default_window: Duration,
    max_window: Duration,
    max_entry_bytes: usize,
) -> Result<StorePlan, NotStored> {
    if !status_storable(status) {
        return Err(NotStored::Status);
    }
    let req_cc = CacheControl::parse(request_headers);
    let cc = CacheControl::parse(response_headers);
    if cc.no_store || req_cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if response_headers.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if request_headers.contains_key(AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    // no-cache, must-revalidate, proxy-revalidate and s-maxage forbid serving stale
    // (RFC 9111 §4.2.4, §5.2.2.10) unless the origin explicitly allows it on error with
    // stale-if-error (RFC 5861 §4: "regardless of other freshness information").
    if (cc.no_cache || cc.must_revalidate || cc.s_maxage.is_some()) && cc.stale_if_error.is_none() {
        return Err(NotStored::Revalidate);
    }
    if let Some(len) = response_headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max_entry_bytes as u64
    {
        return Err(NotStored::TooLarge);
    }
    let mut vary = Vec::new();
    for value in response_headers.get_all(VARY) {
        let Ok(value) = value.to_str() else {
            return Err(NotStored::VaryStar);
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return Err(NotStored::VaryStar);
            }
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                return Err(NotStored::VaryStar);
            };
            if vary.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let v = request_headers.get(&name).cloned();
            vary.push((name, v));
        }
    }
    let window = cc
        .stale_if_error
        .map_or(default_window, |s| Duration::from_secs(s).min(max_window));
    let usable_for = cc.freshness().saturating_add(window);
    if usable_for.is_zero() {
        return Err(NotStored::NoWindow);
    }
    Ok(StorePlan { usable_for, vary })
}

/// Whether `request_headers` select a variant stored with `vary` (RFC 9111 §4.1: the same
/// values, an absent header matching only an absent header).
pub(crate) fn vary_matches(
    vary: &[(HeaderName, Option<HeaderValue>)],
    request_headers: &HeaderMap,
) -> bool {
    vary.iter()
        .all(|(name, stored)| request_headers.get(name) == stored.as_ref())
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and `Age` are not stored.
pub(crate) fn strip_for_storage(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "age",
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn p(
        req: &[(&'static str, &'static str)],
        resp: &[(&'static str, &'static str)],
    ) -> Result<StorePlan, NotStored> {
        plan(
            &hm(req),
            StatusCode::OK,
            &hm(resp),
            Duration::from_secs(60),
            Duration::from_secs(3600),
            1000,
        )
    }

    #[test]
    fn parses_directives() {
        let cc = CacheControl::parse(&hm(&[
            ("cache-control", "Max-Age=10, stale-if-error=\"30\""),
            ("cache-control", "public"),
        ]));
        assert_eq!(cc.max_age, Some(10));
        assert_eq!(cc.stale_if_error, Some(30));
        assert!(cc.public);
        assert_eq!(cc.freshness(), Duration::from_secs(10));
        let cc = CacheControl::parse(&hm(&[("cache-control", "max-age=banana")]));
        assert_eq!(cc.max_age, Some(0));
    }

    #[test]
    fn windows() {
        assert_eq!(p(&[], &[]).unwrap().usable_for, Duration::from_secs(60));
        assert_eq!(
            p(&[], &[("cache-control", "max-age=10, stale-if-error=20")])
                .unwrap()
                .usable_for,
            Duration::from_secs(30)
        );
        assert_eq!(
            p(&[], &[("cache-control", "stale-if-error=99999")])
                .unwrap()
                .usable_for,
            Duration::from_secs(3600)
        );
        assert_eq!(
            p(&[], &[("cache-control", "stale-if-error=0")]).unwrap_err(),
            NotStored::NoWindow
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            p(&[], &[("cache-control", "no-store")]).unwrap_err(),
            NotStored::NoStore
        );
        assert_eq!(
            p(&[("cache-control", "no-store")], &[]).unwrap_err(),
            NotStored::NoStore
        );
        assert_eq!(
            p(&[], &[("cache-control", "private, max-age=9")]).unwrap_err(),
            NotStored::Private
        );
        assert_eq!(
            p(&[], &[("set-cookie", "a=b")]).unwrap_err(),
            NotStored::SetCookie
        );
        assert_eq!(
            p(&[], &[("vary", "accept, *")]).unwrap_err(),
            NotStored::VaryStar
        );
        assert_eq!(
            p(&[("authorization", "x")], &[]).unwrap_err(),
            NotStored::Authorization
        );
        assert!(p(&[("authorization", "x")], &[("cache-control", "public")]).is_ok());
        assert_eq!(
            p(&[], &[("cache-control", "no-cache")]).unwrap_err(),
            NotStored::Revalidate
        );
        assert!(
            p(
                &[],
                &[("cache-control", "must-revalidate, stale-if-error=5")]
            )
            .is_ok()
        );
        assert_eq!(
            p(&[], &[("content-length", "1001")]).unwrap_err(),
            NotStored::TooLarge
        );
        let e = plan(
            &hm(&[]),
            StatusCode::PARTIAL_CONTENT,
            &hm(&[]),
            Duration::from_secs(1),
            Duration::from_secs(1),
            10,
        );
        assert_eq!(e.unwrap_err(), NotStored::Status);
    }

    #[test]
    fn vary_selects_variants() {
        let plan = p(
            &[("accept-language", "de")],
            &[("vary", "Accept-Language, accept-encoding")],
        )
        .unwrap();
        assert_eq!(plan.vary.len(), 2);
        assert!(vary_matches(&plan.vary, &hm(&[("accept-language", "de")])));
        assert!(!vary_matches(&plan.vary, &hm(&[("accept-language", "fr")])));
        assert!(!vary_matches(
            &plan.vary,
            &hm(&[("accept-language", "de"), ("accept-encoding", "gzip")])
        ));
    }

    #[test]
    fn strips_hop_by_hop() {
        let mut h = hm(&[
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("age", "3"),
            ("etag", "\"a\""),
            ("transfer-encoding", "chunked"),
        ]);
        strip_for_storage(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("etag"));
    }
}
