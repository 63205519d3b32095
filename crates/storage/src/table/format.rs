//! The SSTable's fixed parts: footer, block handles, index block and meta
//! block. The overall file grammar is documented in `table/builder.rs`.
//!
//! ## Format (do not change: on disk)
//! ```text
//! footer  := index:handle filter:handle meta:handle
//!            format_version:u32le footer_crc:u32le magic:u64le      (52 bytes)
//! handle  := offset:u64le frame_len:u32le          (a frame, see frame.rs)
//! footer_crc := crc32c(the 40 bytes before it)
//! index   := count:varint (last_key:len_prefixed offset:varint frame_len:varint)*count
//! meta    := entries:varint tombstones:varint raw_key_bytes:varint
//!            raw_value_bytes:varint min_seq:varint max_seq:varint
//!            data_blocks:varint smallest:len_prefixed largest:len_prefixed
//! len_prefixed := len:varint bytes[len]
//! ```
//! Index entries are in key order, one per data block, keyed by the block's
//! last key; the blocks they point at tile the data region without gaps.

use bytes::Bytes;

use crate::coding::{
    DecodeResult, Malformed, Reader, get_u32_at, get_u64_at, put_len_prefixed, put_u32, put_u64,
    put_varint,
};

/// "ringkvST" read as a little-endian u64. Do not change: on disk.
pub(crate) const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"ringkvST");
/// The table format this build writes and reads. Do not change: on disk.
pub(crate) const TABLE_FORMAT_VERSION: u32 = 1;
pub(crate) const FOOTER_BYTES: usize = 52;
/// Largest key a table may hold (also bounds index decoding).
pub(crate) const TABLE_KEY_BYTES_MAX: usize = 1 << 24;

/// Where a frame sits in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handle {
    pub offset: u64,
    pub len: u32,
}

/// The decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub index: Handle,
    pub filter: Handle,
    pub meta: Handle,
}

impl Footer {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        for h in [self.index, self.filter, self.meta] {
            put_u64(out, h.offset);
            put_u32(out, h.len);
        }
        put_u32(out, TABLE_FORMAT_VERSION);
        let crc = crc32c::crc32c(&out[start..]);
        put_u32(out, crc);
        put_u64(out, TABLE_MAGIC);
    }

    /// Decodes the last [`FOOTER_BYTES`] of a file of `file_len` bytes and checks
    /// that the handles lie inside the file.
    pub fn decode(b: &[u8], file_len: u64) -> DecodeResult<Footer> {
        let bad = |offset, detail| Err(Malformed { offset, detail });
        if b.len() != FOOTER_BYTES {
            return bad(0, "footer has the wrong size");
        }
        if get_u64_at(b, 44) != Some(TABLE_MAGIC) {
            return bad(44, "bad table magic number (not an SSTable)");
        }
        if get_u32_at(b, 40) != Some(crc32c::crc32c(&b[..40])) {
            return bad(40, "footer checksum mismatch");
        }
        let version = get_u32_at(b, 36).unwrap_or(0);
        if version != TABLE_FORMAT_VERSION {
            return bad(36, "unsupported table format version");
        }
        let h = |at: usize| Handle {
            offset: get_u64_at(b, at).unwrap_or(u64::MAX),
            len: get_u32_at(b, at + 8).unwrap_or(0),
        };
        let footer = Footer {
            index: h(0),
            filter: h(12),
            meta: h(24),
        };
        let body_end = file_len.saturating_sub(FOOTER_BYTES as u64);
        for (i, hd) in [footer.index, footer.filter, footer.meta]
            .iter()
            .enumerate()
        {
            let end = hd.offset.checked_add(u64::from(hd.len));
            if end.is_none_or(|e| e > body_end)
                || (hd.len as usize) < super::frame::FRAME_TRAILER_BYTES
            {
                return bad(i * 12, "block handle points outside the file");
            }
        }
        Ok(footer)
    }
}

/// One index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub last_key: Bytes,
    pub handle: Handle,
}

pub(crate) fn encode_index(entries: &[IndexEntry], out: &mut Vec<u8>) {
    put_varint(out, entries.len() as u64);
    for e in entries {
        put_len_prefixed(out, &e.last_key);
        put_varint(out, e.handle.offset);
        put_varint(out, u64::from(e.handle.len));
    }
}

/// Decodes an index block and checks that its blocks tile `[0, data_end)` in
/// key order.
pub(crate) fn decode_index(raw: &Bytes, data_end: u64) -> DecodeResult<Vec<IndexEntry>> {
    let mut r = Reader::new(raw);
    let count = r.varint_len(raw.len())?;
    let mut out: Vec<IndexEntry> = Vec::with_capacity(count);
    let mut expect_offset = 0u64;
    for _ in 0..count {
        let at = r.pos();
        let key = r.len_prefixed(TABLE_KEY_BYTES_MAX)?;
        let key_start = r.pos() - key.len();
        let offset = r.varint()?;
        let len = r.varint()?;
        let bad = |detail| Err(Malformed { offset: at, detail });
        if len > u64::from(u32::MAX) || (len as usize) < super::frame::FRAME_TRAILER_BYTES {
            return bad("index entry length out of range");
        }
        if offset != expect_offset {
            return bad("index entries do not tile the data region");
        }
        if out.last().is_some_and(|p| p.last_key.as_ref() >= key) {
            return bad("index keys out of order");
        }
        expect_offset = offset + len;
        out.push(IndexEntry {
            last_key: raw.slice(key_start..key_start + key.len()),
            handle: Handle {
                offset,
                len: len as u32,
            },
        });
    }
    if !r.is_empty() {
        return Err(Malformed {
            offset: r.pos(),
            detail: "trailing bytes in the index block",
        });
    }
    if expect_offset != data_end {
        return Err(Malformed {
            offset: 0,
            detail: "index does not cover the data region",
        });
    }
    Ok(out)
}

