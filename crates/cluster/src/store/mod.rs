//! The seam between the coordinator and local storage.
//!
//! The node stores one encoded [`SiblingSet`](crate::SiblingSet) per key and
//! reaches storage only through [`LocalStore`], so the engine can be swapped
//! (and faked in tests) without touching the coordinator.
//!
//! - [`engine`]: the implementation over ringkv's LSM engine, with the
//!   compaction filter through which the cluster decides when its
//!   tombstones may be purged.
//! - [`memory`]: an implementation in memory, for tests.

pub mod engine;
pub mod memory;

#[cfg(test)]
mod conformance;

use bytes::Bytes;

pub use engine::{EngineStore, engine_key};
pub use memory::MemStore;

/// Whether a figure only grows (a counter) or can fall (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FigureKind {
    /// Only grows while the process runs (events, bytes written).
    Counter,
    /// A level that can rise and fall (bytes held, a ratio).
    Gauge,
}

/// One figure a store reports: `name` in snake case and in base units
/// (bytes, seconds, plain ratios), as `INFO` and `/v1/status` print it;
/// the metric adds the `ringkv_storage_` prefix, and `_total` to counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreFigure {
    pub name: &'static str,
    pub value: f64,
    pub kind: FigureKind,
    /// One line for the metric's HELP.
    pub help: &'static str,
}

impl StoreFigure {
    pub fn counter(name: &'static str, value: u64, help: &'static str) -> Self {
        Self {
            name,
            value: value as f64,
            kind: FigureKind::Counter,
            help,
        }
    }

    pub fn gauge(name: &'static str, value: f64, help: &'static str) -> Self {
        Self {
            name,
            value,
            kind: FigureKind::Gauge,
            help,
        }
    }

    /// The value as text: whole numbers without a fraction.
    pub fn display(&self) -> String {
        if self.value.fract() == 0.0 && self.value.abs() < 9.0e15 {
            format!("{}", self.value as i64)
        } else {
            format!("{}", self.value)
        }
    }
}

/// A failure of local storage, as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Writes are refused after a failed log write or fsync; reads go on.
    #[error("{0}")]
    ReadOnly(String),
    /// Stored bytes failed a checksum or could not be decoded.
    #[error("corruption: {0}")]
    Corruption(String),
    #[error("{0}")]
    Other(String),
}

/// When the range of a token last completed an anti-entropy sync with every
/// other replica (wall-clock ms), `None` when it never did: the node's sync
/// ledger, asked by the compaction filter before it purges a dead record.
pub type SyncedAt = std::sync::Arc<dyn Fn(u64) -> Option<u64> + Send + Sync>;

/// Prunes the record of a key with the given token in place (see
/// [`crate::causality::purge::prune_departed`]); true when it changed it.
pub type Pruner =
    std::sync::Arc<dyn Fn(u64, &mut crate::causality::SiblingSet) -> bool + Send + Sync>;

/// What the coordinator needs from local storage. Calls may block (disk I/O,
/// and fsync when [`LocalStore::blocking_writes`] says so).
pub trait LocalStore: Send + Sync + 'static {
    /// The encoded record stored under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;

    /// Stores `record` under `key`. A store never drops a record on its
    /// own, not even an expired one: an expired record is a dead record,
    /// purged only under the tombstone rule (see
    /// [`crate::causality::purge`]), or a replica that missed the expiring
    /// write could hand its older value back through anti-entropy.
    fn put(&self, key: &[u8], record: &[u8]) -> Result<(), StoreError>;

    /// Stores `record` like [`LocalStore::put`], but may leave its log
    /// record in a buffer, visible to reads, until
    /// [`LocalStore::release_buffered`]: many writes then reach the OS in
    /// one system call. Whoever acknowledges such a write, or answers a read
    /// that may have seen it, releases the buffer first.
    fn put_buffered(&self, key: &[u8], record: &[u8]) -> Result<(), StoreError> {
        self.put(key, record)
    }

    /// Hands every buffered write to the OS. Once that has failed, it fails
    /// until the store is reopened.
    fn release_buffered(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// True while a buffered write waits for [`LocalStore::release_buffered`].
    fn has_buffered(&self) -> bool {
        false
    }

    /// Drops the record of `key` from this replica only (no tombstone is
    /// versioned: the key moved to other replicas, see
    /// [`crate::movement`]).
    fn remove(&self, key: &[u8]) -> Result<(), StoreError>;

    /// Visits every stored record, in token order, until `visit` returns
    /// false. `visit` gets the user key and the record.
    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &Bytes) -> bool) -> Result<(), StoreError> {
        self.scan_tokens(0, u64::MAX, true, visit)
    }

    /// Visits the records whose token `t` lies in `(start, end]` (or
    /// `[start, end]` when `include_start`), in token order, until `visit`
    /// returns false. `start <= end`: callers split wrapping ranges.
    fn scan_tokens(
        &self,
        start: u64,
        end: u64,
        include_start: bool,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> bool,
    ) -> Result<(), StoreError>;

    /// Named figures for `INFO`, `/v1/status` and the metrics, each with
    /// its kind and meaning.
    fn stats(&self) -> Vec<StoreFigure>;

    /// Makes everything written so far durable (fsync).
    fn sync(&self) -> Result<(), StoreError>;

    /// True when a put waits for an fsync (so callers move it off the async
    /// executor).
    fn blocking_writes(&self) -> bool;

    /// Copies the store's data as of now into `dest` (a new directory on
    /// the same file system), while writes go on (a snapshot, see
    /// [`crate::snapshot`]).
    fn checkpoint(&self, dest: &std::path::Path) -> Result<ringkv_storage::Checkpoint, StoreError> {
        let _ = dest;
        Err(StoreError::Other("this store cannot take snapshots".into()))
    }

    /// Installs the sync ledger compaction consults before purging a dead
    /// record. Stores that never purge ignore it.
    fn set_synced_at(&self, synced_at: SyncedAt) {
        let _ = synced_at;
    }

    /// Installs the version-vector pruning compaction applies to the
    /// records it rewrites. Stores that never compact ignore it.
    fn set_pruner(&self, pruner: Pruner) {
        let _ = pruner;
    }

    /// Sets the truncation point compaction applies (see
    /// [`crate::truncate`]): siblings written at or before `at` go from the
    /// records it rewrites, and records left with none go. Stores that
    /// never compact ignore it (the replica purges them itself).
    fn set_truncated_at(&self, at: crate::causality::Hlc) {
        let _ = at;
    }

    /// Rewrites the whole store now, applying the truncation point and the
    /// purge rules (a full compaction), and waits. False when this store
    /// has no compaction: the caller purges record by record.
    fn compact(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
}
