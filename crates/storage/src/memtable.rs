//! The memtable: recent writes in a sorted map, with byte accounting.
//!
//! The map is a `BTreeMap` behind a reader-writer lock. Writers are already
//! serialised by the engine's log lock, so the lock never makes one writer
//! wait for another; readers share it and hold it for one lookup or one
//! chunk of a scan. A B-tree keeps many keys per node where a lock-free
//! skiplist chases one pointer per level and pins an epoch per access (the
//! skiplist used before was a quarter slower at loading random keys; the
//! figures are in docs/BENCHMARKS.md).
//!
//! Entries are carved from 1 MiB arena chunks (`bytes::BytesMut` split off
//! and frozen), as LevelDB's and RocksDB's memtables carve theirs from an
//! arena: an insert makes no allocation of its own, and the flush thread
//! that drops a flushed memtable frees chunks, not one block per entry that
//! the request thread must then take back. A value read from the memtable
//! keeps its chunk alive while it is held (docs/BENCHMARKS.md has the
//! before and after).
//!
//! Owns the in-memory ordering of internal keys (user key ascending, sequence
//! number descending) and nothing else: which memtable is active, when one
//! becomes immutable and when it is flushed are the engine's decisions.
//! Entries are never removed from a memtable; a memtable is dropped whole once
//! it has been written to an SSTable and no reader holds it.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};

use crate::batch::BatchOp;
use crate::coding::key_prefix;
use crate::types::{Entry, Item, ItemRef, Kind, Op};

/// Bytes charged per entry on top of key and value (B-tree slot, `Bytes`
/// header, a share of the arena chunk's unused end), so that many tiny
/// entries still fill the budget.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// An internal key: user key and sequence number. The key and the value of
/// an entry lie next to each other in `data` (a slice of an arena chunk);
/// the key is `data[..key_len]`.
#[derive(Debug, Clone)]
struct MemKey {
    prefix: u128,
    data: Bytes,
    key_len: usize,
    seq: u64,
}

impl MemKey {
    fn key_bytes(&self) -> &[u8] {
        &self.data[..self.key_len]
    }

    fn key(&self) -> Bytes {
        self.data.slice(..self.key_len)
    }
}

/// What a memtable entry says; a put's value is `data[key_len..]` of its key.
#[derive(Debug, Clone, Copy)]
enum MemValue {
    Put { expires_at_ms: Option<u64> },
    Delete,
}

impl MemValue {
    fn op(&self, k: &MemKey) -> Op {
        match self {
            MemValue::Delete => Op::Delete,
            MemValue::Put { expires_at_ms } => Op::Put(Entry {
                value: k.data.slice(k.key_len..),
                expires_at_ms: *expires_at_ms,
            }),
        }
    }
}

/// A borrowed view of an internal key, so lookups need no allocation.
trait KeyView {
    fn prefix(&self) -> u128;
    fn user_key(&self) -> &[u8];
    fn seq(&self) -> u64;
}

impl KeyView for MemKey {
    fn prefix(&self) -> u128 {
        self.prefix
    }
    fn user_key(&self) -> &[u8] {
        self.key_bytes()
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

struct Lookup<'a> {
    prefix: u128,
    key: &'a [u8],
    seq: u64,
}

impl<'a> Lookup<'a> {
    fn new(key: &'a [u8], seq: u64) -> Self {
        Lookup {
            prefix: key_prefix(key),
            key,
            seq,
        }
    }
}

impl KeyView for Lookup<'_> {
    fn prefix(&self) -> u128 {
        self.prefix
    }
    fn user_key(&self) -> &[u8] {
        self.key
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

fn cmp_views(a: &dyn KeyView, b: &dyn KeyView) -> Ordering {
    a.prefix()
        .cmp(&b.prefix())
        .then_with(|| a.user_key().cmp(b.user_key()))
        .then_with(|| b.seq().cmp(&a.seq()))
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        cmp_views(self, other) == Ordering::Equal
    }
}
impl Eq for dyn KeyView + '_ {}
impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_views(self, other)
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq && self.key_bytes() == other.key_bytes()
    }
}
impl Eq for MemKey {}
impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.key_bytes().cmp(other.key_bytes()))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for MemKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

