//! Sloppy quorum: stand-ins for replicas that are down, the hints they and
//! this node hold, and writes coordinated by a stand-in when no replica of
//! the key can be reached at all.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Coordinator;
use super::plan::RingPlan;
use crate::api::{KvError, WriteOptions, WriteOutcome};
use crate::id::NodeId;
use crate::replica::Change;
use crate::ring::token_of;
use crate::rpc::{Call, Fanout};
use crate::store::LocalStore;

impl<S: LocalStore> Coordinator<S> {
    /// The stand-in for a down replica: the next live node on the ring walk
    /// that is not a replica of the key and not already standing in,
    /// preferring the down node's data center.
    pub(super) fn stand_in(
        &self,
        token: u64,
        down: NodeId,
        replicas: &[NodeId],
        used: &[NodeId],
    ) -> Option<NodeId> {
        let m = &self.membership;
        let dc = m.dc_of(down);
        let candidates: Vec<NodeId> = m
            .current_ring()
            .ring()
            .walk_nodes(token)
            .into_iter()
            .filter(|id| !replicas.contains(id) && !used.contains(id) && m.is_alive(*id))
            .collect();
        candidates
            .iter()
            .copied()
            .find(|id| m.dc_of(*id) == dc)
            .or_else(|| candidates.first().copied())
    }

    /// True when `target` has been silent longer than hints live: a hint for
    /// it would only expire unread, so none is taken (counted). Such a node
    /// catches up through anti-entropy when it returns.
    pub(super) fn beyond_hint_window(&self, target: NodeId) -> bool {
        let window = Duration::from_millis(self.hints.config().age_ms_max);
        let beyond = self
            .membership
            .silent_for(target)
            .is_some_and(|silent| silent > window);
        if beyond {
            metrics::counter!("ringkv_hints_dropped_total", "reason" => "window").increment(1);
        }
        beyond
    }

    /// Keeps a hint here for `target` (it missed a write this node
    /// coordinated). Failures are logged and counted, never fatal to the
    /// client's write, which has its answer already.
    /// Returns whether the hint was stored.
    pub(super) fn hold_hint(&self, target: NodeId, key: &[u8], record: &[u8]) -> bool {
        if target == self.id() || self.beyond_hint_window(target) {
            return false;
        }
        let now = self.replica.now_ms();
        match self.hints.add(target, now, key, record) {
            Ok(stored) => stored,
            Err(e) => {
                metrics::counter!("ringkv_hints_dropped_total", "reason" => "error").increment(1);
                tracing::warn!(target = %crate::id::display(target), error = %e, "hint not stored");
                false
            }
        }
    }

    /// No replica of `key` can be reached, and hints count (sloppy
    /// quorum): this node versions the write from what it knows of the key
    /// (usually nothing, so the write becomes a sibling of what the
    /// replicas hold) and leaves it as hints, one per replica, held here
    /// and by live stand-ins further along the ring. Each stored hint
    /// counts for its replica. Dots stay unique: a node's counters rise
    /// across all keys (see [`crate::causality::epoch_floor`]).
    pub(super) async fn write_as_stand_in(
        self: &Arc<Self>,
        key: Bytes,
        change: Change,
        opts: WriteOptions,
        plan: &RingPlan,
        why: String,
    ) -> Result<WriteOutcome, KvError> {
        let (outcome, record) = self.replica.version_unstored(&key, change, &opts)?;
        let Some(record) = record else {
            return Ok(outcome);
        };
        let record = Bytes::from(record.encode());
        let token = token_of(&key);
        let mut fanout: Fanout<()> = Fanout::new();
        let mut used = vec![self.id()];
        // Hints held here that no answer counts for.
        let mut held_here = 0usize;
        // A replica silent longer than hints live would never get its hint.
        let targets: Vec<NodeId> = plan
            .prefs
            .iter()
            .copied()
            .filter(|&t| !self.beyond_hint_window(t))
            .collect();
        for (i, &target) in targets.iter().enumerate() {
            if i == 0 {
                let now = self.replica.now_ms();
                match self.hints.add(target, now, &key, &record) {
                    Ok(true) => fanout.answered(
                        Call {
                            to: self.id(),
                            replica: target,
                            counts: true,
                        },
                        Ok(()),
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "stand-in hint not stored"),
                }
                continue;
            }
            match self.stand_in(token, target, &plan.prefs, &used) {
                Some(via) => {
                    used.push(via);
                    let (call, work) = self.hint_call(via, target, key.clone(), record.clone());
                    fanout.push(call, work);
                }
                // No other stand-in: held here too, not counted.
                None => held_here += usize::from(self.hold_hint(target, &key, &record)),
            }
        }
        let met = fanout
            .wait(plan, |failed, _| {
                // Held here instead, not counted.
                held_here += usize::from(self.hold_hint(failed.replica, &key, &record));
                None
            })
            .await;
        self.finish_sends(fanout, key, record);
        if let Err(short) = met {
            let failures = short.why();
            let why = if failures.is_empty() {
                why
            } else {
                format!("{why}; {failures}")
            };
            if short.acked.is_empty() && held_here == 0 {
                // No hint stored anywhere: nothing was written.
                metrics::counter!("ringkv_unavailable_total", "op" => "write").increment(1);
                return Err(KvError::Unavailable {
                    required: short.required,
                    answered: 0,
                    why: format!("no replica reachable and no hint stored: {why}"),
                });
            }
            metrics::counter!("ringkv_incomplete_writes_total").increment(1);
            let (applied, hinted, missing) = super::write::split_replicas(&plan.prefs, &short);
            return Err(KvError::Incomplete {
                required: short.required,
                acked: applied.into(),
                hinted: hinted.into(),
                missing: missing.into(),
                why: format!("no replica reachable, stand-ins hold hints: {why}"),
            });
        }
        metrics::counter!("ringkv_stand_in_writes_total").increment(1);
        Ok(outcome)
    }
}
