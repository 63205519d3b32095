//! The sync ledger: when each range this node replicates last completed a
//! sync with each other replica.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::det::{HashMap, HashSet};
use crate::id::NodeId;
use crate::membership::Membership;
use crate::repair::merkle::TokenRange;
use crate::ring::Placement;

/// One peer's last sync of one range, as this node initiated it.
#[derive(Debug, Clone, Copy, Default)]
struct PeerSync {
    /// Snapshot time of the last sync that completed.
    synced_at_ms: Option<u64>,
    /// The last attempt failed.
    failed: bool,
}

/// When each range this node replicates last completed a sync with each
/// other replica. Shared with the compaction filter (through
/// [`SyncLedger::synced_at`]), which purges a dead record only when its range
/// was synced with everyone after its last write.
pub struct SyncLedger {
    self_id: NodeId,
    membership: Arc<Membership>,
    ranges: RwLock<HashMap<TokenRange, HashMap<NodeId, PeerSync>>>,
    /// The ring's tokens, sorted, for the placement they were read from.
    tokens: Mutex<Option<RingTokens>>,
}

/// A placement and its tokens in ring order.
type RingTokens = (Arc<Placement>, Arc<Vec<u64>>);

impl SyncLedger {
    pub fn new(membership: Arc<Membership>) -> Self {
        Self {
            self_id: membership.self_id(),
            membership,
            ranges: RwLock::new(HashMap::default()),
            tokens: Mutex::new(None),
        }
    }

    /// A sync of `range` with `peer` completed, reconciling everything
    /// either side held at `synced_at_ms`.
    pub fn record(&self, range: TokenRange, peer: NodeId, synced_at_ms: u64) {
        let mut ranges = self.ranges.write();
        let entry = ranges.entry(range).or_default().entry(peer).or_default();
        entry.synced_at_ms = Some(entry.synced_at_ms.unwrap_or(0).max(synced_at_ms));
        entry.failed = false;
    }

    /// A sync of `range` with `peer` failed.
    pub fn record_failure(&self, range: TokenRange, peer: NodeId) {
        self.ranges
            .write()
            .entry(range)
            .or_default()
            .entry(peer)
            .or_default()
            .failed = true;
    }

    /// Forgets ranges that are no longer this node's (after ring changes).
    pub(super) fn retain(&self, current: &HashSet<TokenRange>) {
        self.ranges.write().retain(|r, _| current.contains(r));
    }

    /// When the range holding `token` last completed a sync with every
    /// other replica (the earliest of those syncs), in wall-clock ms; `None`
    /// when some replica was never synced or this node is not a replica.
    /// A range with no other replica is always synced.
    pub fn synced_at(&self, token: u64) -> Option<u64> {
        let placement = self.membership.current_ring();
        let tokens = self.sorted_tokens(&placement);
        let n = tokens.len();
        if n == 0 {
            return None;
        }
        let i = tokens.partition_point(|&t| t < token) % n;
        let range = TokenRange::new(tokens[(i + n - 1) % n], tokens[i]);
        let prefs = placement.preference_list(range.end);
        if !prefs.contains(&self.self_id) {
            return None;
        }
        self.range_synced_at(range, prefs)
    }

    pub(super) fn range_synced_at(&self, range: TokenRange, prefs: &[NodeId]) -> Option<u64> {
        let ranges = self.ranges.read();
        let peers = ranges.get(&range);
        prefs
            .iter()
            .filter(|&&p| p != self.self_id)
            .map(|p| peers.and_then(|m| m.get(p)).and_then(|s| s.synced_at_ms))
            .try_fold(u64::MAX, |acc, t| t.map(|t| acc.min(t)))
    }

    /// The last sync with every other replica completed.
    pub(super) fn range_in_sync(&self, range: TokenRange, prefs: &[NodeId]) -> bool {
        let ranges = self.ranges.read();
        let peers = ranges.get(&range);
        prefs.iter().filter(|&&p| p != self.self_id).all(|p| {
            peers
                .and_then(|m| m.get(p))
                .is_some_and(|s| s.synced_at_ms.is_some() && !s.failed)
        })
    }

    fn sorted_tokens(&self, placement: &Arc<Placement>) -> Arc<Vec<u64>> {
        let mut cached = self.tokens.lock();
        if let Some((p, t)) = cached.as_ref()
            && Arc::ptr_eq(p, placement)
        {
            return Arc::clone(t);
        }
        let tokens: Arc<Vec<u64>> = Arc::new(placement.ring().tokens().map(|(t, _)| t).collect());
        *cached = Some((Arc::clone(placement), Arc::clone(&tokens)));
        tokens
    }
}
