//! A scan of the whole keyspace, one page at a time, in token order.
//!
//! The cursor is a token: a page reads the keys whose tokens lie from the
//! cursor on, run by run (a run is a stretch of the ring whose ranges have
//! the same replicas, see [`Placement::same_replicas_until`]). Each run is
//! read from replicas enough for the connection's level (this node's own
//! copy first), with the movement stream's `StreamRead`; the answers are
//! merged record by record, as a read merges them, so a key deleted on a
//! quorum is not returned by a stale replica. A page ends at a token: every
//! key at or before it was read, so the next page starts just after it.
//!
//! Why a key live for the whole scan is returned at least once: the cursor
//! names a place in the token space, not in a ring, so a page planned after
//! a node joined or left reads the same keys from the ring of that moment,
//! whose replicas hold them (a joining node serves only once its ranges
//! are streamed; during the hand-over the pending ring's replicas are read
//! too). Keys are not returned twice within a scan, but a client that
//! retries a page may see some again, as Redis allows.
//!
//! [`Placement::same_replicas_until`]: crate::ring::Placement::same_replicas_until

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::Coordinator;
use crate::api::{KvError, ReadOptions, ScanPage, ScannedKey};
use crate::causality::types::{Kind, Record};
use crate::id::NodeId;
use crate::movement::stream::{STREAM_BATCH_BYTES_MAX, read_replica_range};
use crate::net::BoxFut;
use crate::net::message::{Request, Response, stream_crc};
use crate::ring::{Token, token_of};
use crate::rpc::{Call, Fanout, PeerError, Requirement};
use crate::store::LocalStore;

/// The most keys one page may be asked for.
pub const SCAN_COUNT_MAX: usize = 100_000;
/// Runs one page may read before it answers, even with fewer keys than
/// asked (a sparse keyspace answers in bounded time, as Redis's `SCAN`
/// may answer an empty page).
pub const SCAN_RUNS_PER_PAGE: usize = 32;
/// Bytes asked of a replica per key wanted (values travel with records).
const SCAN_BYTES_PER_KEY: usize = 256;
/// The least a replica is asked for per run.
const SCAN_BYTES_MIN: usize = 64 * 1024;

/// One replica's answer for a run: its records and whether more follow.
type Batch = (Vec<(Bytes, Bytes)>, bool);

impl<S: LocalStore> Coordinator<S> {
    /// One page of live keys from token `cursor` on (see the module).
    pub async fn scan(
        self: &Arc<Self>,
        cursor: u64,
        count: usize,
        opts: ReadOptions,
    ) -> Result<ScanPage, KvError> {
        let now = self.replica.now_ms();
        let (records, next) = self.scan_records(cursor, count, opts).await?;
        let keys = records
            .into_iter()
            .filter_map(|(_, key, set)| scanned(key, &set, now))
            .collect();
        Ok(ScanPage { keys, next })
    }

    /// One page of the records of live keys from token `cursor` on, merged
    /// across the replicas read (what `export` writes), and the next cursor.
    pub async fn scan_records(
        self: &Arc<Self>,
        cursor: u64,
        count: usize,
        opts: ReadOptions,
    ) -> Result<(Vec<(Token, Bytes, Record)>, Token), KvError> {
        let count = count.clamp(1, SCAN_COUNT_MAX);
        let level = opts.consistency.unwrap_or(self.config.default_read);
        let budget = (count * SCAN_BYTES_PER_KEY).clamp(SCAN_BYTES_MIN, STREAM_BATCH_BYTES_MAX);
        let now = self.replica.now_ms();
        let mut keys: Vec<(Token, Bytes, Record)> = Vec::new();
        let mut at = cursor;
        for _ in 0..SCAN_RUNS_PER_PAGE {
            let (plan, end) = self.planner.read_run(at, level)?;
            let (found, read_to) = self.scan_run(&plan, at, end, budget, now).await?;
            keys.extend(found);
            let mut done_to = read_to;
            if keys.len() > count {
                // Cut at the count-th key's token: the rest is read again
                // by the next page.
                let cut = keys[count - 1].0;
                keys.retain(|(t, _, _)| *t <= cut);
                done_to = cut;
            }
            if done_to == Token::MAX {
                return Ok((keys, 0));
            }
            at = done_to + 1;
            if keys.len() >= count {
                break;
            }
        }
        Ok((keys, at))
    }

