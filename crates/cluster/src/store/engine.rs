//! [`LocalStore`] over ringkv's LSM engine.

use bytes::Bytes;

use super::{LocalStore, Pruner, StoreError, StoreFigure, SyncedAt};
use crate::causality::types::Record;

/// [`LocalStore`] over ringkv's LSM engine.
///
/// # Engine keys (on disk: do not change)
/// A user key is stored under `token:u64be ++ key`, where `token =
/// xxh3_64(key)` (see [`crate::ring::token_of`]). Records are thus ordered by
/// token, so a token range (what anti-entropy compares and what streaming
/// moves) is one contiguous scan of the engine.
///
/// Installs the compaction filter through which the cluster purges its own
/// dead records (every sibling deleted or expired) once the tombstone grace
/// period has passed and anti-entropy has synced the record's range with
/// every replica since its last write (see [`crate::repair::anti_entropy`]). Until
/// the node installs its ledger ([`LocalStore::set_synced_at`]) nothing is
/// purged.
pub struct EngineStore {
    engine: ringkv_storage::Engine,
    blocking: bool,
    filter: std::sync::Arc<GraceFilter>,
}

struct GraceFilter {
    clock: ringkv_env::SharedClock,
    grace_ms: u64,
    synced_at: parking_lot::RwLock<Option<SyncedAt>>,
    pruner: parking_lot::RwLock<Option<Pruner>>,
    /// The truncation point (0: none): siblings at or before it go.
    truncated_at: std::sync::atomic::AtomicU64,
}

impl ringkv_storage::CompactionFilter for GraceFilter {
    fn decide(
        &self,
        key: &[u8],
        value: &[u8],
        _expires_at_ms: Option<u64>,
    ) -> ringkv_storage::FilterDecision {
        use ringkv_storage::FilterDecision;
        // Records that do not decode are never purged nor rewritten: they
        // are reported, not destroyed.
        let Ok(mut record) = Record::decode(&Bytes::copy_from_slice(value)) else {
            return FilterDecision::Keep;
        };
        let Some(token) = key
            .split_first_chunk::<8>()
            .map(|(t, _)| u64::from_be_bytes(*t))
        else {
            return FilterDecision::Keep;
        };
        let at = self.truncated_at.load(std::sync::atomic::Ordering::Acquire);
        let truncated = record.drop_truncated(at);
        if at > 0 && record.is_void() {
            // Nothing left but a vector of truncated events.
            return FilterDecision::Remove;
        }
        let synced_at = || self.synced_at.read().as_ref().and_then(|f| f(token));
        if crate::causality::purge::dead_record_with_types_purgeable(
            &record,
            self.clock.now_ms(),
            self.grace_ms,
            synced_at,
        ) {
            return FilterDecision::Remove;
        }
        // Records with data types keep their vector whole (their set and
        // hash components read it).
        let pruned = record.strings_only()
            && self
                .pruner
                .read()
                .as_ref()
                .is_some_and(|p| p(token, &mut record.strings));
        if pruned || truncated {
            FilterDecision::Replace(Bytes::from(record.encode()))
        } else {
            FilterDecision::Keep
        }
    }
}

/// A storage engine error as the cluster sees it.
pub(crate) fn engine_error(e: ringkv_storage::Error) -> StoreError {
    match e {
        ringkv_storage::Error::ReadOnly { cause } => StoreError::ReadOnly(cause),
        e @ ringkv_storage::Error::Corruption { .. } => StoreError::Corruption(e.to_string()),
        other => StoreError::Other(other.to_string()),
    }
}

impl EngineStore {
    pub fn new(
        engine: ringkv_storage::Engine,
        clock: ringkv_env::SharedClock,
        tombstone_grace_ms: u64,
        blocking: bool,
    ) -> Self {
        let filter = std::sync::Arc::new(GraceFilter {
            clock,
            grace_ms: tombstone_grace_ms,
            synced_at: parking_lot::RwLock::new(None),
            pruner: parking_lot::RwLock::new(None),
            truncated_at: std::sync::atomic::AtomicU64::new(0),
        });
        engine.set_compaction_filter(filter.clone());
        Self {
            engine,
            blocking,
            filter,
        }
    }

