//! Data blocks: the sorted, prefix-compressed runs of entries inside an
//! SSTable, before compression and framing.
//!
//! Owns the entry encoding, restart points, and search within one block.
//!
//! ## Format (do not change: on disk)
//! ```text
//! block    := entry* restart:u32le* restart_count:u32le
//! entry    := shared:varint unshared:varint value_len:varint
//!             key_suffix[unshared]
//!             trailer:u64le                       seq << 8 | kind
//!             [expires_at_ms:u64le]               if kind = 2 (put with expiry)
//!             value[value_len]                    value_len = 0 for kind = 0 (delete)
//! ```
//! An entry's key is the first `shared` bytes of the previous entry's key
//! followed by `key_suffix`. Every `restart_interval`-th entry is a restart
//! point: it stores its whole key (`shared` = 0) and its offset is listed in
//! the restart array, so a search can binary-search the restarts and then scan
//! at most `restart_interval` entries. Keys strictly increase within a block
//! (a table holds at most one version of each user key).

use std::cmp::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::coding::{DecodeResult, Malformed, Reader, get_u32_at, put_u32, put_u64, put_varint};
use crate::types::{Entry, Item, ItemRef, Kind, Op};

/// Sequence numbers must fit in the 56 high bits of the trailer.
pub(crate) const SEQ_MAX: u64 = (1 << 56) - 1;

/// Builds one data block.
#[derive(Debug)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    since_restart: usize,
    restart_interval: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl BlockBuilder {
    pub fn new(restart_interval: usize) -> Self {
        BlockBuilder {
            buf: Vec::with_capacity(8192),
            restarts: Vec::new(),
            since_restart: 0,
            restart_interval: restart_interval.max(1),
            last_key: Vec::new(),
            entries: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The size the block will have once finished.
    pub fn estimated_bytes(&self) -> usize {
        self.buf.len() + 4 * (self.restarts.len() + 1)
    }

    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Adds an entry; its key must be greater than the previous one.
    #[cfg(test)]
    pub fn add(&mut self, item: &Item) {
        self.add_ref(&item.as_item_ref());
    }

    /// Adds an entry; its key must be greater than the previous one.
    pub fn add_ref(&mut self, item: &ItemRef<'_>) {
        debug_assert!(self.entries == 0 || item.key > self.last_key.as_slice());
        debug_assert!(item.seq <= SEQ_MAX);
        let shared = if self.since_restart == 0 {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            self.last_key
                .iter()
                .zip(item.key.iter())
                .take_while(|(a, b)| a == b)
                .count()
        };
        let suffix = &item.key[shared..];
        let value = if item.kind == Kind::Delete {
            &[][..]
        } else {
            item.value
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, suffix.len() as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(suffix);
        let kind = match (item.kind, item.expires_at_ms) {
            (Kind::Delete, _) => Kind::Delete,
            (_, Some(t)) => {
                put_u64(&mut self.buf, (item.seq << 8) | Kind::PutExpiring as u64);
                put_u64(&mut self.buf, t);
                Kind::PutExpiring
            }
            (_, None) => Kind::Put,
        };
        if kind != Kind::PutExpiring {
            put_u64(&mut self.buf, (item.seq << 8) | kind as u64);
        }
        self.buf.extend_from_slice(value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(suffix);
        self.entries += 1;
        self.since_restart += 1;
        if self.since_restart >= self.restart_interval {
            self.since_restart = 0;
        }
    }

    /// Finishes the block and returns its bytes; the builder is reset.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for r in &self.restarts {
            put_u32(&mut out, *r);
        }
        put_u32(&mut out, self.restarts.len() as u32);
        self.restarts.clear();
        self.since_restart = 0;
        self.entries = 0;
        self.last_key.clear();
        self.buf = Vec::with_capacity(out.capacity());
        out
    }
}

/// A decoded (decompressed, checksum-verified) data block.
#[derive(Debug)]
pub(crate) struct Block {
    data: Bytes,
    restarts_at: usize,
    restart_count: usize,
}

/// An entry's decoded fixed parts; the value is materialised on demand.
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: u64,
    kind: Kind,
    expires_at_ms: Option<u64>,
    value_start: usize,
    value_len: usize,
}

/// One entry as decoded, without its key.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub seq: u64,
    pub op: Op,
}

