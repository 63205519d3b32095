//! Iterators that merge the engine's sorted sources into one ordered stream:
//! memtables (read in chunks), single tables, and whole levels. Used by scans,
//! snapshots and compaction alike.
//!
//! Order is internal-key order: user key ascending, sequence number
//! descending, and for equal sequence numbers the source listed first (the
//! newer one) first. [`NewestIter`] keeps only the newest version of each key
//! visible at a sequence number; [`ScanIter`] further hides tombstones and
//! expired entries for callers.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::memtable::{Cursor, Memtable};
use crate::table::{Table, TableIter};
use crate::types::{Entry, Item, Op};

/// Items a memtable source fetches in its first chunk (short scans stay
/// cheap); each later chunk is four times larger, up to the max.
const MEM_SCAN_CHUNK_FIRST: usize = 16;
const MEM_SCAN_CHUNK_MAX: usize = 1024;

/// A sorted stream of items.
pub(crate) trait Source: Send {
    fn next_item(&mut self) -> Result<Option<Item>>;
}

impl Source for TableIter {
    fn next_item(&mut self) -> Result<Option<Item>> {
        TableIter::next_item(self)
    }
}

/// A memtable read in chunks, so no iterator holds the memtable lock across calls.
pub(crate) struct MemSource {
    mem: Arc<Memtable>,
    cursor: Cursor,
    end: Bound<Bytes>,
    snapshot_seq: u64,
    /// The current chunk, reversed (next item last).
    buf: Vec<Item>,
    chunk: usize,
    done: bool,
}

impl MemSource {
    pub fn new(
        mem: Arc<Memtable>,
        start: Bound<Bytes>,
        end: Bound<Bytes>,
        snapshot_seq: u64,
    ) -> Self {
        MemSource {
            mem,
            cursor: Cursor::Start(start),
            end,
            snapshot_seq,
            buf: Vec::new(),
            chunk: MEM_SCAN_CHUNK_FIRST,
            done: false,
        }
    }
}

impl Source for MemSource {
    fn next_item(&mut self) -> Result<Option<Item>> {
        if self.buf.is_empty() && !self.done {
            let end = match &self.end {
                Bound::Unbounded => Bound::Unbounded,
                Bound::Included(k) => Bound::Included(k.as_ref()),
                Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
            };
            self.mem.collect(
                &self.cursor,
                end,
                self.snapshot_seq,
                self.chunk,
                &mut self.buf,
            );
            if self.buf.len() < self.chunk {
                self.done = true;
            }
            self.chunk = (self.chunk * 4).min(MEM_SCAN_CHUNK_MAX);
            if let Some(last) = self.buf.last() {
                self.cursor = Cursor::After(last.key.clone(), last.seq);
            }
            self.buf.reverse();
        }
        Ok(self.buf.pop())
    }
}

/// The tables of one sorted level (1+) in key order, opened one at a time.
pub(crate) struct LevelSource {
    files: Vec<Arc<Table>>,
    next_file: usize,
    current: Option<TableIter>,
    start: Bound<Bytes>,
    end: Bound<Bytes>,
    compaction: bool,
}

impl LevelSource {
    /// `files` must be sorted and disjoint.
    pub fn new(
        files: Vec<Arc<Table>>,
        start: Bound<Bytes>,
        end: Bound<Bytes>,
        compaction: bool,
    ) -> Self {
        LevelSource {
            files,
            next_file: 0,
            current: None,
            start,
            end,
            compaction,
        }
    }
}

impl Source for LevelSource {
    fn next_item(&mut self) -> Result<Option<Item>> {
        loop {
            if let Some(it) = self.current.as_mut() {
                if let Some(item) = it.next_item()? {
                    return Ok(Some(item));
                }
                self.current = None;
            }
            let Some(t) = self.files.get(self.next_file) else {
                return Ok(None);
            };
            self.next_file += 1;
            let start = match &self.start {
                Bound::Unbounded => Bound::Unbounded,
                Bound::Included(k) => Bound::Included(k.as_ref()),
                Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
            };
            self.current = Some(t.iter(start, self.end.clone(), self.compaction));
        }
    }
}

struct HeapItem {
    item: Item,
    src: usize,
}

impl PartialEq for HeapItem {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapItem {
    /// Reversed, because `BinaryHeap` pops the greatest.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .item
            .key
            .cmp(&self.item.key)
            .then(self.item.seq.cmp(&other.item.seq))
            .then(other.src.cmp(&self.src))
    }
}

/// Merges sources in internal-key order; earlier sources win ties.
pub(crate) struct MergeIter {
    sources: Vec<Box<dyn Source>>,
    heap: BinaryHeap<HeapItem>,
    primed: bool,
}

