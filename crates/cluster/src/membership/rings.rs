//! The rings a node computes from its members' states: the current and
//! pending placements, updated from the previous ones on a change, and
//! the memo simulated nodes with the same view share.

use super::*;

/// Placements already worked out, shared by the nodes of one process that
/// see the same states (the scale simulation runs a thousand nodes whose
/// views mostly agree): keyed by an xxh3-128 of the nodes a ring holds
/// (id, data center, rack, weight, tokens) and the replication. Only the
/// [`RING_MEMO_MAX`] latest are kept.
#[derive(Default)]
pub struct RingMemo {
    entries: Mutex<std::collections::VecDeque<(u128, Arc<Placement>)>>,
    hits: std::sync::atomic::AtomicU64,
    builds: std::sync::atomic::AtomicU64,
}

/// Placements a [`RingMemo`] keeps.
pub const RING_MEMO_MAX: usize = 16;

impl RingMemo {
    /// `(hits, builds)` so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(std::sync::atomic::Ordering::Relaxed),
            self.builds.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

impl Membership {
    pub(super) fn rebuild_ring(&self) {
        self.rebuild_placement();
        self.tell_hook();
    }

    /// Gives the hook of [`Membership::set_on_ring_change`] every state.
    pub(super) fn tell_hook(&self) {
        if let Some(hook) = self.on_ring_change.read().as_ref() {
            hook(&self.states());
        }
    }

    pub(super) fn rebuild_placement(&self) {
        let _one = self.rebuilding.lock();
        let states = self.states.read().clone();
        // The rings before this change: each new one keeps what the change
        // did not reach (`Placement::updated`).
        let was = self.placement.read().clone();
        let was_pending = self
            .pending
            .read()
            .clone()
            .unwrap_or_else(|| Arc::clone(&was));
        let current =
            self.placement_of(&states, &was, |s| s == NodeStatus::Normal || s.is_leaving());
        let moving = |s: &NodeState| {
            s.status.is_leaving() || (s.status.is_joining() && !s.tokens.is_empty())
        };
        let pending = states.values().any(moving).then(|| {
            self.placement_of(&states, &was_pending, |s| {
                s == NodeStatus::Normal || s.is_joining()
            })
        });
        // Reads ask both rings during a hand-over, and for a whole episode
        // of movement (from a pending ring appearing to none left) in which
        // more than one node moved: once one of them is done, the current
        // ring is an intermediate one that writes were never required to
        // reach a quorum of. A node that has not seen a still ring since it
        // started does not know the episode's history: both rings too.
        let handover = {
            let mut episode = self.episode.lock();
            if pending.is_none() {
                episode.movers.clear();
                // Only a ring heard from peers counts: not the one this
                // node starts with or restores from disk.
                if self.heard.load(std::sync::atomic::Ordering::Relaxed) {
                    episode.seen_still = true;
                }
                false
            } else {
                episode
                    .movers
                    .extend(states.values().filter(|s| moving(s)).map(|s| s.id));
                !episode.seen_still
                    || episode.movers.len() > 1
                    || states.values().any(|s| moving(s) && s.status.is_handover())
            }
        };
        *self.placement.write() = current;
        *self.pending.write() = pending;
        self.reads_use_pending
            .store(handover, std::sync::atomic::Ordering::Relaxed);
        *self.ring_changed_at.lock() = self.clock.monotonic();
    }

    /// Shares rings with the other nodes that hold `memo` (see
    /// [`RingMemo`]; every one must have this node's replication).
    pub fn set_ring_memo(&self, memo: Arc<RingMemo>) {
        *self.ring_memo.write() = Some(memo);
    }

    /// The placement of the nodes whose status passes `include`: from the
    /// memo when one is set and holds it, else updated from `base`.
    pub(super) fn placement_of(
        &self,
        states: &HashMap<NodeId, NodeState>,
        base: &Placement,
        include: impl Fn(NodeStatus) -> bool + Copy,
    ) -> Arc<Placement> {
        let build = || {
            Arc::new(Placement::updated(
                base,
                self.ring_of(states, include),
                self.replication.clone(),
            ))
        };
        let Some(memo) = self.ring_memo.read().clone() else {
            return build();
        };
        let mut ids: Vec<NodeId> = states.keys().copied().collect();
        ids.sort_unstable();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (dc, n) in &self.replication.per_dc {
            h.update(dc.as_bytes());
            h.update(&[0]);
            h.update(&(*n as u64).to_le_bytes());
        }
        for id in ids {
            let s = &states[&id];
            if !include(s.status) || s.tokens.is_empty() {
                continue;
            }
            h.update(&id.to_le_bytes());
            h.update(s.dc.as_bytes());
            h.update(&[0]);
            h.update(s.rack.as_bytes());
            h.update(&[0]);
            h.update(&s.weight.to_le_bytes());
            h.update(&(s.tokens.len() as u64).to_le_bytes());
            for t in &s.tokens {
                h.update(&t.to_le_bytes());
            }
        }
        let key = h.digest128();
        if let Some((_, p)) = memo.entries.lock().iter().find(|(k, _)| *k == key) {
            memo.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Arc::clone(p);
        }
        let placement = build();
        memo.builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut entries = memo.entries.lock();
        if entries.len() >= RING_MEMO_MAX {
            entries.pop_front();
        }
        entries.push_back((key, Arc::clone(&placement)));
        placement
    }

    /// The ring of the nodes whose status passes `include`.
    pub(super) fn ring_of(
        &self,
        states: &HashMap<NodeId, NodeState>,
        include: impl Fn(NodeStatus) -> bool,
    ) -> Ring {
        let mut ids: Vec<NodeId> = states.keys().copied().collect();
        ids.sort_unstable();
        let mut ring = Ring::new(self.config.tokens_per_weight);
        for id in ids {
            let s = &states[&id];
            if !include(s.status) || s.tokens.is_empty() {
                continue;
            }
            let node = RingNode {
                id,
                dc: s.dc.clone(),
                rack: s.rack.clone(),
                weight: s.weight.max(1),
            };
            // Lower ids insert first and keep a contested token: every node
            // builds the same ring from the same states.
            let _ = ring.insert_with_tokens(node, &s.tokens);
        }
        ring
    }
}
