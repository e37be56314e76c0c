//! The built-in apology: an HTML page, an RFC 9457 problem document and a plain-text line,
//! all prepared when the page is built.
//!
//! Every byte of the three bodies is loaded and encoded in [`ApologyPageBuilder::build`]: from
//! a string, from bytes, or from a file read once then (a missing or unreadable file is a
//! build error naming the path). Serving the page copies nothing: the HTML and text bodies are
//! shared [`Bytes`] handed out by reference count, and the problem document is a prebuilt
//! prefix, the JSON-escaped request path (`instance`, the only per-request part), and a
//! prebuilt suffix.
//!
//! ```
//! use http::StatusCode;
//! use rampart_fallback::{ApologyPage, Format};
//!
//! let page = ApologyPage::builder()
//!     .html("<!doctype html><title>Back soon</title><h1>We'll be right back</h1>")
//!     .text("We'll be right back.\n")
//!     .detail("The shop is taking a short break. Please try again in a moment.")
//!     .problem_type("https://shop.example/problems/unavailable")
//!     .preferred_format(Format::Html)
//!     .build()?;
//! assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
//!
//! let missing = ApologyPage::builder().html_file("/nonexistent/apology.html").build();
//! assert!(missing.unwrap_err().to_string().contains("/nonexistent/apology.html"));
//! # Ok::<(), rampart_health::ConfigError>(())
//! ```

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, VARY};
use http::{HeaderMap, HeaderValue, StatusCode};
use rampart_health::ConfigError;

use super::handler::{Apologize, ApologyRequest};
use crate::body::ApologyBody;
use crate::negotiate::{Format, negotiate};

const DEFAULT_DETAIL: &str = "The service is temporarily unavailable. Please try again shortly.";

/// The built-in apology page (HTML, problem+json and text), served from shared bytes.
///
/// Cheap to clone (one reference count). [`ApologyPage::default`] is the built-in page; use
/// [`ApologyPage::builder`] for your own.
#[derive(Clone)]
pub struct ApologyPage {
    inner: Arc<PageInner>,
}

struct PageInner {
    status: StatusCode,
    preferred: Format,
    html: Bytes,
    text: Bytes,
    /// The response headers of each format (by [`format_index`]), built once: cloning a
    /// prebuilt map copies a few words per field and hashes nothing. The problem document's
    /// map lacks `Content-Length`, which depends on the request path.
    headers: [HeaderMap; 3],
    problem_prefix: Bytes,
    problem_suffix: Bytes,
}

impl fmt::Debug for ApologyPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApologyPage")
            .field("status", &self.inner.status)
            .field("preferred", &self.inner.preferred)
            .field("html_bytes", &self.inner.html.len())
            .field("text_bytes", &self.inner.text.len())
            .finish()
    }
}

impl Default for ApologyPage {
    /// The built-in page: `503`, a small self-contained HTML page (no scripts, fonts, images
    /// or other requests that could hit the failing site), a text line, and a problem document
    /// of type `about:blank`.
    fn default() -> Self {
        match ApologyPage::builder().build() {
            Ok(page) => page,
            // The defaults are valid (tested); this arm only exists to avoid a panic path.
            Err(_) => {
                let text = Bytes::from_static(DEFAULT_DETAIL.as_bytes());
                ApologyPage {
                    inner: Arc::new(PageInner {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        preferred: Format::Text,
                        headers: prebuilt_headers(0, text.len()),
                        html: Bytes::new(),
                        text,
                        problem_prefix: Bytes::new(),
                        problem_suffix: Bytes::new(),
                    }),
                }
            }
        }
    }
}

impl ApologyPage {
    /// Starts a page with the built-in defaults.
    pub fn builder() -> ApologyPageBuilder {
        ApologyPageBuilder::default()
    }

    /// The status the apology is served with (503 unless configured).
    pub fn status(&self) -> StatusCode {
        self.inner.status
    }

    /// The format served when `Accept` does not decide.
    pub fn preferred_format(&self) -> Format {
        self.inner.preferred
    }

    /// The HTML page's bytes (shared, not copied).
    pub fn html(&self) -> &Bytes {
        &self.inner.html
    }

    /// The body of `format`, for a request to `path`.
    fn body(&self, format: Format, path: &str) -> ApologyBody {
        match format {
            Format::Html => ApologyBody::new(self.inner.html.clone()),
            Format::Text => ApologyBody::new(self.inner.text.clone()),
            Format::Problem => ApologyBody::from_chunks(
                self.inner.problem_prefix.clone(),
                json_escaped(path),
                self.inner.problem_suffix.clone(),
            ),
        }
    }
}

