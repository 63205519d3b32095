//! Who may call which route.
//!
//! - With users (see `ringkv-auth`), every route but `/healthz` (and
//!   `/metrics` when public) needs HTTP Basic credentials of a user:
//!   `401` with `WWW-Authenticate` without them or with wrong ones, `403`
//!   when the user's roles or key patterns do not allow the request. Key
//!   routes need `read` (GET) or `write` (PUT, DELETE) and a key the user
//!   may name; the admin routes (`POST /v1/repair`, `/v1/decommission`,
//!   `/v1/remove/*`, `/v1/movement/cancel`, `/v1/debug/*`,
//!   `/v1/snapshots*`, `/v1/export`, `/v1/import`, and `GET
//!   /v1/slowlog`, which shows other clients' keys) need `admin`;
//!   the other reads (status, cluster, movement, repair progress) `read`.
//! - Always, a request that changes something (any method but GET, HEAD,
//!   OPTIONS) is refused (`403 cross_site`) when a browser says it comes
//!   from another site (`Origin` other than the `Host`, or `Sec-Fetch-Site:
//!   cross-site`), or when it is a POST with a form's content type
//!   (`text/plain`, `application/x-www-form-urlencoded`,
//!   `multipart/form-data`): the "simple" requests a page can send without
//!   a CORS preflight. ringkv's own clients send JSON.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ringkv_auth::{Role, Users};

use crate::ApiError;

/// How requests are let in.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// None: no users, everyone may call every route (loopback only).
    pub users: Option<Arc<Users>>,
    /// `/metrics` without credentials.
    pub metrics_public: bool,
}

/// What a route needs.
enum Need {
    Open,
    Role(Role),
    Key(Role, Vec<u8>),
}

fn needs(guard: &Guard, method: &Method, path: &str) -> Result<Need, ApiError> {
    let reads = matches!(*method, Method::GET | Method::HEAD);
    if path == "/healthz" || (path == "/metrics" && guard.metrics_public) {
        return Ok(Need::Open);
    }
    if let Some(raw) = path
        .strip_prefix("/v1/kv/")
        .or_else(|| path.strip_prefix("/v1/explain/"))
    {
        let key = crate::percent_decode(raw.as_bytes()).ok_or_else(|| {
            ApiError::bad_request("invalid_argument", "bad percent-encoding in key")
        })?;
        let role = if reads || path.starts_with("/v1/explain/") {
            Role::Read
        } else {
            Role::Write
        };
        return Ok(Need::Key(role, key));
    }
    let admin = !reads
        && (path == "/v1/repair"
            || path == "/v1/decommission"
            || path == "/v1/movement/cancel"
            || path.starts_with("/v1/remove/"))
        || path.starts_with("/v1/debug/")
        // The node's files; every key's records.
        || path == "/v1/export"
        || path == "/v1/import"
        || path == "/v1/snapshots"
        || path.starts_with("/v1/snapshots/")
        // Empties the cluster.
        || path == "/v1/truncate"
        // Other clients' keys and values.
        || path == "/v1/slowlog";
    Ok(Need::Role(if admin { Role::Admin } else { Role::Read }))
}

fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
    }
}

/// The refusal of a browser's cross-site request, if this is one.
fn cross_site(method: &Method, headers: &HeaderMap) -> Option<ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if text("sec-fetch-site") == Some("cross-site") {
        return Some(refused(
            StatusCode::FORBIDDEN,
            "cross_site",
            "cross-site requests may not change anything",
        ));
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let origin_host = origin.split("://").nth(1).unwrap_or(origin);
        if text(header::HOST.as_str()) != Some(origin_host) {
            return Some(refused(
                StatusCode::FORBIDDEN,
                "cross_site",
                format!("a request from {origin} may not change anything here"),
            ));
        }
    }
    if *method == Method::POST
        && let Some(kind) = text(header::CONTENT_TYPE.as_str())
    {
        let kind = kind
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(
            kind.as_str(),
            "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
        ) {
            return Some(refused(
                StatusCode::FORBIDDEN,
                "cross_site",
                format!("a POST of {kind} is refused (what a web page can send): send JSON"),
            ));
        }
    }
    None
}

/// `user:password` of an `Authorization: Basic` header.
fn basic(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    basic_credentials(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// `user:password` of an `Authorization` header's value `Basic <base64>`
/// (the user UTF-8, the password any bytes); `None` for anything else.
/// Read before authentication: it must take any input.
pub fn basic_credentials(value: &str) -> Option<(String, Vec<u8>)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let name = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((name, decoded[colon + 1..].to_vec()))
}

fn unauthorized() -> Response {
    metrics::counter!("ringkv_http_auth_failures_total").increment(1);
    let mut resp = refused(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "credentials required (HTTP Basic, a user of the node)",
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"ringkv\""),
    );
    resp
}

/// The middleware: see the module documentation.
pub async fn guard(State(guard): State<Arc<Guard>>, mut req: Request, next: Next) -> Response {
    if let Some(refusal) = cross_site(req.method(), req.headers()) {
        return refusal.into_response();
    }
    let Some(users) = guard.users.clone() else {
        return next.run(req).await;
    };
    let need = match needs(&guard, req.method(), req.uri().path()) {
        Ok(Need::Open) => return next.run(req).await,
        Ok(need) => need,
        Err(e) => return e.into_response(),
    };
    let Some((name, password)) = basic(req.headers()) else {
        return unauthorized();
    };
    let user = tokio::task::spawn_blocking(move || users.authenticate(&name, &password))
        .await
        .ok()
        .flatten();
    let Some(user) = user else {
        return unauthorized();
    };
    let (role, key) = match &need {
        Need::Open => return next.run(req).await,
        Need::Role(role) => (*role, None),
        Need::Key(role, key) => (*role, Some(key)),
    };
    if !user.has(role) {
        return refused(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("user {} lacks the {} role", user.name(), role.name()),
        )
        .into_response();
    }
    if key.is_some_and(|k| !user.may_access(k)) {
        return refused(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("user {} may not access this key", user.name()),
        )
        .into_response();
    }
    // Routes that list keys show this user only those it may access.
    req.extensions_mut().insert(Caller(user));
    next.run(req).await
}

/// The authenticated user of a request, for routes that filter what they
/// show (absent without users).
#[derive(Clone)]
pub struct Caller(pub Arc<ringkv_auth::User>);
