//! The record cache: the newest encoded record of each key this node holds,
//! in memory, so the read before every write and the reads of hot keys
//! never search the store's tables.
//!
//! Kept by [`crate::replica::LocalReplica`] and only through it: every
//! change of a record on this node (a client write, a merge from a peer,
//! a purge, a cleanup) goes through the replica, which writes the store and
//! then this cache under the key's lock. Reads that miss fill it from the
//! store, guarded against racing writes (below).
//!
//! - **Memory.** Each entry costs its key, its record and
//!   [`ENTRY_OVERHEAD_BYTES`] of bookkeeping; the whole cache at most
//!   `bytes_max` (`[storage] record_cache_bytes`). Past it, random entries of
//!   the shard are evicted: hot keys come back on their next read; a node
//!   holding many times its memory keeps working from its tables.
//! - **Complete.** At start the cache is filled from the store
//!   ([`RecordCache::warm`]); when everything fit and nothing has been
//!   evicted since, the cache holds every key, and a miss is an answer (the
//!   key is absent: a write to a new key reads nothing from the store). The
//!   first eviction ends that for the life of the process.
//! - **Racing fills.** A read that missed takes its shard's write count
//!   before reading the store, and fills only if no write reached the shard
//!   in between: a record read before a write is never put back over it.
//! - **What it may hold that the store no longer does**: a record the
//!   store's compaction has purged (a tombstone past its grace period, an
//!   expired value) or pruned (version-vector entries of departed nodes).
//!   Either is an older form of the same history: a write that reads it
//!   supersedes more, never less; readers drop what the truncation point
//!   hides from cached records as from stored ones.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use indexmap::IndexMap;
use parking_lot::Mutex;

/// Shards (each with its own lock); a power of two.
const SHARDS: usize = 64;
/// Write counters per shard, so a fill is refused only by a write to a key
/// of the same stripe (1/4096 of the keys), not of the whole shard.
const WRITE_STRIPES: usize = 64;
/// Bookkeeping of one entry beyond its key and record bytes: the map's
/// entry (two `Bytes` handles and the hash), its index slot and the spare
/// room of both, the key's allocation.
pub const ENTRY_OVERHEAD_BYTES: usize = 160;
/// Records larger than this are not cached (a few large values must not
/// evict many small ones); reads of them search the store.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

/// What the cache answers for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// The key's record.
    Record(Bytes),
    /// The cache is complete and the key is not in it: the store holds no
    /// record of it.
    Absent,
    /// Not known here: ask the store (then [`RecordCache::fill`] with
    /// `writes`, the count of writes to the key's stripe until now).
    Unknown { writes: u64 },
}

/// xxh3 of a key, for the shards' maps.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 ^= n as u64;
    }
}

type Map = IndexMap<Bytes, Bytes, BuildHasherDefault<KeyHasher>>;

struct Shard {
    map: Map,
    bytes: usize,
    /// Writes (puts and removes) that reached each stripe of this shard.
    writes: [u64; WRITE_STRIPES],
    /// State of the eviction's random draw (xorshift).
    draw: u64,
}

/// Figures of the cache, for `INFO`, `/v1/status` and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCacheStats {
    pub entries: u64,
    pub bytes: u64,
    pub bytes_max: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub complete: bool,
}

/// See the module documentation.
pub struct RecordCache {
    shards: Box<[Mutex<Shard>]>,
    shard_bytes_max: usize,
    bytes_max: usize,
    complete: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

fn entry_bytes(key: &[u8], record: &[u8]) -> usize {
    key.len() + record.len() + ENTRY_OVERHEAD_BYTES
}

impl RecordCache {
    /// A cache of at most `bytes_max` bytes (0: off, every read asks the
    /// store). Incomplete until [`RecordCache::warm`] finds that
    /// everything fits.
    pub fn new(bytes_max: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|i| {
                    Mutex::new(Shard {
                        map: Map::default(),
                        bytes: 0,
                        writes: [0; WRITE_STRIPES],
                        draw: 0x9e37_79b9_7f4a_7c15 ^ i as u64,
                    })
                })
                .collect(),
            shard_bytes_max: bytes_max / SHARDS,
            bytes_max,
            complete: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn enabled(&self) -> bool {
        self.shard_bytes_max > 0
    }

