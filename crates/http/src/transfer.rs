//! Export and import over HTTP (admin; the format is
//! `ringkv_cluster::export`'s items):
//! - `GET /v1/export?cursor=&limit=&r=`: one page of whole records of live
//!   keys, as items (`application/octet-stream`); `x-ringkv-cursor` is the
//!   next page's cursor (`0`: done), `x-ringkv-count` the items sent.
//! - `POST /v1/import?w=`: items in the body (at most
//!   [`IMPORT_BODY_BYTES_MAX`]), each merged into the cluster at level `w`,
//!   [`IMPORT_IN_FLIGHT`] at a time. `200 {"imported": n}`; a body that
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

/// Records of one import body merged at once (each a write at the
/// requested level through the coordinator).
const IMPORT_IN_FLIGHT: usize = 16;

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
    // Merged IMPORT_IN_FLIGHT at a time; results are taken in order, so
    // `imported` on a failure counts the records before it, all merged.
    let kv = &state.kv;
    let mut merges = futures::stream::iter(records)
        .map(|(key, record)| kv.import_record(key, record, opts.clone()))
        .buffered(IMPORT_IN_FLIGHT);
    let mut imported = 0usize;
    while let Some(result) = merges.next().await {
        if let Err(e) = result {
            let api = ApiError::from(e);
            metrics::counter!("ringkv_http_errors_total", "code" => api.code).increment(1);
            let answer = serde_json::json!({
                "code": api.code,
                "message": api.message,
                "imported": imported,
            });
            return Ok((api.status, axum::Json(answer)).into_response());
        }
        imported += 1;
    }
    Ok(axum::Json(serde_json::json!({ "imported": total })).into_response())
}