    /// Reads `[from, end]` (one run) from replicas enough for `plan`: the
    /// live keys up to the token returned, which every answer covered.
    async fn scan_run(
        self: &Arc<Self>,
        plan: &super::plan::Plan,
        from: Token,
        end: Token,
        budget: usize,
        now: u64,
    ) -> Result<(Vec<(Token, Bytes, Record)>, Token), KvError> {
        let bytes_max = u32::try_from(budget).unwrap_or(u32::MAX);
        let mut order: Vec<NodeId> = plan.live.clone();
        // This node's copy first: no network.
        if let Some(i) = order.iter().position(|&id| id == self.id()) {
            order.swap(0, i);
        }
        // While a hand-over runs both rings must be met, and a level per
        // data center needs replicas of each: ask every live replica.
        // Otherwise as many as the level needs, more on failure.
        let first = if plan.pending.is_some() || !plan.current.need.per_dc.is_empty() {
            order.len()
        } else {
            plan.required().min(order.len())
        };
        let mut fanout: Fanout<Batch> = Fanout::new();
        for &id in &order[..first] {
            let (call, work) = self.scan_call(id, from, end, bytes_max);
            fanout.push(call, work);
        }
        let mut spare = order[first..].iter();
        let waited = fanout
            .wait(plan, |_, _| {
                spare
                    .next()
                    .map(|&id| self.scan_call(id, from, end, bytes_max))
            })
            .await;
        if let Err(short) = waited {
            metrics::counter!("ringkv_unavailable_total", "op" => "scan").increment(1);
            return Err(KvError::Unavailable {
                required: short.required,
                answered: short.acked.len(),
                why: short.why(),
            });
        }
        let answers = fanout.take_answers();
        // Every answer covers its records up to its last token (or the
        // whole run when it has no more); the page covers what all cover.
        let mut read_to = end;
        for (_, (entries, more)) in &answers {
            if *more && let Some(covered) = covered_to(entries) {
                read_to = read_to.min(covered);
            }
        }
        let mut merged: BTreeMap<(Token, Bytes), Record> = BTreeMap::new();
        let truncated_at = self.replica.truncated_at();
        for (call, (entries, _)) in answers {
            for (key, record) in entries {
                let token = token_of(&key);
                if token > read_to {
                    continue;
                }
                match Record::decode(&record) {
                    Ok(mut set) => {
                        set.drop_truncated(truncated_at);
                        merged.entry((token, key)).or_default().merge_changed(&set);
                    }
                    Err(e) => tracing::warn!(
                        replica = %crate::id::display(call.to),
                        error = %e,
                        "a scanned record does not decode"
                    ),
                }
            }
        }
        let found = merged
            .into_iter()
            .filter(|(_, set)| !set.is_dead(now))
            .map(|((token, key), set)| (token, key, set))
            .collect();
        Ok((found, read_to))
    }

    /// A `StreamRead` of `[from, end]` from `id` (this node's own store
    /// read directly), its checksum checked.
    fn scan_call(
        self: &Arc<Self>,
        id: NodeId,
        from: Token,
        end: Token,
        bytes_max: u32,
    ) -> (Call, BoxFut<Result<Batch, PeerError>>) {
        if id == self.id() {
            let replica = Arc::clone(&self.replica);
            let work = async move {
                read_replica_range(&replica, from, end, None, bytes_max)
                    .await
                    .map_err(PeerError::Local)
            };
            return (Call::replica(id), Box::pin(work));
        }
        let req = Request::StreamRead {
            lo: from,
            hi: end,
            after: None,
            bytes_max,
        };
        let answer = self
            .rpc
            .call_for(id, req, self.timeout(), Response::into_stream_batch);
        let work = async move {
            let (entries, more, crc) = answer.await?;
            if stream_crc(&entries) != crc {
                metrics::counter!("ringkv_stream_checksum_failures_total").increment(1);
                return Err(PeerError::Unexpected("stream batch with a bad checksum"));
            }
            Ok((entries, more))
        };
        (Call::replica(id), Box::pin(work))
    }
}

/// The last token a truncated batch covers whole: the token of its last
/// record, unless other records may share that token beyond the batch
/// (then the one before), when the batch holds more than that token.
fn covered_to(entries: &[(Bytes, Bytes)]) -> Option<Token> {
    let first = token_of(&entries.first()?.0);
    let last = token_of(&entries.last()?.0);
    Some(if first < last { last - 1 } else { last })
}

/// The key as a scan reports it, `None` when it has no live value. A key
/// of a data type is one value the size of its record.
fn scanned(key: Bytes, record: &Record, now: u64) -> Option<ScannedKey> {
    let (mut siblings, mut value_bytes) = (0, 0);
    for s in record.strings.live(now) {
        siblings += 1;
        value_bytes = value_bytes.max(s.value.as_ref().map_or(0, Bytes::len));
    }
    if siblings == 0 && !record.is_dead(now) {
        (siblings, value_bytes) = (1, record.encode().len());
    }
    let kind = match record.kind(now) {
        Some(Kind::Set) => "set",
        Some(Kind::Hash) => "hash",
        _ => "string",
    };
    (siblings > 0).then(|| ScannedKey {
        key,
        value_bytes,
        expires_at_ms: record.record_expiry(),
        siblings,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> (Bytes, Bytes) {
        (Bytes::from(key.to_string()), Bytes::new())
    }

    #[test]
    fn a_truncated_batch_covers_up_to_its_last_token_but_one() {
        let mut keys: Vec<(Bytes, Bytes)> = (0..10).map(|i| entry(&format!("k{i}"))).collect();
        keys.sort_by_key(|(k, _)| token_of(k));
        let last = token_of(&keys[9].0);
        assert_eq!(covered_to(&keys), Some(last - 1));
        // A batch of one token only still moves on.
        assert_eq!(covered_to(&keys[..1]), Some(token_of(&keys[0].0)));
        assert_eq!(covered_to(&[]), None);
    }
}
