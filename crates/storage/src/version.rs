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
