//! Fault control: `POST /admin/faults`, `POST /admin/faults/reset`, `GET /admin/faults`.
//!
//! Every admin route requires `Authorization: Bearer <token>` (the scheme is matched
//! case-insensitively, RFC 9110 section 11.1); the token is compared in constant time and
//! anything else is a 401. `POST /admin/faults` takes `Content-Type: application/json` only
//! (else 415). A request naming an unknown service, region, replica or fault, an unknown key
//! or a `null` is a 400 whose message says what was wrong.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::fleet::{FaultRegistry, FaultRequest};

/// Compares two byte strings in time that depends only on their lengths.
///
/// ```
/// assert!(storefront::shop::constant_time_eq(b"secret", b"secret"));
/// assert!(!storefront::shop::constant_time_eq(b"secret", b"secreT"));
/// assert!(!storefront::shop::constant_time_eq(b"secret", b"secret2"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Fold over the longer length so that a short guess costs as much as a long one.
    let len = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// A fresh random admin token.
pub fn generate_token() -> String {
    // 128 bits from the operating system's generator: the token guards fault injection, so
    // it must not be predictable from anything a stranger can observe.
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness at all (never seen on Linux): fall back to a seeded generator
        // rather than refusing to start; the operator can still set a token explicitly.
        bytes = fastrand::u128(..).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where fault commands go.
#[derive(Debug, Clone)]
pub enum FaultControl {
    /// The fleet runs in this process.
    Local(FaultRegistry),
    /// The fleet runs in another process; commands are forwarded to its control API.
    Remote {
        /// Its base URL (`http://127.0.0.1:8090`).
        base: String,
        /// The client (boxed: it is much larger than the other variants).
        client: Box<Client<HttpConnector, Full<Bytes>>>,
    },
    /// No fleet to control.
    None,
}

impl FaultControl {
    /// Forwarding to a fleet's control API at `base`.
    pub fn remote(base: &str) -> Self {
        FaultControl::Remote {
            base: base.trim_end_matches('/').to_owned(),
            client: Box::new(Client::builder(TokioExecutor::new()).build(HttpConnector::new())),
        }
    }

    /// The local registry, if any.
    pub fn registry(&self) -> Option<&FaultRegistry> {
        match self {
            FaultControl::Local(r) => Some(r),
            _ => None,
        }
    }
}

/// State of the admin routes.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The bearer token.
    pub token: String,
    /// Where commands go.
    pub faults: FaultControl,
}

fn json_error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive and
/// may be followed by several spaces (RFC 9110 section 11.4: `credentials = auth-scheme
/// [ 1*SP token68 ]`).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether the request says its body is JSON (`application/json`, parameters such as
/// `charset` allowed, case-insensitive).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json"))
}

/// Middleware: 401 unless the bearer token matches.
pub(crate) async fn require_token(
    State(st): State<AdminState>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), st.token.as_bytes()) => next.run(req).await,
        _ => {
            let mut resp = json_error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token (send `Authorization: Bearer <token>`)",
            );
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"storefront admin\""),
            );
            resp
        }
    }
}

async fn forward(
    st: &AdminState,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let FaultControl::Remote { base, client } = &st.faults else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "no fleet to control");
    };
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header(CONTENT_TYPE, "application/json");
    if let Some(a) = headers.get(AUTHORIZATION) {
        req = req.header(AUTHORIZATION, a);
    }
    let Ok(req) = req.body(Full::new(body)) else {
        return json_error(StatusCode::BAD_GATEWAY, "bad fleet control URL");
    };
    match client.request(req).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            match body.collect().await {
                Ok(b) => Response::from_parts(parts, axum::body::Body::from(b.to_bytes())),
                Err(_) => json_error(StatusCode::BAD_GATEWAY, "fleet control answered badly"),
            }
        }
        Err(e) => json_error(
            StatusCode::BAD_GATEWAY,
            &format!("fleet control unreachable: {e}"),
        ),
    }
}

/// `POST /admin/faults`.
pub(crate) async fn set_fault(
    State(st): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_json(&headers) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (send `Content-Type: application/json`)",
        );
    }
    let registry = match &st.faults {
        FaultControl::Local(r) => r.clone(),
        FaultControl::Remote { .. } => {
            return forward(&st, Method::POST, "/admin/faults", &headers, body).await;
        }
        FaultControl::None => {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "no fleet to control");
        }
    };
    match FaultRequest::parse(&body, registry.replicas_per_region()) {
        Ok(cmd) => {
            let changed = registry.apply(&cmd);
            let replicas: Vec<String> = changed.iter().map(ToString::to_string).collect();
            Json(json!({ "fault": cmd.fault, "replicas": replicas })).into_response()
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, &e.0),
    }
}

/// `POST /admin/faults/reset`.
pub(crate) async fn reset_faults(State(st): State<AdminState>, headers: HeaderMap) -> Response {
    match &st.faults {
        FaultControl::Local(r) => {
            r.reset();
            Json(json!({ "reset": true })).into_response()
        }
        FaultControl::Remote { .. } => {
            forward(
                &st,
                Method::POST,
                "/admin/faults/reset",
                &headers,
                Bytes::new(),
            )
            .await
        }
        FaultControl::None => json_error(StatusCode::SERVICE_UNAVAILABLE, "no fleet to control"),
    }
}

/// `GET /admin/faults`: every replica's fault.
pub(crate) async fn list_faults(State(st): State<AdminState>, headers: HeaderMap) -> Response {
    match &st.faults {
        FaultControl::Local(r) => {
            let list: Vec<serde_json::Value> = r
                .snapshot()
                .into_iter()
                .map(|(id, spec)| json!({ "replica": id.to_string(), "fault": spec }))
                .collect();
            Json(list).into_response()
        }
        FaultControl::Remote { .. } => {
            forward(&st, Method::GET, "/admin/faults", &headers, Bytes::new()).await
        }
        FaultControl::None => json_error(StatusCode::SERVICE_UNAVAILABLE, "no fleet to control"),
    }
}

/// The admin routes, behind the token check.
pub fn router(state: AdminState) -> axum::Router {
    use axum::routing::post;
    axum::Router::new()
        .route("/admin/faults", post(set_fault).get(list_faults))
        .route("/admin/faults/reset", post(reset_faults))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in [
            "Bearer t0k",
            "bearer t0k",
            "BEARER t0k",
            "Bearer   t0k",
            " bEaReR t0k ",
        ] {
            assert_eq!(bearer_token(v), Some("t0k"), "{v:?}");
        }
        for v in ["Basic t0k", "Bearer", "Bearer ", "Bearert0k", "t0k"] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }
}
