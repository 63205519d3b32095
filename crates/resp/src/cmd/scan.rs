//! Listing keys across the whole cluster: SCAN, KEYS, RANDOMKEY.
//!
//! - `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`: one page of the
//!   cluster's live keys. The cursor is a place on the ring (a token), so it
//!   stays valid while nodes join or leave: a key live for the whole scan
//!   is returned at least once, as Redis promises. Keys are read at the
//!   connection's read level and merged across replicas (see
//!   `ringkv_cluster::coord::scan`). `MATCH` filters a page after it is
//!   read, so a page may hold fewer keys than `COUNT`, or none, with a
//!   cursor that is not 0 (as in Redis). `TYPE` keeps the keys of one
//!   type: `string` (counters too, as in Redis), `set` or `hash`.
//! - `KEYS pattern`: every matching key, by a scan on the server, refused
//!   past [`KEYS_MATCHED_MAX`] keys found or [`KEYS_SCANNED_MAX`] keys read
//!   (use SCAN on a large keyspace).
//! - `RANDOMKEY`: the first live key from a random place on the ring (keys
//!   after a wide gap between tokens come up more often); nil when no key
//!   (the caller may see) turns up within [`RANDOMKEY_PAGES_MAX`] pages.
//!
//! A user restricted to key patterns sees only the keys it may access.
//! Each is a cluster-wide answer given once by the node asked: a Redis
//! Cluster client sends them to every primary, and each node names itself
//! the only primary (see [`crate::cmd::cluster`]).

use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;
use ringkv_cluster::{Kv, ScanPage};

use crate::cmd::Ctx;
use crate::error::CommandError;
use crate::frame::Frame;
use crate::parse::{Args, is};

/// The most keys `KEYS` answers with.
pub const KEYS_MATCHED_MAX: usize = 100_000;
/// The most keys `KEYS` reads to find its matches.
pub const KEYS_SCANNED_MAX: usize = 1_000_000;
/// Keys `KEYS` and `RANDOMKEY` ask for per page.
const PAGE: usize = 1_000;
/// Pages `RANDOMKEY` reads before it answers nil (a keyspace that is empty,
/// or as sparse as that, over a whole turn of the ring).
pub const RANDOMKEY_PAGES_MAX: usize = 64;
/// `SCAN`'s page size without `COUNT`, as Redis's.
const COUNT_DEFAULT: usize = 10;

pub(crate) struct Scan {
    cursor: u64,
    pattern: Option<Bytes>,
    count: usize,
    /// `TYPE`: only keys of this type (as Redis names it, lower case).
    kind: Option<String>,
}

impl Scan {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let cursor = parse_cursor(&args.bytes()?)?;
        let mut scan = Self {
            cursor,
            pattern: None,
            count: COUNT_DEFAULT,
            kind: None,
        };
        while let Some(word) = args.next() {
            if is(word, "MATCH") {
                scan.pattern = Some(args.bytes()?);
            } else if is(word, "COUNT") {
                let n = args.int()?;
                if n < 1 {
                    return Err(CommandError::Syntax);
                }
                scan.count = usize::try_from(n).unwrap_or(usize::MAX);
            } else if is(word, "TYPE") {
                scan.kind = Some(String::from_utf8_lossy(&args.bytes()?).to_ascii_lowercase());
            } else {
                return Err(CommandError::Syntax);
            }
        }
        Ok(scan)
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let ScanPage { keys, next } = ctx
            .kv
            .scan(self.cursor, self.count, ctx.session.read_options())
            .await?;
        let keys = keys
            .into_iter()
            .filter(|k| {
                self.pattern
                    .as_ref()
                    .is_none_or(|p| crate::glob::matches(p, &k.key, false))
                    && self.kind.as_ref().is_none_or(|t| t == k.kind)
                    && ctx.session.user.may_access(&k.key)
            })
            .map(|k| Frame::Bulk(k.key))
            .collect();
        Ok(Frame::Array(vec![
            Frame::bulk_string(next.to_string()),
            Frame::Array(keys),
        ]))
    }
}

/// A cursor as Redis reads one (`strtoull`): an unsigned 64-bit number, with
/// an optional `+`, a negative one wrapping around.
fn parse_cursor(arg: &[u8]) -> Result<u64, CommandError> {
    let invalid = || CommandError::Invalid("invalid cursor".into());
    let text = std::str::from_utf8(arg).map_err(|_| invalid())?;
    if let Some(neg) = text.strip_prefix('-') {
        let n: u64 = neg.parse().map_err(|_| invalid())?;
        return Ok(n.wrapping_neg());
    }
    // `u64`'s parse takes one leading `+`, as `strtoull` does.
    text.parse().map_err(|_| invalid())
}

pub(crate) struct Keys {
    pattern: Bytes,
}

impl Keys {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let pattern = args.bytes()?;
        args.finish()?;
        Ok(Self { pattern })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let opts = ctx.session.read_options();
        let mut found = Vec::new();
        let (mut cursor, mut scanned) = (0, 0usize);
        loop {
            let page = ctx.kv.scan(cursor, PAGE, opts.clone()).await?;
            scanned += page.keys.len();
            for k in page.keys {
                if crate::glob::matches(&self.pattern, &k.key, false)
                    && ctx.session.user.may_access(&k.key)
                {
                    found.push(Frame::Bulk(k.key));
                }
            }
            if found.len() > KEYS_MATCHED_MAX {
                return Err(CommandError::Invalid(format!(
                    "KEYS matched more than {KEYS_MATCHED_MAX} keys; use SCAN with MATCH to page \
                     through them"
                )));
            }
            if page.next == 0 {
                return Ok(Frame::Array(found));
            }
            if scanned >= KEYS_SCANNED_MAX {
                return Err(CommandError::Invalid(format!(
                    "KEYS read {KEYS_SCANNED_MAX} keys and the keyspace holds more; use SCAN \
                     with MATCH to page through them"
                )));
            }
            cursor = page.next;
        }
    }
}

pub(crate) async fn randomkey<K: Kv>(ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
    let opts = ctx.session.read_options();
    let start = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut cursor = start;
    let mut wrapped = false;
    for _ in 0..RANDOMKEY_PAGES_MAX {
        let page = ctx.kv.scan(cursor, 1, opts.clone()).await?;
        let mut keys = page.keys.into_iter();
        if let Some(k) = keys.find(|k| ctx.session.user.may_access(&k.key)) {
            return Ok(Frame::Bulk(k.key));
        }
        if wrapped && (page.next == 0 || page.next > start) {
            // A whole turn of the ring.
            break;
        }
        wrapped |= page.next == 0;
        cursor = page.next;
    }
    Ok(Frame::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_as_redis_reads_them() {
        assert_eq!(parse_cursor(b"0"), Ok(0));
        assert_eq!(parse_cursor(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_cursor(b"-1"), Ok(u64::MAX));
        assert_eq!(parse_cursor(b"+1"), Ok(1));
        for bad in [&b"abc"[..], b"18446744073709551616", b"", b"1.5", b"++1"] {
            assert_eq!(
                parse_cursor(bad).map_err(|e| e.to_string()),
                Err("ERR invalid cursor".to_string())
            );
        }
    }
}
