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
//! - **Memory.** Each entry costs its record and [`ENTRY_OVERHEAD_BYTES`]
//!   of bookkeeping (a key is known by its 128-bit hash, not stored); the
//!   whole cache at most `bytes_max` (`[storage] record_cache_bytes`). Past
//!   it, random entries of the shard are evicted: hot keys come back on
//!   their next read; a node holding many times its memory keeps working
//!   from its tables.
//! - **Complete.** At start the cache is filled from the store
//!   ([`RecordCache::warm`]); when everything fit and nothing has been
//!   evicted since, the cache holds every key, and a miss is an answer (the
//!   key is absent: a write to a new key reads nothing from the store). The
//!   first eviction ends that for the life of the process.
//! - **Racing fills.** A read that missed takes its shard's write count
//!   before reading the store, and fills only if no write reached the shard
//!   in between: a record read before a write is never put back over it.
//! - **Pipelines.** [`RecordCache::prefetch`] looks up the keys of a
//!   pipeline together before its requests run one by one: each lookup is
//!   a few dependent memory reads, and taken back to back with no lock in
//!   between, the processor overlaps those of different keys.
//! - **What it may hold that the store no longer does**: a record the
//!   store's compaction has purged (a tombstone past its grace period, an
//!   expired value) or pruned (version-vector entries of departed nodes).
//!   Either is an older form of the same history: a write that reads it
//!   supersedes more, never less; readers drop what the truncation point
//!   hides from cached records as from stored ones.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

/// Shards (each with its own lock); a power of two.
const SHARDS: usize = 64;
/// Write counters per shard, so a fill is refused only by a write to a key
/// of the same stripe (1/4096 of the keys), not of the whole shard.
const WRITE_STRIPES: usize = 64;
/// Bookkeeping of one entry beyond its record's bytes: the map's slot (the
/// key's 128-bit id and the record's pointer and length, 32 bytes, with
/// the table's spare room and control byte) and the allocator's rounding
/// of the record's block.
pub const ENTRY_OVERHEAD_BYTES: usize = 128;
/// Of the shard's entries, about one in this many goes in an eviction
/// pass (a pass is one walk of the shard, so its cost spreads over the
/// inserts that refill it).
const EVICT_ONE_IN: u64 = 8;
/// The most keys one [`RecordCache::prefetch`] looks up (and so the most
/// shards it holds at once).
pub const PREFETCH_KEYS_MAX: usize = 32;
/// Records larger than this are not cached (a few large values must not
/// evict many small ones); reads of them search the store.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

/// What the cache answers for a key: its record, or what a function made
/// of it ([`RecordCache::get_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached<R = Bytes> {
    /// The key's record.
    Record(R),
    /// The cache is complete and the key is not in it: the store holds no
    /// record of it.
    Absent,
    /// Not known here: ask the store (then [`RecordCache::fill`] with
    /// `writes`, the count of writes to the key's stripe until now).
    Unknown { writes: u64 },
}

/// A key's identity in the cache: its 128-bit xxh3. Keys are not stored
/// (no allocation per key, one probe with no key bytes to compare); two
/// keys share an id with a probability of about n^2 / 2^129 (1e-21 for a
/// billion keys).
type KeyId = u128;

fn key_id(key: &[u8]) -> KeyId {
    xxhash_rust::xxh3::xxh3_128(key)
}

/// The maps' hasher: the id is already uniform, its low half is the hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only ids are hashed (write_u128); kept total for the trait.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, id: u128) {
        self.0 = id as u64;
    }
}

/// Records are boxed slices: a slot is 32 bytes (id and pointer), and a
/// record carries no shared count to touch or free.
type Map = HashMap<KeyId, Box<[u8]>, BuildHasherDefault<IdHasher>>;

struct Shard {
    map: Map,
    bytes: usize,
    /// Writes (puts and removes) that reached each stripe of this shard.
    writes: [u64; WRITE_STRIPES],
    /// State of the eviction's random draw (xorshift).
    draw: u64,
    /// Counted under the shard's lock, not in shared atomics: two threads
    /// reading keys of different shards never write the same cache line.
    hits: u64,
    misses: u64,
    evictions: u64,
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
}

