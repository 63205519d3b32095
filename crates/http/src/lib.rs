//! ringkv's HTTP front end.
//!
//! Turns HTTP requests into calls on the [`Kv`] API and their results into
//! responses. It owns routing, percent-decoding of binary keys, the JSON error
//! shape and the multipart answer for siblings; it never touches storage.
//!
//! # Routes
//! - `GET /v1/kv/{key}`: the value (200), `404` when absent, or `300 Multiple
//!   Choices` with every sibling as a `multipart/mixed` body when concurrent
//!   writes left siblings (as Riak does). `?resolve=lww` answers the
//!   last-writer-wins value instead. `?r=LEVEL` sets the read consistency.
//!   The causal context comes back in the `X-Ringkv-Context` header (base64url).
//!   A set or a hash answers its JSON view (`{"type": "set", "members":
//!   [...]}`, `{"type": "hash", "fields": {...}}`), and `?view=type` gives
//!   the JSON view of any key (`{"type": "counter", "value": 6}`,
//!   `{"type": "string", "value": ...}`).
//! - `PUT /v1/kv/{key}`: stores the body (binary-safe). `?ttl=SECONDS`,
//!   `?w=LEVEL`; an `X-Ringkv-Context` header makes the write supersede exactly
//!   what that read saw. Answers `204`.
//! - `DELETE /v1/kv/{key}`: a versioned tombstone. Answers `204`.
//! - `GET /v1/keys?prefix=&cursor=&limit=&r=`: a page of the cluster's
//!   live keys, JSON, with the cursor of the next page (see `keys.rs`).
//! - `GET /v1/export`, `POST /v1/import` (admin): pages of whole records
//!   for `ringkv export` and `ringkv import` (see `transfer.rs`).
//! - `/v1/snapshots` (admin): take (`POST`), list (`GET`) and clear
//!   (`DELETE`, or `DELETE /v1/snapshots/{tag}`) this node's snapshots (see
//!   `snapshots.rs`).
//! - `POST /v1/truncate` (admin): empties the whole cluster, as `FLUSHALL`
//!   (see `snapshots.rs` and `ringkv_cluster::truncate`): `200` with the
//!   truncation point and the nodes that recorded it; `503` naming the
//!   nodes down or that did not answer.
//! - `GET /v1/status`: the node's own view, as JSON.
//! - `GET /v1/cluster`: every node with its state, liveness, ownership share
//!   and load, the replication factors, and the ring's tokens.
//! - `GET /v1/explain/{key}`: the key's token, preference list and each
//!   replica's version vector and siblings.
//! - `GET /v1/repair/ranges`: every replicated range and when it last synced
//!   with all its replicas.
//! - `GET /v1/repair`: anti-entropy progress and figures, as JSON.
//! - `POST /v1/repair`: starts a full anti-entropy pass over every range the
//!   node replicates (`202`, with the progress), unless one is running
//!   (`409`, with the progress).
//! - `GET /v1/movement`: the join, decommission or removal this node drives
//!   (or last drove): phase, ranges done, keys and bytes streamed.
//! - `POST /v1/decommission`: this node streams its ranges away and leaves
//!   (`202`); `400` when it would leave too few nodes for the replication
//!   factor or a movement is running.
//! - `POST /v1/remove/{node}`: re-replicates a dead node's ranges from the
//!   survivors and drops it from the ring (`202`); `400` when it is alive.
//! - `POST /v1/movement/cancel`: stops the movement this node drives.
//! - `GET /healthz`: `ok`.
//! - `GET /metrics`: Prometheus text format.
//! - `/v1/debug/*`: fault injection, only with `[debug] fault_injection =
//!   true` (see [`debug`]).
//!
//! Keys are the percent-decoded bytes of the path segment after `/v1/kv/`, so
//! any byte string can be a key (`%00`, `%2F`, ...).
//!
//! Errors are JSON: `{"code": "value_too_large", "message": "..."}`, with a
//! stable `code` (see [`KvError::code`]).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ringkv_cluster::{CausalContext, Consistency, Expiry, Kv, KvError, ReadOptions, WriteOptions};
use serde::Deserialize;

