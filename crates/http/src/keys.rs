//! `GET /v1/keys?prefix=&cursor=&limit=&r=`: a page of the cluster's live
//! keys (see `ringkv_cluster::coord::scan`).
//!
//! The cursor is a place on the ring, given back as a decimal string (it
//! does not fit a JavaScript number); `"0"` when the scan is done. `prefix`
//! is percent-decoded like a key in a path, so any bytes can be asked for.
//! Keys are in token order, not key order, so a prefix filters each page: a
//! page may hold fewer keys than `limit` (or none) before the scan is done.
//! A user restricted to key patterns sees only its keys.

use axum::Extension;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use ringkv_cluster::{Kv, ReadOptions};

use crate::guard::Caller;
use crate::{ApiError, AppState, level, percent_decode, percent_encode};

/// Keys a page answers with when `limit` is not given.
pub const KEYS_LIMIT_DEFAULT: usize = 100;
/// The largest `limit`.
pub const KEYS_LIMIT_MAX: usize = 10_000;
/// Scan pages one request reads looking for keys of its prefix.
const PAGES_PER_REQUEST: usize = 16;

struct Params {
    prefix: Vec<u8>,
    cursor: u64,
    limit: usize,
    r: Option<String>,
}

fn params(uri: &Uri) -> Result<Params, ApiError> {
    let mut p = Params {
        prefix: Vec::new(),
        cursor: 0,
        limit: KEYS_LIMIT_DEFAULT,
        r: None,
    };
    let bad = |what: &str| ApiError::bad_request("invalid_argument", what.to_string());
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
    {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw.as_bytes()).ok_or_else(|| bad("bad percent-encoding"))?;
        let text = || String::from_utf8(value.clone()).map_err(|_| bad("not UTF-8"));
        match name {
            "prefix" => p.prefix = value.clone(),
            "cursor" => {
                p.cursor = text()?
                    .parse()
                    .map_err(|_| bad("cursor: a number from an earlier page"))?;
            }
            "limit" => {
                p.limit = text()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=KEYS_LIMIT_MAX).contains(n))
                    .ok_or_else(|| bad(&format!("limit: 1 to {KEYS_LIMIT_MAX}")))?;
            }
            "r" => p.r = Some(text()?),
            other => return Err(bad(&format!("unknown parameter {other:?}"))),
        }
    }
    Ok(p)
}

pub(crate) async fn list_keys<K: Kv>(
    axum::extract::State(state): State<AppState<K>>,
    caller: Option<Extension<Caller>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let p = params(&uri)?;
    let opts = ReadOptions {
        consistency: level(p.r.as_deref())?,
    };
    let mut keys = Vec::new();
    let mut cursor = p.cursor;
    for _ in 0..PAGES_PER_REQUEST {
        let page = state
            .kv
            .scan(cursor, p.limit - keys.len(), opts.clone())
            .await?;
        for k in page.keys {
            let allowed = caller.as_ref().is_none_or(|c| c.0.0.may_access(&k.key));
            if allowed && k.key.starts_with(&p.prefix) {
                keys.push(serde_json::json!({
                    "key": std::str::from_utf8(&k.key).ok(),
                    "path": format!("/v1/kv/{}", percent_encode(&k.key)),
                    "value_bytes": k.value_bytes,
                    "expires_at_ms": k.expires_at_ms,
                    "siblings": k.siblings,
                }));
            }
        }
        cursor = page.next;
        if cursor == 0 || keys.len() >= p.limit {
            break;
        }
    }
    Ok(axum::Json(serde_json::json!({
        "keys": keys,
        "cursor": cursor.to_string(),
        "done": cursor == 0,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_its_path() {
        for key in [&b"user:1"[..], b"a/b c", b"\x00\xff%", b""] {
            assert_eq!(
                percent_decode(percent_encode(key).as_bytes()).as_deref(),
                Some(key)
            );
        }
    }

    #[test]
    fn parameters_are_checked() {
        let uri = |q: &str| -> Uri { format!("/v1/keys?{q}").parse().expect("uri") };
        let p = params(&uri("prefix=a%2Fb&cursor=42&limit=5")).expect("ok");
        assert_eq!(
            (p.prefix.as_slice(), p.cursor, p.limit),
            (&b"a/b"[..], 42, 5)
        );
        for bad in [
            "limit=0",
            "limit=10001",
            "cursor=x",
            "prefix=%zz",
            "color=red",
        ] {
            assert!(params(&uri(bad)).is_err(), "{bad}");
        }
    }
}
