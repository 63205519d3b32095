//! One movement from its announcement to its end: settle, stream what moves,
//! hand over, then NORMAL (a join) or LEFT (a decommission, a removal); and
//! undoing one that is cancelled.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::pace::{Pacer, Throttle};
use super::plan::{Transfer, transfers};
use super::record::{DoneTransfer, MoveRecord};
use super::{Drive, MovementError, Movements};
use crate::api::{MovementKind, MovementPhase};
use crate::id::NodeId;
use crate::net::message::NodeStatus;
use crate::ring::RingNode;
use crate::store::LocalStore;

/// Pause between passes over ranges that failed to copy.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Rounds of telling every live peer of a hand-over before going on anyway.
const HANDOVER_ANNOUNCE_ROUNDS: usize = 10;

impl<S: LocalStore> Movements<S> {
    /// Runs one movement to its end; returns its final phase.
    pub(super) async fn drive(
        self: &Arc<Self>,
        drive: Drive,
        contacts: &[String],
    ) -> Result<MovementPhase, MovementError> {
        if self.settle(drive, contacts).await? {
            return self.cancelled(drive).await;
        }
        self.set_status(|s| s.phase = MovementPhase::Streaming);
        if self.stream_all(drive).await? {
            return self.cancelled(drive).await;
        }
        if self.hand_over(drive, contacts).await {
            return self.cancelled(drive).await;
        }
        self.finish(drive, contacts).await?;
        Ok(MovementPhase::Done)
    }

    /// Tells every peer, then waits `settle_ms` for writes coordinated
    /// under the old ring to finish; a joiner whose tokens another joiner
    /// took picks new ones and starts over. True when cancelled.
    async fn settle(&self, drive: Drive, contacts: &[String]) -> Result<bool, MovementError> {
        let settle = Duration::from_millis(self.config.settle_ms);
        loop {
            let unreachable = self.gossip.push_to_all(contacts).await;
            if !unreachable.is_empty() {
                tracing::warn!(peers = ?unreachable, "peers not told of the movement (down?)");
            }
            if self.sleep_or_cancel(settle).await {
                return Ok(true);
            }
            if drive.kind != MovementKind::Join || !self.repick_contested_tokens().await? {
                return Ok(false);
            }
        }
    }

