//! The compaction filter hook: how the layer above (the cluster) tells
//! compaction that a value may go, typically its own versioned tombstones
//! once their grace period has passed.
//!
//! A `Remove` never lets an older version of the key resurface: compaction
//! drops the entry outright only when its output is the bottom-most level
//! holding the key; anywhere else it writes an engine tombstone in its place.
//! A `Replace` rewrites the value in place (same sequence number, same
//! expiry): for a value the layer above can shrink without changing what it
//! means.

use bytes::Bytes;

/// What to do with one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterDecision {
    Keep,
    Remove,
    Replace(Bytes),
}

/// Consulted by compaction for every live put it rewrites (never for engine
/// tombstones, never on the read path). Must be cheap and must not call back
/// into the engine.
pub trait CompactionFilter: Send + Sync {
    fn decide(&self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>) -> FilterDecision;
}
