//! The engine's value types: what a caller gets back ([`Entry`]) and the
//! internal, versioned form every layer (memtable, SSTable, merge iterators)
//! passes around ([`Item`]).
//!
//! Sequence numbers order all writes: every put or delete gets the next one, and
//! for one user key the entry with the highest sequence number wins.

use bytes::Bytes;

/// A live value as returned to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    /// When the entry stops existing (Unix ms, exclusive): it is absent from
    /// reads once the clock reads `expires_at_ms` or later.
    pub expires_at_ms: Option<u64>,
}

impl Entry {
    /// True when the entry is expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }
}

/// The kind byte stored with every internal entry (low 8 bits of the SSTable
/// entry trailer and the tag of a log/batch operation).
///
/// Do not change: on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Delete = 0,
    Put = 1,
    PutExpiring = 2,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Delete),
            1 => Some(Kind::Put),
            2 => Some(Kind::PutExpiring),
            _ => None,
        }
    }
}

/// What a version of a key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Put(Entry),
    Delete,
}

impl Op {
    /// The live entry at `now_ms`, if this version is a put that has not expired.
    pub fn live(&self, now_ms: u64) -> Option<&Entry> {
        match self {
            Op::Put(e) if !e.is_expired(now_ms) => Some(e),
            _ => None,
        }
    }
}

/// One version of one key, as it flows through memtables, tables and iterators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub key: Bytes,
    pub seq: u64,
    pub op: Op,
}

/// A borrowed view of one version of one key, for writing tables without
/// allocating per entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ItemRef<'a> {
    pub key: &'a [u8],
    pub seq: u64,
    pub kind: Kind,
    pub value: &'a [u8],
    pub expires_at_ms: Option<u64>,
}

impl Item {
    pub fn as_item_ref(&self) -> ItemRef<'_> {
        match &self.op {
            Op::Delete => ItemRef {
                key: &self.key,
                seq: self.seq,
                kind: Kind::Delete,
                value: &[],
                expires_at_ms: None,
            },
            Op::Put(e) => ItemRef {
                key: &self.key,
                seq: self.seq,
                kind: if e.expires_at_ms.is_some() {
                    Kind::PutExpiring
                } else {
                    Kind::Put
                },
                value: &e.value,
                expires_at_ms: e.expires_at_ms,
            },
        }
    }
}