impl Apologize for ApologyPage {
    fn apologize(&self, request: &ApologyRequest) -> http::Response<ApologyBody> {
        if request.is_grpc() {
            return grpc_apology(request.retry_after_secs());
        }
        let format = negotiate(request.accept(), self.inner.preferred);
        let body = self.body(format, request.uri().path());
        let mut headers = self.inner.headers[format_index(format)].clone();
        if format == Format::Problem {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let mut resp = http::Response::new(body);
        *resp.status_mut() = self.inner.status;
        *resp.headers_mut() = headers;
        resp
    }
}

/// The apology a gRPC client understands: HTTP 200, Trailers-Only (the status in the headers,
/// no body), `grpc-status: 14` (UNAVAILABLE, which gRPC clients may retry), a short
/// `grpc-message`, and `grpc-retry-pushback-ms` from the retry-after hint when there is one.
pub(crate) fn grpc_apology(retry_after_secs: Option<u64>) -> http::Response<ApologyBody> {
    let mut resp = http::Response::new(ApologyBody::empty());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(GRPC_STATUS, HeaderValue::from_static("14"));
    h.insert(
        GRPC_MESSAGE,
        HeaderValue::from_static("service temporarily unavailable"),
    );
    if let Some(secs) = retry_after_secs {
        h.insert(
            GRPC_RETRY_PUSHBACK_MS,
            HeaderValue::from(secs.saturating_mul(1000)),
        );
    }
    resp
}

const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");
const GRPC_RETRY_PUSHBACK_MS: http::HeaderName =
    http::HeaderName::from_static("grpc-retry-pushback-ms");

fn format_index(format: Format) -> usize {
    match format {
        Format::Html => 0,
        Format::Problem => 1,
        Format::Text => 2,
    }
}

/// The fixed headers of each format: `Content-Type`, `Content-Length` (not for the problem
/// document), `Vary: accept` and `Cache-Control: no-store`, with room for the three the layer
/// adds (`Retry-After`, the request id, and the problem document's `Content-Length`).
fn prebuilt_headers(html_len: usize, text_len: usize) -> [HeaderMap; 3] {
    let one = |format: Format, len: Option<usize>| {
        let mut h = HeaderMap::with_capacity(7);
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        if let Some(len) = len {
            h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        h.insert(VARY, HeaderValue::from_static("accept"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h
    };
    [
        one(Format::Html, Some(html_len)),
        one(Format::Problem, None),
        one(Format::Text, Some(text_len)),
    ]
}

#[derive(Debug, Clone)]
enum Source {
    Builtin,
    Bytes(Bytes),
    File(PathBuf),
}

/// Builds an [`ApologyPage`]; [`build`](ApologyPageBuilder::build) loads and validates.
#[derive(Debug, Clone)]
pub struct ApologyPageBuilder {
    status: StatusCode,
    preferred: Format,
    html: Source,
    text: Option<Bytes>,
    title: Option<String>,
    detail: String,
    problem_type: String,
}

impl Default for ApologyPageBuilder {
    fn default() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            preferred: Format::Html,
            html: Source::Builtin,
            text: None,
            title: None,
            detail: DEFAULT_DETAIL.to_owned(),
            problem_type: "about:blank".to_owned(),
        }
    }
}

impl ApologyPageBuilder {
    /// The apology's status (default `503 Service Unavailable`; must be 4xx or 5xx).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The format served for `*/*`, no `Accept`, or an `Accept` that takes none of the three
    /// (default [`Format::Html`]).
    pub fn preferred_format(mut self, format: Format) -> Self {
        self.preferred = format;
        self
    }

    /// The HTML page, from a string or bytes (served verbatim).
    pub fn html(mut self, html: impl Into<Bytes>) -> Self {
        self.html = Source::Bytes(html.into());
        self
    }

    /// The HTML page, read from `path` once, in [`build`](Self::build).
    pub fn html_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.html = Source::File(path.into());
        self
    }

    /// The `text/plain` body (default: the detail line).
    pub fn text(mut self, text: impl Into<Bytes>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// The problem document's `title` (default: the status's reason phrase, e.g.
    /// "Service Unavailable").
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// The human-readable `detail` of the problem document, also the default text body and the
    /// built-in HTML page's message. Say nothing internal here.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The problem document's `type` URI (default `about:blank`, RFC 9457 §4.2.1).
    pub fn problem_type(mut self, uri: impl Into<String>) -> Self {
        self.problem_type = uri.into();
        self
    }

    /// Loads the page and prepares every body.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when the status is not 4xx/5xx, the `problem_type`
    /// is empty, or the HTML file is missing or unreadable (the error's value is the path).
    pub fn build(self) -> Result<ApologyPage, ConfigError> {
        if !(self.status.is_client_error() || self.status.is_server_error()) {
            return Err(ConfigError::new(
                "status",
                self.status.as_u16(),
                "an apology must be a 4xx or 5xx status",
            ));
        }
        if self.problem_type.trim().is_empty() {
            return Err(ConfigError::new(
                "problem_type",
                &self.problem_type,
                "must be a URI reference (RFC 9457 uses about:blank by default)",
            ));
        }
        let title = self
            .title
            .unwrap_or_else(|| self.status.canonical_reason().unwrap_or("Error").to_owned());
        let html = match self.html {
            Source::Builtin => Bytes::from(builtin_html(&title, &self.detail)),
            Source::Bytes(b) => b,
            Source::File(path) => match std::fs::read(&path) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot read the apology page");
                    return Err(ConfigError::new(
                        "html_file",
                        path.display().to_string(),
                        "the file is missing or unreadable",
                    ));
                }
            },
        };
        let text = self
            .text
            .unwrap_or_else(|| Bytes::from(format!("{}\n", self.detail)));
        let mut prefix = String::with_capacity(160);
        prefix.push_str("{\"type\":\"");
        push_json_escaped(&mut prefix, &self.problem_type);
        prefix.push_str("\",\"title\":\"");
        push_json_escaped(&mut prefix, &title);
        prefix.push_str("\",\"status\":");
        prefix.push_str(self.status.as_str());
        prefix.push_str(",\"detail\":\"");
        push_json_escaped(&mut prefix, &self.detail);
        prefix.push_str("\",\"instance\":\"");
        Ok(ApologyPage {
            inner: Arc::new(PageInner {
                status: self.status,
                preferred: self.preferred,
                headers: prebuilt_headers(html.len(), text.len()),
                html,
                text,
                problem_prefix: Bytes::from(prefix),
                problem_suffix: Bytes::from_static(b"\"}"),
            }),
        })
    }
}

