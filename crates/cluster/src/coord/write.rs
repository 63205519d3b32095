//! A coordinated write: plan -> local apply -> send to the replicas, hints
//! to stand-ins for the ones down -> wait for the level -> hints held here
//! for the ones that did not answer.

use std::sync::Arc;

use bytes::Bytes;

use super::Coordinator;
use super::plan::Plan;
use crate::api::{KvError, WriteOptions, WriteOutcome};
use crate::id::NodeId;
use crate::net::BoxFut;
use crate::replica::Change;
use crate::ring::token_of;
use crate::rpc::{Call, Fanout, PeerError, Requirement, Shortfall};
use crate::store::LocalStore;

impl<S: LocalStore> Coordinator<S> {
    pub(super) async fn write(
        self: &Arc<Self>,
        key: Bytes,
        change: Change,
        opts: WriteOptions,
    ) -> Result<WriteOutcome, KvError> {
        self.check_write(&key, &change)?;
        let level = opts.consistency.unwrap_or(self.config.default_write);
        let strict = self.config.strict_quorum;
        // Sloppy quorum: stand-ins may take the place of down replicas;
        // with every replica down, this node coordinates as a stand-in.
        let plan = match self.planner.write(&key, level, !strict) {
            Err(KvError::Unavailable { why, .. }) if !strict => {
                let current = self.planner.current_any(&key, level)?;
                return self
                    .write_as_stand_in(key, change, opts, &current, why)
                    .await;
            }
            planned => planned.inspect_err(|e| {
                if matches!(e, KvError::Unavailable { .. }) {
                    metrics::counter!("ringkv_unavailable_total", "op" => "write").increment(1);
                }
            })?,
        };
        // Only a live replica of the current ring coordinates: it holds the
        // key's versions. A replica of the pending ring only may not have
        // them yet (it is still streaming). Anyone else forwards.
        if !plan.current.prefs.contains(&self.id()) {
            return Box::pin(self.forward_or_stand_in(key, change, opts, &plan)).await;
        }
        let (outcome, record) = self
            .replica
            .apply_write(key.clone(), change, opts)
            .await
            .inspect_err(|e| {
                if let KvError::ReadOnly(why) = e {
                    static GATE: ringkv_env::log_every::LogEvery =
                        ringkv_env::log_every::LogEvery::new(10_000);
                    if let Some(held) = GATE.admit() {
                        tracing::warn!(%why, held_back = held, "write refused: the store is read-only");
                    }
                }
            })?;
        let Some(record) = record else {
            return Ok(outcome);
        };
        // A replica alone in its preference list: nothing to send.
        if plan.replicas.len() == 1 && plan.met(std::slice::from_ref(&self.id())) {
            return Ok(outcome);
        }
        let mut fanout = Fanout::new();
        fanout.answered(Call::replica(self.id()), Ok(()));
        let record = Bytes::from(record.encode());
        let mut stand_ins = Vec::new();
        self.send_to_replicas(&mut fanout, &plan, &key, &record, &mut stand_ins);
        let token = token_of(&key);
        let met = fanout
            .wait(&plan, |failed, _| {
                // A replica that fails before the failure detector noticed
                // gets a stand-in too (sloppy quorum), so the write need not
                // fail for a node that just died.
                if failed.is_direct() && !strict {
                    let stand_in = self.stand_in(token, failed.replica, &plan.replicas, &stand_ins);
                    if let Some(via) = stand_in {
                        stand_ins.push(via);
                        return Some(self.hint_call(
                            via,
                            failed.replica,
                            key.clone(),
                            record.clone(),
                        ));
                    }
                }
                let _ = self.hold_hint(failed.replica, &key, &record);
                None
            })
            .await;
        // Replicas beyond the requirement still get the write.
        self.finish_sends(fanout, key, record);
        met.map_err(|short| self.write_unavailable(short, &plan, strict))?;
        Ok(outcome)
    }