use admin::*;

mod admin;
pub mod debug;
pub use debug::{FaultControl, debug_router};

/// The header carrying the opaque causal context.
pub const CONTEXT_HEADER: &str = "x-ringkv-context";

/// Renders the Prometheus text exposition of every metric.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Settings of the HTTP front end.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes (the value limit plus slack;
    /// larger bodies are refused before they are read whole).
    pub body_bytes_max: usize,
    /// Most connections at once; past it a new connection is closed at
    /// accept (counted), so idle HTTP clients cannot take the process's
    /// file descriptors from RESP and the cluster port.
    pub connections_max: usize,
    /// Time a connection has to send a request's headers, from when it is
    /// ready for one: a slow (or silent) client, and an idle keep-alive
    /// connection, is closed after it.
    pub header_read_timeout_ms: u64,
    /// Time a request may take from its headers to its answer (a body sent
    /// slowly included); past it the connection is closed.
    pub request_timeout_ms: u64,
    /// When set, every connection is HTTPS; the TLS handshake has
    /// `header_read_timeout_ms` of its own, before the headers' own.
    pub tls: Option<Arc<ringkv_cluster::net::client_tls::ClientTls>>,
    /// The node's certificates, shown with their expiry in `/v1/status`.
    pub certificates: Certificates,
}

/// What reports the node's certificates: `(purpose, expiry in seconds
/// since the epoch)` each, e.g. `("cluster", ...)`, `("clients", ...)`.
#[derive(Clone, Default)]
pub struct Certificates(pub Option<CertificatesFn>);

/// See [`Certificates`].
pub type CertificatesFn = Arc<dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync>;

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificates")
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_bytes_max: 1024 * 1024 + 4096,
            connections_max: 1024,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
            tls: None,
            certificates: Certificates::default(),
        }
    }
}

struct AppState<K> {
    kv: Arc<K>,
    metrics: MetricsRender,
    certificates: Certificates,
}

impl<K> Clone for AppState<K> {
    fn clone(&self) -> Self {
        Self {
            kv: Arc::clone(&self.kv),
            metrics: Arc::clone(&self.metrics),
            certificates: self.certificates.clone(),
        }
    }
}

mod guard;
mod keys;
mod snapshots;
mod transfer;
pub use guard::{Guard, basic_credentials};

/// `router` (with any routes added to it) behind `guard`: credentials,
/// roles and the cross-site refusal (see the `guard` module).
pub fn guarded(router: Router, guard: Guard) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(guard),
        guard::guard,
    ))
}