fn bad<T>(offset: usize, detail: &'static str) -> DecodeResult<T> {
    Err(Malformed { offset, detail })
}

impl Block {
    /// Validates the restart array and wraps `data`.
    pub fn parse(data: Bytes) -> DecodeResult<Block> {
        let len = data.len();
        if len < 4 {
            return bad(0, "block shorter than its restart count");
        }
        let count = get_u32_at(&data, len - 4).unwrap_or(0) as usize;
        let array_bytes = count.checked_mul(4).filter(|&b| b <= len - 4);
        let Some(array_bytes) = array_bytes else {
            return bad(len - 4, "restart count larger than the block");
        };
        let restarts_at = len - 4 - array_bytes;
        if count == 0 && restarts_at != 0 {
            return bad(len - 4, "entries without restart points");
        }
        let mut prev = None;
        for i in 0..count {
            let r = get_u32_at(&data, restarts_at + 4 * i).unwrap_or(u32::MAX) as usize;
            if r >= restarts_at || prev.is_some_and(|p| r <= p) || (i == 0 && r != 0) {
                return bad(
                    restarts_at + 4 * i,
                    "restart offset out of order or out of range",
                );
            }
            prev = Some(r);
        }
        Ok(Block {
            data,
            restarts_at,
            restart_count: count,
        })
    }

