//! Recording: after a successful response head, decides whether to keep a copy
//! ([`record`]), and stores it when the body has ended ([`Pending`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AGE, CONTENT_LENGTH};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::time::Instant;

use super::body::StaleBody;
use super::{Key, RequestInfo, STALE_HEADER, STORED_SIZE, StaleShared, Stored, cost, policy};

/// After a successful response head: decides whether to record it, and wraps the body.
pub(crate) fn record<B>(
    shared: &Arc<StaleShared>,
    info: RequestInfo,
    resp: Response<B>,
) -> Response<StaleBody<B>>
where
    B: http_body::Body<Data = Bytes>,
{
    // A copy stored less than `refresh_after` ago is kept as it is: the response is not
    // examined at all (the steady state of a popular page: one table lookup).
    if !policy::status_may_be_stored(resp.status()) {
        return resp.map(StaleBody::passthrough);
    }
    let now = Instant::now();
    let fingerprint = if shared.recent.slots.is_empty() {
        0
    } else {
        let fp = shared.recent.fingerprint(&info.key, &info.vary);
        if shared.recent.is_recent(fp, now) {
            shared.counters.recent.fetch_add(1, Ordering::Relaxed);
            return resp.map(StaleBody::passthrough);
        }
        fp
    };
    let cfg = &shared.config;
    let plan = match policy::plan(
        info.facts,
        &info.vary,
        &shared.vary_names,
        resp.status(),
        resp.headers(),
        policy::Limits {
            default_window: cfg.default_window,
            max_window: cfg.max_window,
            max_entry_bytes: cfg.max_entry_bytes,
        },
    ) {
        Ok(plan) => plan,
        Err(policy::NotStored::Status) => return resp.map(StaleBody::passthrough),
        Err(why) => {
            shared.not_stored(why, info.key.path());
            return resp.map(StaleBody::passthrough);
        }
    };
    // The copy's cost, its body estimated by `Content-Length` (known only at its end
    // otherwise).
    let headers_weight = cost::headers_weight(resp.headers());
    let vary_weight =
        cost::heap(plan.vary.len() * std::mem::size_of::<(usize, Option<HeaderValue>)>())
            + plan
                .vary
                .iter()
                .map(|(_, v)| v.as_ref().map_or(0, |v| cost::heap(v.len())))
                .sum::<usize>();
    let overhead = STORED_SIZE + headers_weight + vary_weight;
    let content_length = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if !shared.admits(&info.key, overhead + info.key.weight() + content_length) {
        return resp.map(StaleBody::passthrough);
    }
    let upstream_age = resp
        .headers()
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let initial_age =
        Duration::from_secs(upstream_age) + now.saturating_duration_since(info.sent_at);
    // Names and values of their own, in a map of their own size (see `cost`).
    let mut headers = cost::detach_headers(resp.headers());
    policy::strip_for_storage(&mut headers);
    // What a served copy carries besides its stored fields, in place (see `lookup`).
    headers.insert(STALE_HEADER, HeaderValue::from_static("1"));
    headers.insert(AGE, HeaderValue::from_static("0"));
    // The vary values, too, are copies of their own.
    let vary = plan
        .vary
        .into_iter()
        .map(|(slot, v)| {
            let v = v.map(|v| HeaderValue::from_bytes(v.as_bytes()).unwrap_or(v));
            (slot, v)
        })
        .collect();
    let pending = Pending {
        shared: Arc::clone(shared),
        key: info.key,
        status: resp.status(),
        headers,
        vary,
        stored_at: now,
        initial_age,
        usable_for: plan.usable_for,
        // Content-Length is set to the body's length when it is stored: room for its value.
        overhead: overhead + 32,
        fingerprint,
    };
    let (parts, body) = resp.into_parts();
    let body = StaleBody::recording(body, pending, cfg.max_entry_bytes);
    Response::from_parts(parts, body)
}

/// A response being recorded, waiting for its body to end.
pub(crate) struct Pending {
    shared: Arc<StaleShared>,
    key: Key,
    status: StatusCode,
    headers: HeaderMap,
    vary: policy::VarySelection,
    stored_at: Instant,
    initial_age: Duration,
    usable_for: Duration,
    overhead: usize,
    fingerprint: u64,
}

impl Pending {
    /// The body ended: store it.
    pub(crate) fn finish(mut self, body: Bytes) {
        // The replay has exactly this body (a 204 carries no Content-Length, RFC 9110 §8.6).
        if self.status == StatusCode::NO_CONTENT {
            self.headers.remove(CONTENT_LENGTH);
        } else {
            self.headers
                .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        // `body` owns an exactly-sized allocation (the recorder copied it).
        let weight = cost::heap(body.len()) + self.overhead;
        let stored = Stored {
            status: self.status,
            headers: self.headers,
            body,
            vary: self.vary,
            stored_at: self.stored_at,
            initial_age: self.initial_age,
            usable_for: self.usable_for,
            weight,
        };
        self.shared.store(&self.key, stored, self.fingerprint);
    }

    /// The body grew past the per-entry limit.
    pub(crate) fn too_large(self) {
        self.shared
            .not_stored(policy::NotStored::TooLarge, self.key.path());
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("key", &self.key)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}