/// Bytes of one arena chunk: entries are carved from chunks this size, so an
/// insert costs no allocation of its own and a flushed memtable frees its
/// entries a chunk at a time.
const ARENA_CHUNK_BYTES: usize = 1 << 20;
/// Entries larger than this get an allocation of their own rather than a
/// fresh chunk (at most a quarter of a chunk is wasted at its end).
const ARENA_ENTRY_BYTES_MAX: usize = ARENA_CHUNK_BYTES / 4;

/// Words of a memtable's key filter (64 bits each): 4 Mi bits, 512 KiB.
const KEY_FILTER_WORDS: usize = 1 << 16;

/// A lock-free, blocked bloom filter over the user keys of one memtable, so
/// a point lookup of a key the memtable does not hold (most lookups, once
/// data outgrows one memtable) skips the tree walk, whose cache misses
/// dominate a read otherwise. One 64-bit word per key, 4 bits set in it.
/// Bits are set before the write's sequence number is published (Release)
/// and read after a reader took its snapshot (Acquire), so a reader that can
/// see a version also sees its bits.
struct KeyFilter {
    words: Box<[AtomicU64]>,
}

impl KeyFilter {
    fn new() -> Self {
        Self {
            words: (0..KEY_FILTER_WORDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn probe(key: &[u8]) -> (usize, u64) {
        let h = xxhash_rust::xxh3::xxh3_64(key);
        let word = (h as usize) & (KEY_FILTER_WORDS - 1);
        let mut mask = 0u64;
        for i in 0..4 {
            mask |= 1u64 << ((h >> (16 + 6 * i)) & 63);
        }
        (word, mask)
    }

    fn insert(&self, key: &[u8]) {
        let (w, m) = Self::probe(key);
        self.words[w].fetch_or(m, AtomicOrdering::Relaxed);
    }

    fn may_contain(&self, key: &[u8]) -> bool {
        let (w, m) = Self::probe(key);
        self.words[w].load(AtomicOrdering::Relaxed) & m == m
    }
}

/// One memtable.
pub(crate) struct Memtable {
    map: RwLock<BTreeMap<MemKey, MemValue>>,
    /// The chunk entries are carved from. Each entry is a `Bytes` that
    /// shares the chunk's allocation; a chunk is freed once no entry or
    /// value read from it is alive.
    arena: Mutex<BytesMut>,
    filter: KeyFilter,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    max_seq: AtomicU64,
    /// Bytes appended to this memtable's log segment.
    log_bytes: AtomicU64,
    /// The log segment that holds this memtable's writes.
    log_number: u64,
}

impl std::fmt::Debug for Memtable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memtable")
            .field("bytes", &self.bytes())
            .field("entries", &self.len())
            .field("log_number", &self.log_number)
            .finish()
    }
}

impl Memtable {
    pub fn new(log_number: u64) -> Self {
        Memtable {
            map: RwLock::new(BTreeMap::new()),
            arena: Mutex::new(BytesMut::new()),
            filter: KeyFilter::new(),
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            max_seq: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            log_number,
        }
    }

    pub fn log_number(&self) -> u64 {
        self.log_number
    }

    /// Bytes of this memtable's log segment.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(AtomicOrdering::Relaxed)
    }

    pub fn add_log_bytes(&self, n: u64) {
        self.log_bytes.fetch_add(n, AtomicOrdering::Relaxed);
    }