    /// Sends the new record to every live replica but this node, and a hint
    /// to a stand-in for each replica known down (or holds the hint here
    /// when there is no stand-in).
    pub(super) fn send_to_replicas(
        &self,
        fanout: &mut Fanout<()>,
        plan: &Plan,
        key: &Bytes,
        record: &Bytes,
        stand_ins: &mut Vec<NodeId>,
    ) {
        for &id in plan.live.iter().filter(|&&id| id != self.id()) {
            let merged = self.rpc.merge(id, key.clone(), record.clone());
            fanout.push(Call::replica(id), merged);
        }
        let token = token_of(key);
        for &down in plan.replicas.iter().filter(|id| !plan.live.contains(id)) {
            if self.beyond_hint_window(down) {
                continue;
            }
            match self.stand_in(token, down, &plan.replicas, stand_ins) {
                Some(via) => {
                    stand_ins.push(via);
                    let (call, work) = self.hint_call(via, down, key.clone(), record.clone());
                    fanout.push(call, work);
                }
                None => {
                    let _ = self.hold_hint(down, key, record);
                }
            }
        }
    }

    /// The sends a write no longer waits for finish in the background; a
    /// failed one becomes a hint held here, and so do the sends still
    /// running when too much runs in the background already.
    pub(super) fn finish_sends(self: &Arc<Self>, fanout: Fanout<()>, key: Bytes, record: Bytes) {
        if fanout.running() == 0 {
            return;
        }
        let me = Arc::clone(self);
        let (k, r) = (key.clone(), record.clone());
        let finished = fanout.finish(&self.background, move |late| async move {
            for (call, answer) in late {
                if answer.is_err() {
                    let _ = me.hold_hint(call.replica, &k, &r);
                }
            }
        });
        if let Err(dropped) = finished {
            for call in dropped {
                let _ = self.hold_hint(call.replica, &key, &record);
            }
        }
    }

    /// The error of a write that was applied here and sent, but missed its
    /// level: what is known of where it is.
    pub(super) fn write_unavailable(&self, short: Shortfall, plan: &Plan, strict: bool) -> KvError {
        metrics::counter!("ringkv_incomplete_writes_total").increment(1);
        let mut why = short.why();
        if strict && plan.replicas.len() > plan.live.len() {
            why = if why.is_empty() {
                "strict quorum: hints do not count".to_string()
            } else {
                format!("strict quorum: hints do not count; {why}")
            };
        }
        let (applied, hinted, missing) = split_replicas(&plan.replicas, &short);
        KvError::Incomplete {
            required: short.required,
            acked: applied.into(),
            hinted: hinted.into(),
            missing: missing.into(),
            why,
        }
    }

    /// A call that sends a hint for `target` to the stand-in `via`; under
    /// strict quorum it does not count.
    pub(super) fn hint_call(
        &self,
        via: NodeId,
        target: NodeId,
        key: Bytes,
        record: Bytes,
    ) -> (Call, BoxFut<Result<(), PeerError>>) {
        let call = Call {
            to: via,
            replica: target,
            counts: !self.config.strict_quorum,
        };
        let work = self.rpc.hint(via, target, key, record, self.timeout());
        (call, Box::pin(work))
    }
}

/// `replicas` as an incomplete write leaves them: those that applied it
/// (answered themselves), those whose copy a stand-in holds as a hint, and
/// the others.
pub(super) fn split_replicas(
    replicas: &[NodeId],
    short: &Shortfall,
) -> (Vec<NodeId>, Vec<NodeId>, Vec<NodeId>) {
    let applied: Vec<NodeId> = replicas
        .iter()
        .copied()
        .filter(|id| short.direct.contains(id))
        .collect();
    let hinted: Vec<NodeId> = replicas
        .iter()
        .copied()
        .filter(|id| short.acked.contains(id) && !applied.contains(id))
        .collect();
    let missing = replicas
        .iter()
        .copied()
        .filter(|id| !applied.contains(id) && !hinted.contains(id))
        .collect();
    (applied, hinted, missing)
}
