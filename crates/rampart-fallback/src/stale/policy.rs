//! What may be stored, and for how long it may be served on error (RFC 9111, RFC 5861).

use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, EXPIRES, SET_COOKIE, VARY};
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
            cc.add_field(value);
        }
        cc
    }

    /// Adds the directives of one `Cache-Control` field line: a single scan over its bytes
    /// (`name`, `name=token` or `name="quoted"`, separated by commas, whitespace allowed).
    /// A quoted argument may contain commas. Names are matched without case or allocation.
    fn add_field(&mut self, value: &HeaderValue) {
        let v = value.as_bytes();
        if !v.is_ascii() {
            // Unreadable: be conservative.
            self.no_store = true;
            return;
        }
        let n = v.len();
        let space = |b: u8| b == b' ' || b == b'\t';
        let mut i = 0;
        while i < n {
            while i < n && (space(v[i]) || v[i] == b',') {
                i += 1;
            }
            let start = i;
            while i < n && v[i] != b'=' && v[i] != b',' && !space(v[i]) {
                i += 1;
            }
            let name = &v[start..i];
            while i < n && space(v[i]) {
                i += 1;
            }
            let mut arg = None;
            if i < n && v[i] == b'=' {
                i += 1;
                while i < n && space(v[i]) {
                    i += 1;
                }
                let quoted = i < n && v[i] == b'"';
                if quoted {
                    i += 1;
                }
                let from = i;
                while i < n && if quoted { v[i] != b'"' } else { v[i] != b',' } {
                    i += 1;
                }
                arg = Some(v[from..i].trim_ascii_end());
            }
            // Anything else up to the next comma (a closing quote, stray text) is skipped.
            while i < n && v[i] != b',' {
                i += 1;
            }
            if !name.is_empty() {
                self.apply(name, arg);
            }
        }
    }

    /// Applies one directive; names are matched by length first.
    fn apply(&mut self, name: &[u8], arg: Option<&[u8]>) {
        let secs = || arg.map(delta_seconds);
        let is = |d: &str| name.eq_ignore_ascii_case(d.as_bytes());
        match name.len() {
            6 if is("public") => self.public = true,
            7 if is("max-age") => self.max_age = secs().or(self.max_age),
            7 if is("private") => self.private = true,
            8 if is("no-store") => self.no_store = true,
            8 if is("no-cache") => self.no_cache = true,
            8 if is("s-maxage") => self.s_maxage = secs().or(self.s_maxage),
            14 if is("stale-if-error") => {
                self.stale_if_error = secs().or(self.stale_if_error);
            }
            15 if is("must-revalidate") => self.must_revalidate = true,
            16 if is("proxy-revalidate") => self.must_revalidate = true,
            _ => {}
        }
    }

    /// The freshness lifetime (RFC 9111 §4.2.1: `s-maxage`, else `max-age`; `Expires` and
    /// heuristic freshness are not used, so a response without either is stale at once).
    pub(crate) fn freshness(&self) -> Duration {
        Duration::from_secs(self.s_maxage.or(self.max_age).unwrap_or(0))
    }
}

/// A delta-seconds value (RFC 9111 §1.2.2): digits, saturating at `u64::MAX`; anything else
/// is 0 (an invalid value is treated as stale).
fn delta_seconds(v: &[u8]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut secs = 0u64;
    for d in v {
        if !d.is_ascii_digit() {
            return 0;
        }
        secs = secs.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    secs
}

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Status,
    NoStore,
    Private,
    SetCookie,
    VaryStar,
    VaryNotCaptured,
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
            NotStored::VaryStar => "vary: * (or an unreadable vary)",
            NotStored::VaryNotCaptured => {
                "vary names a header not captured from this request (the next request is)"
            }
            NotStored::Authorization => "authorization without public/s-maxage/must-revalidate",
            NotStored::Revalidate => "no-cache/must-revalidate without stale-if-error",
            NotStored::TooLarge => "larger than max_entry_bytes",
            NotStored::NoWindow => "stale window is zero",
        }
    }
}

/// The most distinct header names `Vary` may name across all stored responses. A response
/// naming a header beyond these is not stored.
pub(crate) const MAX_VARY_NAMES: usize = 16;

