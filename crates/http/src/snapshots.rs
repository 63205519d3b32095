//! Snapshots of the node answering (admin; see `ringkv_cluster::snapshot`):
//! - `POST /v1/snapshots` with `{"tag": "...", "copy": true}` (both
//!   optional): takes one while writes go on, `201` with what it holds and
//!   where it went; `400` for a tag in use, or a copy without a backup
//!   directory.
//! - `GET /v1/snapshots`: every snapshot of this node, oldest first.
//! - `DELETE /v1/snapshots` (all) and `DELETE /v1/snapshots/{tag}`.
//!
//! And the truncation of the whole cluster (`POST /v1/truncate`, what
//! `FLUSHALL` does; see `ringkv_cluster::truncate`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ringkv_cluster::Kv;
use serde::Deserialize;

use crate::{ApiError, AppState};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TakeBody {
    tag: Option<String>,
    #[serde(default)]
    copy: bool,
}

pub(crate) async fn take<K: Kv>(
    State(state): State<AppState<K>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: TakeBody = if body.is_empty() {
        TakeBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_argument", format!("bad body: {e}")))?
    };
    let info = state.kv.snapshot(req.tag, req.copy).await?;
    Ok((StatusCode::CREATED, axum::Json(info)).into_response())
}

pub(crate) async fn list<K: Kv>(State(state): State<AppState<K>>) -> Result<Response, ApiError> {
    let all = state.kv.snapshots()?;
    Ok(axum::Json(serde_json::json!({ "snapshots": all })).into_response())
}

pub(crate) async fn clear_all<K: Kv>(
    State(state): State<AppState<K>>,
) -> Result<Response, ApiError> {
    let cleared = state.kv.clear_snapshots(None)?;
    Ok(axum::Json(serde_json::json!({ "cleared": cleared })).into_response())
}

pub(crate) async fn clear_one<K: Kv>(
    State(state): State<AppState<K>>,
    Path(tag): Path<String>,
) -> Result<Response, ApiError> {
    let cleared = state.kv.clear_snapshots(Some(tag))?;
    Ok(axum::Json(serde_json::json!({ "cleared": cleared })).into_response())
}

pub(crate) async fn truncate<K: Kv>(
    State(state): State<AppState<K>>,
) -> Result<Response, ApiError> {
    let done = state.kv.truncate().await?;
    let nodes: Vec<String> = done
        .nodes
        .iter()
        .map(|&id| ringkv_cluster::id::display(id))
        .collect();
    Ok(axum::Json(serde_json::json!({
        "truncated_at": done.at,
        "truncated_at_ms": ringkv_cluster::causality::hlc_physical_ms(done.at),
        "nodes": nodes,
    }))
    .into_response())
}