/// The router for every route above.
pub fn router<K: Kv>(kv: Arc<K>, metrics: MetricsRender, config: &HttpConfig) -> Router {
    let state = AppState {
        kv,
        metrics,
        certificates: config.certificates.clone(),
    };
    Router::new()
        .route(
            "/v1/kv/{*key}",
            get(get_key::<K>).put(put_key::<K>).delete(delete_key::<K>),
        )
        .route("/v1/keys", get(keys::list_keys::<K>))
        .route("/v1/export", get(transfer::export::<K>))
        .route(
            "/v1/import",
            post(transfer::import::<K>)
                .layer(DefaultBodyLimit::max(transfer::IMPORT_BODY_BYTES_MAX)),
        )
        .route(
            "/v1/snapshots",
            get(snapshots::list::<K>)
                .post(snapshots::take::<K>)
                .delete(snapshots::clear_all::<K>),
        )
        .route(
            "/v1/snapshots/{tag}",
            axum::routing::delete(snapshots::clear_one::<K>),
        )
        .route("/v1/truncate", post(snapshots::truncate::<K>))
        .route("/v1/status", get(status::<K>))
        .route("/v1/cluster", get(cluster::<K>))
        .route("/v1/explain/{*key}", get(explain::<K>))
        .route(
            "/v1/repair",
            get(repair_status::<K>).post(start_repair::<K>),
        )
        .route("/v1/repair/ranges", get(repair_ranges::<K>))
        .route("/v1/movement", get(movement::<K>))
        .route("/v1/slowlog", get(slowlog::<K>))
        .route("/v1/history", get(history::<K>))
        .route("/v1/movement/cancel", post(move_command::<K>))
        .route("/v1/decommission", post(move_command::<K>))
        .route("/v1/remove/{node}", post(move_command::<K>))
        .route(
            "/",
            get(|| async { ui_asset(UI_INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/",
            get(|| async { ui_asset(UI_INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { ui_asset(UI_SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { ui_asset(UI_STYLE, "text/css; charset=utf-8") }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text::<K>))
        .route_layer(axum::middleware::from_fn(count_request))
        .layer(DefaultBodyLimit::max(config.body_bytes_max))
        .with_state(state)
}

/// The dashboard (`GET /`): a page, a script and a style sheet, built into
/// the binary (no build step). The script polls `/v1/cluster`,
/// `/v1/status`, `/v1/history`, `/v1/repair`, `/v1/repair/ranges` and
/// `/v1/movement`.
const UI_INDEX: &str = include_str!("../ui/index.html");
const UI_SCRIPT: &str = include_str!("../ui/app.js");
const UI_STYLE: &str = include_str!("../ui/style.css");

/// One dashboard file, with headers that keep it to this origin: no inline
/// script, no framing by another site.
fn ui_asset(body: &'static str, content_type: &'static str) -> Response {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Counts each request of a known route, by route and status, and times it.
async fn count_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(String::new, |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "ringkv_http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status
    )
    .increment(1);
    metrics::histogram!("ringkv_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Describes the HTTP front end's metric families (HELP text) and shows its
/// unlabelled counters at 0. Called by the binary once the recorder is
/// installed.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram};
    for (name, help) in [
        (
            "ringkv_http_connections_refused_total",
            "HTTP connections refused because connections_max were open",
        ),
        (
            "ringkv_http_tls_handshake_failures_total",
            "HTTP connections that failed or timed out in the TLS handshake",
        ),
        (
            "ringkv_http_auth_failures_total",
            "HTTP requests refused for missing or wrong credentials",
        ),
    ] {
        describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    describe_counter!(
        "ringkv_http_requests_total",
        "HTTP requests answered, by route, method and status"
    );
    describe_counter!(
        "ringkv_http_errors_total",
        "HTTP error answers, by error code (not_found, unavailable, ...)"
    );
    describe_histogram!(
        "ringkv_http_request_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by route"
    );
}

/// How long in-flight requests may take to finish at shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` resolves, then finishes
/// in-flight requests (for at most 30 s) and returns. HTTP/1.1, with the
/// connection cap and timeouts of `config`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    config: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use std::time::Duration;
    let slots = Arc::new(tokio::sync::Semaphore::new(config.connections_max));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = Duration::from_millis(config.header_read_timeout_ms);
    let request_timeout = Duration::from_millis(config.request_timeout_ms);
    let router = router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            // A snapshot answers once it is taken and copied: no bound.
            if req.method() == axum::http::Method::POST && req.uri().path() == "/v1/snapshots" {
                return next.run(req).await;
            }
            match tokio::time::timeout(request_timeout, next.run(req)).await {
                Ok(resp) => resp,
                Err(_) => ApiError {
                    status: StatusCode::REQUEST_TIMEOUT,
                    code: "timeout",
                    message: format!("the request took more than {request_timeout:?}"),
                }
                .into_response(),
            }
        },
    ));
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("ringkv_http_connections_refused_total").increment(1);
            static GATE: ringkv_env::log_every::LogEvery =
                ringkv_env::log_every::LogEvery::new(10_000);
            if let Some(held) = GATE.admit() {
                tracing::warn!(%remote, held_back = held, "HTTP connection refused: connections_max reached");
            }
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let watcher = graceful.watcher();
        let tls = config.tls.as_ref().map(|tls| tls.http_config());
        tokio::spawn(async move {
            let ended = match tls {
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(tls) => {
                    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                    match tokio::time::timeout(header_timeout, accept).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(builder.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(e)) => {
                            tls_refused(remote, &e.to_string());
                            Ok(())
                        }
                        Err(_) => {
                            tls_refused(remote, "handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%remote, error = %e, "HTTP connection ended");
            }
            drop(slot);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("HTTP requests still running after the shutdown grace; closing");
        }
    }
    Ok(())
}

/// A client whose TLS handshake failed (plaintext, an unknown CA, no
/// client certificate where one is required, or too slow).
fn tls_refused(remote: std::net::SocketAddr, why: &str) {
    metrics::counter!("ringkv_http_tls_handshake_failures_total").increment(1);
    tracing::debug!(%remote, why, "HTTPS handshake failed");
}

/// An error answer: a status and a stable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }
}

/// The one place where cluster errors become HTTP statuses.
impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        let status = match &e {
            KvError::KeyTooLarge { .. } | KvError::ValueTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            KvError::InvalidArgument(_) | KvError::BadContext(_) => StatusCode::BAD_REQUEST,
            KvError::Unavailable { .. } | KvError::ShuttingDown | KvError::Incomplete { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            KvError::ReadOnly(_) | KvError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            KvError::WrongType => StatusCode::CONFLICT,
            KvError::NotAnInteger { .. } | KvError::Overflow => StatusCode::BAD_REQUEST,
            KvError::TooManyElements(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("ringkv_http_errors_total", "code" => self.code).increment(1);
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

/// A write's error as JSON: `code` and `message`, and for an `incomplete`
/// write the replicas that applied it (`acked`), those a stand-in holds it
/// for (`hinted`) and the others (`missing`), as ids.
fn write_error(e: KvError) -> Response {
    let ids = |l: &[u64]| -> Vec<String> {
        l.iter()
            .map(|&id| ringkv_cluster::id::display(id))
            .collect()
    };
    let lists = match &e {
        KvError::Incomplete {
            acked,
            hinted,
            missing,
            ..
        } => Some((ids(acked), ids(hinted), ids(missing))),
        _ => None,
    };
    let api = ApiError::from(e);
    let Some((acked, hinted, missing)) = lists else {
        return api.into_response();
    };
    metrics::counter!("ringkv_http_errors_total", "code" => api.code).increment(1);
    let body = serde_json::json!({
        "code": api.code,
        "message": api.message,
        "acked": acked,
        "hinted": hinted,
        "missing": missing,
    });
    (api.status, axum::Json(body)).into_response()
}

#[derive(Debug, Deserialize, Default)]
struct KeyParams {
    r: Option<String>,
    w: Option<String>,
    ttl: Option<u64>,
    resolve: Option<String>,
    /// `type`: the JSON view of the key, whatever it holds.
    view: Option<String>,
}

fn level(text: Option<&str>) -> Result<Option<Consistency>, ApiError> {
    text.map(|t| {
        Consistency::parse(t).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_argument",
                format!("unknown consistency level {t:?}"),
            )
        })
    })
    .transpose()
}

/// The key: the percent-decoded bytes after `/v1/kv/` (or `/v1/explain/`).
fn key_of(uri: &Uri) -> Result<Bytes, ApiError> {
    let path = uri.path();
    let raw = path
        .strip_prefix("/v1/kv/")
        .or_else(|| path.strip_prefix("/v1/explain/"))
        .ok_or_else(|| ApiError::bad_request("invalid_argument", "no key in path"))?;
    let key = percent_decode(raw.as_bytes())
        .ok_or_else(|| ApiError::bad_request("invalid_argument", "bad percent-encoding in key"))?;
    if key.is_empty() {
        return Err(ApiError::bad_request("invalid_argument", "empty key"));
    }
    Ok(Bytes::from(key))
}

/// A key as a path segment (`/v1/kv/{key}`): unreserved bytes and `:` as
/// they are, every other byte `%XX`; [`percent_decode`] reverses it.
pub fn percent_encode(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The strict percent-decoding of a key in a path (`%` and two hex digits;
/// anything else after a `%` is refused). Read before authentication (a
/// key's pattern is checked with it): it must take any input.
pub fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            // Two hex digits exactly: `%+1` is not `%01`.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

fn context_of(headers: &HeaderMap) -> Result<Option<CausalContext>, ApiError> {
    let Some(value) = headers.get(CONTEXT_HEADER) else {
        return Ok(None);
    };
    let bad = |why: String| ApiError::from(KvError::BadContext(why));
    let bytes = URL_SAFE_NO_PAD
        .decode(value.as_bytes())
        .map_err(|e| bad(format!("not base64url: {e}")))?;
    CausalContext::decode_context(&bytes)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

fn context_header(ctx: &CausalContext) -> Option<HeaderValue> {
    HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(ctx.encode_context())).ok()
}

async fn get_key<K: Kv>(
    State(state): State<AppState<K>>,
    uri: Uri,
    Query(params): Query<KeyParams>,
) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let opts = ReadOptions {
        consistency: level(params.r.as_deref())?,
    };
    if params.view.as_deref() == Some("type") {
        return typed_view(&state, key, opts).await;
    }
    let result = match state.kv.get(key.clone(), opts.clone()).await {
        // A set or a hash: its JSON view.
        Err(KvError::WrongType) => return typed_view(&state, key, opts).await,
        result => result?,
    };
    // What the read returned reaches the OS before the answer leaves.
    state.kv.release_writes()?;
    let mut headers = HeaderMap::new();
    if let Some(v) = context_header(&result.context) {
        headers.insert(CONTEXT_HEADER, v);
    }
    let lww = params.resolve.as_deref() == Some("lww");
    match result.siblings.len() {
        0 => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: "key not found".into(),
        }),
        1 => Ok(value_response(&result.siblings[0], headers)),
        _ if lww => match result.resolved() {
            Some(s) => Ok(value_response(s, headers)),
            None => Err(ApiError::from(KvError::Storage(
                "no resolved sibling".into(),
            ))),
        },
        _ => Ok(multiple_choices(&result.siblings, headers)),
    }
}

/// The JSON view of a key, whatever it holds: `{"type": "string",
/// "value": ...}` (the resolved value), `{"type": "counter", "value": 6}`,
/// `{"type": "set", "members": [...]}`, `{"type": "hash", "fields":
/// {...}}`; `404` when absent. Values and members that are not UTF-8 show
/// as `{"base64": "..."}`; a field name that is not UTF-8, lossily (JSON
/// names are text).
async fn typed_view<K: Kv>(
    state: &AppState<K>,
    key: Bytes,
    opts: ReadOptions,
) -> Result<Response, ApiError> {
    use ringkv_cluster::causality::types::{FieldValue, Kind};
    let record = state.kv.get_record(key, opts).await?;
    state.kv.release_writes()?;
    let now = state.kv.now_ms();
    let text = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(s) => serde_json::Value::from(s),
        Err(_) => {
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
        }
    };
    let view = match record.kind(now) {
        None => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: "key not found".into(),
            });
        }
        Some(Kind::String) => {
            let value = ringkv_cluster::replica::resolved(&record.strings, now);
            serde_json::json!({ "type": "string", "value": value.map(|s| text(&s.value)) })
        }
        Some(Kind::Counter) => serde_json::json!({
            "type": "counter",
            "value": i64::try_from(record.counter.state.value()).unwrap_or_default(),
        }),
        Some(Kind::Set) => serde_json::json!({
            "type": "set",
            "members": record.set.state.members().map(|m| text(m)).collect::<Vec<_>>(),
        }),
        Some(Kind::Hash) => {
            let fields: serde_json::Map<String, serde_json::Value> = (record.hash.state.present())
                .map(|(name, v)| {
                    let value = match v {
                        FieldValue::Value(b) => text(b),
                        FieldValue::Counter(c) => {
                            serde_json::Value::from(i64::try_from(c.value()).unwrap_or_default())
                        }
                    };
                    (String::from_utf8_lossy(name).into_owned(), value)
                })
                .collect();
            serde_json::json!({ "type": "hash", "fields": fields })
        }
    };
    Ok(axum::Json(view).into_response())
}

fn value_response(s: &ringkv_cluster::Sibling, mut headers: HeaderMap) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(t) = s.expires_at_ms
        && let Ok(v) = HeaderValue::from_str(&t.to_string())
    {
        headers.insert("x-ringkv-expires-at-ms", v);
    }
    (StatusCode::OK, headers, Body::from(s.value.clone())).into_response()
}

/// Every sibling as one part of a `multipart/mixed` body.
fn multiple_choices(siblings: &[ringkv_cluster::Sibling], mut headers: HeaderMap) -> Response {
    let boundary = multipart_boundary(siblings);
    let mut body = Vec::new();
    for s in siblings {
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n");
        body.extend_from_slice(format!("X-Ringkv-Hlc: {}\r\n\r\n", s.hlc).as_bytes());
        body.extend_from_slice(&s.value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    (StatusCode::MULTIPLE_CHOICES, headers, Body::from(body)).into_response()
}

/// A boundary that occurs in no sibling's value.
fn multipart_boundary(siblings: &[ringkv_cluster::Sibling]) -> String {
    let mut n: u64 = 0x5249_4e47;
    loop {
        let candidate = format!("ringkv-{n:016x}");
        let clash = siblings.iter().any(|s| {
            s.value
                .windows(candidate.len())
                .any(|w| w == candidate.as_bytes())
        });
        if !clash {
            return candidate;
        }
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
}

async fn put_key<K: Kv>(
    State(state): State<AppState<K>>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<KeyParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let expiry = match params.ttl {
        None => Expiry::Never,
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_argument",
                "ttl must be a positive number of seconds",
            ));
        }
        Some(secs) => Expiry::At(state.kv.now_ms().saturating_add(secs.saturating_mul(1000))),
    };
    let opts = WriteOptions {
        consistency: level(params.w.as_deref())?,
        context: context_of(&headers)?,
        expiry,
        ..WriteOptions::default()
    };
    if let Err(e) = state.kv.put(key, body, opts).await {
        // Whatever was applied here reaches the OS before the answer.
        state.kv.release_writes()?;
        return Ok(write_error(e));
    }
    state.kv.release_writes()?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_key<K: Kv>(
    State(state): State<AppState<K>>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<KeyParams>,
) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let opts = WriteOptions {
        consistency: level(params.w.as_deref())?,
        context: context_of(&headers)?,
        ..WriteOptions::default()
    };
    if let Err(e) = state.kv.delete(key, opts).await {
        state.kv.release_writes()?;
        return Ok(write_error(e));
    }
    state.kv.release_writes()?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {

    proptest::proptest! {
        /// The decoders read before authentication take any input, and
        /// give back what was encoded.
        #[test]
        fn pre_auth_decoders_take_any_input(
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            text in ".{0,64}",
            user in "[^:]{0,16}",
            password in proptest::collection::vec(proptest::num::u8::ANY, 0..32),
        ) {
            use base64::Engine as _;
            let _ = percent_decode(&raw);
            let _ = basic_credentials(&text);
            let encoded: String = raw.iter().map(|b| format!("%{b:02X}")).collect();
            proptest::prop_assert_eq!(percent_decode(encoded.as_bytes()), Some(raw.clone()));
            let mut pair = user.clone().into_bytes();
            pair.push(b':');
            pair.extend_from_slice(&password);
            let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&pair));
            proptest::prop_assert_eq!(basic_credentials(&header), Some((user, password)));
        }
    }

    #[test]
    fn removal_grants_are_parsed_strictly() {
        assert!(parse_grants(b"").expect("no body").is_empty());
        let one = br#"{"grants":[{"status":"Left","cert":"AAEC","scheme":1027,"sig":"AwQ="}]}"#;
        let grants = parse_grants(one).expect("one grant");
        assert_eq!(grants[0].status, ringkv_cluster::api::NodeStatus::Left);
        assert_eq!(grants[0].signature.cert.as_ref(), &[0, 1, 2]);
        for bad in [
            &br#"{"grants":[{"status":"Joining","cert":"","scheme":1,"sig":""}]}"#[..],
            br#"{"grants":[{"status":"Left","cert":"%%","scheme":1,"sig":""}]}"#,
            br#"{"grants":[],"extra":1}"#,
            b"not json",
        ] {
            let err = parse_grants(bad).expect_err("refused");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        }
        let many = format!(
            r#"{{"grants":[{}]}}"#,
            [r#"{"status":"Left","cert":"","scheme":1,"sig":""}"#; GRANTS_MAX + 1].join(",")
        );
        assert!(parse_grants(many.as_bytes()).is_err());
    }
    use super::*;

    async fn call(app: &Router, method: &str) -> (StatusCode, serde_json::Value) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .method(method)
            .uri("/v1/repair")
            .body(Body::empty())
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("answer");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).expect("json"))
    }

    #[tokio::test]
    async fn repair_starts_a_pass_and_reports_progress() {
        let node = ringkv_cluster::Node::new(
            7,
            ringkv_cluster::store::MemStore::default(),
            std::sync::Arc::new(ringkv_env::ManualClock::new(1_700_000_000_000)),
            ringkv_cluster::NodeConfig::default(),
        );
        let app = router(
            Arc::new(node),
            Arc::new(String::new),
            &HttpConfig::default(),
        );
        let (status, body) = call(&app, "GET").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["running"], false);
        assert_eq!(body["passes_completed"], 0);
        let ranges = body["ranges_replicated"].as_u64().expect("ranges");
        assert!(ranges > 0, "a lone node replicates its whole ring");
        let (status, _) = call(&app, "POST").await;
        assert_eq!(status, StatusCode::ACCEPTED);
        for _ in 0..200 {
            let (_, body) = call(&app, "GET").await;
            if body["passes_completed"] == 1 && body["running"] == false {
                assert_eq!(body["ranges_done"].as_u64(), Some(ranges));
                assert_eq!(body["ranges_total"].as_u64(), Some(ranges));
                // Alone, every range is in sync with everyone there is.
                assert_eq!(body["ranges_in_sync"].as_u64(), Some(ranges));
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the repair pass did not finish");
    }

    #[test]
    fn percent_decoding_is_binary_safe_and_strict() {
        assert_eq!(percent_decode(b"a%2Fb%00"), Some(b"a/b\0".to_vec()));
        assert_eq!(percent_decode(b"plain"), Some(b"plain".to_vec()));
        assert_eq!(percent_decode(b"bad%2"), None);
        assert_eq!(percent_decode(b"%+1"), None);
        assert_eq!(percent_decode(b"bad%zz"), None);
    }

    #[test]
    fn boundary_avoids_values() {
        let first = multipart_boundary(&[]);
        let s = ringkv_cluster::Sibling {
            value: bytes::Bytes::from(format!("xx{first}yy")),
            hlc: 1,
            actor: 1,
            expires_at_ms: None,
        };
        let second = multipart_boundary(std::slice::from_ref(&s));
        assert_ne!(first, second);
    }
}
