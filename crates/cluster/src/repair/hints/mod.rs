//! Hinted handoff: writes held for a replica that could not take them.
//!
//! When a replica of a key is down, the coordinator sends the new record to
//! a stand-in (the next healthy node on the ring walk, in the down node's
//! data center) with a hint naming the intended owner; when a replica is up
//! but fails to acknowledge, the coordinator keeps the hint itself. Hints
//! are durable (a separate store, see [`HintStore`]), bounded per target by
//! bytes and by age (what is refused or expired is counted), replayed at a
//! bounded rate once the owner is seen alive again, and deleted once the
//! owner acknowledges.
//!
//! # Hint keys (on disk in the hint engine: do not change)
//! ```text
//! key   := target:u64be created_ms:u64be seq:u64be
//! value := key_len:u32le key record
//! ```
//! so one target's hints are one contiguous range, oldest first.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::store::StoreError;
use crate::store::engine::engine_error;

mod replay;

pub use replay::Hints;

/// One stored hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The hint's own key in the hint store.
    pub id: Vec<u8>,
    pub target: u64,
    pub created_ms: u64,
    pub key: Bytes,
    pub record: Bytes,
}

/// Limits on held hints.
#[derive(Debug, Clone)]
pub struct HintConfig {
    /// Most bytes held for one target; later hints for it are refused.
    pub target_bytes_max: u64,
    /// Hints older than this are dropped instead of replayed, and none are
    /// taken for a target down longer than this.
    pub age_ms_max: u64,
    /// Most hints replayed per second (all targets together).
    pub replay_per_sec_max: u64,
    /// Hints fetched per replay step.
    pub replay_batch_max: usize,
}

impl Default for HintConfig {
    fn default() -> Self {
        Self {
            target_bytes_max: 256 * 1024 * 1024,
            age_ms_max: 3 * 3600 * 1000,
            replay_per_sec_max: 5_000,
            replay_batch_max: 128,
        }
    }
}

/// Counters of one target's hints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub count: u64,
    pub bytes: u64,
}

/// Why a hint was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The target's byte budget is used up.
    Full,
    /// Older than `age_ms_max` at replay.
    Expired,
}

/// The raw key-value space under the hints (an engine, or memory in tests).
pub trait HintSpace: Send + Sync + 'static {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    fn delete(&self, key: &[u8]) -> Result<(), StoreError>;
    /// Entries with keys in `[start, end)`, in key order, at most `limit`.
    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError>;
}

/// Durable, bounded hint storage.
pub struct HintStore {
    space: Box<dyn HintSpace>,
    config: HintConfig,
    pending: Mutex<BTreeMap<u64, Pending>>,
    seq: AtomicU64,
    dropped_full: AtomicU64,
    dropped_expired: AtomicU64,
}

