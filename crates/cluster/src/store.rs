//! The seam between the coordinator and local storage.
//!
//! The node stores one encoded [`SiblingSet`](crate::SiblingSet) per key and
//! reaches storage only through [`LocalStore`], so the engine can be swapped
//! (and faked in tests) without touching the coordinator. The implementation
//! for ringkv's LSM engine lives here too, with the compaction filter through
//! which the cluster decides when its tombstones may be purged.

use bytes::Bytes;

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

/// What the coordinator needs from local storage. Calls may block (disk I/O,
/// and fsync when [`LocalStore::blocking_writes`] says so).
pub trait LocalStore: Send + Sync + 'static {
    /// The encoded record stored under `key`, unless absent or expired.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;

    /// Stores `record` under `key`; the store may drop it after
    /// `expires_at_ms`.
    fn put(&self, key: &[u8], record: &[u8], expires_at_ms: Option<u64>) -> Result<(), StoreError>;

    /// Visits every stored record in key order until `visit` returns false.
    fn for_each(&self, visit: &mut dyn FnMut(&[u8], &Bytes) -> bool) -> Result<(), StoreError>;

    /// Named figures for `INFO` and the metrics.
    fn stats(&self) -> Vec<(String, u64)>;

    /// Estimated number of stored keys (cheap).
    fn keys_estimate(&self) -> u64;

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// True when a put waits for an fsync (so callers move it off the async
    /// executor).
    fn blocking_writes(&self) -> bool;
}