    pub fn engine(&self) -> &ringkv_storage::Engine {
        &self.engine
    }

    /// Syncs the log and stops the engine's background work.
    pub fn close(&self) -> Result<(), StoreError> {
        self.engine.close().map_err(engine_error)
    }
}

/// The engine key of a user key: its token, big-endian, then the key.
pub fn engine_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&crate::ring::token_of(key).to_be_bytes());
    k.extend_from_slice(key);
    k
}

impl LocalStore for EngineStore {
    fn checkpoint(&self, dest: &std::path::Path) -> Result<ringkv_storage::Checkpoint, StoreError> {
        self.engine.checkpoint(dest).map_err(engine_error)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        self.engine
            .get(&engine_key(key))
            .map(|e| e.map(|e| e.value))
            .map_err(engine_error)
    }

    fn put(&self, key: &[u8], record: &[u8]) -> Result<(), StoreError> {
        // The engine is never told an expiry: if it dropped an expired
        // record on its own, a replica that missed the expiring write could
        // hand its older value back through anti-entropy. Expired records
        // are dead records, purged by the compaction filter under the same
        // rule as tombstones (grace period, then every replica synced).
        self.engine
            .put(&engine_key(key), record, None)
            .map_err(engine_error)
    }

    fn put_buffered(&self, key: &[u8], record: &[u8]) -> Result<(), StoreError> {
        // Expiry: as in `put`.
        self.engine
            .put_buffered(&engine_key(key), record, None)
            .map_err(engine_error)
    }

    fn release_buffered(&self) -> Result<(), StoreError> {
        self.engine.release_buffered().map_err(engine_error)
    }

