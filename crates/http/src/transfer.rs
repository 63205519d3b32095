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
    let (starts, runs): (Vec<usize>, Vec<_>) = runs(records, IMPORT_RUN_BYTES).into_iter().unzip();
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

/// Splits `records` into runs of at least `run_bytes` bytes of keys and
/// records (the last may be smaller), each with the index of its first
/// record: a run's failure at its record `merged` is the body's record
/// `start + merged`.
fn runs(records: Vec<(Bytes, Bytes)>, run_bytes: usize) -> Vec<(usize, Vec<(Bytes, Bytes)>)> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let (mut start, mut bytes) = (0usize, 0usize);
    for (i, (key, record)) in records.into_iter().enumerate() {
        bytes += key.len() + record.len();
        run.push((key, record));
        if bytes >= run_bytes {
            runs.push((start, std::mem::take(&mut run)));
            (start, bytes) = (i + 1, 0);
        }
    }
    if !run.is_empty() {
        runs.push((start, run));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_the_body_in_order_and_name_their_first_record() {
        let records: Vec<(Bytes, Bytes)> = (0..10u8)
            .map(|i| (Bytes::from(vec![i]), Bytes::from(vec![0u8; 9])))
            .collect();
        // 10 bytes a record, runs of at least 25: 3, 3, 3, then 1.
        let split = runs(records.clone(), 25);
        let starts: Vec<usize> = split.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, vec![0, 3, 6, 9]);
        let joined: Vec<(Bytes, Bytes)> = split.into_iter().flat_map(|(_, r)| r).collect();
        assert_eq!(joined, records);
        // A run stopped at its record 2 is the body's record 5.
        let (start, run) = &runs(records, 25)[1];
        assert_eq!(run[2].0, Bytes::from(vec![(start + 2) as u8]));
        assert!(runs(Vec::new(), 25).is_empty());
    }
}
