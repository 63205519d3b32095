//! Streaming: copying one token interval from its sources to its target in
//! checksummed batches, and both ends of a stream (`StreamRead`,
//! `StreamPush`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::pace::{Pacer, Throttle};
use super::plan::Transfer;
use super::{Drive, MovementError, Movements};
use crate::api::KvError;
use crate::causality::SiblingSet;
use crate::causality::types::Record;
use crate::id::{NodeId, display};
use crate::net::message::{ErrorDetail, Request, Response, stream_crc};
use crate::ring::{Token, token_of};
use crate::store::LocalStore;

/// Timeout of one stream call (a batch read or merged).
const STREAM_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest stream batch a node answers, whatever is asked.
pub const STREAM_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Records of a stream batch: `(key, encoded record)`.
type Entries = Vec<(Bytes, Bytes)>;

impl<S: LocalStore> Movements<S> {
    /// Copies one transfer from each of its sources to its target.
    pub(super) async fn copy_transfer(
        self: &Arc<Self>,
        t: &Transfer,
        drive: Drive,
        throttle: &mut Throttle,
        pacer: &mut Pacer,
        peers: &[NodeId],
    ) -> Result<(), MovementError> {
        let sources = self.sources(t, drive);
        if sources.is_empty() {
            return Err(MovementError::NoSource {
                lo: t.lo,
                hi: t.hi,
                holders: t
                    .holders
                    .iter()
                    .map(|&id| display(id))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if t.target != self.id() && !self.membership.is_alive(t.target) {
            return Err(MovementError::TargetDown(t.target));
        }
        for source in sources {
            let mut after: Option<(Token, Bytes)> = None;
            loop {
                if self.cancel.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(MovementError::Cancelled);
                }
                let (entries, more) = self.read_batch(source, t.lo, t.hi, after.clone()).await?;
                if let Some((key, _)) = entries.last() {
                    after = Some((token_of(key), key.clone()));
                }
                let keys = entries.len() as u64;
                let bytes: u64 = entries
                    .iter()
                    .map(|(k, r)| (k.len() + r.len()) as u64)
                    .sum();
                if !entries.is_empty() {
                    self.write_batch(t.target, entries).await?;
                }
                metrics::counter!("ringkv_stream_keys_total").increment(keys);
                metrics::counter!("ringkv_stream_bytes_total").increment(bytes);
                self.set_status(|s| {
                    s.keys += keys;
                    s.bytes += bytes;
                });
                throttle.wait(bytes).await;
                self.pace(pacer, throttle, peers).await;
                if !more {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One batch of `[lo, hi]` after `after`, from `source`.
    async fn read_batch(
        self: &Arc<Self>,
        source: NodeId,
        lo: Token,
        hi: Token,
        after: Option<(Token, Bytes)>,
    ) -> Result<(Entries, bool), MovementError> {
        let bytes_max = self.config.batch_bytes_max;
        if source == self.id() {
            return Ok(self.read_local(lo, hi, after, bytes_max).await?);
        }
        let req = Request::StreamRead {
            lo,
            hi,
            after,
            bytes_max,
        };
        let (entries, more, crc) = self
            .rpc
            .call_for(
                source,
                req,
                STREAM_CALL_TIMEOUT,
                Response::into_stream_batch,
            )
            .await
            .map_err(|source_err| MovementError::Peer {
                node: source,
                source: source_err,
            })?;
        if stream_crc(&entries) != crc {
            metrics::counter!("ringkv_stream_checksum_failures_total").increment(1);
            return Err(MovementError::Checksum(source));
        }
        Ok((entries, more))
    }

    /// Merges a batch into `target`.
    async fn write_batch(
        self: &Arc<Self>,
        target: NodeId,
        entries: Entries,
    ) -> Result<(), MovementError> {
        if target == self.id() {
            return Ok(self.merge_local(entries).await?);
        }
        self.rpc
            .push_records(target, entries, STREAM_CALL_TIMEOUT)
            .await
            .map_err(|source| MovementError::Peer {
                node: target,
                source,
            })
    }

    /// Answers a peer's `StreamRead` (a `StreamPush` is checked and
    /// decoded by the node's handler, then given to [`Movements::merge_pushed`]).
    pub async fn answer(self: &Arc<Self>, req: Request) -> Response {
        match req {
            Request::StreamRead {
                lo,
                hi,
                after,
                bytes_max,
            } => match self.read_local(lo, hi, after, bytes_max).await {
                Ok((entries, more)) => {
                    let crc = stream_crc(&entries);
                    Response::StreamBatch { entries, more, crc }
                }
                Err(e) => Response::from(&e),
            },
            other => Response::error(ErrorDetail::InvalidArgument(format!(
                "not a stream request: {}",
                other.kind_name()
            ))),
        }
    }

    /// This replica's records of `[lo, hi]` after `after`, up to about
    /// `bytes_max` bytes; true when more follow.
    async fn read_local(
        self: &Arc<Self>,
        lo: Token,
        hi: Token,
        after: Option<(Token, Bytes)>,
        bytes_max: u32,
    ) -> Result<(Entries, bool), KvError> {
        read_replica_range(&self.replica, lo, hi, after, bytes_max).await
    }

    /// Merges streamed records into this replica.
    async fn merge_local(self: &Arc<Self>, entries: Entries) -> Result<(), KvError> {
        self.merge_pushed(entries, |_: &[u8], record: &Bytes| {
            Record::decode(record).map_err(|e| e.to_string())
        })
        .await
    }

    /// Merges a batch of records into this replica (a peer's `StreamPush`,
    /// its checksum checked), each decoded by `decode` first on the bulk
    /// pool; a record `decode` refuses refuses the whole batch.
    pub async fn merge_pushed(
        self: &Arc<Self>,
        entries: Entries,
        decode: impl Fn(&[u8], &Bytes) -> Result<Record, String> + Send + 'static,
    ) -> Result<(), KvError> {
        let failed = |e: crate::exec::BlockingError| {
            KvError::Storage(format!("stream merge task failed: {e}"))
        };
        let sets = crate::exec::bulk(move || {
            let mut sets = Vec::with_capacity(entries.len());
            for (key, record) in entries {
                let set = decode(&key, &record).map_err(|why| {
                    KvError::InvalidArgument(format!("streamed record refused: {why}"))
                })?;
                sets.push((key, set));
            }
            Ok::<_, KvError>(sets)
        })
        .await
        .map_err(failed)??;
        // Merged at normal priority: the merges take locks (the key's, the
        // log's) that client writes wait on.
        let replica = Arc::clone(&self.replica);
        crate::exec::blocking(move || replica.merge_batch(&sets))
            .await
            .map_err(failed)?
    }
}

/// A replica's records of `[lo, hi]` after `after` (a `(token, key)`
/// cursor), in token order, up to about `bytes_max` bytes (at least one
/// record); true when more follow. Read off the executor.
pub(crate) async fn read_replica_range<S: LocalStore>(
    replica: &Arc<crate::replica::LocalReplica<S>>,
    lo: Token,
    hi: Token,
    after: Option<(Token, Bytes)>,
    bytes_max: u32,
) -> Result<(Entries, bool), KvError> {
    if lo > hi {
        return Err(KvError::InvalidArgument(format!(
            "empty range [{lo}, {hi}]"
        )));
    }
    let replica = Arc::clone(replica);
    let budget = (bytes_max as usize).clamp(1, STREAM_BATCH_BYTES_MAX);
    crate::exec::blocking(move || {
        let start = after.as_ref().map_or(lo, |(t, _)| (*t).max(lo));
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        // The key of the last record read, when the truncation point hid it.
        let mut last_hidden: Option<Bytes> = None;
        replica
            .store()
            .scan_tokens(start, hi, true, &mut |key, record| {
                if let Some((t, k)) = &after
                    && (token_of(key), key) <= (*t, k.as_ref())
                {
                    return true;
                }
                if bytes >= budget {
                    more = true;
                    return false;
                }
                // What the truncation point hides is never streamed, but
                // counts against the budget (it was read).
                let Some(visible) = replica.visible_record(record.clone()) else {
                    bytes += key.len() + record.len();
                    last_hidden = Some(Bytes::copy_from_slice(key));
                    return true;
                };
                last_hidden = None;
                bytes += key.len() + visible.len();
                entries.push((Bytes::copy_from_slice(key), visible));
                true
            })
            .map_err(crate::replica::store_error)?;
        // A batch that ends on hidden records ends with an empty one in
        // their place, so the next batch starts after them (an empty
        // record merges as nothing and scans as a dead key).
        if more && let Some(key) = last_hidden {
            entries.push((key, Bytes::from(SiblingSet::default().encode())));
        }
        Ok((entries, more))
    })
    .await
    .map_err(|e| KvError::Storage(format!("stream read task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::VersionVector;
    use crate::replica::LocalReplica;
    use crate::store::MemStore;

    /// Records the truncation point hides count against a batch's budget,
    /// and a batch that ends on them moves the cursor past them.
    #[tokio::test]
    async fn hidden_records_are_read_within_the_budget_and_skipped() {
        let clock: ringkv_env::SharedClock = Arc::new(ringkv_env::ManualClock::new(10_000));
        let r = Arc::new(LocalReplica::new(1, MemStore::default(), clock, 64));
        let n = 500;
        for i in 0..n {
            let mut set = SiblingSet::default();
            // One in fifty written after the point.
            let hlc = if i % 50 == 0 {
                9_000 << 16
            } else {
                1_000 << 16
            };
            let value = Bytes::from(vec![b'v'; 100]);
            set.update(&VersionVector::new(), 2, hlc, Some(value), None);
            r.merge(format!("k{i}").as_bytes(), &Record::from(set.clone()))
                .expect("merge");
        }
        r.set_truncated_at(5_000 << 16);
        let (mut after, mut visible, mut batches) = (None, 0, 0);
        loop {
            let (entries, more) = read_replica_range(&r, 0, u64::MAX, after.clone(), 1_000)
                .await
                .expect("read");
            batches += 1;
            assert!(!entries.is_empty() || !more, "every batch moves on");
            for (key, record) in &entries {
                let set = SiblingSet::decode(record).expect("decodes");
                assert!(set.siblings.iter().all(|s| s.hlc > 5_000 << 16), "{key:?}");
                visible += usize::from(!set.siblings.is_empty());
            }
            let Some((key, _)) = entries.last() else {
                break;
            };
            after = Some((token_of(key), key.clone()));
            if !more {
                break;
            }
        }
        assert_eq!(visible, n / 50, "every visible record, once");
        assert!(
            batches > 10,
            "hidden records used the budget: {batches} batches"
        );
    }
}
