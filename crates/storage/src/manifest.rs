//! The manifest: the durable list of live tables per level, plus the counters
//! recovery needs (next file number, last flushed sequence number, oldest log
//! segment still needed).
//!
//! Owns the manifest's byte format and its atomic replacement. Every change of
//! the live-file set writes a whole new manifest: write `MANIFEST.tmp`, fsync
//! it, rename it over `MANIFEST`, fsync the directory. A crash at any point
//! leaves either the old or the new manifest, never a mix.
//!
//! ## Format (do not change: on disk)
//! ```text
//! manifest := magic:u64le("ringkvMF") format_version:u32le body_len:u32le body_crc:u32le body
//! body     := next_file_number:varint last_seq:varint log_number:varint
//!             table_count:varint table*
//! table    := level:u8 file_number:varint file_bytes:varint
//! ```
//! `log_number`: log segments numbered below it hold only flushed data.
//! `last_seq`: every write with a sequence number at or below it is in a table.

use std::path::Path;

use crate::coding::{Reader, get_u32_at, get_u64_at, put_u32, put_u64, put_varint};
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::util::{MANIFEST_NAME, MANIFEST_TMP_NAME};

/// Do not change: on disk.
pub(crate) const MANIFEST_MAGIC: u64 = u64::from_le_bytes(*b"ringkvMF");
pub(crate) const MANIFEST_FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 20;
/// Upper bound on live tables, against garbage counts.
const TABLES_MAX: usize = 10_000_000;

/// One live table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableRecord {
    pub level: u8,
    pub number: u64,
    pub file_bytes: u64,
}

/// The manifest's content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Manifest {
    pub next_file_number: u64,
    pub last_seq: u64,
    pub log_number: u64,
    pub tables: Vec<TableRecord>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + self.tables.len() * 12);
        put_varint(&mut body, self.next_file_number);
        put_varint(&mut body, self.last_seq);
        put_varint(&mut body, self.log_number);
        put_varint(&mut body, self.tables.len() as u64);
        for t in &self.tables {
            body.push(t.level);
            put_varint(&mut body, t.number);
            put_varint(&mut body, t.file_bytes);
        }
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        put_u64(&mut out, MANIFEST_MAGIC);
        put_u32(&mut out, MANIFEST_FORMAT_VERSION);
        put_u32(&mut out, body.len() as u32);
        put_u32(&mut out, crc32c::crc32c(&body));
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let bad = |offset: usize, detail: &str| Error::corruption(path, offset as u64, detail);
        if bytes.len() < HEADER_BYTES {
            return Err(bad(0, "manifest shorter than its header"));
        }
        if get_u64_at(bytes, 0) != Some(MANIFEST_MAGIC) {
            return Err(bad(0, "bad manifest magic number"));
        }
        if get_u32_at(bytes, 8) != Some(MANIFEST_FORMAT_VERSION) {
            return Err(Error::Unsupported(format!(
                "{}: manifest format version {:?}",
                path.display(),
                get_u32_at(bytes, 8)
            )));
        }
        let body_len = get_u32_at(bytes, 12).unwrap_or(0) as usize;
        if bytes.len() != HEADER_BYTES + body_len {
            return Err(bad(12, "manifest length does not match its header"));
        }
        let body = &bytes[HEADER_BYTES..];
        if get_u32_at(bytes, 16) != Some(crc32c::crc32c(body)) {
            return Err(bad(16, "manifest checksum mismatch"));
        }
        let m = |e: crate::coding::Malformed| bad(HEADER_BYTES + e.offset, e.detail);
        let mut r = Reader::new(body);
        let next_file_number = r.varint().map_err(m)?;
        let last_seq = r.varint().map_err(m)?;
        let log_number = r.varint().map_err(m)?;
        let count = r.varint_len(TABLES_MAX).map_err(m)?;
        let mut tables = Vec::with_capacity(count.min(body.len()));
        for _ in 0..count {
            let level = r.u8().map_err(m)?;
            let number = r.varint().map_err(m)?;
            let file_bytes = r.varint().map_err(m)?;
            if number >= next_file_number {
                return Err(bad(
                    HEADER_BYTES + r.pos(),
                    "table number not below next_file_number",
                ));
            }
            tables.push(TableRecord {
                level,
                number,
                file_bytes,
            });
        }
        if !r.is_empty() {
            return Err(bad(
                HEADER_BYTES + r.pos(),
                "trailing bytes in the manifest",
            ));
        }
        Ok(Manifest {
            next_file_number,
            last_seq,
            log_number,
            tables,
        })
    }

    /// Atomically replaces the manifest in `dir`.
    pub fn write(&self, fs: &dyn Fs, dir: &Path) -> Result<()> {
        let tmp = dir.join(MANIFEST_TMP_NAME);
        let dst = dir.join(MANIFEST_NAME);
        let f = fs
            .create(&tmp)
            .map_err(|e| Error::io("create manifest", &tmp, e))?;
        f.append(&self.encode())
            .map_err(|e| Error::io("write manifest", &tmp, e))?;
        f.sync().map_err(|e| Error::io("fsync manifest", &tmp, e))?;
        drop(f);
        fs.rename(&tmp, &dst)
            .map_err(|e| Error::io("rename manifest", &dst, e))?;
        fs.sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
        Ok(())
    }

    /// Reads the manifest in `dir`, `None` if there is none.
    pub fn read(fs: &dyn Fs, dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_NAME);
        match fs.read_all(&path) {
            Ok(bytes) => Manifest::decode(&bytes, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read manifest", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{CrashMode, FaultFs};
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn sample() -> Manifest {
        Manifest {
            next_file_number: 20,
            last_seq: 999,
            log_number: 12,
            tables: vec![
                TableRecord {
                    level: 0,
                    number: 11,
                    file_bytes: 4000,
                },
                TableRecord {
                    level: 3,
                    number: 7,
                    file_bytes: 1 << 30,
                },
            ],
        }
    }

    #[test]
    fn round_trips_through_the_file_system_and_survives_a_crash() {
        let fs = FaultFs::new(1);
        let dir = PathBuf::from("/db");
        fs.create_dir_all(&dir).unwrap();
        assert_eq!(Manifest::read(&fs, &dir).unwrap(), None);
        sample().write(&fs, &dir).unwrap();
        let after = fs.crash(CrashMode::DropUnsynced);
        assert_eq!(Manifest::read(&after, &dir).unwrap(), Some(sample()));
    }

    #[test]
    fn any_damage_is_reported_as_corruption() {
        let bytes = sample().encode();
        let p = PathBuf::from("MANIFEST");
        for pos in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[pos] ^= 0x04;
            assert!(Manifest::decode(&bad, &p).is_err(), "flip at {pos}");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1], &p).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_manifests_never_panic(bytes: Vec<u8>) {
            let _ = Manifest::decode(&bytes, &PathBuf::from("MANIFEST"));
        }
    }
}