/// The header names stored responses have named in `Vary`, each with a fixed slot.
///
/// Requests copy only the values of these headers (usually none or one, such as
/// `accept-encoding`) instead of cloning their whole header map. A response whose `Vary` names
/// a header seen for the first time registers it and is not stored (that request's value was
/// not kept); the following requests capture it. Slots are only ever appended, and read
/// without a lock.
#[derive(Debug, Default)]
pub(crate) struct VaryNames {
    slots: [OnceLock<HeaderName>; MAX_VARY_NAMES],
    len: AtomicUsize,
    register: Mutex<()>,
}

/// The values of the registered `Vary` headers in one request, by slot (absent: `None`).
pub(crate) type Captured = Vec<Option<HeaderValue>>;

impl VaryNames {
    /// The request's values of every registered name (no allocation while none is).
    pub(crate) fn capture(&self, headers: &HeaderMap) -> Captured {
        let n = self.len.load(Ordering::Acquire);
        if n == 0 {
            return Vec::new();
        }
        self.slots[..n]
            .iter()
            .map(|slot| slot.get().and_then(|name| headers.get(name).cloned()))
            .collect()
    }

    fn slot_of(&self, name: &HeaderName) -> Option<usize> {
        let n = self.len.load(Ordering::Acquire);
        self.slots[..n].iter().position(|s| s.get() == Some(name))
    }

    /// The slot of `name`, registering it if needed (`None` when every slot is taken).
    fn slot_or_register(&self, name: &HeaderName) -> Option<usize> {
        if let Some(i) = self.slot_of(name) {
            return Some(i);
        }
        let _guard = self
            .register
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = self.slot_of(name) {
            return Some(i);
        }
        let n = self.len.load(Ordering::Acquire);
        let slot = self.slots.get(n)?;
        // Only this thread (holding the lock) writes slot `n`, which is still empty.
        let _ = slot.set(name.clone());
        self.len.store(n + 1, Ordering::Release);
        tracing::debug!(target: "rampart_fallback", vary = %name, "stale-if-error now captures this request header");
        Some(n)
    }
}

/// A stored response's `Vary` selection: each named header's slot and the request's value.
pub(crate) type VarySelection = Vec<(usize, Option<HeaderValue>)>;

/// The decision to store: how long the copy may serve, and which request headers select it.
#[derive(Debug, Clone)]
pub(crate) struct StorePlan {
    /// Freshness lifetime + stale-if-error window: the largest current age it may be served at.
    pub(crate) usable_for: Duration,
    /// The request's values of the headers named in `Vary` (RFC 9111 §4.1).
    pub(crate) vary: VarySelection,
}

/// What a `GET` told about itself that matters for storing (taken when it was called).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestFacts {
    /// The request's `Cache-Control` has `no-store`.
    pub(crate) no_store: bool,
    /// The request carries `Authorization`.
    pub(crate) authorization: bool,
}

impl RequestFacts {
    /// One pass over the names (cheaper than two hashed lookups for a request's few fields).
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut facts = Self::default();
        let mut cache_control = false;
        for name in headers.keys() {
            if name == CACHE_CONTROL {
                cache_control = true;
            } else if name == AUTHORIZATION {
                facts.authorization = true;
            }
        }
        facts.no_store = cache_control && CacheControl::parse(headers).no_store;
        facts
    }
}

/// Statuses stored: the successful ones RFC 9110 §15.1 calls heuristically cacheable
/// (206 Partial Content is left out: ranges are not combined).
pub(crate) fn status_heuristically_storable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308)
}

/// Other successful statuses may be stored when the response says so explicitly (RFC 9111
/// §3: `max-age`, `s-maxage`, `public`, `Expires`, or an explicit `stale-if-error`), for
/// example a `302` with `max-age`. `206` (ranges are not combined) and `304` (not a complete
/// response) never are.
fn status_explicitly_storable(status: StatusCode, cc: &CacheControl, expires: bool) -> bool {
    let code = status.as_u16();
    (200..400).contains(&code)
        && code != 206
        && code != 304
        && (cc.max_age.is_some()
            || cc.s_maxage.is_some()
            || cc.public
            || cc.stale_if_error.is_some()
            || expires)
}

/// Settings `plan` needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) default_window: Duration,
    pub(crate) max_window: Duration,
    pub(crate) max_entry_bytes: usize,
}