    /// Bytes held (for cache weighting).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn restart(&self, i: usize) -> usize {
        get_u32_at(&self.data, self.restarts_at + 4 * i).unwrap_or(0) as usize
    }

    /// Decodes the entry at `off` without touching its value, rebuilding its
    /// key in `key` (which must hold the previous entry's key). Returns the
    /// entry's head and the next offset.
    fn head_at(&self, off: usize, key: &mut Vec<u8>) -> DecodeResult<(Head, usize)> {
        let body = &self.data[..self.restarts_at];
        let mut r = Reader::new(body.get(off..).unwrap_or(&[]));
        let fix = |m: Malformed| Malformed {
            offset: m.offset + off,
            detail: m.detail,
        };
        let shared = r.varint_len(usize::MAX).map_err(fix)?;
        let unshared = r.varint_len(usize::MAX).map_err(fix)?;
        let value_len = r.varint_len(usize::MAX).map_err(fix)?;
        if shared > key.len() {
            return bad(off, "shared key prefix longer than the previous key");
        }
        let suffix = r.bytes(unshared).map_err(fix)?;
        key.truncate(shared);
        key.extend_from_slice(suffix);
        let trailer = r.u64().map_err(fix)?;
        let Some(kind) = Kind::from_u8(trailer as u8) else {
            return bad(off, "unknown entry kind");
        };
        let expires_at_ms = match kind {
            Kind::Delete if value_len != 0 => return bad(off, "delete entry with a value"),
            Kind::PutExpiring => Some(r.u64().map_err(fix)?),
            _ => None,
        };
        let value_start = off + r.pos();
        r.bytes(value_len).map_err(fix)?;
        Ok((
            Head {
                seq: trailer >> 8,
                kind,
                expires_at_ms,
                value_start,
                value_len,
            },
            off + r.pos(),
        ))
    }

    fn entry(&self, h: &Head) -> RawEntry {
        let op = match h.kind {
            Kind::Delete => Op::Delete,
            Kind::Put | Kind::PutExpiring => Op::Put(Entry {
                value: self.data.slice(h.value_start..h.value_start + h.value_len),
                expires_at_ms: h.expires_at_ms,
            }),
        };
        RawEntry { seq: h.seq, op }
    }

    /// Decodes the entry at `off`, rebuilding its key in `key` (which must hold
    /// the previous entry's key). Returns the entry and the next offset.
    pub fn decode_at(&self, off: usize, key: &mut Vec<u8>) -> DecodeResult<(RawEntry, usize)> {
        let (h, next) = self.head_at(off, key)?;
        Ok((self.entry(&h), next))
    }

    /// The key stored at restart point `i`, in place.
    fn restart_key(&self, i: usize) -> DecodeResult<&[u8]> {
        let off = self.restart(i);
        let mut r = Reader::new(self.data.get(off..self.restarts_at).unwrap_or(&[]));
        let shared = r.varint()?;
        if shared != 0 {
            return bad(off, "restart entry shares a prefix");
        }
        let unshared = r.varint_len(usize::MAX)?;
        let _value_len = r.varint()?;
        r.bytes(unshared).map_err(|m| Malformed {
            offset: m.offset + off,
            detail: m.detail,
        })
    }

    /// The last restart point whose key does not pass `passes` (0 if all do).
    fn search_restarts(&self, passes: impl Fn(&[u8]) -> bool) -> DecodeResult<usize> {
        let (mut lo, mut hi) = (0usize, self.restart_count - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if passes(self.restart_key(mid)?) {
                hi = mid - 1;
            } else {
                lo = mid;
            }
        }
        Ok(lo)
    }

    /// Positions on the first entry whose key is `>= target` (or `> target`
    /// when `after` is set). Returns the offset of that entry and leaves `key`
    /// holding the key *before* it (ready for [`Block::decode_at`]); `None`
    /// when every key is smaller.
    pub fn seek(
        &self,
        target: &[u8],
        after: bool,
        key: &mut Vec<u8>,
    ) -> DecodeResult<Option<usize>> {
        if self.restart_count == 0 {
            return Ok(None);
        }
        let passes = |k: &[u8]| match k.cmp(target) {
            Ordering::Less => false,
            Ordering::Equal => !after,
            Ordering::Greater => true,
        };
        let lo = self.search_restarts(passes)?;
        let first = self.restart(lo);
        let mut off = first;
        key.clear();
        let mut prev = Vec::with_capacity(target.len() + 16);
        while off < self.restarts_at {
            prev.clear();
            prev.extend_from_slice(key);
            let (_, next) = self.head_at(off, key)?;
            if off != first && key.as_slice() <= prev.as_slice() {
                return bad(off, "keys out of order");
            }
            if passes(key) {
                std::mem::swap(key, &mut prev);
                return Ok(Some(off));
            }
            off = next;
        }
        Ok(None)
    }

    /// The entry for exactly `target`: a binary search over the restart keys
    /// (compared in place), then a scan of at most one restart interval that
    /// materialises only the matching value.
    pub fn get(&self, target: &[u8]) -> DecodeResult<Option<RawEntry>> {
        if self.restart_count == 0 {
            return Ok(None);
        }
        let lo = self.search_restarts(|k| k > target)?;
        let mut off = self.restart(lo);
        let end = if lo + 1 < self.restart_count {
            self.restart(lo + 1)
        } else {
            self.restarts_at
        };
        let mut key = Vec::with_capacity(target.len() + 16);
        while off < end {
            let (h, next) = self.head_at(off, &mut key)?;
            match key.as_slice().cmp(target) {
                Ordering::Less => off = next,
                Ordering::Equal => return Ok(Some(self.entry(&h))),
                Ordering::Greater => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The offset where entries end (start of the restart array).
    pub fn end(&self) -> usize {
        self.restarts_at
    }
}

/// A forward cursor over one block.
#[derive(Debug)]
pub(crate) struct BlockCursor {
    pub block: Arc<Block>,
    pub off: usize,
    pub key: Vec<u8>,
    prev: Vec<u8>,
}

impl BlockCursor {
    pub fn new(block: Arc<Block>) -> Self {
        BlockCursor {
            block,
            off: 0,
            key: Vec::new(),
            prev: Vec::new(),
        }
    }

    /// Positions before the first key `>= target` (`> target` with `after`).
    pub fn seek(&mut self, target: &[u8], after: bool) -> DecodeResult<()> {
        match self.block.seek(target, after, &mut self.key)? {
            Some(off) => self.off = off,
            None => self.off = self.block.end(),
        }
        Ok(())
    }

    /// The next entry, or `None` at the end of the block.
    pub fn next_item(&mut self) -> DecodeResult<Option<Item>> {
        if self.off >= self.block.end() {
            return Ok(None);
        }
        self.prev.clear();
        self.prev.extend_from_slice(&self.key);
        let (e, next) = self.block.decode_at(self.off, &mut self.key)?;
        if !self.prev.is_empty() && self.key <= self.prev {
            return bad(self.off, "keys out of order");
        }
        self.off = next;
        Ok(Some(Item {
            key: Bytes::copy_from_slice(&self.key),
            seq: e.seq,
            op: e.op,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(k: &str, seq: u64, v: Option<&str>, exp: Option<u64>) -> Item {
        Item {
            key: Bytes::copy_from_slice(k.as_bytes()),
            seq,
            op: match v {
                None => Op::Delete,
                Some(v) => Op::Put(Entry {
                    value: Bytes::copy_from_slice(v.as_bytes()),
                    expires_at_ms: exp,
                }),
            },
        }
    }

    fn build(items: &[Item], interval: usize) -> Arc<Block> {
        let mut b = BlockBuilder::new(interval);
        for i in items {
            b.add(i);
        }
        Arc::new(Block::parse(Bytes::from(b.finish())).unwrap())
    }

    fn sample() -> Vec<Item> {
        (0..50)
            .map(|i| {
                let k = format!("key{:03}", i * 2);
                match i % 5 {
                    0 => item(&k, i, None, None),
                    1 => item(&k, i, Some("exp"), Some(1000 + i)),
                    _ => item(&k, i, Some(&format!("value{i}")), None),
                }
            })
            .collect()
    }

    #[test]
    fn iterates_back_what_was_added() {
        for interval in [1, 3, 16] {
            let items = sample();
            let block = build(&items, interval);
            let mut c = BlockCursor::new(block);
            let mut got = Vec::new();
            while let Some(i) = c.next_item().unwrap() {
                got.push(i);
            }
            assert_eq!(got, items);
        }
    }

    #[test]
    fn get_and_seek_find_exact_and_next_keys() {
        let items = sample();
        let block = build(&items, 4);
        for it in &items {
            let e = block.get(&it.key).unwrap().expect("present");
            assert_eq!((e.seq, e.op.clone()), (it.seq, it.op.clone()));
        }
        assert!(block.get(b"key001").unwrap().is_none());
        assert!(block.get(b"a").unwrap().is_none());
        assert!(block.get(b"zzz").unwrap().is_none());
        let mut c = BlockCursor::new(block.clone());
        c.seek(b"key001", false).unwrap();
        assert_eq!(c.next_item().unwrap().unwrap().key.as_ref(), b"key002");
        c.seek(b"key002", true).unwrap();
        assert_eq!(c.next_item().unwrap().unwrap().key.as_ref(), b"key004");
        c.seek(b"key098", true).unwrap();
        assert!(c.next_item().unwrap().is_none());
        c.seek(b"", false).unwrap();
        assert_eq!(c.next_item().unwrap().unwrap().key.as_ref(), b"key000");
    }

    #[test]
    fn bad_restart_arrays_are_rejected() {
        assert!(Block::parse(Bytes::from_static(&[1, 2])).is_err());
        assert!(Block::parse(Bytes::from_static(&[9, 0, 0, 0])).is_err());
        // One restart pointing past the entries.
        assert!(Block::parse(Bytes::from_static(&[0, 0, 9, 0, 0, 0, 1, 0, 0, 0])).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_block_bytes_never_panic(bytes: Vec<u8>, probe: Vec<u8>) {
            if let Ok(block) = Block::parse(Bytes::from(bytes)) {
                let block = Arc::new(block);
                let _ = block.get(&probe);
                let mut c = BlockCursor::new(block);
                let _ = c.seek(&probe, false);
                for _ in 0..64 {
                    match c.next_item() {
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }
        }

        #[test]
        fn mutated_blocks_never_panic(flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..6)) {
            let mut b = BlockBuilder::new(4);
            for it in sample() { b.add(&it); }
            let mut bytes = b.finish();
            for (pos, x) in flips { let n = bytes.len(); bytes[pos % n] ^= x; }
            if let Ok(block) = Block::parse(Bytes::from(bytes)) {
                let block = Arc::new(block);
                let _ = block.get(b"key010");
                let mut c = BlockCursor::new(block);
                for _ in 0..100 {
                    match c.next_item() { Ok(Some(_)) => {} _ => break }
                }
            }
        }
    }
}
