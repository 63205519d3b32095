//! The read and admin routes beside the keys: node status and
//! certificates, the cluster view, `explain`, repair and its ranges,
//! movements (decommission, remove with an admin's grants, cancel), the
//! traffic history, the slow log and `/metrics`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ringkv_cluster::{Kv, MoveCommand, MovementStatus};
use serde::Deserialize;

use crate::{ApiError, AppState, Certificates, key_of};

pub(crate) async fn status<K: Kv>(State(state): State<AppState<K>>) -> Response {
    let info = state.kv.info();
    let storage: serde_json::Map<String, serde_json::Value> = info
        .storage
        .iter()
        .map(|f| {
            let value = if f.value.fract() == 0.0 && f.value >= 0.0 {
                serde_json::Value::from(f.value as u64)
            } else {
                serde_json::Value::from(f.value)
            };
            (f.name.to_string(), value)
        })
        .collect();
    axum::Json(serde_json::json!({
        "node_id": format!("{:016x}", info.node_id),
        "version": info.version,
        "uptime_ms": info.uptime_ms,
        "replication_factor": info.replication_factor,
        "default_read": info.default_read,
        "default_write": info.default_write,
        "keys": info.keys,
        "cluster_keys": info.cluster_keys,
        "storage": storage,
        "certificates": certificates_json(&state.certificates),
    }))
    .into_response()
}

/// Each certificate's purpose and expiry, and whole days left.
pub(crate) fn certificates_json(certificates: &Certificates) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let list = certificates.0.as_ref().map(|f| f()).unwrap_or_default();
    list.into_iter()
        .map(|(purpose, not_after)| {
            serde_json::json!({
                "purpose": purpose,
                "not_after_unix": not_after,
                "expires_in_days": not_after.saturating_sub(now).div_euclid(86_400),
            })
        })
        .collect()
}

pub(crate) async fn cluster<K: Kv>(State(state): State<AppState<K>>) -> Response {
    let view = state.kv.cluster();
    let nodes: Vec<serde_json::Value> = view
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "id": format!("{:016x}", n.id),
                "generation": n.generation,
                "status": n.status.name(),
                "alive": n.alive,
                "phi": if n.phi.is_finite() { serde_json::Value::from(n.phi) } else { serde_json::Value::Null },
                "ownership": n.ownership,
                "tokens": n.tokens,
                "weight": n.weight,
                "dc": n.dc,
                "rack": n.rack,
                "cluster_addr": n.cluster_addr,
                "resp_addr": n.resp_addr,
                "http_addr": n.http_addr,
                "load": {
                    "ops_per_sec": n.ops_per_sec,
                    "p99_us": n.p99_us,
                    "disk_bytes": n.disk_bytes,
                    "keys": n.keys,
                },
            })
        })
        .collect();
    let replication: serde_json::Map<String, serde_json::Value> = view
        .replication
        .iter()
        .map(|(dc, n)| (dc.clone(), serde_json::Value::from(*n)))
        .collect();
    let tokens: Vec<serde_json::Value> = view
        .tokens
        .iter()
        .map(|(t, n)| serde_json::json!([t.to_string(), format!("{n:016x}")]))
        .collect();
    axum::Json(serde_json::json!({
        "self": format!("{:016x}", view.self_id),
        "nodes": nodes,
        "replication": replication,
        "tokens": tokens,
        "hints": {
            "pending": view.hints_pending.iter().map(|h| serde_json::json!({
                "target": format!("{:016x}", h.target), "count": h.count, "bytes": h.bytes,
            })).collect::<Vec<_>>(),
            "dropped_full": view.hints_dropped.full,
            "dropped_expired": view.hints_dropped.expired,
        },
    }))
    .into_response()
}