fn hint_key(target: u64, created_ms: u64, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&target.to_be_bytes());
    k[8..16].copy_from_slice(&created_ms.to_be_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn decode(id: &[u8], value: &Bytes) -> Option<Hint> {
    let target = u64::from_be_bytes(id.get(..8)?.try_into().ok()?);
    let created_ms = u64::from_be_bytes(id.get(8..16)?.try_into().ok()?);
    let len = u32::from_le_bytes(value.get(..4)?.try_into().ok()?) as usize;
    let key_end = 4usize.checked_add(len)?;
    if key_end > value.len() {
        return None;
    }
    Some(Hint {
        id: id.to_vec(),
        target,
        created_ms,
        key: value.slice(4..key_end),
        record: value.slice(key_end..),
    })
}

impl HintStore {
    /// Opens the store over `space`, counting what it already holds.
    pub fn open(space: impl HintSpace, config: HintConfig) -> Result<Self, StoreError> {
        let store = Self {
            space: Box::new(space),
            config,
            pending: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_expired: AtomicU64::new(0),
        };
        let mut start = vec![0u8; 24];
        let end = vec![0xFFu8; 25];
        let mut max_seq = 0;
        loop {
            let batch = store.space.range(&start, &end, 1024)?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            let mut next = last.to_vec();
            next.push(0);
            for (id, value) in &batch {
                if let Some(h) = decode(id, value) {
                    let mut p = store.pending.lock();
                    let e = p.entry(h.target).or_default();
                    e.count += 1;
                    e.bytes += value.len() as u64;
                    max_seq = max_seq.max(u64::from_be_bytes(
                        id.get(16..24)
                            .and_then(|s| s.try_into().ok())
                            .unwrap_or([0; 8]),
                    ));
                }
            }
            start = next;
        }
        store.seq.store(max_seq + 1, Ordering::Relaxed);
        Ok(store)
    }

    /// An empty store in memory (tests, simulation, a node without a disk
    /// for hints).
    pub fn in_memory(config: HintConfig) -> Self {
        Self {
            space: Box::new(MemHints::default()),
            config,
            pending: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_expired: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &HintConfig {
        &self.config
    }

    /// Holds `record` of `key` for `target`. Returns `Ok(false)` when the
    /// target's budget refused it (counted).
    pub fn add(
        &self,
        target: u64,
        now_ms: u64,
        key: &[u8],
        record: &[u8],
    ) -> Result<bool, StoreError> {
        let size = (4 + key.len() + record.len()) as u64;
        {
            let p = self.pending.lock();
            let used = p.get(&target).map_or(0, |e| e.bytes);
            if used + size > self.config.target_bytes_max {
                drop(p);
                self.dropped_full.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ringkv_hints_dropped_total", "reason" => "full").increment(1);
                static GATE: ringkv_env::log_every::LogEvery =
                    ringkv_env::log_every::LogEvery::new(10_000);
                if let Some(held) = GATE.admit() {
                    tracing::warn!(
                        target = %crate::id::display(target),
                        budget_bytes = self.config.target_bytes_max,
                        held_back = held,
                        "hint dropped: the replica's hint budget is full; anti-entropy will repair it"
                    );
                }
                return Ok(false);
            }
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut value = Vec::with_capacity(size as usize);
        value.extend_from_slice(&(key.len() as u32).to_le_bytes());
        value.extend_from_slice(key);
        value.extend_from_slice(record);
        self.space.put(&hint_key(target, now_ms, seq), &value)?;
        let mut p = self.pending.lock();
        let e = p.entry(target).or_default();
        if e.count == 0 {
            tracing::info!(
                target = %crate::id::display(target),
                "holding hints for a replica that missed writes"
            );
        }
        e.count += 1;
        e.bytes += size;
        metrics::counter!("ringkv_hints_stored_total").increment(1);
        Ok(true)
    }

    /// The oldest hints held for `target`, at most `limit`.
    pub fn oldest(&self, target: u64, limit: usize) -> Result<Vec<Hint>, StoreError> {
        let start = hint_key(target, 0, 0);
        let end = match target.checked_add(1) {
            Some(t) => hint_key(t, 0, 0).to_vec(),
            None => vec![0xFF; 25],
        };
        Ok(self
            .space
            .range(&start, &end, limit)?
            .iter()
            .filter_map(|(id, v)| decode(id, v))
            .collect())
    }

    /// Deletes a hint (delivered, or dropped for `reason`).
    pub fn remove(&self, hint: &Hint, reason: Option<DropReason>) -> Result<(), StoreError> {
        self.space.delete(&hint.id)?;
        let size = (4 + hint.key.len() + hint.record.len()) as u64;
        let mut p = self.pending.lock();
        if let Some(e) = p.get_mut(&hint.target) {
            e.count = e.count.saturating_sub(1);
            e.bytes = e.bytes.saturating_sub(size);
            if e.count == 0 {
                p.remove(&hint.target);
                tracing::info!(
                    target = %crate::id::display(hint.target),
                    "every hint held for this replica delivered or dropped"
                );
            }
        }
        match reason {
            Some(DropReason::Expired) => {
                self.dropped_expired.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ringkv_hints_dropped_total", "reason" => "expired").increment(1);
            }
            Some(DropReason::Full) => {
                self.dropped_full.fetch_add(1, Ordering::Relaxed);
            }
            None => metrics::counter!("ringkv_hints_replayed_total").increment(1),
        }
        Ok(())
    }

    /// Hints held per target.
    pub fn pending(&self) -> Vec<(u64, Pending)> {
        self.pending.lock().iter().map(|(&t, &p)| (t, p)).collect()
    }

    /// Hints dropped so far: (budget full, expired).
    pub fn dropped(&self) -> (u64, u64) {
        (
            self.dropped_full.load(Ordering::Relaxed),
            self.dropped_expired.load(Ordering::Relaxed),
        )
    }
}

/// [`HintSpace`] over a storage engine of its own.
pub struct EngineHints {
    engine: ringkv_storage::Engine,
}

impl EngineHints {
    pub fn new(engine: ringkv_storage::Engine) -> Self {
        Self { engine }
    }

    pub fn engine(&self) -> &ringkv_storage::Engine {
        &self.engine
    }
}

impl HintSpace for EngineHints {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.engine.put(key, value, None).map_err(engine_error)
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.engine.delete(key).map_err(engine_error)
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let scan = self
            .engine
            .scan_bounds(Bound::Included(start), Bound::Excluded(end))
            .map_err(engine_error)?;
        let mut out = Vec::new();
        for item in scan.take(limit) {
            let (k, e) = item.map_err(engine_error)?;
            out.push((k, e.value));
        }
        Ok(out)
    }
}

/// [`HintSpace`] in memory, for tests and simulation.
#[derive(Default)]
pub struct MemHints {
    map: Mutex<BTreeMap<Vec<u8>, Bytes>>,
}

impl HintSpace for MemHints {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.map
            .lock()
            .insert(key.to_vec(), Bytes::copy_from_slice(value));
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.map.lock().remove(key);
        Ok(())
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        Ok(self
            .map
            .lock()
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .take(limit)
            .map(|(k, v)| (Bytes::copy_from_slice(k), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_bounded_ordered_and_counted() {
        let store = HintStore::open(
            MemHints::default(),
            HintConfig {
                target_bytes_max: 100,
                ..HintConfig::default()
            },
        )
        .expect("open");
        assert!(store.add(7, 10, b"a", &[1; 20]).expect("add"));
        assert!(store.add(7, 11, b"b", &[2; 20]).expect("add"));
        assert!(store.add(9, 12, b"c", &[3; 20]).expect("add"));
        // 2 x 25 bytes held for 7; 60 more would pass 100.
        assert!(!store.add(7, 13, b"d", &[4; 60]).expect("refused"));
        assert_eq!(store.dropped(), (1, 0));
        let p: BTreeMap<_, _> = store.pending().into_iter().collect();
        assert_eq!(
            p[&7],
            Pending {
                count: 2,
                bytes: 50
            }
        );
        assert_eq!(
            p[&9],
            Pending {
                count: 1,
                bytes: 25
            }
        );
        let hints = store.oldest(7, 10).expect("oldest");
        assert_eq!(hints.len(), 2);
        assert_eq!(
            (hints[0].key.as_ref(), hints[0].created_ms),
            (&b"a"[..], 10)
        );
        assert_eq!(hints[1].record.as_ref(), &[2; 20][..]);
        store.remove(&hints[0], None).expect("remove");
        store
            .remove(&hints[1], Some(DropReason::Expired))
            .expect("remove");
        assert_eq!(store.dropped(), (1, 1));
        assert!(store.oldest(7, 10).expect("oldest").is_empty());
        assert_eq!(store.pending().len(), 1);
    }

    #[test]
    fn hints_survive_reopen_on_an_engine() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let engine =
                ringkv_storage::Engine::open(dir.path(), ringkv_storage::Options::default())
                    .expect("open");
            let store = HintStore::open(EngineHints::new(engine.clone()), HintConfig::default())
                .expect("hints");
            for i in 0..10u8 {
                store.add(u64::MAX, 100, &[i], b"record").expect("add");
            }
            engine.close().expect("close");
        }
        let engine = ringkv_storage::Engine::open(dir.path(), ringkv_storage::Options::default())
            .expect("open");
        let store =
            HintStore::open(EngineHints::new(engine), HintConfig::default()).expect("hints");
        assert_eq!(
            store.pending(),
            vec![(
                u64::MAX,
                Pending {
                    count: 10,
                    bytes: 110
                }
            )]
        );
        let hints = store.oldest(u64::MAX, 100).expect("oldest");
        assert_eq!(hints.len(), 10);
        assert_eq!(hints[3].key.as_ref(), &[3u8][..]);
        // New hints continue the sequence rather than overwrite.
        store.add(u64::MAX, 100, b"new", b"r").expect("add");
        assert_eq!(store.oldest(u64::MAX, 100).expect("oldest").len(), 11);
    }
}
