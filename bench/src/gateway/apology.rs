//! The lean gateway's apology: a static `503 Service Unavailable` with `Retry-After`.
//!
//! Built once; answering clones a small header map and a `Bytes` handle (no page is rendered
//! per request). The Rampart stack uses `rampart::fallback`'s apology instead.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};

/// The page the lean gateway answers with when no upstream can.
#[derive(Debug, Clone)]
pub struct Apology {
    headers: HeaderMap,
    body: Bytes,
}

impl Apology {
    /// A text apology that asks clients to come back after `retry_after_secs` seconds.
    pub fn new(retry_after_secs: u32) -> Self {
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
        Self {
            headers,
            body: Bytes::from_static(
                b"We are sorry: this service is briefly unavailable. Please try again shortly.\n",
            ),
        }
    }

    /// The 503 response.
    pub fn response<B: From<Bytes>>(&self) -> Response<B> {
        let mut resp = Response::new(B::from(self.body.clone()));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        *resp.headers_mut() = self.headers.clone();
        resp
    }
}