/// Only a success or a redirect is ever stored: anything else is the kind of answer the
/// copies stand in for.
pub(crate) fn status_may_be_stored(status: StatusCode) -> bool {
    (200..400).contains(&status.as_u16())
}

/// Decides whether a response to a GET may be stored (RFC 9111 §3, as a shared cache).
pub(crate) fn plan(
    request: RequestFacts,
    captured: &[Option<HeaderValue>],
    names: &VaryNames,
    status: StatusCode,
    response_headers: &HeaderMap,
    limits: Limits,
) -> Result<StorePlan, NotStored> {
    if !status_may_be_stored(status) {
        return Err(NotStored::Status);
    }
    // One pass over the response's fields (a handful) instead of a hashed lookup per field.
    let mut cc = CacheControl::default();
    let (mut set_cookie, mut expires, mut has_vary) = (false, false, false);
    let mut content_length = None;
    for (name, value) in response_headers {
        if name == CACHE_CONTROL {
            cc.add_field(value);
        } else if name == SET_COOKIE {
            set_cookie = true;
        } else if name == CONTENT_LENGTH {
            content_length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
        } else if name == VARY {
            has_vary = true;
        } else if name == EXPIRES {
            expires = true;
        }
    }
    if !status_heuristically_storable(status) && !status_explicitly_storable(status, &cc, expires) {
        return Err(NotStored::Status);
    }
    if cc.no_store || request.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if set_cookie {
        return Err(NotStored::SetCookie);
    }
    if request.authorization && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    // no-cache, must-revalidate, proxy-revalidate and s-maxage forbid serving stale
    // (RFC 9111 §4.2.4, §5.2.2.10) unless the origin explicitly allows it on error with
    // stale-if-error (RFC 5861 §4: "regardless of other freshness information").
    if (cc.no_cache || cc.must_revalidate || cc.s_maxage.is_some()) && cc.stale_if_error.is_none() {
        return Err(NotStored::Revalidate);
    }
    if let Some(len) = content_length
        && len > limits.max_entry_bytes as u64
    {
        return Err(NotStored::TooLarge);
    }
    let mut vary = Vec::new();
    let mut not_captured = false;
    // Looked up only when the pass above saw a `Vary` field.
    let vary_fields = has_vary.then(|| response_headers.get_all(VARY));
    for value in vary_fields.into_iter().flatten() {
        let Ok(value) = value.to_str() else {
            return Err(NotStored::VaryStar);
        };
        for name in value
            .split(',')
            .map(str::trim_ascii)
            .filter(|n| !n.is_empty())
        {
            if name == "*" {
                return Err(NotStored::VaryStar);
            }
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                return Err(NotStored::VaryStar);
            };
            // Registering even when the response is not stored: the next request captures it.
            match names.slot_or_register(&name) {
                Some(slot) if slot < captured.len() => {
                    if !vary.iter().any(|(s, _)| *s == slot) {
                        vary.push((slot, captured[slot].clone()));
                    }
                }
                _ => not_captured = true,
            }
        }
    }
    if not_captured {
        return Err(NotStored::VaryNotCaptured);
    }
    let window = cc.stale_if_error.map_or(limits.default_window, |s| {
        Duration::from_secs(s).min(limits.max_window)
    });
    let usable_for = cc.freshness().saturating_add(window);
    if usable_for.is_zero() {
        return Err(NotStored::NoWindow);
    }
    Ok(StorePlan { usable_for, vary })
}

/// Whether a request (its captured `Vary` values) selects a variant stored with `vary`
/// (RFC 9111 §4.1: the same values, an absent header matching only an absent header). A name
/// registered after the request was captured never matches.
pub(crate) fn vary_matches(
    vary: &[(usize, Option<HeaderValue>)],
    captured: &[Option<HeaderValue>],
) -> bool {
    vary.iter()
        .all(|(slot, stored)| captured.get(*slot).is_some_and(|v| v == stored))
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) and `Age`, which are not stored.
const NOT_STORED_FIELDS: [HeaderName; 8] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    http::header::AGE,
];

/// Removes hop-by-hop fields (RFC 9110 §7.6.1, including those `Connection` names) and `Age`.
/// Most responses have none: one pass over the names finds that without hashing.
pub(crate) fn strip_for_storage(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| NOT_STORED_FIELDS.contains(k)) {
        return;
    }
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
    for name in &NOT_STORED_FIELDS {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests;