fn builtin_html(title: &str, detail: &str) -> String {
    let mut t = String::new();
    push_html_escaped(&mut t, title);
    let mut d = String::new();
    push_html_escaped(&mut d, detail);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\"><title>{t}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:34rem;margin:15vh auto;padding:0 1rem;\
color:#222;line-height:1.5}}h1{{font-size:1.6rem}}</style></head>\
<body><h1>{t}</h1><p>{d}</p><p>We are sorry for the inconvenience.</p></body></html>\n"
    )
}

fn push_html_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// Appends `s` as the inside of a JSON string (RFC 8259 §7).
fn push_json_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str("\\u00");
                let hex = b"0123456789abcdef";
                out.push(hex[(c as usize) >> 4] as char);
                out.push(hex[(c as usize) & 0xf] as char);
            }
            c => out.push(c),
        }
    }
}

/// The request path as the inside of a JSON string. Paths almost never need escaping, so the
/// common case is one small copy of the path.
fn json_escaped(path: &str) -> Bytes {
    if path == "/" {
        return Bytes::from_static(b"/");
    }
    if path.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        return Bytes::copy_from_slice(path.as_bytes());
    }
    let mut s = String::with_capacity(path.len() + 8);
    push_json_escaped(&mut s, path);
    let mut b = BytesMut::with_capacity(s.len());
    b.extend_from_slice(s.as_bytes());
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grpc_request_gets_a_trailers_only_unavailable_with_pushback() {
        use std::time::Duration;
        use tower::{Layer, ServiceExt};

        let failing = tower::service_fn(|_req: http::Request<String>| async {
            Err::<http::Response<String>, rampart_health::BoxError>(Box::new(
                rampart_health::NeverReached::new().with_retry_after(Duration::from_millis(2500)),
            ))
        });
        let svc = crate::FallbackLayer::new().layer(failing);
        let req = http::Request::post("/catalog.v1.Catalog/List")
            .header("content-type", "application/grpc+proto")
            .header("te", "trailers")
            .body(String::new())
            .unwrap();
        let resp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert!(!h["grpc-message"].is_empty());
        // 2.5 s, rounded up to whole seconds like Retry-After.
        assert_eq!(h["grpc-retry-pushback-ms"], "3000");
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(body.is_empty(), "Trailers-Only has no body");

        // The same failure for a browser is still the page.
        let req = http::Request::get("/").body(String::new()).unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().get("grpc-status").is_none());
    }

    #[test]
    fn grpc_apology_without_a_hint_has_no_pushback() {
        let resp = ApologyPage::default().apologize(
            &ApologyRequest::new(
                http::Method::POST,
                http::Uri::from_static("/svc/M"),
                super::super::handler::Trigger::Error {
                    never_reached: true,
                },
            )
            .with_grpc(true),
        );
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert!(resp.headers().get("grpc-retry-pushback-ms").is_none());
    }

    #[test]
    fn json_escaping() {
        let mut s = String::new();
        push_json_escaped(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, "a\\\"b\\\\c\\nd\\u0001é");
        assert_eq!(&json_escaped("/a\"b")[..], b"/a\\\"b");
        assert_eq!(&json_escaped("/cart")[..], b"/cart");
    }

    #[test]
    fn builtin_defaults_build() {
        let page = ApologyPageBuilder::default().build().unwrap();
        assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
        let html = std::str::from_utf8(page.html()).unwrap();
        assert!(html.contains("<title>Service Unavailable</title>"));
        assert!(!html.contains("src="), "the built-in page loads nothing");
    }

    #[test]
    fn rejects_bad_config() {
        let e = ApologyPage::builder()
            .status(StatusCode::OK)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "status");
        let e = ApologyPage::builder()
            .problem_type(" ")
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "problem_type");
    }
}
