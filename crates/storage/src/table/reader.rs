//! Reads an SSTable: opens it (footer, index, bloom filter and properties are
//! verified and kept in memory), answers point lookups with at most one data
//! block read, and iterates key ranges.
//!
//! Keeping the index and filter of every open table in memory is what makes a
//! point hit cost about one block read when the data set is far larger than
//! the block cache.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::block::{Block, BlockCursor, RawEntry};
use super::bloom::Bloom;
use super::format::{FOOTER_BYTES, Footer, Handle, IndexEntry, TableProps, decode_index};
use super::frame::{self, FrameError};
use crate::cache::BlockCache;
use crate::coding::{Malformed, key_prefix};
use crate::error::{Error, Result};
use crate::fs::{Fs, ReadableFile};
use crate::stats::Counters;
use crate::types::Item;

/// Compaction reads ahead this many bytes at a time (and bypasses the cache).
const COMPACTION_READAHEAD_BYTES: usize = 1 << 20;

/// An open SSTable.
pub(crate) struct Table {
    number: u64,
    path: PathBuf,
    file: Arc<dyn ReadableFile>,
    index: Vec<IndexEntry>,
    /// `key_prefix` of each index key: a dense array the binary search walks
    /// before it touches key bytes.
    index_prefixes: Vec<u128>,
    bloom: Bloom,
    props: TableProps,
    file_bytes: u64,
    data_end: u64,
    cache: Arc<BlockCache>,
    counters: Arc<Counters>,
    fs: Arc<dyn Fs>,
    /// Set when no version lists the table any more: the file is removed when
    /// the last reader lets go of it.
    obsolete: AtomicBool,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("number", &self.number)
            .field("file_bytes", &self.file_bytes)
            .field("entries", &self.props.entries)
            .finish()
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire)
            && let Err(e) = self.fs.remove(&self.path)
        {
            tracing::warn!(file = %self.path.display(), "could not remove obsolete table: {e}");
        }
    }
}

fn corrupt(path: &Path, base: u64, m: Malformed) -> Error {
    Error::corruption(path, base + m.offset as u64, m.detail)
}

fn frame_err(path: &Path, h: Handle, e: FrameError) -> Error {
    match e {
        FrameError::Malformed(m) => Error::corruption(path, h.offset + m.offset as u64, m.detail),
        FrameError::Unsupported(s) => Error::Unsupported(format!("{}: {s}", path.display())),
    }
}