pub(crate) async fn explain<K: Kv>(
    State(state): State<AppState<K>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let e = state.kv.explain(key).await?;
    let replicas: Vec<serde_json::Value> = e
        .replicas
        .iter()
        .map(|r| {
            let version = match &r.version {
                Ok(vv) => serde_json::json!(
                    vv.iter()
                        .map(|d| serde_json::json!([format!("{:016x}", d.actor), d.counter]))
                        .collect::<Vec<_>>()
                ),
                Err(why) => serde_json::json!({ "error": why.to_string() }),
            };
            serde_json::json!({
                "node": format!("{:016x}", r.node_id),
                "alive": r.alive,
                "version": version,
                "siblings": r.siblings.iter().map(|s| serde_json::json!({
                    "dot": [format!("{:016x}", s.dot.actor), s.dot.counter],
                    "hlc": s.hlc,
                    "value_bytes": s.value_bytes,
                    "expires_at_ms": s.expires_at_ms,
                })).collect::<Vec<_>>(),
                "tombstones": r.tombstones,
                "expired": r.expired,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({
        "token": e.token.to_string(),
        "now_ms": state.kv.now_ms(),
        "preference_list": e.preference_list.iter().map(|n| format!("{n:016x}")).collect::<Vec<_>>(),
        "replicas": replicas,
    }))
    .into_response())
}

pub(crate) fn repair_json(kv: &impl Kv) -> Result<serde_json::Value, ApiError> {
    let s = kv
        .repair_status()
        .ok_or_else(|| ApiError::bad_request("invalid_argument", "repair is not supported here"))?;
    Ok(serde_json::json!({
        "running": s.running,
        "ranges_done": s.ranges_done,
        "ranges_total": s.ranges_total,
        "background_ranges_done": s.background_ranges_done,
        "background_ranges_total": s.background_ranges_total,
        "passes_completed": s.passes_completed,
        "ranges_replicated": s.ranges_replicated,
        "ranges_in_sync": s.ranges_in_sync,
        "oldest_unsynced_range_age_ms": s.oldest_unsynced_range_age_ms,
        "keys_repaired": s.keys_repaired,
        "bytes_sent": s.bytes_sent,
        "bytes_received": s.bytes_received,
        "corrupt_records_skipped": s.corrupt_records_skipped,
        "sync_failures": s.sync_failures,
    }))
}

pub(crate) async fn repair_status<K: Kv>(
    State(state): State<AppState<K>>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(repair_json(state.kv.as_ref())?).into_response())
}

/// Every replicated range with the time of its last sync with all its
/// replicas (`null`: some replica never synced).
pub(crate) async fn repair_ranges<K: Kv>(State(state): State<AppState<K>>) -> Response {
    let now = state.kv.now_ms();
    let ranges: Vec<serde_json::Value> = state
        .kv
        .range_states()
        .iter()
        .map(|r| {
            serde_json::json!({
                "start": r.start.to_string(),
                "end": r.end.to_string(),
                "replicas": r.replicas.iter().map(|n| format!("{n:016x}")).collect::<Vec<_>>(),
                "synced_at_ms": r.synced_at_ms,
                "age_ms": r.synced_at_ms.map(|t| now.saturating_sub(t)),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "ranges": ranges })).into_response()
}

pub(crate) async fn start_repair<K: Kv>(
    State(state): State<AppState<K>>,
) -> Result<Response, ApiError> {
    let started = state.kv.start_repair()?;
    let status = if started {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, axum::Json(repair_json(state.kv.as_ref())?)).into_response())
}

pub(crate) fn movement_json(s: Option<MovementStatus>) -> serde_json::Value {
    match s {
        None => serde_json::json!({ "kind": null }),
        Some(s) => serde_json::json!({
            "kind": s.kind.name(),
            "node": format!("{:016x}", s.node),
            "phase": s.phase.name(),
            "ranges_done": s.ranges_done,
            "ranges_total": s.ranges_total,
            "keys": s.keys,
            "bytes": s.bytes,
            "started_ms": s.started_ms,
            "updated_ms": s.updated_ms,
            "last_error": s.last_error,
            "rate_bytes_per_sec": s.rate_bytes_per_sec,
        }),
    }
}

/// The join, decommission or removal this node drives or last drove.
pub(crate) async fn movement<K: Kv>(State(state): State<AppState<K>>) -> Response {
    axum::Json(movement_json(state.kv.movement())).into_response()
}

/// `GET /v1/history`: the cluster's traffic over the last minutes as this
/// node saw it, oldest first: `{"samples": [{"at_ms", "ops_per_sec",
/// "p99_us", "nodes_down"}, ...]}`.
pub(crate) async fn history<K: Kv>(State(state): State<AppState<K>>) -> Response {
    let samples: Vec<serde_json::Value> = state
        .kv
        .load_history()
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "at_ms": s.at_ms,
                "ops_per_sec": s.ops_per_sec,
                "p99_us": s.p99_us,
                "nodes_down": s.nodes_down,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "samples": samples })).into_response()
}