    /// The key's shard and write stripe: from the low bits of its hash
    /// (the high bits are its ring token, which a node holds only ranges
    /// of: shards by them would fill unevenly).
    fn place(&self, key: &[u8]) -> (&Mutex<Shard>, usize) {
        let h = xxhash_rust::xxh3::xxh3_64(key) as usize;
        (&self.shards[h % SHARDS], (h / SHARDS) % WRITE_STRIPES)
    }

    /// What the cache knows of `key`.
    pub fn get(&self, key: &[u8]) -> Cached {
        if !self.enabled() {
            return Cached::Unknown { writes: 0 };
        }
        let (shard, stripe) = self.place(key);
        let shard = shard.lock();
        if let Some(record) = shard.map.get(key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Cached::Record(record.clone());
        }
        if self.complete.load(Ordering::Acquire) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Cached::Absent;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        Cached::Unknown {
            writes: shard.writes[stripe],
        }
    }

    /// After a miss: keeps what the store answered, unless a write reached
    /// the key's stripe since the miss (`writes` from [`Cached::Unknown`]).
    pub fn fill(&self, key: &[u8], record: Option<&Bytes>, writes: u64) {
        let Some(record) = record else {
            return;
        };
        if !self.enabled() || record.len() > RECORD_BYTES_MAX {
            return;
        }
        let (shard, stripe) = self.place(key);
        let mut shard = shard.lock();
        if shard.writes[stripe] != writes || shard.map.contains_key(key) {
            return;
        }
        // A copy: the store's answer may be a slice of a whole table block.
        self.insert_locked(&mut shard, key, Bytes::copy_from_slice(record));
    }

    /// The record of `key` is now `record` (the store holds it).
    pub fn put(&self, key: &[u8], record: Bytes) {
        if !self.enabled() {
            return;
        }
        let (shard, stripe) = self.place(key);
        let mut shard = shard.lock();
        shard.writes[stripe] += 1;
        if record.len() > RECORD_BYTES_MAX {
            self.remove_locked(&mut shard, key);
            // Not cached, so a miss is no longer an answer.
            self.complete.store(false, Ordering::Release);
            return;
        }
        self.insert_locked(&mut shard, key, record);
    }

    /// What the store holds for `key` is not known (a write to it failed:
    /// it may hold the old record or the new one): the entry goes, and
    /// misses are no longer answers, so reads ask the store.
    pub fn forget(&self, key: &[u8]) {
        // Incomplete first: no reader may take the removal for "absent".
        self.complete.store(false, Ordering::Release);
        self.remove(key);
    }

    /// The store holds no record of `key` any more.
    pub fn remove(&self, key: &[u8]) {
        if !self.enabled() {
            return;
        }
        let (shard, stripe) = self.place(key);
        let mut shard = shard.lock();
        shard.writes[stripe] += 1;
        self.remove_locked(&mut shard, key);
    }

    fn remove_locked(&self, shard: &mut Shard, key: &[u8]) {
        if let Some((k, v)) = shard.map.swap_remove_entry(key) {
            shard.bytes -= entry_bytes(&k, &v);
        }
    }

    fn insert_locked(&self, shard: &mut Shard, key: &[u8], record: Bytes) {
        let added = entry_bytes(key, &record);
        if let Some(slot) = shard.map.get_mut(key) {
            shard.bytes = shard.bytes - (key.len() + slot.len()) + (key.len() + record.len());
            *slot = record;
        } else {
            shard.map.insert(Bytes::copy_from_slice(key), record);
            shard.bytes += added;
        }
        while shard.bytes > self.shard_bytes_max && !shard.map.is_empty() {
            shard.draw ^= shard.draw << 13;
            shard.draw ^= shard.draw >> 7;
            shard.draw ^= shard.draw << 17;
            let victim = (shard.draw % shard.map.len() as u64) as usize;
            if let Some((k, v)) = shard.map.swap_remove_index(victim) {
                shard.bytes -= entry_bytes(&k, &v);
                self.evictions.fetch_add(1, Ordering::Relaxed);
                self.complete.store(false, Ordering::Release);
            }
        }
    }