fn entry_bytes(record: &[u8]) -> usize {
    record.len() + ENTRY_OVERHEAD_BYTES
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
                        hits: 0,
                        misses: 0,
                        evictions: 0,
                    })
                })
                .collect(),
            shard_bytes_max: bytes_max / SHARDS,
            bytes_max,
            complete: AtomicBool::new(false),
        }
    }

    fn enabled(&self) -> bool {
        self.shard_bytes_max > 0
    }

    /// The key's shard, write stripe and id. The 128-bit hash is not the
    /// ring token (`xxh3_64`), whose ranges a node holds only some of:
    /// shards chosen by the token would fill unevenly.
    fn place(&self, key: &[u8]) -> (&Mutex<Shard>, usize, KeyId) {
        let id = key_id(key);
        // The id's high half; the map hashes by its low half.
        let h = (id >> 64) as usize;
        (&self.shards[h % SHARDS], (h / SHARDS) % WRITE_STRIPES, id)
    }

    /// What the cache knows of `key` (a copy of the record).
    pub fn get(&self, key: &[u8]) -> Cached {
        self.get_with(key, Bytes::copy_from_slice)
    }

    /// What `read` makes of the record of `key`, called under its shard's
    /// lock: no copy and no shared count taken. `read` must be short.
    pub fn get_with<R>(&self, key: &[u8], read: impl FnOnce(&[u8]) -> R) -> Cached<R> {
        if !self.enabled() {
            return Cached::Unknown { writes: 0 };
        }
        let (shard, stripe, id) = self.place(key);
        let mut shard = shard.lock();
        if let Some(record) = shard.map.get(&id) {
            let answer = read(record);
            shard.hits += 1;
            return Cached::Record(answer);
        }
        if self.complete.load(Ordering::Acquire) {
            shard.hits += 1;
            return Cached::Absent;
        }
        shard.misses += 1;
        Cached::Unknown {
            writes: shard.writes[stripe],
        }
    }

    /// Brings the records of `keys` (the keys of a pipeline about to run)
    /// into the processor's cache, all at once: the shards they fall in are
    /// locked first, in order, then every lookup runs with no lock taken in
    /// between, so the processor overlaps their memory reads instead of
    /// waiting for each in turn. At most [`PREFETCH_KEYS_MAX`] keys.
    pub fn prefetch(&self, keys: &[&[u8]]) {
        if !self.enabled() || keys.len() < 2 {
            return;
        }
        let places: Vec<(usize, KeyId)> = (keys.iter().take(PREFETCH_KEYS_MAX))
            .map(|key| {
                let id = key_id(key);
                ((id >> 64) as usize % SHARDS, id)
            })
            .collect();
        let mut shards: Vec<usize> = places.iter().map(|&(shard, _)| shard).collect();
        shards.sort_unstable();
        shards.dedup();
        // Ascending order: two threads prefetching never wait on each other
        // in a cycle, and nothing else holds two shards at once.
        let guards: Vec<_> = shards.iter().map(|&i| self.shards[i].lock()).collect();
        for (shard, id) in places {
            let Ok(at) = shards.binary_search(&shard) else {
                continue;
            };
            if let Some(record) = guards[at].map.get(&id) {
                // The record's first line, for the decode that follows.
                std::hint::black_box(record.first().copied());
            }
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
        let (shard, stripe, id) = self.place(key);
        let mut shard = shard.lock();
        if shard.writes[stripe] != writes || shard.map.contains_key(&id) {
            return;
        }
        // A copy: the store's answer may be a slice of a whole table block.
        self.insert_locked(&mut shard, id, Box::from(&record[..]));
    }

    /// The record of `key` is now `record` (the store holds it). A vector
    /// whose capacity is its length is kept without a copy.
    pub fn put(&self, key: &[u8], record: Vec<u8>) {
        if !self.enabled() {
            return;
        }
        let (shard, stripe, id) = self.place(key);
        let mut shard = shard.lock();
        shard.writes[stripe] += 1;
        if record.len() > RECORD_BYTES_MAX {
            self.remove_locked(&mut shard, id);
            // Not cached, so a miss is no longer an answer.
            self.complete.store(false, Ordering::Release);
            return;
        }
        self.insert_locked(&mut shard, id, record.into_boxed_slice());
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
        let (shard, stripe, id) = self.place(key);
        let mut shard = shard.lock();
        shard.writes[stripe] += 1;
        self.remove_locked(&mut shard, id);
    }

    fn remove_locked(&self, shard: &mut Shard, id: KeyId) {
        if let Some(v) = shard.map.remove(&id) {
            shard.bytes -= entry_bytes(&v);
        }
    }

    fn insert_locked(&self, shard: &mut Shard, id: KeyId, record: Box<[u8]>) {
        let added = entry_bytes(&record);
        if let Some(old) = shard.map.insert(id, record) {
            shard.bytes -= entry_bytes(&old);
        }
        shard.bytes += added;
        if shard.bytes > self.shard_bytes_max {
            self.evict(shard, id);
        }
    }

    /// Drops entries of the shard at random (about one in
    /// [`EVICT_ONE_IN`] a pass, never `keep`, the entry just written)
    /// until it is within its share of the capacity.
    fn evict(&self, shard: &mut Shard, keep: KeyId) {
        self.complete.store(false, Ordering::Release);
        while shard.bytes > self.shard_bytes_max && shard.map.len() > 1 {
            let (mut draw, mut freed, mut dropped) = (shard.draw, 0usize, 0u64);
            shard.map.retain(|&id, record| {
                draw ^= draw << 13;
                draw ^= draw >> 7;
                draw ^= draw << 17;
                let go = id != keep && draw % EVICT_ONE_IN == 0;
                if go {
                    freed += entry_bytes(record);
                    dropped += 1;
                }
                !go
            });
            shard.draw = draw;
            shard.bytes -= freed;
            shard.evictions += dropped;
        }
        if shard.bytes > self.shard_bytes_max {
            // One record larger than the shard's share: not kept.
            shard.map.clear();
            shard.bytes = 0;
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
            visited += entry_bytes(record);
            if !all_fit && visited > self.bytes_max.saturating_mul(2) {
                return false;
            }
            if record.len() > RECORD_BYTES_MAX {
                all_fit = false;
                return true;
            }
            let (shard, _, id) = self.place(key);
            let mut shard = shard.lock();
            if shard.bytes + entry_bytes(record) > self.shard_bytes_max {
                all_fit = false;
                return true;
            }
            if !shard.map.contains_key(&id) {
                self.insert_locked(&mut shard, id, Box::from(&record[..]));
            }
            true
        });
        let evicted = self.shards.iter().any(|s| s.lock().evictions > 0);
        let complete = walked && all_fit && !evicted;
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
        let mut stats = RecordCacheStats {
            bytes_max: self.bytes_max as u64,
            ..RecordCacheStats::default()
        };
        for s in self.shards.iter() {
            let s = s.lock();
            stats.entries += s.map.len() as u64;
            stats.bytes += s.bytes as u64;
            stats.hits += s.hits;
            stats.misses += s.misses;
            stats.evictions += s.evictions;
        }
        stats.complete = self.complete.load(Ordering::Acquire);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// `n` stored records of 100 bytes, keys `key0`, `key1`, ...
    fn records(n: usize) -> Vec<(Bytes, Bytes)> {
        (0..n)
            .map(|i| (Bytes::from(format!("key{i}")), Bytes::from(vec![1u8; 100])))
            .collect()
    }

    #[test]
    fn a_put_is_read_back_and_a_remove_forgets_it() {
        let c = RecordCache::new(1 << 20);
        assert!(matches!(c.get(b"k"), Cached::Unknown { .. }));
        c.put(b"k", b("v1").to_vec());
        assert_eq!(c.get(b"k"), Cached::Record(b("v1")));
        c.put(b"k", b("v2").to_vec());
        assert_eq!(c.get(b"k"), Cached::Record(b("v2")));
        c.remove(b"k");
        assert!(matches!(c.get(b"k"), Cached::Unknown { .. }));
        let s = c.stats();
        assert_eq!((s.entries, s.bytes), (0, 0));
    }

    #[test]
    fn a_prefetch_changes_nothing_and_never_deadlocks() {
        let c = std::sync::Arc::new(RecordCache::new(1 << 24));
        for (key, record) in records(500) {
            c.put(&key, record.to_vec());
        }
        let before = c.stats();
        // Present and absent keys, repeats, several to one shard, more
        // than the limit.
        let keys: Vec<Bytes> = (0..200)
            .map(|i| Bytes::from(format!("key{}", i % 700)))
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        c.prefetch(&refs);
        assert_eq!(c.stats(), before, "a prefetch is not a read");
        // Two threads prefetching overlapping shards while a third writes.
        let workers: Vec<_> = (0..3)
            .map(|t| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    for round in 0..300 {
                        let keys: Vec<Bytes> = (0..PREFETCH_KEYS_MAX + 4)
                            .map(|i| Bytes::from(format!("key{}", (i * 7 + round + t) % 600)))
                            .collect();
                        if t == 2 {
                            for key in &keys {
                                c.put(key, vec![t as u8; 50]);
                            }
                        } else {
                            let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                            c.prefetch(&refs);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("no panic");
        }
        assert_eq!(c.get(b"key100"), Cached::Record(Bytes::from(vec![2u8; 50])));
    }

    #[test]
    fn a_fill_from_before_a_write_is_not_kept() {
        let c = RecordCache::new(1 << 20);
        let Cached::Unknown { writes } = c.get(b"k") else {
            panic!("a miss")
        };
        // A write lands between the miss and the store's (older) answer.
        c.put(b"k", b("new").to_vec());
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
        c.put(b"new", b("3").to_vec());
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
            c.put(format!("key{i}").as_bytes(), vec![7u8; 100]);
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
        let big = records(5_000);
        assert!(!c.warm(|visit| big.iter().all(|(k, v)| visit(k, v))));
        assert!(!c.stats().complete);
        assert!(c.stats().bytes <= 64 * 1024);
    }

    #[test]
    fn large_records_are_not_cached() {
        let c = RecordCache::new(1 << 30);
        assert!(c.warm(|_| true));
        c.put(b"big", vec![0u8; RECORD_BYTES_MAX + 1]);
        assert!(matches!(c.get(b"big"), Cached::Unknown { .. }));
        assert!(!c.stats().complete, "a miss is no longer an answer");
    }

    /// A write the store failed leaves the store's record unknown: the
    /// cache must not answer "absent" for it.
    #[test]
    fn a_forgotten_key_is_asked_of_the_store() {
        let c = RecordCache::new(1 << 20);
        assert!(c.warm(|_| true));
        c.put(b"k", b("v1").to_vec());
        c.forget(b"k");
        assert!(matches!(c.get(b"k"), Cached::Unknown { .. }));
        assert!(matches!(c.get(b"other"), Cached::Unknown { .. }));
        assert!(!c.stats().complete);
    }

    /// A warm that meets a full shard goes on filling the others.
    #[test]
    fn a_warm_past_one_full_shard_fills_the_others() {
        let c = RecordCache::new(64 * 4096);
        let stored = records(20_000);
        assert!(!c.warm(|visit| stored.iter().all(|(k, v)| visit(k, v))));
        let s = c.stats();
        assert!(s.bytes * 10 >= s.bytes_max * 9, "filled: {s:?}");
        assert_eq!(s.evictions, 0);
    }

    #[test]
    fn a_cleared_cache_asks_the_store() {
        let c = RecordCache::new(1 << 20);
        assert!(c.warm(|_| true));
        c.put(b"k", b("v").to_vec());
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
        c.put(b"k", b("v").to_vec());
        assert!(matches!(c.get(b"k"), Cached::Unknown { .. }));
    }
}
