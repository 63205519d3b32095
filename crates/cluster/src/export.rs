//! The export format: a cluster's keys with their whole records (siblings,
//! version vector, expiries), portable to a cluster of any size.
//!
//! # Format (do not change: in files)
//! ```text
//! file   := header item* end
//! header := magic:8 = "ringkvEX"  version:u32le = 1  created_at_ms:u64le  crc:u32le
//! item   := kind:u8 = 1  key_len:u32le  record_len:u32le  key  record  crc:u32le
//! end    := kind:u8 = 0  count:u64le  crc:u32le
//! ```
//! Each `crc` is CRC-32C of the bytes of its header, item or end before it.
//! `record` is the stored record (`SiblingSet::encode`, magic `0xD7`).
//! `count` is the number of items: a file cut short has no end, and is
//! refused with the offset where it stops; a damaged item is refused with
//! its offset. Over HTTP (`/v1/export`, `/v1/import`) bodies are items
//! only.

use std::io::Read;

use bytes::Bytes;

/// Do not change: in files.
pub const MAGIC: &[u8; 8] = b"ringkvEX";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 24;
const KIND_ITEM: u8 = 1;
const KIND_END: u8 = 0;
/// Bounds checked before allocating: a key, and a record.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
pub const RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Why an export could not be read, and where.
#[derive(Debug, thiserror::Error)]
#[error("export at byte {offset}: {why}")]
pub struct FormatError {
    pub offset: u64,
    pub why: String,
}

/// One element after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Record { key: Bytes, record: Bytes },
    End { count: u64 },
}

/// The header of a file created at `created_at_ms`.
pub fn header(created_at_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&created_at_ms.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Appends one item.
pub fn put_record(out: &mut Vec<u8>, key: &[u8], record: &[u8]) {
    let start = out.len();
    out.push(KIND_ITEM);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(record);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The end of a file of `count` items.
pub fn end(count: u64) -> Vec<u8> {
    let mut out = vec![KIND_END];
    out.extend_from_slice(&count.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads items from a stream, counting its offset.
pub struct ItemReader<R> {
    inner: R,
    /// Bytes read so far (the offset of the next item).
    pub offset: u64,
}

impl<R: Read> ItemReader<R> {
    pub fn new(inner: R, offset: u64) -> Self {
        Self { inner, offset }
    }

    fn fill(&mut self, buf: &mut [u8], at: u64, what: &str) -> Result<(), FormatError> {
        self.inner.read_exact(buf).map_err(|e| FormatError {
            offset: at,
            why: if e.kind() == std::io::ErrorKind::UnexpectedEof {
                format!("the file ends inside {what}: cut short")
            } else {
                format!("reading {what}: {e}")
            },
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Reads and checks the header; its creation time.
    pub fn header(&mut self) -> Result<u64, FormatError> {
        let mut h = [0u8; HEADER_BYTES];
        self.fill(&mut h, 0, "the header")?;
        let bad = |why: String| FormatError { offset: 0, why };
        if &h[..8] != MAGIC {
            return Err(bad("not a ringkv export (bad magic)".into()));
        }
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if version != VERSION {
            return Err(bad(format!(
                "format version {version}; this version reads {VERSION}"
            )));
        }
        let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
        if crc32c::crc32c(&h[..20]) != crc {
            return Err(bad("the header fails its checksum".into()));
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&h[12..20]);
        Ok(u64::from_le_bytes(at))
    }

    /// The next item; `None` at the end of a body (never inside an item).
    pub fn next_item(&mut self) -> Result<Option<Item>, FormatError> {
        let at = self.offset;
        let mut kind = [0u8; 1];
        match self.inner.read(&mut kind) {
            Ok(0) => return Ok(None),
            Ok(_) => self.offset += 1,
            Err(e) => {
                return Err(FormatError {
                    offset: at,
                    why: format!("reading: {e}"),
                });
            }
        }
        let bad = |why: &str| FormatError {
            offset: at,
            why: why.to_string(),
        };
        match kind[0] {
            KIND_END => {
                let mut rest = [0u8; 12];
                self.fill(&mut rest, at, "the end")?;
                let mut body = vec![KIND_END];
                body.extend_from_slice(&rest[..8]);
                let crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if crc32c::crc32c(&body) != crc {
                    return Err(bad("the end fails its checksum"));
                }
                let mut count = [0u8; 8];
                count.copy_from_slice(&rest[..8]);
                Ok(Some(Item::End {
                    count: u64::from_le_bytes(count),
                }))
            }
            KIND_ITEM => {
                let mut lens = [0u8; 8];
                self.fill(&mut lens, at, "an item")?;
                let key_len = u32::from_le_bytes([lens[0], lens[1], lens[2], lens[3]]) as usize;
                let rec_len = u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]) as usize;
                if key_len > KEY_BYTES_MAX || rec_len > RECORD_BYTES_MAX {
                    return Err(bad("an item's lengths are out of bounds: damaged"));
                }
                let mut body = vec![0u8; key_len + rec_len + 4];
                self.fill(&mut body, at, "an item")?;
                let crc_at = key_len + rec_len;
                let crc = u32::from_le_bytes([
                    body[crc_at],
                    body[crc_at + 1],
                    body[crc_at + 2],
                    body[crc_at + 3],
                ]);
                let mut hasher_input = Vec::with_capacity(9 + crc_at);
                hasher_input.push(KIND_ITEM);
                hasher_input.extend_from_slice(&lens);
                hasher_input.extend_from_slice(&body[..crc_at]);
                if crc32c::crc32c(&hasher_input) != crc {
                    return Err(bad("an item fails its checksum: damaged"));
                }
                body.truncate(crc_at);
                let mut body = Bytes::from(body);
                let key = body.split_to(key_len);
                Ok(Some(Item::Record { key, record: body }))
            }
            other => Err(bad(&format!("unknown item kind {other}: damaged"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u64) -> Vec<u8> {
        let mut f = header(42);
        for i in 0..n {
            put_record(&mut f, format!("k{i}").as_bytes(), &[0xD7, 1, i as u8]);
        }
        f.extend(end(n));
        f
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Item>, FormatError> {
        let mut r = ItemReader::new(bytes, 0);
        assert_eq!(r.header()?, 42);
        let mut items = Vec::new();
        while let Some(item) = r.next_item()? {
            items.push(item);
        }
        Ok(items)
    }

    #[test]
    fn a_file_round_trips() {
        let items = read_all(&file(3)).expect("read");
        assert_eq!(items.len(), 4);
        assert_eq!(
            items[1],
            Item::Record {
                key: Bytes::from_static(b"k1"),
                record: Bytes::from_static(&[0xD7, 1, 1])
            }
        );
        assert_eq!(items[3], Item::End { count: 3 });
    }

    #[test]
    fn damage_and_truncation_are_found_with_their_offset() {
        let f = file(3);
        // Cut inside the second item.
        let cut = HEADER_BYTES + 18 + 5;
        let err = read_all(&f[..cut]).expect_err("cut");
        assert!(err.why.contains("cut short"), "{err}");
        assert_eq!(err.offset, (HEADER_BYTES + 18) as u64);
        // One flipped byte in the third item's key.
        let mut bad = f.clone();
        bad[HEADER_BYTES + 2 * 18 + 9] ^= 1;
        let err = read_all(&bad).expect_err("flipped");
        assert!(err.why.contains("checksum"), "{err}");
        assert_eq!(err.offset, (HEADER_BYTES + 2 * 18) as u64);
        let mut bad = f;
        bad[0] = b'x';
        assert!(read_all(&bad).expect_err("magic").why.contains("magic"));
    }
}