    /// Fills the cache from `records` (every record of the store, visited
    /// before the node serves anything) until it is full. When all fit,
    /// the cache is complete. Returns whether it is.
    pub fn warm(
        &self,
        records: impl FnOnce(&mut dyn FnMut(&[u8], &Bytes) -> bool) -> bool,
    ) -> bool {
        if !self.enabled() {
            return false;
        }
        let mut all_fit = true;
        // Once something did not fit, the walk goes on only to fill the
        // other shards, and at most over twice the capacity in records.
        let mut visited = 0usize;
        let walked = records(&mut |key, record| {
            visited += entry_bytes(key, record);
            if !all_fit && visited > self.bytes_max.saturating_mul(2) {
                return false;
            }
            if record.len() > RECORD_BYTES_MAX {
                all_fit = false;
                return true;
            }
            let (shard, _) = self.place(key);
            let mut shard = shard.lock();
            if shard.bytes + entry_bytes(key, record) > self.shard_bytes_max {
                all_fit = false;
                return true;
            }
            if !shard.map.contains_key(key) {
                self.insert_locked(&mut shard, key, Bytes::copy_from_slice(record));
            }
            true
        });
        let complete = walked && all_fit && self.evictions.load(Ordering::Acquire) == 0;
        self.complete.store(complete, Ordering::Release);
        complete
    }

    /// Drops every entry and ends completeness (the truncation point rose:
    /// the records it hides go from memory; misses ask the store).
    pub fn clear(&self) {
        self.complete.store(false, Ordering::Release);
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.map = Map::default();
            shard.bytes = 0;
            for w in shard.writes.iter_mut() {
                *w += 1;
            }
        }
    }