impl Table {
    /// Opens and verifies a table file.
    pub fn open(
        fs: Arc<dyn Fs>,
        path: PathBuf,
        number: u64,
        cache: Arc<BlockCache>,
        counters: Arc<Counters>,
    ) -> Result<Table> {
        let file = fs
            .open(&path)
            .map_err(|e| Error::io("open table", &path, e))?;
        let file_bytes = file.len();
        if file_bytes < FOOTER_BYTES as u64 {
            return Err(Error::corruption(
                &path,
                0,
                "file shorter than a table footer",
            ));
        }
        let footer_at = file_bytes - FOOTER_BYTES as u64;
        let mut fb = [0u8; FOOTER_BYTES];
        file.read_exact_at(footer_at, &mut fb)
            .map_err(|e| Error::io("read table footer", &path, e))?;
        let footer = Footer::decode(&fb, file_bytes).map_err(|m| corrupt(&path, footer_at, m))?;
        let read = |h: Handle| -> Result<Bytes> {
            let mut buf = vec![0u8; h.len as usize];
            file.read_exact_at(h.offset, &mut buf)
                .map_err(|e| Error::io("read table block", &path, e))?;
            frame::decode(&buf).map_err(|e| frame_err(&path, h, e))
        };
        let data_end = footer.filter.offset;
        let index_raw = read(footer.index)?;
        let index = decode_index(&index_raw, data_end)
            .map_err(|m| corrupt(&path, footer.index.offset, m))?;
        let bloom = Bloom::parse(&read(footer.filter)?)
            .map_err(|m| corrupt(&path, footer.filter.offset, m))?;
        let props = TableProps::decode(&read(footer.meta)?)
            .map_err(|m| corrupt(&path, footer.meta.offset, m))?;
        let consistent = match index.last() {
            None => props.entries == 0,
            Some(last) => props.entries > 0 && last.last_key == props.largest,
        };
        if !consistent {
            return Err(Error::corruption(
                &path,
                footer.meta.offset,
                "table properties disagree with the index",
            ));
        }
        let index_prefixes = index.iter().map(|e| key_prefix(&e.last_key)).collect();
        Ok(Table {
            number,
            path,
            file,
            index,
            index_prefixes,
            bloom,
            props,
            file_bytes,
            data_end,
            cache,
            counters,
            fs,
            obsolete: AtomicBool::new(false),
        })
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn props(&self) -> &TableProps {
        &self.props
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    pub fn smallest(&self) -> &[u8] {
        &self.props.smallest
    }

    pub fn largest(&self) -> &[u8] {
        &self.props.largest
    }

    /// Bytes of index and filter held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.bloom.bytes()
            + self
                .index
                .iter()
                .map(|e| e.last_key.len() + 56)
                .sum::<usize>()
    }

    /// Marks the file for removal once the last reference is dropped.
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    /// Index of the first block whose last key is `>= key` (`> key` with
    /// `after`); `index.len()` when there is none.
    fn find_block(&self, key: &[u8], after: bool) -> usize {
        let kp = key_prefix(key);
        // partition_point over (prefix, key) order.
        let (mut lo, mut hi) = (0usize, self.index.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ord = self.index_prefixes[mid]
                .cmp(&kp)
                .then_with(|| self.index[mid].last_key.as_ref().cmp(key));
            let before = match ord {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => after,
                std::cmp::Ordering::Greater => false,
            };
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn block_err(&self, i: usize, m: Malformed) -> Error {
        let base = self.index.get(i).map(|e| e.handle.offset).unwrap_or(0);
        Error::corruption(
            &self.path,
            base,
            format!(
                "data block: {} (at +{} of the decoded block)",
                m.detail, m.offset
            ),
        )
    }

    /// The `i`-th data block, through the block cache.
    fn block(&self, i: usize) -> Result<Arc<Block>> {
        let h = self.index[i].handle;
        if let Some(b) = self.cache.get(self.number, h.offset) {
            Counters::add(&self.counters.block_cache_hits, 1);
            return Ok(b);
        }
        Counters::add(&self.counters.block_cache_misses, 1);
        let mut buf = vec![0u8; h.len as usize];
        self.file
            .read_exact_at(h.offset, &mut buf)
            .map_err(|e| Error::io("read data block", &self.path, e))?;
        Counters::add(&self.counters.block_reads, 1);
        Counters::add(&self.counters.block_read_bytes, u64::from(h.len));
        let raw = frame::decode(&buf).map_err(|e| frame_err(&self.path, h, e))?;
        let block = Arc::new(Block::parse(raw).map_err(|m| self.block_err(i, m))?);
        self.cache.insert(self.number, h.offset, block.clone());
        Ok(block)
    }

    /// The entry for exactly `key`, if the table holds one. `hash` is
    /// `bloom::key_hash(key)`, computed once per lookup.
    pub fn get(&self, key: &[u8], hash: u64) -> Result<Option<RawEntry>> {
        if key < self.smallest() || key > self.largest() || !self.bloom.may_contain(hash) {
            return Ok(None);
        }
        let i = self.find_block(key, false);
        if i >= self.index.len() {
            return Ok(None);
        }
        let block = self.block(i)?;
        block.get(key).map_err(|m| self.block_err(i, m))
    }

    /// Approximate file offset where `key` would be.
    pub fn approximate_offset(&self, key: &[u8]) -> u64 {
        let i = self.find_block(key, false);
        self.index
            .get(i)
            .map(|e| e.handle.offset)
            .unwrap_or(self.data_end)
    }

    /// An iterator over `[start, end)` style bounds. `compaction` reads ahead
    /// and bypasses the block cache.
    pub fn iter(
        self: &Arc<Self>,
        start: Bound<&[u8]>,
        end: Bound<Bytes>,
        compaction: bool,
    ) -> TableIter {
        let (block_idx, seek) = match start {
            Bound::Unbounded => (0, None),
            Bound::Included(k) => (self.find_block(k, false), Some((k.to_vec(), false))),
            Bound::Excluded(k) => (self.find_block(k, true), Some((k.to_vec(), true))),
        };
        TableIter {
            table: self.clone(),
            block_idx,
            cursor: None,
            seek,
            end,
            compaction,
            readahead: None,
        }
    }
}

/// A forward iterator over one table.
pub(crate) struct TableIter {
    table: Arc<Table>,
    block_idx: usize,
    cursor: Option<BlockCursor>,
    seek: Option<(Vec<u8>, bool)>,
    end: Bound<Bytes>,
    compaction: bool,
    readahead: Option<(u64, Bytes)>,
}

impl TableIter {
    fn load_block(&mut self, i: usize) -> Result<Arc<Block>> {
        if !self.compaction {
            return self.table.block(i);
        }
        let t = &self.table;
        let h = t.index[i].handle;
        let end = h.offset + u64::from(h.len);
        let covered = self
            .readahead
            .as_ref()
            .is_some_and(|(start, buf)| h.offset >= *start && end <= start + buf.len() as u64);
        if !covered {
            let want = (h.len as usize).max(COMPACTION_READAHEAD_BYTES) as u64;
            let chunk_end = (h.offset + want).min(t.data_end).max(end);
            let mut buf = vec![0u8; (chunk_end - h.offset) as usize];
            t.file
                .read_exact_at(h.offset, &mut buf)
                .map_err(|e| Error::io("read table for compaction", &t.path, e))?;
            Counters::add(&t.counters.compaction_bytes_read, buf.len() as u64);
            self.readahead = Some((h.offset, Bytes::from(buf)));
        }
        let Some((start, buf)) = &self.readahead else {
            return Err(Error::corruption(
                &t.path,
                h.offset,
                "readahead buffer missing",
            ));
        };
        let from = (h.offset - start) as usize;
        let framed = &buf[from..from + h.len as usize];
        let raw = frame::decode(framed).map_err(|e| frame_err(&t.path, h, e))?;
        Ok(Arc::new(Block::parse(raw).map_err(|m| t.block_err(i, m))?))
    }

    /// The next item, or `None` at the end of the range.
    pub fn next_item(&mut self) -> Result<Option<Item>> {
        loop {
            if self.cursor.is_none() {
                if self.block_idx >= self.table.index.len() {
                    return Ok(None);
                }
                let block = self.load_block(self.block_idx)?;
                let mut c = BlockCursor::new(block);
                if let Some((k, after)) = self.seek.take() {
                    c.seek(&k, after)
                        .map_err(|m| self.table.block_err(self.block_idx, m))?;
                }
                self.cursor = Some(c);
            }
            let Some(c) = self.cursor.as_mut() else {
                continue;
            };
            match c
                .next_item()
                .map_err(|m| self.table.block_err(self.block_idx, m))?
            {
                Some(item) => {
                    let within = match &self.end {
                        Bound::Unbounded => true,
                        Bound::Included(e) => item.key <= e,
                        Bound::Excluded(e) => item.key < e,
                    };
                    if !within {
                        self.block_idx = self.table.index.len();
                        self.cursor = None;
                        return Ok(None);
                    }
                    return Ok(Some(item));
                }
                None => {
                    self.cursor = None;
                    self.block_idx += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FaultFs, Fs};
    use crate::options::Compression;
    use crate::table::{BuildOptions, TableBuilder};
    use crate::types::{Entry, Op};
    use proptest::prelude::*;

    fn build_opts(compression: Compression) -> BuildOptions {
        BuildOptions {
            block_bytes: 256,
            restart_interval: 4,
            compression,
            zstd_level: 1,
            bloom_bits_per_key: 10,
        }
    }

    fn item(i: u32) -> Item {
        Item {
            key: Bytes::from(format!("key{:05}", i * 2)),
            seq: u64::from(i) + 1,
            op: if i.is_multiple_of(7) {
                Op::Delete
            } else {
                Op::Put(Entry {
                    value: Bytes::from(format!("value-{i}-{}", "x".repeat((i % 30) as usize))),
                    expires_at_ms: i.is_multiple_of(5).then_some(u64::from(i)),
                })
            },
        }
    }

    fn write_table(fs: &FaultFs, n: u32, compression: Compression) -> PathBuf {
        let dir = PathBuf::from("/t");
        fs.create_dir_all(&dir).unwrap();
        let path = dir.join("000001.sst");
        let f = fs.create(&path).unwrap();
        let mut b = TableBuilder::new(f, path.clone(), build_opts(compression), None);
        for i in 0..n {
            b.add(&item(i)).unwrap();
        }
        let (props, bytes) = b.finish().unwrap();
        assert_eq!(props.entries, u64::from(n));
        assert_eq!(Some(bytes), fs.file_len(&path));
        path
    }

    fn open(fs: &FaultFs, path: &Path) -> Result<Arc<Table>> {
        let fs: Arc<dyn Fs> = Arc::new(fs.clone());
        Table::open(
            fs,
            path.to_path_buf(),
            1,
            Arc::new(BlockCache::new(1 << 20)),
            Arc::new(Counters::default()),
        )
        .map(Arc::new)
    }

    #[test]
    fn builder_and_reader_round_trip_with_every_codec() {
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let fs = FaultFs::new(1);
            let path = write_table(&fs, 500, c);
            let t = open(&fs, &path).unwrap();
            assert_eq!(t.smallest(), b"key00000");
            assert_eq!(t.largest(), format!("key{:05}", 998).as_bytes());
            assert!(t.props().data_blocks > 10);
            for i in 0..500 {
                let want = item(i);
                let got = t
                    .get(&want.key, crate::table::bloom::key_hash(&want.key))
                    .unwrap()
                    .unwrap();
                assert_eq!((got.seq, got.op), (want.seq, want.op));
                let odd = format!("key{:05}", i * 2 + 1);
                assert!(
                    t.get(
                        odd.as_bytes(),
                        crate::table::bloom::key_hash(odd.as_bytes())
                    )
                    .unwrap()
                    .is_none()
                );
            }
            // Full and bounded iteration, cached and compaction-style.
            for compaction in [false, true] {
                let mut it = t.iter(Bound::Unbounded, Bound::Unbounded, compaction);
                let mut n = 0;
                while let Some(x) = it.next_item().unwrap() {
                    assert_eq!(x, item(n));
                    n += 1;
                }
                assert_eq!(n, 500);
            }
            let mut it = t.iter(
                Bound::Excluded(b"key00100"),
                Bound::Included(Bytes::from_static(b"key00200")),
                false,
            );
            let mut keys = Vec::new();
            while let Some(x) = it.next_item().unwrap() {
                keys.push(x.key);
            }
            assert_eq!(keys.len(), 50);
            assert_eq!(keys[0].as_ref(), b"key00102");
            assert_eq!(keys[49].as_ref(), b"key00200");
            let mid = t.approximate_offset(b"key00500");
            assert!(mid > 0 && mid < t.file_bytes());
        }
    }

    #[test]
    fn an_empty_table_opens_and_finds_nothing() {
        let fs = FaultFs::new(2);
        let path = write_table(&fs, 0, Compression::Lz4);
        let t = open(&fs, &path).unwrap();
        assert!(
            t.get(b"a", crate::table::bloom::key_hash(b"a"))
                .unwrap()
                .is_none()
        );
        assert!(
            t.iter(Bound::Unbounded, Bound::Unbounded, false)
                .next_item()
                .unwrap()
                .is_none()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let fs = FaultFs::new(3);
            let dir = PathBuf::from("/t");
            fs.create_dir_all(&dir).unwrap();
            let path = dir.join("000009.sst");
            fs.create(&path).unwrap().append(&bytes).unwrap();
            if let Ok(t) = open(&fs, &path) {
                let _ = t.get(b"k", crate::table::bloom::key_hash(b"k"));
                let mut it = t.iter(Bound::Unbounded, Bound::Unbounded, true);
                while let Ok(Some(_)) = it.next_item() {}
            }
        }

        #[test]
        fn damaged_tables_error_or_serve_only_true_data(flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4)) {
            let fs = FaultFs::new(4);
            let path = write_table(&fs, 200, Compression::Lz4);
            let len = fs.file_len(&path).unwrap() as usize;
            for (pos, x) in flips {
                fs.corrupt_byte(&path, pos % len, x).unwrap();
            }
            if let Ok(t) = open(&fs, &path) {
                for i in 0..200 {
                    let want = item(i);
                    if let Ok(Some(got)) = t.get(&want.key, crate::table::bloom::key_hash(&want.key)) {
                        prop_assert_eq!((got.seq, got.op), (want.seq, want.op));
                    }
                }
                let mut it = t.iter(Bound::Unbounded, Bound::Unbounded, false);
                while let Ok(Some(x)) = it.next_item() {
                    let i: u32 = std::str::from_utf8(&x.key[3..]).unwrap().parse::<u32>().unwrap() / 2;
                    prop_assert_eq!(x, item(i));
                }
            }
        }
    }
}
