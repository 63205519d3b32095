//! A [`Version`]: one immutable set of live tables arranged in levels.
//!
//! L0 holds flushed memtables, which may overlap each other; they are kept
//! newest first. Every deeper level holds tables with disjoint key ranges,
//! sorted by key, and is older than the level above it for any key. Point
//! reads therefore stop at the first version found walking L0 newest-first and
//! then down the levels.
//!
//! Versions are never modified: flush and compaction build a new one with
//! [`Version::apply`] and the engine swaps it in. Readers holding an old
//! version keep its tables (and their files) alive.

use std::sync::Arc;

use crate::error::Result;
use crate::manifest::TableRecord;
use crate::table::Table;
use crate::types::Op;

/// The live tables, by level.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub levels: Vec<Vec<Arc<Table>>>,
}

/// A change of the live-table set.
#[derive(Debug, Default)]
pub(crate) struct Edit {
    pub removed: Vec<u64>,
    pub added: Vec<(usize, Arc<Table>)>,
}

fn overlaps(t: &Table, smallest: &[u8], largest: &[u8]) -> bool {
    t.smallest() <= largest && t.largest() >= smallest
}

impl Version {
    /// The newest version of `key` at or below `snapshot_seq` in any table.
    pub fn get(&self, key: &[u8], hash: u64, snapshot_seq: u64) -> Result<Option<(u64, Op)>> {
        for t in &self.levels[0] {
            if let Some(e) = t.get(key, hash)?
                && e.seq <= snapshot_seq
            {
                return Ok(Some((e.seq, e.op)));
            }
        }
        for level in &self.levels[1..] {
            let i = level.partition_point(|t| t.largest() < key);
            if let Some(t) = level.get(i)
                && let Some(e) = t.get(key, hash)?
                && e.seq <= snapshot_seq
            {
                return Ok(Some((e.seq, e.op)));
            }
        }
        Ok(None)
    }

    /// Tables of `level` whose key range meets `[smallest, largest]`.
    pub fn overlapping(&self, level: usize, smallest: &[u8], largest: &[u8]) -> Vec<Arc<Table>> {
        let Some(files) = self.levels.get(level) else {
            return Vec::new();
        };
        if level == 0 {
            return files
                .iter()
                .filter(|t| overlaps(t, smallest, largest))
                .cloned()
                .collect();
        }
        let start = files.partition_point(|t| t.largest() < smallest);
        files[start..]
            .iter()
            .take_while(|t| t.smallest() <= largest)
            .cloned()
            .collect()
    }