    pub fn stats(&self) -> RecordCacheStats {
        let (mut entries, mut bytes) = (0u64, 0u64);
        for s in self.shards.iter() {
            let s = s.lock();
            entries += s.map.len() as u64;
            bytes += s.bytes as u64;
        }
        RecordCacheStats {
            entries,
            bytes,
            bytes_max: self.bytes_max as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            complete: self.complete.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_put_is_read_back_and_a_remove_forgets_it() {
        let c = RecordCache::new(1 << 20);
        assert!(matches!(c.get(b"k"), Cached::Unknown { .. }));
        c.put(b"k", b("v1"));
        assert_eq!(c.get(b"k"), Cached::Record(b("v1")));
        c.put(b"k", b("v2"));
        assert_eq!(c.get(b"k"), Cached::Record(b("v2")));
        c.remove(b"k");
        assert!(matches!(c.get(b"k"), Cached::Unknown { .. }));
        let s = c.stats();
        assert_eq!((s.entries, s.bytes), (0, 0));
    }

    #[test]
    fn a_fill_from_before_a_write_is_not_kept() {
        let c = RecordCache::new(1 << 20);
        let Cached::Unknown { writes } = c.get(b"k") else {
            panic!("a miss")
        };
        // A write lands between the miss and the store's (older) answer.
        c.put(b"k", b("new"));
        c.fill(b"k", Some(&b("old")), writes);
        assert_eq!(c.get(b"k"), Cached::Record(b("new")));
        // Removed while a reader was at the store: its answer is dropped.
        let Cached::Unknown { writes } = c.get(b"x") else {
            panic!("a miss")
        };
        c.remove(b"x");
        c.fill(b"x", Some(&b("gone")), writes);
        assert!(matches!(c.get(b"x"), Cached::Unknown { .. }));
        // Nothing in between: kept.
        let Cached::Unknown { writes } = c.get(b"y") else {
            panic!("a miss")
        };
        c.fill(b"y", Some(&b("y1")), writes);
        assert_eq!(c.get(b"y"), Cached::Record(b("y1")));
    }

    #[test]
    fn a_warm_cache_that_holds_everything_answers_misses() {
        let c = RecordCache::new(1 << 20);
        let stored = [(b("a"), b("1")), (b("b"), b("2"))];
        let complete = c.warm(|visit| stored.iter().all(|(k, v)| visit(k, v)));
        assert!(complete);
        assert_eq!(c.get(b"a"), Cached::Record(b("1")));
        assert_eq!(c.get(b"zz"), Cached::Absent);
        c.put(b"new", b("3"));
        c.remove(b"a");
        assert_eq!(c.get(b"a"), Cached::Absent);
        assert_eq!(c.get(b"new"), Cached::Record(b("3")));
    }

    #[test]
    fn past_its_limit_it_evicts_and_stops_answering_misses() {
        // 64 shards of 1 KiB: a few entries each.
        let c = RecordCache::new(64 * 1024);
        assert!(c.warm(|_| true));
        for i in 0..10_000 {
            c.put(format!("key{i}").as_bytes(), Bytes::from(vec![7u8; 100]));
        }
        let s = c.stats();
        assert!(s.bytes <= s.bytes_max, "{s:?}");
        assert!(s.evictions > 9_000, "{s:?}");
        assert!(!s.complete);
        let known = (0..10_000)
            .filter(|i| matches!(c.get(format!("key{i}").as_bytes()), Cached::Record(_)))
            .count();
        assert_eq!(known as u64, s.entries);
        assert!(matches!(c.get(b"never"), Cached::Unknown { .. }));
    }

    #[test]
    fn a_warm_that_does_not_fit_leaves_it_incomplete() {
        let c = RecordCache::new(64 * 1024);
        let big: Vec<(Bytes, Bytes)> = (0..5_000)
            .map(|i| (Bytes::from(format!("key{i}")), Bytes::from(vec![1u8; 100])))
            .collect();
        assert!(!c.warm(|visit| big.iter().all(|(k, v)| visit(k, v))));
        assert!(!c.stats().complete);
        assert!(c.stats().bytes <= 64 * 1024);
    }

    #[test]
    fn large_records_are_not_cached() {
        let c = RecordCache::new(1 << 30);
        assert!(c.warm(|_| true));
        c.put(b"big", Bytes::from(vec![0u8; RECORD_BYTES_MAX + 1]));
        assert!(matches!(c.get(b"big"), Cached::Unknown { .. }));
        assert!(!c.stats().complete, "a miss is no longer an answer");
    }

    /// A write the store failed leaves the store's record unknown: the
    /// cache must not answer "absent" for it.
    #[test]
    fn a_forgotten_key_is_asked_of_the_store() {
        let c = RecordCache::new(1 << 20);
        assert!(c.warm(|_| true));
        c.put(b"k", b("v1"));
        c.forget(b"k");
        assert!(matches!(c.get(b"k"), Cached::Unknown { .. }));
        assert!(matches!(c.get(b"other"), Cached::Unknown { .. }));
        assert!(!c.stats().complete);
    }

    /// A warm that meets a full shard goes on filling the others.
    #[test]
    fn a_warm_past_one_full_shard_fills_the_others() {
        let c = RecordCache::new(64 * 4096);
        let records: Vec<(Bytes, Bytes)> = (0..20_000)
            .map(|i| (Bytes::from(format!("key{i}")), Bytes::from(vec![1u8; 100])))
            .collect();
        assert!(!c.warm(|visit| records.iter().all(|(k, v)| visit(k, v))));
        let s = c.stats();
        assert!(s.bytes * 10 >= s.bytes_max * 9, "filled: {s:?}");
        assert_eq!(s.evictions, 0);
    }

    #[test]
    fn a_cleared_cache_asks_the_store() {
        let c = RecordCache::new(1 << 20);
        assert!(c.warm(|_| true));
        c.put(b"k", b("v"));
        assert_eq!(c.get(b"other"), Cached::Absent);
        c.clear();
        assert!(matches!(c.get(b"k"), Cached::Unknown { .. }));
        assert!(matches!(c.get(b"other"), Cached::Unknown { .. }));
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn a_cache_of_zero_bytes_is_off() {
        let c = RecordCache::new(0);
        assert!(!c.warm(|_| true));
        c.put(b"k", b("v"));
        assert!(matches!(c.get(b"k"), Cached::Unknown { .. }));
    }
}