    fn has_buffered(&self) -> bool {
        self.engine.has_buffered_writes()
    }

    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.engine.delete(&engine_key(key)).map_err(engine_error)
    }

    fn scan_tokens(
        &self,
        start: u64,
        end: u64,
        include_start: bool,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> bool,
    ) -> Result<(), StoreError> {
        use std::ops::Bound;
        let lower = start.to_be_bytes();
        // Every key of token `end` sorts below `end + 1`; at u64::MAX the
        // scan runs to the end.
        let upper = end.checked_add(1).map(u64::to_be_bytes);
        let scan = self
            .engine
            .scan_bounds(
                Bound::Included(&lower[..]),
                match &upper {
                    Some(u) => Bound::Excluded(&u[..]),
                    None => Bound::Unbounded,
                },
            )
            .map_err(engine_error)?;
        for item in scan {
            let (ekey, entry) = item.map_err(engine_error)?;
            let Some((token, key)) = ekey.split_first_chunk::<8>() else {
                return Err(StoreError::Corruption(
                    "engine key shorter than its token prefix".into(),
                ));
            };
            if !include_start && u64::from_be_bytes(*token) == start {
                continue;
            }
            if !visit(key, &entry.value) {
                break;
            }
        }
        Ok(())
    }

    fn stats(&self) -> Vec<StoreFigure> {
        let s = self.engine.stats();
        let g = |name, value: u64, help| StoreFigure::gauge(name, value as f64, help);
        let c = StoreFigure::counter;
        vec![
            g(
                "disk_bytes",
                s.disk_bytes,
                "Bytes on disk: tables, commit log and manifest",
            ),
            g(
                "table_bytes",
                s.table_bytes,
                "Bytes of tables (SSTables) on disk",
            ),
            g(
                "log_bytes",
                s.log_bytes,
                "Bytes of commit log not yet flushed to tables",
            ),
            g(
                "memtable_bytes",
                s.memtable_bytes,
                "Bytes held in memtables",
            ),
            g(
                "table_memory_bytes",
                s.table_memory_bytes,
                "Bytes of table indexes and bloom filters held in memory",
            ),
            g(
                "pending_compaction_bytes",
                s.pending_compaction_bytes,
                "Bytes compaction would rewrite to bring every level under its target",
            ),
            g(
                "block_cache_bytes",
                s.block_cache_bytes,
                "Bytes held in the block cache",
            ),
            g(
                "block_cache_capacity_bytes",
                s.block_cache_capacity_bytes,
                "The block cache's capacity in bytes",
            ),
            c(
                "block_cache_hits",
                s.block_cache_hits,
                "Block lookups answered by the cache",
            ),
            c(
                "block_cache_misses",
                s.block_cache_misses,
                "Block lookups that read the disk",
            ),
            c(
                "block_reads",
                s.block_reads,
                "Data blocks read from disk by reads and scans",
            ),
            c(
                "log_writes",
                s.log_writes,
                "Writes to the commit log (groups and buffers)",
            ),
            c("log_syncs", s.log_syncs, "Commit log syncs (fsync)"),
            c(
                "log_written_bytes",
                s.log_bytes_written,
                "Bytes written to the commit log",
            ),
            c("flushes", s.flushes, "Memtables flushed to tables"),
            c("compactions", s.compactions, "Compactions finished"),
            c(
                "write_stalls",
                s.write_stalls,
                "Writes that waited for a flush or compaction",
            ),
            StoreFigure {
                name: "write_stall_seconds",
                value: s.write_stall_total_us as f64 / 1e6,
                kind: crate::store::FigureKind::Counter,
                help: "Seconds writes spent waiting for a flush or compaction",
            },
            g(
                "live_entries_estimate",
                s.live_keys_estimate,
                "Table and memtable entries minus tombstones: an upper bound on keys \
                 (a key overwritten in two levels counts twice); ringkv_keys is exact",
            ),
            StoreFigure::gauge(
                "write_amplification_ratio",
                s.write_amplification,
                "Bytes written to disk (log, flushes, compactions) per byte written by clients",
            ),
            StoreFigure::gauge(
                "space_amplification_ratio",
                s.space_amplification,
                "Table bytes per byte of the last level",
            ),
            g(
                "read_only",
                u64::from(s.read_only),
                "1 when writes are refused after a failed write to disk",
            ),
        ]
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.engine.sync().map_err(engine_error)
    }

    fn blocking_writes(&self) -> bool {
        self.blocking
    }

    fn set_synced_at(&self, synced_at: SyncedAt) {
        *self.filter.synced_at.write() = Some(synced_at);
    }

    fn set_truncated_at(&self, at: crate::causality::Hlc) {
        self.filter
            .truncated_at
            .fetch_max(at, std::sync::atomic::Ordering::AcqRel);
    }

    fn compact(&self) -> Result<bool, StoreError> {
        self.engine.compact().map_err(engine_error)?;
        Ok(true)
    }

    fn set_pruner(&self, pruner: Pruner) {
        *self.filter.pruner.write() = Some(pruner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::token_of;

    fn store(dir: &std::path::Path) -> EngineStore {
        let engine =
            ringkv_storage::Engine::open(dir, ringkv_storage::Options::default()).expect("open");
        EngineStore::new(engine, ringkv_env::SystemClock::shared(), 1_000, false)
    }

    #[test]
    fn expired_records_are_left_to_the_cluster_not_dropped_by_the_engine() {
        use crate::causality::{SiblingSet, VersionVector};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let mut set = SiblingSet::default();
        set.update(
            &VersionVector::new(),
            1,
            1 << 16,
            Some(Bytes::from_static(b"v")),
            Some(1_000),
        );
        // Expired long ago: an engine TTL would drop it at once.
        s.put(b"k", &set.encode()).expect("put");
        s.engine().flush().expect("flush");
        s.engine().compact().expect("compact");
        let rec = s.get(b"k").expect("get").expect("record kept");
        let back = SiblingSet::decode(&rec).expect("decode");
        assert!(back.is_dead(2_000), "still dead to readers");
        assert_eq!(
            back, set,
            "the record (and its version) survives compaction"
        );
    }

    /// Compaction applies the truncation point to records with data
    /// types too: one written before it goes, one written after it stays.
    #[test]
    fn compaction_truncates_records_with_data_types() {
        use crate::causality::types::{EntryId, Record};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let counter = |ms: u64| {
            let mut rec = Record::default();
            (rec.counter.state)
                .increment(EntryId { actor: 1, epoch: 1 }, 3, ms << 16, 100)
                .expect("in range");
            rec.counter.hlc = ms << 16;
            rec
        };
        s.put(b"old", &counter(1_000).encode()).expect("put");
        s.put(b"new", &counter(3_000).encode()).expect("put");
        s.set_truncated_at(2_000 << 16);
        s.engine().flush().expect("flush");
        s.engine().compact().expect("compact");
        assert_eq!(s.get(b"old").expect("get"), None);
        let new = s.get(b"new").expect("get").expect("kept");
        assert_eq!(Record::decode(&new).expect("decode"), counter(3_000));
    }

    /// Compaction rewrites a quiet, synced record without the entry of a
    /// node that left; a record still carrying that node's sibling keeps it.
    #[test]
    fn compaction_prunes_the_entries_of_departed_nodes() {
        use crate::causality::{SiblingSet, VersionVector};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let departed = 9;
        // Written by node 9, then superseded by node 1: 9 covers nothing live.
        let mut pruned = SiblingSet::default();
        pruned.update(
            &VersionVector::new(),
            departed,
            1 << 16,
            Some(Bytes::from_static(b"old")),
            None,
        );
        let ctx = pruned.vv.clone();
        pruned.update(&ctx, 1, 2 << 16, Some(Bytes::from_static(b"new")), None);
        // Node 9's write is still live here.
        let mut kept = SiblingSet::default();
        kept.update(
            &VersionVector::new(),
            departed,
            1 << 16,
            Some(Bytes::from_static(b"live")),
            None,
        );
        s.put(b"pruned", &pruned.encode()).expect("put");
        s.put(b"kept", &kept.encode()).expect("put");
        s.set_pruner(std::sync::Arc::new(move |_, set| {
            crate::causality::purge::prune_departed(
                set,
                10_000,
                1_000,
                |a| a == departed,
                || Some(9_000),
            )
        }));
        s.engine().flush().expect("flush");
        s.engine().compact().expect("compact");
        let get = |k: &[u8]| {
            SiblingSet::decode(&s.get(k).expect("get").expect("record")).expect("decode")
        };
        let after = get(b"pruned");
        assert_eq!(after.vv.get(departed), 0, "the departed entry is gone");
        assert_eq!(after.vv.get(1), pruned.vv.get(1));
        assert_eq!(after.siblings, pruned.siblings);
        assert_eq!(
            get(b"kept"),
            kept,
            "a live sibling of the departed node keeps its entry"
        );
        assert!(s.engine().stats().filter_replaced >= 1);
    }

    #[test]
    fn token_ranges_scan_in_token_order_with_exact_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let keys: Vec<Vec<u8>> = (0..300u32)
            .map(|i| format!("key{i}").into_bytes())
            .collect();
        for k in &keys {
            s.put(k, b"rec").expect("put");
        }
        assert_eq!(s.get(b"key7").expect("get").as_deref(), Some(&b"rec"[..]));
        let mut tokens: Vec<u64> = keys.iter().map(|k| token_of(k)).collect();
        tokens.sort_unstable();
        // A range (start, end] picked between two stored tokens.
        let (start, end) = (tokens[50], tokens[120]);
        let mut seen = Vec::new();
        s.scan_tokens(start, end, false, &mut |k, _| {
            seen.push(token_of(k));
            true
        })
        .expect("scan");
        assert_eq!(
            seen,
            tokens[51..=120].to_vec(),
            "(start, end], in token order"
        );
        let mut seen = Vec::new();
        s.scan_tokens(start, end, true, &mut |k, _| {
            seen.push(token_of(k));
            true
        })
        .expect("scan");
        assert_eq!(seen, tokens[50..=120].to_vec(), "[start, end]");
        let mut all = 0;
        s.for_each(&mut |_, _| {
            all += 1;
            true
        })
        .expect("all");
        assert_eq!(all, 300);
        // Stopping early stops.
        let mut two = 0;
        s.for_each(&mut |_, _| {
            two += 1;
            two < 2
        })
        .expect("stop");
        assert_eq!(two, 2);
    }
}
