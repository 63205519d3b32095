//! Checkpoints: a copy of an engine's data as of one moment, taken while
//! writes go on, that opens as an engine of its own.
//!
//! [`Engine::checkpoint`] flushes the memtables (every write acknowledged
//! before the call is then in a table), pins the current table set, hard-links
//! each table into the new directory (tables never change once written, so a
//! link is a copy that costs nothing), and writes a fresh manifest listing
//! them, with no log segment needed. The source's compactions may remove
//! their names of those tables afterwards; the links keep the data. The
//! destination must be on the same file system and must not hold an engine.

use std::path::Path;

use super::{Engine, background};
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::util::{MANIFEST_NAME, table_path};

/// What a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every write with a sequence number at or below it is in the copy.
    pub sequence: u64,
    pub tables: usize,
    /// Bytes of the tables (shared with the source until it drops them).
    pub bytes: u64,
}

impl Engine {
    /// Copies the engine's data as of now into `dest` (see the module).
    pub fn checkpoint(&self, dest: &Path) -> Result<Checkpoint> {
        let core = self.core();
        core.check_open()?;
        let fs = &*core.fs;
        if fs.read_all(&dest.join(MANIFEST_NAME)).is_ok() {
            return Err(Error::InvalidArgument(format!(
                "{} already holds an engine",
                dest.display()
            )));
        }
        background::flush_and_wait(core)?;
        // The table set and the counters, taken together; the super
        // version keeps its tables' files while it is held.
        let (sv, sequence, next_file_number) = {
            let st = core.state.lock();
            (core.current_sv(), st.flushed_seq, st.next_file_number)
        };
        fs.create_dir_all(dest)
            .map_err(|e| Error::io("create checkpoint directory", dest, e))?;
        let tables = sv.version.records();
        let mut bytes = 0;
        for t in &tables {
            let from = table_path(&core.dir, t.number);
            let to = table_path(dest, t.number);
            fs.hard_link(&from, &to)
                .map_err(|e| Error::io("link table into checkpoint", &to, e))?;
            bytes += t.file_bytes;
        }
        let manifest = Manifest {
            next_file_number,
            last_seq: sequence,
            // Every log segment below the next file number is flushed: the
            // copy needs none.
            log_number: next_file_number,
            tables: tables.clone(),
        };
        manifest.write(fs, dest)?;
        fs.sync_dir(dest)
            .map_err(|e| Error::io("sync checkpoint directory", dest, e))?;
        drop(sv);
        Ok(Checkpoint {
            sequence,
            tables: tables.len(),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Engine, Options};

    #[test]
    fn a_checkpoint_taken_during_writes_opens_with_every_earlier_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = Options {
            memtable_bytes_max: 64 * 1024,
            ..Options::default()
        };
        let engine = Engine::open(&dir.path().join("db"), opts.clone()).expect("open");
        for i in 0..5_000u32 {
            let expiry = (i % 10 == 0).then_some(u64::MAX / 2);
            engine
                .put(format!("k{i:05}").as_bytes(), &[7u8; 100], expiry)
                .expect("put");
        }
        engine.delete(b"k00007").expect("delete");
        let point = dir.path().join("snap");
        let cp = engine.checkpoint(&point).expect("checkpoint");
        assert!(cp.tables > 0 && cp.bytes > 0, "{cp:?}");
        // Writes after the checkpoint, and a compaction that drops the
        // source's names of the linked tables.
        for i in 0..2_000u32 {
            engine
                .put(format!("after{i}").as_bytes(), b"v", None)
                .expect("put");
        }
        engine.compact().expect("compact");
        assert!(
            engine.checkpoint(&point).is_err(),
            "a second checkpoint into the same directory"
        );
        engine.close().expect("close");

        let copy = Engine::open(&point, opts).expect("open the checkpoint");
        for i in 0..5_000u32 {
            let got = copy.get(format!("k{i:05}").as_bytes()).expect("get");
            if i == 7 {
                assert!(got.is_none(), "deleted before the checkpoint");
            } else {
                let e = got.unwrap_or_else(|| panic!("k{i:05} missing"));
                assert_eq!(e.expires_at_ms.is_some(), i % 10 == 0, "expiry of k{i:05}");
            }
        }
        assert!(copy.get(b"after0").expect("get").is_none(), "written after");
        // The copy is an engine of its own: it takes writes.
        copy.put(b"new", b"v", None).expect("write to the copy");
    }
}