    /// Accounted bytes (keys, values and per-entry overhead).
    pub fn bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.entries.load(AtomicOrdering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The highest sequence number inserted.
    pub fn max_seq(&self) -> u64 {
        self.max_seq.load(AtomicOrdering::Acquire)
    }

    /// Inserts one operation at sequence number `seq`. Key and value are
    /// copied next to each other into the arena.
    pub fn insert(&self, seq: u64, op: &BatchOp<'_>) {
        let data = self.copy_in(op.key, op.value);
        let value = match op.kind {
            Kind::Delete => MemValue::Delete,
            Kind::Put | Kind::PutExpiring => MemValue::Put {
                expires_at_ms: op.expires_at_ms,
            },
        };
        self.insert_raw(data, op.key.len(), seq, value);
    }

    /// `key` then `value`, in the current arena chunk (a new one when it is
    /// full), or in an allocation of their own when large.
    fn copy_in(&self, key: &[u8], value: &[u8]) -> Bytes {
        let len = key.len() + value.len();
        if len > ARENA_ENTRY_BYTES_MAX {
            let mut buf = Vec::with_capacity(len);
            buf.extend_from_slice(key);
            buf.extend_from_slice(value);
            return Bytes::from(buf);
        }
        let mut arena = self.arena.lock();
        if arena.capacity() - arena.len() < len {
            *arena = BytesMut::with_capacity(ARENA_CHUNK_BYTES);
        }
        arena.extend_from_slice(key);
        arena.extend_from_slice(value);
        arena.split().freeze()
    }

    fn insert_raw(&self, data: Bytes, key_len: usize, seq: u64, value: MemValue) {
        let charged = data.len() + ENTRY_OVERHEAD_BYTES;
        self.filter.insert(&data[..key_len]);
        let key = MemKey {
            prefix: key_prefix(&data[..key_len]),
            data,
            key_len,
            seq,
        };
        self.map.write().insert(key, value);
        self.bytes.fetch_add(charged, AtomicOrdering::Relaxed);
        self.entries.fetch_add(1, AtomicOrdering::Relaxed);
        self.max_seq.fetch_max(seq, AtomicOrdering::AcqRel);
    }

    /// The newest version of `key` with sequence number at most `snapshot_seq`.
    pub fn get(&self, key: &[u8], snapshot_seq: u64) -> Option<(u64, Op)> {
        if !self.filter.may_contain(key) {
            return None;
        }
        let probe = Lookup::new(key, snapshot_seq);
        let map = self.map.read();
        let (k, v) = map
            .range::<dyn KeyView, _>((Bound::Included(&probe as &dyn KeyView), Bound::Unbounded))
            .next()?;
        if k.key_bytes() != key {
            return None;
        }
        Some((k.seq, v.op(k)))
    }

    /// Up to `limit` items after `from` (in internal-key order) whose user key
    /// is within `end`, skipping versions newer than `snapshot_seq`. `from` is
    /// a start bound on user keys for the first call, then the last internal
    /// key returned. Returns fewer than `limit` items only at the end.
    pub fn collect(
        &self,
        from: &Cursor,
        end: Bound<&[u8]>,
        snapshot_seq: u64,
        limit: usize,
        out: &mut Vec<Item>,
    ) {
        let start_probe;
        let start: Bound<&dyn KeyView> = match from {
            Cursor::Start(Bound::Unbounded) => Bound::Unbounded,
            Cursor::Start(Bound::Included(k)) => {
                start_probe = Lookup::new(k.as_ref(), u64::MAX);
                Bound::Included(&start_probe)
            }
            Cursor::Start(Bound::Excluded(k)) => {
                start_probe = Lookup::new(k.as_ref(), 0);
                Bound::Excluded(&start_probe)
            }
            Cursor::After(k, seq) => {
                start_probe = Lookup::new(k.as_ref(), *seq);
                Bound::Excluded(&start_probe)
            }
        };
        let mut taken = 0;
        let map = self.map.read();
        for (k, v) in map.range::<dyn KeyView, _>((start, Bound::Unbounded)) {
            let within = match end {
                Bound::Unbounded => true,
                Bound::Included(x) => k.key_bytes() <= x,
                Bound::Excluded(x) => k.key_bytes() < x,
            };
            if !within {
                break;
            }
            if k.seq > snapshot_seq {
                continue;
            }
            out.push(Item {
                key: k.key(),
                seq: k.seq,
                op: v.op(k),
            });
            taken += 1;
            if taken >= limit {
                break;
            }
        }
    }

    /// The newest version of every key, in key order, borrowed (for flushing
    /// without an allocation per entry). Holds the read lock throughout:
    /// meant for immutable memtables, which no writer touches.
    pub fn for_each_newest<E>(
        &self,
        mut f: impl FnMut(&ItemRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let map = self.map.read();
        let mut prev_key: Option<&MemKey> = None;
        for (k, v) in map.iter() {
            if prev_key.is_some_and(|p| p.prefix == k.prefix && p.key_bytes() == k.key_bytes()) {
                continue;
            }
            let (kind, expires_at_ms) = match v {
                MemValue::Delete => (Kind::Delete, None),
                MemValue::Put { expires_at_ms } => (Kind::Put, *expires_at_ms),
            };
            f(&ItemRef {
                key: k.key_bytes(),
                seq: k.seq,
                kind,
                value: &k.data[k.key_len..],
                expires_at_ms,
            })?;
            prev_key = Some(k);
        }
        Ok(())
    }

    /// Every entry in internal-key order.
    #[cfg(test)]
    pub fn items(&self) -> Vec<Item> {
        self.map
            .read()
            .iter()
            .map(|(k, v)| Item {
                key: k.key(),
                seq: k.seq,
                op: v.op(k),
            })
            .collect()
    }
}

/// Where a chunked memtable scan resumes.
#[derive(Debug, Clone)]
pub(crate) enum Cursor {
    Start(Bound<Bytes>),
    After(Bytes, u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put<'a>(k: &'a [u8], v: &'a [u8]) -> BatchOp<'a> {
        BatchOp {
            kind: Kind::Put,
            key: k,
            value: v,
            expires_at_ms: None,
        }
    }

    fn del(k: &[u8]) -> BatchOp<'_> {
        BatchOp {
            kind: Kind::Delete,
            key: k,
            value: b"",
            expires_at_ms: None,
        }
    }

    fn value_of(op: Op) -> Option<Vec<u8>> {
        match op {
            Op::Put(e) => Some(e.value.to_vec()),
            Op::Delete => None,
        }
    }

    #[test]
    fn entries_span_arena_chunks_and_values_outlive_the_memtable() {
        let m = Memtable::new(1);
        // ~3 chunks of small entries, with large ones (own allocation) and
        // one that exactly fills what a chunk has left somewhere in between.
        let big = vec![7u8; ARENA_ENTRY_BYTES_MAX + 1];
        let mut expected = Vec::new();
        for i in 0..6_000u32 {
            let key = format!("key:{i:08}");
            let value: Vec<u8> = match i % 1_000 {
                999 => big.clone(),
                _ => format!("value-{i}-")
                    .repeat(1 + (i % 40) as usize)
                    .into_bytes(),
            };
            m.insert(u64::from(i) + 1, &put(key.as_bytes(), &value));
            expected.push((key, value));
        }
        let values: Vec<Bytes> = expected
            .iter()
            .map(|(k, v)| {
                let (_, op) = m.get(k.as_bytes(), u64::MAX).expect("present");
                let Op::Put(e) = op else {
                    panic!("{k} deleted")
                };
                assert_eq!(&e.value[..], &v[..], "{k}");
                e.value
            })
            .collect();
        assert!(m.bytes() > 2 * ARENA_CHUNK_BYTES, "{}", m.bytes());
        drop(m);
        for ((k, v), got) in expected.iter().zip(&values) {
            assert_eq!(&got[..], &v[..], "{k} after the memtable is gone");
        }
    }

    #[test]
    fn key_filter_never_misses_an_inserted_key_and_rejects_most_others() {
        let f = KeyFilter::new();
        for i in 0..400_000u32 {
            f.insert(format!("key:{i:012}").as_bytes());
        }
        for i in 0..400_000u32 {
            assert!(f.may_contain(format!("key:{i:012}").as_bytes()), "{i}");
        }
        let false_hits = (400_000..500_000u32)
            .filter(|i| f.may_contain(format!("key:{i:012}").as_bytes()))
            .count();
        // About 10 bits a key, 4 in one word: a few percent at most.
        assert!(false_hits < 6_000, "{false_hits} false hits in 100,000");
    }

    #[test]
    fn get_sees_the_newest_version_at_or_below_the_snapshot() {
        let m = Memtable::new(1);
        m.insert(1, &put(b"a", b"a1"));
        m.insert(3, &put(b"a", b"a3"));
        m.insert(5, &del(b"a"));
        m.insert(2, &put(b"ab", b"ab2"));
        assert_eq!(m.get(b"a", 0), None);
        assert_eq!(
            m.get(b"a", 1).map(|(s, o)| (s, value_of(o))),
            Some((1, Some(b"a1".to_vec())))
        );
        assert_eq!(
            m.get(b"a", 4).map(|(s, o)| (s, value_of(o))),
            Some((3, Some(b"a3".to_vec())))
        );
        assert_eq!(
            m.get(b"a", 9).map(|(s, o)| (s, value_of(o))),
            Some((5, None))
        );
        // A key that is a prefix of another is not confused with it.
        assert_eq!(m.get(b"", 9), None);
        assert_eq!(m.get(b"ab", 9).map(|(s, _)| s), Some(2));
        assert_eq!(m.get(b"b", 9), None);
        assert_eq!(m.max_seq(), 5);
        assert_eq!(m.len(), 4);
        assert!(m.bytes() >= 4 * ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn prefix_order_agrees_with_byte_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0b",
            b"ab",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefghi",
            b"abcdefgi",
            b"key:000000000001",
            b"key:000000000001\0",
            b"key:0000000000010",
            b"key:000000000002",
            b"key:00000000000",
            b"\xff",
        ];
        for a in &keys {
            for b in &keys {
                let (pa, pb) = (key_prefix(a), key_prefix(b));
                if pa != pb {
                    assert_eq!(pa.cmp(&pb), a.cmp(b), "{a:?} vs {b:?}");
                }
            }
        }
        let m = Memtable::new(1);
        for (i, k) in keys.iter().enumerate() {
            m.insert(i as u64 + 1, &put(k, b"v"));
        }
        let order: Vec<Vec<u8>> = m.items().into_iter().map(|i| i.key.to_vec()).collect();
        let mut sorted: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        sorted.sort();
        assert_eq!(order, sorted);
        for k in &keys {
            assert!(m.get(k, 100).is_some(), "{k:?}");
        }
    }

    #[test]
    fn collect_walks_in_internal_key_order_in_chunks() {
        let m = Memtable::new(1);
        let mut seq = 0;
        for k in [b"b".as_slice(), b"a", b"c", b"a", b"d"] {
            seq += 1;
            m.insert(seq, &put(k, b"v"));
        }
        let mut all = Vec::new();
        let mut cur = Cursor::Start(Bound::Included(Bytes::from_static(b"a")));
        loop {
            let mut chunk = Vec::new();
            m.collect(&cur, Bound::Excluded(b"d"), 3, 2, &mut chunk);
            let Some(last) = chunk.last() else { break };
            cur = Cursor::After(last.key.clone(), last.seq);
            all.extend(chunk);
        }
        let got: Vec<(Vec<u8>, u64)> = all.into_iter().map(|i| (i.key.to_vec(), i.seq)).collect();
        // seq 4 (second "a") and 5 ("d") are above the snapshot / out of range.
        assert_eq!(
            got,
            vec![(b"a".to_vec(), 2), (b"b".to_vec(), 1), (b"c".to_vec(), 3)]
        );

        let mut after_a = Vec::new();
        m.collect(
            &Cursor::Start(Bound::Excluded(Bytes::from_static(b"a"))),
            Bound::Unbounded,
            9,
            10,
            &mut after_a,
        );
        assert_eq!(after_a.first().map(|i| i.key.to_vec()), Some(b"b".to_vec()));
        assert_eq!(after_a.len(), 3);
    }
}