    /// Copies every interval this movement moves, retrying those that fail,
    /// and keeps the ones done in the record. True when cancelled.
    async fn stream_all(self: &Arc<Self>, drive: Drive) -> Result<bool, MovementError> {
        let m = &self.membership;
        let mine: Vec<Transfer> = transfers(&m.current_ring(), &m.ring_after_moves())
            .into_iter()
            .filter(|t| match drive.kind {
                MovementKind::Join => t.target == self.id(),
                _ => t.losers.contains(&drive.node),
            })
            .collect();
        let mut record = self
            .records
            .load()
            .ok()
            .flatten()
            .unwrap_or_else(|| MoveRecord::new(drive.kind));
        let persist = drive.kind != MovementKind::Remove;
        let done = |t: &Transfer| DoneTransfer {
            lo: t.lo,
            hi: t.hi,
            target: t.target,
        };
        let mut todo: Vec<Transfer> = mine
            .iter()
            .filter(|t| !record.done.contains(&done(t)))
            .cloned()
            .collect();
        let total = mine.len() as u64;
        self.set_status(|s| {
            s.ranges_total = total;
            s.ranges_done = total - todo.len() as u64;
        });
        let peers = self.stream_peers(&todo, drive);
        let baseline = self.pace_baseline(&peers).await;
        let mut pacer = Pacer::new(self.config.bytes_per_sec_max, baseline);
        let mut throttle = Throttle::new(pacer.rate());
        self.set_status(|s| s.rate_bytes_per_sec = pacer.rate());
        while !todo.is_empty() {
            let mut failed = Vec::new();
            for t in todo {
                if self.cancel.load(Ordering::SeqCst) {
                    return Ok(true);
                }
                match self
                    .copy_transfer(&t, drive, &mut throttle, &mut pacer, &peers)
                    .await
                {
                    Ok(()) => {
                        record.done.push(done(&t));
                        if persist {
                            self.save_record(Some(&record))?;
                        }
                        self.set_status(|s| s.ranges_done += 1);
                    }
                    Err(e) => {
                        tracing::warn!(lo = t.lo, hi = t.hi, target = %crate::id::display(t.target), error = %e, "range copy failed; will retry");
                        self.set_status(|s| s.last_error = Some(e.to_string()));
                        failed.push(t);
                    }
                }
            }
            todo = failed;
            if !todo.is_empty() && self.sleep_or_cancel(RETRY_PAUSE).await {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The peers a stream works with: sources and targets but this node.
    fn stream_peers(&self, todo: &[Transfer], drive: Drive) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = todo
            .iter()
            .flat_map(|t| {
                let mut ends = self.sources(t, drive);
                ends.push(t.target);
                ends
            })
            .filter(|&id| id != self.id())
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// The hand-over: for one settle period reads consult both rings, so
    /// nodes that see the end of the movement at different moments still
    /// overlap on a quorum (before this, every write reached a quorum of the
    /// current ring, and reads needed only that one). True when cancelled.
    async fn hand_over(&self, drive: Drive, contacts: &[String]) -> bool {
        let m = &self.membership;
        self.set_status(|s| s.phase = MovementPhase::HandingOver);
        match drive.kind {
            MovementKind::Join => m.update_self(|s| s.status = NodeStatus::JoinHandover),
            MovementKind::Decommission => {
                m.update_self(|s| s.status = NodeStatus::LeaveHandover);
            }
            MovementKind::Remove => {
                m.update_other(drive.node, |s| s.status = NodeStatus::LeaveHandover);
            }
        }
        // Every live peer must hear of the hand-over before the end of it:
        // one that jumped from the streaming step to the end would read
        // the old ring alone while others write the new one alone.
        for _ in 0..HANDOVER_ANNOUNCE_ROUNDS {
            let missed = self.gossip.push_to_all(contacts).await;
            let live_missed: Vec<String> = m
                .states()
                .into_iter()
                .filter(|s| missed.contains(&s.cluster_addr) && m.is_alive(s.id))
                .map(|s| s.cluster_addr)
                .collect();
            if live_missed.is_empty() {
                break;
            }
            tracing::warn!(peers = ?live_missed, "live peers not told of the hand-over yet; retrying");
            if self.sleep_or_cancel(RETRY_PAUSE).await {
                return true;
            }
        }
        self.sleep_or_cancel(Duration::from_millis(self.config.settle_ms))
            .await
    }

    /// The end of a movement: NORMAL for a joiner, LEFT for the node that
    /// leaves.
    async fn finish(&self, drive: Drive, contacts: &[String]) -> Result<(), MovementError> {
        let m = &self.membership;
        match drive.kind {
            MovementKind::Join => {
                // The record goes first: a node that restarts after this
                // point comes back NORMAL, never JOINING again after having
                // been NORMAL.
                self.save_record(None)?;
                m.update_self(|s| s.status = NodeStatus::Normal);
                self.gossip.push_to_all(contacts).await;
            }
            MovementKind::Decommission => {
                self.set_status(|s| s.phase = MovementPhase::PassingOnHints);
                self.hints.pass_on().await;
                self.leave_ring(drive.kind, contacts).await?;
            }
            MovementKind::Remove => {
                m.update_other(drive.node, |s| s.status = NodeStatus::Left);
                self.gossip.push_to_all(contacts).await;
            }
        }
        Ok(())
    }

    /// Two nodes that join at once may pick the same tokens (each against
    /// the ring without the other); a contested token goes to the lower
    /// id, so the other would own less than it should, or nothing. A joiner
    /// that lost tokens picks new ones against the ring with the other
    /// joiners and announces again; true when it did.
    async fn repick_contested_tokens(&self) -> Result<bool, MovementError> {
        let m = &self.membership;
        let Some(me) = m.state(self.id()) else {
            return Ok(false);
        };
        let future = m.ring_after_moves();
        let held = future.ring().tokens_of(self.id());
        if held.len() == me.tokens.len() {
            return Ok(false);
        }
        let mut ring = future.ring().clone();
        let _ = ring.remove_node(self.id());
        let node = RingNode {
            id: self.id(),
            dc: me.dc.clone(),
            rack: me.rack.clone(),
            weight: me.weight.max(1),
        };
        let rf = m.replication().in_dc(&me.dc);
        // Allocation takes up to a second on a large ring: off the executor.
        let tokens = crate::exec::blocking(move || ring.add_node(node, rf)).await??;
        tracing::warn!(
            lost = me.tokens.len() - held.len(),
            "another joining node took some of this node's tokens; picked new ones"
        );
        self.records
            .save_tokens(&tokens)
            .map_err(MovementError::Record)?;
        m.update_self(|s| s.tokens = tokens);
        Ok(true)
    }

    /// Marks this node LEFT, tells everyone, and signals the process.
    async fn leave_ring(
        &self,
        kind: MovementKind,
        contacts: &[String],
    ) -> Result<(), MovementError> {
        self.save_record(Some(&MoveRecord {
            left: true,
            ..MoveRecord::new(kind)
        }))?;
        self.membership.update_self(|s| s.status = NodeStatus::Left);
        self.gossip.push_to_all(contacts).await;
        let _ = self.left.send(true);
        Ok(())
    }

    /// Undoes a movement on cancel.
    async fn cancelled(&self, drive: Drive) -> Result<MovementPhase, MovementError> {
        let m = &self.membership;
        match drive.kind {
            // A joining node owns nothing yet: it leaves (and exits).
            MovementKind::Join => self.leave_ring(drive.kind, &[]).await?,
            MovementKind::Decommission => {
                m.update_self(|s| s.status = NodeStatus::Normal);
                self.save_record(None)?;
                self.gossip.push_to_all(&[]).await;
            }
            MovementKind::Remove => {
                m.update_other(drive.node, |s| s.status = NodeStatus::Normal);
                self.gossip.push_to_all(&[]).await;
            }
        }
        Ok(MovementPhase::Cancelled)
    }

    /// Sleeps; true when the movement was cancelled meanwhile.
    pub(super) async fn sleep_or_cancel(&self, d: Duration) -> bool {
        let step = Duration::from_millis(50);
        let deadline = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < deadline {
            if self.cancel.load(Ordering::SeqCst) {
                return true;
            }
            tokio::time::sleep(step.min(deadline - tokio::time::Instant::now())).await;
        }
        self.cancel.load(Ordering::SeqCst)
    }

    /// The nodes to read a transfer from: the driver when it loses the
    /// range, else the first live loser, else every live holder.
    pub(super) fn sources(&self, t: &Transfer, drive: Drive) -> Vec<NodeId> {
        let m = &self.membership;
        if drive.kind == MovementKind::Decommission && t.losers.contains(&self.id()) {
            return vec![self.id()];
        }
        if let Some(&l) = t
            .losers
            .iter()
            .find(|&&id| id != t.target && m.is_alive(id))
        {
            return vec![l];
        }
        t.holders
            .iter()
            .copied()
            .filter(|&id| id != t.target && m.is_alive(id))
            .collect()
    }
}
