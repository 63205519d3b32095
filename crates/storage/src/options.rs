//! Engine options. Every buffer and queue has a named limit here (`*_max`,
//! units last in names); [`Options::validate`] rejects nonsense before the
//! engine opens.

use crate::error::{Error, Result};

/// Block compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    /// LZ4 block format (pure Rust, fast). The default.
    #[default]
    Lz4,
    /// zstd at `Options::zstd_level` (needs the `zstd` feature).
    Zstd,
}

/// When the commit log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every write is fsynced before it is acknowledged; concurrent writers
    /// share one fsync (group commit). Survives power loss.
    Always,
    /// Writes are handed to the OS (one `write()` per group) before they are
    /// acknowledged, so they survive a crash of the process; a background
    /// thread fsyncs every `interval_ms`, bounding what power loss can take.
    Periodic { interval_ms: u64 },
}

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// A memtable over this many accounted bytes becomes immutable and is
    /// flushed in the background.
    pub memtable_bytes_max: usize,
    /// Immutable memtables waiting for flush; writers stall beyond this.
    pub immutable_memtables_max: usize,
    /// Uncompressed size at which a data block is cut.
    pub block_bytes: usize,
    /// Entries between restart points in a data block.
    pub block_restart_interval: usize,
    pub compression: Compression,
    pub zstd_level: i32,
    /// Bloom filter bits per key (10 gives about 1% false positives).
    pub bloom_bits_per_key: u32,
    /// Byte budget of the block cache (0 disables it).
    pub block_cache_bytes: u64,
    pub sync: SyncMode,
    /// Bytes of log records one group commit writes at most.
    pub group_commit_bytes_max: usize,
    /// Number of levels (L0 .. L{levels_max-1}).
    pub levels_max: usize,
    /// L0 files that trigger an L0 -> L1 compaction.
    pub l0_compaction_trigger_files: usize,
    /// L0 files at which each write group is delayed by 1 ms.
    pub l0_slowdown_files: usize,
    /// L0 files at which writes stop until compaction catches up.
    pub l0_stop_files: usize,
    /// Target size of L1; level n+1 is `level_size_multiplier` times level n.
    pub level_base_bytes: u64,
    pub level_size_multiplier: u64,
    /// Compaction output files are cut at about this size.
    pub table_target_bytes: u64,
    /// Background compaction threads.
    pub compaction_threads_max: usize,
    /// Flushes and compactions run on background threads (true), or inline
    /// after each write on the writing thread (false): what a deterministic
    /// simulation needs, where no other thread may decide when work
    /// happens. Inline, no thread syncs the log either: with
    /// `SyncMode::Periodic` the owner calls [`crate::Engine::sync`] itself.
    pub background_threads: bool,
    /// Compaction write rate limit (0: unlimited). Flushes are not limited:
    /// they are what frees memtable memory.
    pub compaction_write_bytes_per_sec_max: u64,
    /// The longest a write waits for flush/compaction before it fails with
    /// `Error::WriteStall`.
    pub write_stall_ms_max: u64,
    /// Skip corrupt commit-log records (logged at error level) instead of
    /// refusing to open.
    pub salvage: bool,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    /// Encoded size of one write batch.
    pub batch_bytes_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            memtable_bytes_max: 64 << 20,
            immutable_memtables_max: 2,
            block_bytes: 4096,
            block_restart_interval: 16,
            compression: Compression::Lz4,
            zstd_level: 3,
            bloom_bits_per_key: 10,
            block_cache_bytes: 256 << 20,
            sync: SyncMode::Periodic { interval_ms: 100 },
            group_commit_bytes_max: 1 << 20,
            levels_max: 7,
            l0_compaction_trigger_files: 4,
            l0_slowdown_files: 20,
            l0_stop_files: 36,
            level_base_bytes: 256 << 20,
            level_size_multiplier: 10,
            table_target_bytes: 64 << 20,
            compaction_threads_max: 1,
            background_threads: true,
            compaction_write_bytes_per_sec_max: 256 << 20,
            write_stall_ms_max: 10_000,
            salvage: false,
            key_bytes_max: 64 << 10,
            value_bytes_max: 16 << 20,
            batch_bytes_max: 64 << 20,
        }
    }
}

impl Options {
    /// Checks that the options are usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: &str| Err(Error::InvalidArgument(s.to_string()));
        if self.memtable_bytes_max < 1024 {
            return bad("memtable_bytes_max must be at least 1 KiB");
        }
        if self.immutable_memtables_max == 0 {
            return bad("immutable_memtables_max must be at least 1");
        }
        if self.block_bytes < 64 || self.block_bytes > 64 << 20 {
            return bad("block_bytes must be between 64 B and 64 MiB");
        }
        if self.block_restart_interval == 0 {
            return bad("block_restart_interval must be at least 1");
        }
        if !(2..=16).contains(&self.levels_max) {
            return bad("levels_max must be between 2 and 16");
        }
        if self.l0_compaction_trigger_files == 0
            || self.l0_slowdown_files < self.l0_compaction_trigger_files
            || self.l0_stop_files < self.l0_slowdown_files
        {
            return bad(
                "need 0 < l0_compaction_trigger_files <= l0_slowdown_files <= l0_stop_files",
            );
        }
        if self.level_size_multiplier < 2
            || self.level_base_bytes == 0
            || self.table_target_bytes == 0
        {
            return bad("level sizes must be positive and grow by at least 2x");
        }
        if self.compaction_threads_max == 0 {
            return bad("compaction_threads_max must be at least 1");
        }
        if self.bloom_bits_per_key == 0 || self.bloom_bits_per_key > 64 {
            return bad("bloom_bits_per_key must be between 1 and 64");
        }
        if self.key_bytes_max == 0 || self.key_bytes_max > crate::batch::KEY_BYTES_LIMIT {
            return bad("key_bytes_max out of range");
        }
        if self.value_bytes_max > crate::batch::VALUE_BYTES_LIMIT {
            return bad("value_bytes_max out of range");
        }
        if self.batch_bytes_max > crate::log::LOG_RECORD_BYTES_MAX / 2
            || self.group_commit_bytes_max == 0
        {
            return bad("batch_bytes_max / group_commit_bytes_max out of range");
        }
        if let SyncMode::Periodic { interval_ms } = self.sync
            && interval_ms == 0
        {
            return bad("periodic sync interval_ms must be positive");
        }
        if self.compression == Compression::Zstd && !cfg!(feature = "zstd") {
            return Err(Error::Unsupported(
                "zstd compression needs the `zstd` feature".into(),
            ));
        }
        Ok(())
    }
}
