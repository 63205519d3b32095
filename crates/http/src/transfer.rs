//! Export and import over HTTP (admin; the format is
//! `ringkv_cluster::export`'s items):
//! - `GET /v1/export?cursor=&limit=&r=`: one page of whole records of live
//!   keys, as items (`application/octet-stream`); `x-ringkv-cursor` is the
//!   next page's cursor (`0`: done), `x-ringkv-count` the items sent.
//! - `POST /v1/import?w=`: items in the body (at most
//!   [`IMPORT_BODY_BYTES_MAX`]), each merged into the cluster at level `w`,
//!   in runs of [`IMPORT_RUN_BYTES`] whose records travel to each replica
//!   together, [`IMPORT_RUNS_IN_FLIGHT`] runs at a time. `200 {"imported": n}`; a body that
//!   fails its checks is refused whole before anything is merged
//!   (`400 bad_export` with the offset); a merge that fails stops there
//!   (`imported` counts the records before it, all merged, so a client
//!   resumes at the next; merges are idempotent, so records after it that
//!   were merged too do no harm when sent again).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ringkv_cluster::export::{Item, ItemReader, put_record};
use ringkv_cluster::{Kv, ReadOptions, WriteOptions};
use serde::Deserialize;

use crate::{ApiError, AppState, level};

/// An import body is merged in runs of about this many bytes; a run's
/// records travel to each of their replicas together.
const IMPORT_RUN_BYTES: usize = 64 * 1024;

/// Runs of one import body merged at once.
const IMPORT_RUNS_IN_FLIGHT: usize = 4;

/// The largest import body.
pub const IMPORT_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The most records one export page asks for.
pub const EXPORT_LIMIT_MAX: usize = 10_000;

#[derive(Debug, Deserialize)]
pub(crate) struct ExportParams {
    #[serde(default)]
    cursor: u64,
    limit: Option<usize>,
    r: Option<String>,
}

pub(crate) async fn export<K: Kv>(
    State(state): State<AppState<K>>,
    Query(p): Query<ExportParams>,
) -> Result<Response, ApiError> {
    let limit = p.limit.unwrap_or(1_000);
    if !(1..=EXPORT_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_argument",
            format!("limit: 1 to {EXPORT_LIMIT_MAX}"),
        ));
    }
    let opts = ReadOptions {
        consistency: level(p.r.as_deref())?,
    };
    let (records, next) = state.kv.export_page(p.cursor, limit, opts).await?;
    let mut body = Vec::new();
    for (key, record) in &records {
        put_record(&mut body, key, record);
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("x-ringkv-cursor", HeaderValue::from(next));
    headers.insert("x-ringkv-count", HeaderValue::from(records.len() as u64));
    Ok((StatusCode::OK, headers, body).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ImportParams {
    w: Option<String>,
}

pub(crate) async fn import<K: Kv>(
    State(state): State<AppState<K>>,
    Query(p): Query<ImportParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let opts = WriteOptions {
        consistency: level(p.w.as_deref())?,
        ..WriteOptions::default()
    };
    // Every item checked before any is merged.
    let mut reader = ItemReader::new(&body[..], 0);
    let mut records = Vec::new();
    loop {
        match reader.next_item() {
            Ok(Some(Item::Record { key, record })) => records.push((key, record)),
            Ok(Some(Item::End { .. })) => {
                return Err(ApiError::bad_request(
                    "bad_export",
                    "an end item in an import body (send items only)",
                ));
            }
            Ok(None) => break,
            Err(e) => return Err(ApiError::bad_request("bad_export", e.to_string())),
        }
    }
    let total = records.len();
    // Merged in runs of IMPORT_RUN_BYTES, IMPORT_RUNS_IN_FLIGHT at a time
    // (each run's records travel to each replica together); results are
    // taken in order, so `imported` on a failure counts the records before
    // it, all merged.
    let kv = &state.kv;
    let mut starts = Vec::new();
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut run_bytes = 0usize;
    let mut start = 0usize;
    for (i, (key, record)) in records.into_iter().enumerate() {
        run_bytes += key.len() + record.len();
        run.push((key, record));
        if run_bytes >= IMPORT_RUN_BYTES {
            starts.push(start);
            runs.push(std::mem::take(&mut run));
            (start, run_bytes) = (i + 1, 0);
        }
    }
    if !run.is_empty() {
        starts.push(start);
        runs.push(run);
    }
    let mut merges = futures::stream::iter(runs)
        .map(|run| kv.import_records(run, opts.clone()))
        .buffered(IMPORT_RUNS_IN_FLIGHT);
    let mut starts = starts.into_iter();
    while let Some(result) = merges.next().await {
        let start = starts.next().unwrap_or(total);
        if let Err(stopped) = result {
            let api = ApiError::from(stopped.error);
            metrics::counter!("ringkv_http_errors_total", "code" => api.code).increment(1);
            let answer = serde_json::json!({
                "code": api.code,
                "message": api.message,
                "imported": start + stopped.merged,
            });
            return Ok((api.status, axum::Json(answer)).into_response());
        }
    }
    Ok(axum::Json(serde_json::json!({ "imported": total })).into_response())
}
