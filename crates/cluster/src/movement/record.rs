//! What survives a restart of the movement a node drives of itself: which
//! movement, the transfers done, and whether the node has left the ring
//! (final for its id). Kept in `MOVE` in the data directory (see
//! [`crate::node_files`]), in memory for tests.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::api::MovementKind;
use crate::id::NodeId;
use crate::ring::Token;

/// One transfer done: the interval `[lo, hi]` copied to `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneTransfer {
    pub lo: Token,
    pub hi: Token,
    pub target: NodeId,
}

/// The movement a node drives of itself, as it survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    /// `Join` or `Decommission` (a removal is driven for another node and
    /// is not resumed).
    pub kind: MovementKind,
    /// The node has left the ring (decommissioned, or its join cancelled):
    /// it may not serve again.
    pub left: bool,
    pub done: Vec<DoneTransfer>,
}

impl MoveRecord {
    /// A movement just begun.
    pub fn new(kind: MovementKind) -> Self {
        Self {
            kind,
            left: false,
            done: Vec::new(),
        }
    }
}

/// Where a node keeps its [`MoveRecord`] (a file in its data directory; in
/// memory for tests).
pub trait MoveRecordStore: Send + Sync {
    fn load(&self) -> std::io::Result<Option<MoveRecord>>;
    /// Replaces the record (`None`: no movement).
    fn save(&self, record: Option<&MoveRecord>) -> std::io::Result<()>;
    /// Keeps the node's tokens (re-picked when a simultaneous joiner took
    /// the same ones).
    fn save_tokens(&self, tokens: &[Token]) -> std::io::Result<()>;
}

/// A [`MoveRecordStore`] in memory.
#[derive(Default)]
pub struct MemMoveRecords {
    record: Mutex<Option<MoveRecord>>,
    tokens: Mutex<Option<Vec<Token>>>,
}

impl MemMoveRecords {
    /// The tokens saved last, if any.
    pub fn tokens(&self) -> Option<Vec<Token>> {
        self.tokens.lock().clone()
    }
}

impl MoveRecordStore for MemMoveRecords {
    fn load(&self) -> std::io::Result<Option<MoveRecord>> {
        Ok(self.record.lock().clone())
    }

    fn save(&self, record: Option<&MoveRecord>) -> std::io::Result<()> {
        *self.record.lock() = record.cloned();
        Ok(())
    }

    fn save_tokens(&self, tokens: &[Token]) -> std::io::Result<()> {
        *self.tokens.lock() = Some(tokens.to_vec());
        Ok(())
    }
}