impl MergeIter {
    pub fn new(sources: Vec<Box<dyn Source>>) -> Self {
        MergeIter {
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            primed: false,
        }
    }

    pub fn next_item(&mut self) -> Result<Option<Item>> {
        if !self.primed {
            self.primed = true;
            for (src, s) in self.sources.iter_mut().enumerate() {
                if let Some(item) = s.next_item()? {
                    self.heap.push(HeapItem { item, src });
                }
            }
        }
        let Some(top) = self.heap.pop() else {
            return Ok(None);
        };
        if let Some(item) = self.sources[top.src].next_item()? {
            self.heap.push(HeapItem { item, src: top.src });
        }
        Ok(Some(top.item))
    }
}

/// The newest version of each key at or below a sequence number.
pub(crate) struct NewestIter {
    merge: MergeIter,
    snapshot_seq: u64,
    last_key: Option<Bytes>,
}

impl NewestIter {
    pub fn new(merge: MergeIter, snapshot_seq: u64) -> Self {
        NewestIter {
            merge,
            snapshot_seq,
            last_key: None,
        }
    }

    pub fn next_item(&mut self) -> Result<Option<Item>> {
        while let Some(item) = self.merge.next_item()? {
            if item.seq > self.snapshot_seq || self.last_key.as_ref() == Some(&item.key) {
                continue;
            }
            self.last_key = Some(item.key.clone());
            return Ok(Some(item));
        }
        Ok(None)
    }
}

/// An ordered iterator over the live entries of a key range, at one point in
/// time. Yields `(key, entry)`; an error ends the iteration.
pub struct ScanIter {
    inner: NewestIter,
    now_ms: u64,
    failed: bool,
}

impl std::fmt::Debug for ScanIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanIter")
            .field("now_ms", &self.now_ms)
            .finish()
    }
}

impl ScanIter {
    pub(crate) fn new(inner: NewestIter, now_ms: u64) -> Self {
        ScanIter {
            inner,
            now_ms,
            failed: false,
        }
    }
}

impl Iterator for ScanIter {
    type Item = Result<(Bytes, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            match self.inner.next_item() {
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                Ok(None) => return None,
                Ok(Some(item)) => match item.op {
                    Op::Put(e) if !e.is_expired(self.now_ms) => return Some(Ok((item.key, e))),
                    _ => continue,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct VecSource(std::vec::IntoIter<Item>);

    impl Source for VecSource {
        fn next_item(&mut self) -> Result<Option<Item>> {
            Ok(self.0.next())
        }
    }

    fn put(k: &str, seq: u64, v: &str) -> Item {
        Item {
            key: Bytes::copy_from_slice(k.as_bytes()),
            seq,
            op: Op::Put(Entry {
                value: Bytes::copy_from_slice(v.as_bytes()),
                expires_at_ms: None,
            }),
        }
    }

    fn src(items: Vec<Item>) -> Box<dyn Source> {
        Box::new(VecSource(items.into_iter()))
    }

    #[test]
    fn merge_orders_by_key_then_newest_and_newest_iter_dedups() {
        let a = src(vec![put("a", 5, "a5"), put("c", 9, "c9")]);
        let b = src(vec![
            put("a", 7, "a7"),
            put("b", 1, "b1"),
            put("c", 9, "c9-older-source"),
        ]);
        let mut m = MergeIter::new(vec![a, b]);
        let mut order = Vec::new();
        while let Some(i) = m.next_item().unwrap() {
            order.push((i.key.to_vec(), i.seq, i.op));
        }
        let keys: Vec<(Vec<u8>, u64)> = order.iter().map(|(k, s, _)| (k.clone(), *s)).collect();
        assert_eq!(
            keys,
            vec![
                (b"a".to_vec(), 7),
                (b"a".to_vec(), 5),
                (b"b".to_vec(), 1),
                (b"c".to_vec(), 9),
                (b"c".to_vec(), 9)
            ]
        );
        // Equal sequence numbers: the first source wins.
        assert_eq!(order[3].2, put("c", 9, "c9").op);

        let a = src(vec![put("a", 5, "a5"), put("c", 9, "c9")]);
        let b = src(vec![put("a", 7, "a7"), put("b", 1, "b1")]);
        let mut n = NewestIter::new(MergeIter::new(vec![a, b]), 6);
        let mut got = Vec::new();
        while let Some(i) = n.next_item().unwrap() {
            got.push((i.key.to_vec(), i.seq));
        }
        // a@7 is above the snapshot, so a@5 shows; c@9 is hidden entirely.
        assert_eq!(got, vec![(b"a".to_vec(), 5), (b"b".to_vec(), 1)]);
    }
}