/// What a table holds, recorded in its meta block and in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TableProps {
    pub entries: u64,
    pub tombstones: u64,
    pub raw_key_bytes: u64,
    pub raw_value_bytes: u64,
    pub min_seq: u64,
    pub max_seq: u64,
    pub data_blocks: u64,
    pub smallest: Bytes,
    pub largest: Bytes,
}

impl TableProps {
    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.entries,
            self.tombstones,
            self.raw_key_bytes,
            self.raw_value_bytes,
            self.min_seq,
            self.max_seq,
            self.data_blocks,
        ] {
            put_varint(out, v);
        }
        put_len_prefixed(out, &self.smallest);
        put_len_prefixed(out, &self.largest);
    }

    pub fn decode(raw: &[u8]) -> DecodeResult<TableProps> {
        let mut r = Reader::new(raw);
        let mut p = TableProps {
            entries: r.varint()?,
            tombstones: r.varint()?,
            raw_key_bytes: r.varint()?,
            raw_value_bytes: r.varint()?,
            min_seq: r.varint()?,
            max_seq: r.varint()?,
            data_blocks: r.varint()?,
            ..TableProps::default()
        };
        p.smallest = Bytes::copy_from_slice(r.len_prefixed(TABLE_KEY_BYTES_MAX)?);
        p.largest = Bytes::copy_from_slice(r.len_prefixed(TABLE_KEY_BYTES_MAX)?);
        if p.smallest > p.largest || p.min_seq > p.max_seq || p.tombstones > p.entries {
            return Err(Malformed {
                offset: 0,
                detail: "table properties are inconsistent",
            });
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn footer_round_trips_and_rejects_damage() {
        let f = Footer {
            index: Handle {
                offset: 100,
                len: 50,
            },
            filter: Handle {
                offset: 150,
                len: 20,
            },
            meta: Handle {
                offset: 170,
                len: 30,
            },
        };
        let mut b = Vec::new();
        f.encode(&mut b);
        assert_eq!(b.len(), FOOTER_BYTES);
        assert_eq!(Footer::decode(&b, 200 + FOOTER_BYTES as u64), Ok(f));
        // Handles past the end of a shorter file.
        assert!(Footer::decode(&b, 150).is_err());
        for pos in 0..b.len() {
            let mut bad = b.clone();
            bad[pos] ^= 0x10;
            assert!(Footer::decode(&bad, 1000).is_err(), "flip at {pos}");
        }
    }

    #[test]
    fn index_must_tile_the_data_region_in_order() {
        let e = |k: &'static [u8], offset, len| IndexEntry {
            last_key: Bytes::from_static(k),
            handle: Handle { offset, len },
        };
        let mut b = Vec::new();
        encode_index(&[e(b"b", 0, 10), e(b"d", 10, 20)], &mut b);
        let raw = Bytes::from(b);
        assert_eq!(decode_index(&raw, 30).unwrap().len(), 2);
        assert!(decode_index(&raw, 31).is_err());
        let mut b = Vec::new();
        encode_index(&[e(b"d", 0, 10), e(b"b", 10, 20)], &mut b);
        assert!(decode_index(&Bytes::from(b), 30).is_err());
        let mut b = Vec::new();
        encode_index(&[e(b"b", 0, 10), e(b"d", 11, 20)], &mut b);
        assert!(decode_index(&Bytes::from(b), 31).is_err());
    }

    #[test]
    fn props_round_trip() {
        let p = TableProps {
            entries: 10,
            tombstones: 2,
            raw_key_bytes: 30,
            raw_value_bytes: 300,
            min_seq: 5,
            max_seq: 50,
            data_blocks: 1,
            smallest: Bytes::from_static(b"a"),
            largest: Bytes::from_static(b"z"),
        };
        let mut b = Vec::new();
        p.encode(&mut b);
        assert_eq!(TableProps::decode(&b), Ok(p));
    }

    proptest! {
        #[test]
        fn arbitrary_footer_index_and_props_never_panic(bytes: Vec<u8>, len in 0u64..1_000_000) {
            let _ = Footer::decode(&bytes, len);
            let mut padded = bytes.clone();
            padded.resize(FOOTER_BYTES, 0);
            let _ = Footer::decode(&padded, len);
            let _ = decode_index(&Bytes::from(bytes.clone()), len);
            let _ = TableProps::decode(&bytes);
        }
    }
}