/// `GET /v1/slowlog`: the slow log, newest first, with how long each
/// request waited for each replica (slowest first), and the latency
/// monitor's events.
pub(crate) async fn slowlog<K: Kv>(State(state): State<AppState<K>>) -> Response {
    let Some(log) = state.kv.slow_log() else {
        return axum::Json(serde_json::json!({ "entries": [], "latency": [] })).into_response();
    };
    let config = log.config();
    let entries: Vec<serde_json::Value> = log
        .get(None)
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "started_unix_s": e.started_unix_s,
                "duration_us": e.duration_us,
                "args": e.args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
                "client_addr": e.client_addr,
                "client_name": e.client_name,
                "replicas": e.replicas.iter().map(|w| serde_json::json!({
                    "node": ringkv_cluster::id::display(w.node),
                    "wait_us": w.wait_us,
                    "answers": w.answers,
                    "failures": w.failures,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let latency: Vec<serde_json::Value> = log
        .latency_latest()
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "event": e.name,
                "latest_unix_s": e.latest_unix_s,
                "latest_ms": e.latest_ms,
                "max_ms": e.max_ms,
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "slower_than_us": config.slower_than_us,
        "max_len": config.max_len,
        "latency_threshold_ms": config.latency_threshold_ms,
        "entries": entries,
        "latency": latency,
    }))
    .into_response()
}

/// `POST /v1/decommission`, `/v1/remove/{node}`, `/v1/movement/cancel`:
/// starts the movement in the background and answers 202 with its status.
/// The body of `POST /v1/remove/{id}`: an admin's removal grants (see
/// `ringkv remove --admin-cert`), needed under mutual TLS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoveBody {
    #[serde(default)]
    grants: Vec<GrantJson>,
}

/// One grant: the status (`Leaving`, `LeaveHandover`, `Left`, `Normal`),
/// and the signature's certificate (DER), TLS scheme and bytes, base64.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantJson {
    status: String,
    cert: String,
    scheme: u16,
    sig: String,
}

/// Most grants a removal request may carry.
pub(crate) const GRANTS_MAX: usize = 8;

pub(crate) fn parse_grants(
    body: &[u8],
) -> Result<Vec<ringkv_cluster::net::message::RemovalGrant>, ApiError> {
    use base64::Engine as _;
    use ringkv_cluster::net::message::{RemovalGrant, StateSignature};
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let bad = |why: String| ApiError::bad_request("invalid_argument", why);
    let parsed: RemoveBody =
        serde_json::from_slice(body).map_err(|e| bad(format!("the removal's body: {e}")))?;
    if parsed.grants.len() > GRANTS_MAX {
        return Err(bad(format!("at most {GRANTS_MAX} grants")));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    parsed
        .grants
        .into_iter()
        .map(|g| {
            let status = RemovalGrant::status_from_name(&g.status)
                .ok_or_else(|| bad(format!("{:?}: not a removal status", g.status)))?;
            let cert = b64
                .decode(&g.cert)
                .map_err(|e| bad(format!("grant certificate: {e}")))?;
            let sig = b64
                .decode(&g.sig)
                .map_err(|e| bad(format!("grant signature: {e}")))?;
            Ok(RemovalGrant {
                status,
                signature: StateSignature {
                    cert: Bytes::from(cert),
                    scheme: g.scheme,
                    sig: Bytes::from(sig),
                },
            })
        })
        .collect()
}

pub(crate) async fn move_command<K: Kv>(
    State(state): State<AppState<K>>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = uri.path();
    let cmd = if path == "/v1/decommission" {
        MoveCommand::Decommission
    } else if path == "/v1/movement/cancel" {
        MoveCommand::Cancel
    } else {
        let node = path.rsplit('/').next().unwrap_or_default();
        let id = u64::from_str_radix(node, 16)
            .ok()
            .filter(|&id| id != 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_argument",
                    format!("{node:?} is not a node id (16 hex digits)"),
                )
            })?;
        MoveCommand::Remove(id, parse_grants(&body)?)
    };
    let status = state.kv.start_movement(cmd)?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(movement_json(Some(status))),
    )
        .into_response())
}

pub(crate) async fn metrics_text<K: Kv>(State(state): State<AppState<K>>) -> Response {
    let text = (state.metrics)();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}
