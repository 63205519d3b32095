//! Engine statistics: the live counters every component bumps, and the
//! [`Stats`] snapshot handed to callers (metrics, benchmarks, operators).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the engine's components. All relaxed: they are for
/// reporting, never for synchronisation.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub block_cache_hits: AtomicU64,
    pub block_cache_misses: AtomicU64,
    /// Data blocks read from disk by the read path (gets and scans).
    pub block_reads: AtomicU64,
    pub block_read_bytes: AtomicU64,
    pub gets: AtomicU64,
    /// Key and value bytes of accepted writes.
    pub user_bytes_written: AtomicU64,
    pub log_bytes_written: AtomicU64,
    pub log_syncs: AtomicU64,
    pub write_groups: AtomicU64,
    pub log_writes: AtomicU64,
    pub buffered_writes: AtomicU64,
    pub flush_bytes_written: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    pub flushes: AtomicU64,
    pub compactions: AtomicU64,
    pub trivial_moves: AtomicU64,
    pub write_stalls: AtomicU64,
    pub write_stall_us: AtomicU64,
    pub tombstones_dropped: AtomicU64,
    pub expired_dropped: AtomicU64,
    pub filter_removed: AtomicU64,
    pub filter_replaced: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A point-in-time report of the engine's state and work.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes of live files on disk: tables, log segments and manifest.
    pub disk_bytes: u64,
    pub table_bytes: u64,
    pub log_bytes: u64,
    /// Accounted bytes of the active and immutable memtables.
    pub memtable_bytes: u64,
    /// Bytes of table indexes and bloom filters held in memory.
    pub table_memory_bytes: u64,
    pub immutable_memtables: usize,
    /// Bytes that compaction would have to rewrite to bring every level under
    /// its target (compaction debt).
    pub pending_compaction_bytes: u64,
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
    pub block_cache_bytes: u64,
    pub block_cache_capacity_bytes: u64,
    /// Data blocks read from disk by gets and scans (not by compaction).
    pub block_reads: u64,
    pub block_read_bytes: u64,
    pub gets: u64,
    /// Key and value bytes of accepted writes.
    pub user_bytes_written: u64,
    pub log_bytes_written: u64,
    pub log_syncs: u64,
    /// Group-commit groups written.
    pub write_groups: u64,
    /// `write()` calls to the log (groups, and buffers of buffered writes).
    pub log_writes: u64,
    /// Writes applied through `Engine::write_buffered`.
    pub buffered_writes: u64,
    pub flush_bytes_written: u64,
    pub compaction_bytes_read: u64,
    pub compaction_bytes_written: u64,
    pub flushes: u64,
    pub compactions: u64,
    pub trivial_moves: u64,
    /// (log + flush + compaction bytes written) / user bytes written.
    pub write_amplification: f64,
    /// Table bytes / bytes of the last non-empty level (1.0 when all data is
    /// in one level).
    pub space_amplification: f64,
    /// Entries in tables minus tombstones, plus memtable entries: an estimate
    /// (overwrites in different levels are counted twice).
    pub live_keys_estimate: u64,
    pub files_per_level: Vec<usize>,
    pub bytes_per_level: Vec<u64>,
    /// Writes that waited for flush or compaction, and for how long in total.
    pub write_stalls: u64,
    pub write_stall_total_us: u64,
    pub tombstones_dropped: u64,
    pub expired_dropped: u64,
    pub filter_removed: u64,
    /// Values the compaction filter rewrote.
    pub filter_replaced: u64,
    /// The sequence number of the newest visible write.
    pub last_sequence: u64,
    /// Writes are refused since a write to disk failed (an fsync error is
    /// fatal to the write path); reads go on.
    pub read_only: bool,
}

impl Stats {
    /// Block cache hit ratio in [0, 1] (0 when nothing was looked up).
    pub fn block_cache_hit_ratio(&self) -> f64 {
        let total = self.block_cache_hits + self.block_cache_misses;
        if total == 0 {
            0.0
        } else {
            self.block_cache_hits as f64 / total as f64
        }
    }
}