    /// True if some table below `level` may hold `key`.
    pub fn key_may_exist_below(&self, level: usize, key: &[u8]) -> bool {
        self.levels.iter().skip(level + 1).any(|files| {
            let i = files.partition_point(|t| t.largest() < key);
            files.get(i).is_some_and(|t| t.smallest() <= key)
        })
    }

    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels
            .get(level)
            .map(|f| f.iter().map(|t| t.file_bytes()).sum())
            .unwrap_or(0)
    }

    pub fn table_count(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    pub fn records(&self) -> Vec<TableRecord> {
        let mut out = Vec::with_capacity(self.table_count());
        for (level, files) in self.levels.iter().enumerate() {
            for t in files {
                out.push(TableRecord {
                    level: level as u8,
                    number: t.number(),
                    file_bytes: t.file_bytes(),
                });
            }
        }
        out
    }

    pub fn tables(&self) -> impl Iterator<Item = &Arc<Table>> {
        self.levels.iter().flatten()
    }

    /// A new version with `edit` applied.
    pub fn apply(&self, edit: &Edit) -> Version {
        let mut levels: Vec<Vec<Arc<Table>>> = self
            .levels
            .iter()
            .map(|files| {
                files
                    .iter()
                    .filter(|t| !edit.removed.contains(&t.number()))
                    .cloned()
                    .collect()
            })
            .collect();
        for (level, t) in &edit.added {
            levels[*level].push(t.clone());
        }
        Self::sort_levels(&mut levels);
        let v = Version { levels };
        debug_assert!(v.check().is_ok(), "{:?}", v.check());
        v
    }

    pub fn sort_levels(levels: &mut [Vec<Arc<Table>>]) {
        for (i, files) in levels.iter_mut().enumerate() {
            if i == 0 {
                files.sort_by(|a, b| {
                    (b.props().max_seq, b.number()).cmp(&(a.props().max_seq, a.number()))
                });
            } else {
                files.sort_by(|a, b| a.smallest().cmp(b.smallest()));
            }
        }
    }

    /// Checks that levels 1+ hold disjoint, sorted ranges.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (i, files) in self.levels.iter().enumerate().skip(1) {
            for w in files.windows(2) {
                if w[0].largest() >= w[1].smallest() {
                    return Err(format!(
                        "level {i}: tables {} and {} overlap",
                        w[0].number(),
                        w[1].number()
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cache::BlockCache;
    use crate::fs::{FaultFs, Fs};
    use crate::options::Compression;
    use crate::stats::Counters;
    use crate::table::{BuildOptions, TableBuilder};
    use crate::types::{Entry, Item};
    use bytes::Bytes;
    use std::path::PathBuf;

    /// A table numbered `number` holding `keys` (value = key, seq = `seq`).
    pub(crate) fn table(
        fs: &FaultFs,
        number: u64,
        keys: &[&str],
        seq: u64,
        pad: usize,
    ) -> Arc<Table> {
        let dir = PathBuf::from("/v");
        fs.create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{number:06}.sst"));
        let f = fs.create(&path).unwrap();
        let opts = BuildOptions {
            block_bytes: 4096,
            restart_interval: 16,
            compression: Compression::None,
            zstd_level: 1,
            bloom_bits_per_key: 10,
        };
        let mut b = TableBuilder::new(f, path.clone(), opts, None);
        for k in keys {
            b.add(&Item {
                key: Bytes::copy_from_slice(k.as_bytes()),
                seq,
                op: Op::Put(Entry {
                    value: Bytes::from(format!("{k}@{seq}{}", " ".repeat(pad))),
                    expires_at_ms: None,
                }),
            })
            .unwrap();
        }
        b.finish().unwrap();
        let fs: Arc<dyn Fs> = Arc::new(fs.clone());
        Arc::new(
            Table::open(
                fs,
                path,
                number,
                Arc::new(BlockCache::new(1 << 20)),
                Arc::new(Counters::default()),
            )
            .unwrap(),
        )
    }

    fn value(v: &Version, key: &str) -> Option<String> {
        let h = crate::table::bloom::key_hash(key.as_bytes());
        v.get(key.as_bytes(), h, u64::MAX)
            .unwrap()
            .map(|(_, op)| match op {
                Op::Put(e) => String::from_utf8(e.value.to_vec())
                    .unwrap()
                    .trim_end()
                    .to_string(),
                Op::Delete => "deleted".into(),
            })
    }

    #[test]
    fn reads_prefer_newer_l0_then_shallower_levels() {
        let fs = FaultFs::new(1);
        let edit = Edit {
            removed: vec![],
            added: vec![
                (0, table(&fs, 1, &["a", "m"], 10, 0)),
                (0, table(&fs, 2, &["m", "z"], 20, 0)),
                (1, table(&fs, 3, &["a", "c"], 5, 0)),
                (1, table(&fs, 4, &["d", "f"], 5, 0)),
                (2, table(&fs, 5, &["a", "f", "q"], 1, 0)),
            ],
        };
        let v = Version {
            levels: vec![Vec::new(); 4],
        }
        .apply(&edit);
        assert_eq!(
            v.levels[0].iter().map(|t| t.number()).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(value(&v, "m").as_deref(), Some("m@20"));
        assert_eq!(value(&v, "a").as_deref(), Some("a@10"));
        assert_eq!(value(&v, "c").as_deref(), Some("c@5"));
        assert_eq!(value(&v, "f").as_deref(), Some("f@5"));
        assert_eq!(value(&v, "q").as_deref(), Some("q@1"));
        assert_eq!(value(&v, "b"), None);
        assert_eq!(v.overlapping(1, b"b", b"e").len(), 2);
        assert_eq!(v.overlapping(1, b"g", b"h").len(), 0);
        assert!(v.key_may_exist_below(1, b"e"));
        assert!(!v.key_may_exist_below(1, b"z"));
        assert!(!v.key_may_exist_below(2, b"a"));
        let v2 = v.apply(&Edit {
            removed: vec![3, 4],
            added: vec![],
        });
        assert_eq!(v2.levels[1].len(), 0);
        assert_eq!(v2.table_count(), 3);
        assert_eq!(v2.records().len(), 3);
    }

    #[test]
    fn overlapping_tables_in_a_sorted_level_are_detected() {
        let fs = FaultFs::new(2);
        let mut levels = vec![Vec::new(); 3];
        levels[1].push(table(&fs, 1, &["a", "k"], 1, 0));
        levels[1].push(table(&fs, 2, &["j", "z"], 1, 0));
        Version::sort_levels(&mut levels);
        assert!(Version { levels }.check().is_err());
    }
}
