//! Data movement: joins, decommissions and removals.
//!
//! # The two rings
//! While a node is JOINING or LEAVING, [`Membership`](crate::membership)
//! keeps two rings: the *current* one (NORMAL and LEAVING nodes), which
//! still answers reads, and the *pending* one (NORMAL and JOINING nodes),
//! the ring once the movement is over. Coordinators send every write to the
//! replicas of both and acknowledge it only when the consistency level is
//! met in each, so a write acknowledged during the movement is on a quorum
//! of the ring that will serve it afterwards, and still on one of the
//! current ring.
//!
//! Reads need only the current ring while data streams: every write
//! reaches a quorum of it. Once streaming is done the driver turns the
//! mover's status to a *hand-over* step (JOIN_HANDOVER, LEAVE_HANDOVER,
//! shown as JOINING and LEAVING), tells every peer, and waits `settle_ms`
//! before NORMAL (or LEFT). During the hand-over reads ask the replicas of
//! both rings and need the level met in each: a coordinator that has
//! already seen the movement end (and writes to the new ring only) still
//! meets, on a quorum, one that has not. Reading both rings for the whole
//! movement would make every read wait for more replicas (client p99 twice
//! as high on two shared cores) for no gain. Exceptions, where reads ask
//! both rings all along: an episode in which more than one node moved, and
//! a node that has not seen the ring still since it started (see
//! [`Membership::pending_ring_for_reads`](crate::membership::Membership::pending_ring_for_reads)).
//! Only a live replica of the current ring coordinates a write.
//!
//! # What moves
//! [`transfers`] splits the token space at the tokens of both rings and,
//! for every interval whose replicas differ, names each *gainer* (a replica
//! in the pending ring, not in the current one), the *losers* (replicas in
//! the current ring only) and the current replicas. A gainer is filled from
//! one loser when one is alive: the loser's copy holds every write a quorum
//! acknowledged, as a quorum of the old replicas and a quorum of the new
//! ones overlap outside the gainer. With no loser alive (a dead node being
//! removed), it is filled from every live current replica, merged.
//!
//! # Who drives
//! - A join is driven by the joining node: it announces its tokens as
//!   JOINING, makes sure every live peer has heard (push gossip), waits for
//!   writes started under the old ring to finish (`settle_ms`), pulls what
//!   it gains, hands over, then turns NORMAL.
//! - A decommission is driven by the leaving node: LEAVING, settle, push
//!   every range it loses to its gainers, hand its hints to a live peer,
//!   then LEFT; the process exits.
//! - A removal is driven by the node asked to remove a dead one: it marks
//!   the dead node LEAVING on its behalf, copies its ranges from the
//!   survivors to the gainers, then marks it LEFT. LEFT is final for a node
//!   id.
//!
//! Streams go in batches of about `batch_bytes_max`, checksummed end to end
//! ([`crate::net::message::stream_crc`]), throttled to at most
//! `bytes_per_sec_max` and paced below it while client traffic suffers
//! (see [`pace`]).
//! Progress (the ranges done) is kept through a [`MoveRecordStore`], so a driver
//! that restarts resumes where it stopped; merges are idempotent, so a
//! range copied twice is harmless. A movement can be cancelled: a join
//! turns into a leave of a node that owns nothing (the node exits), a
//! decommission or removal puts the node back to NORMAL.
//!
//! # Cleanup
//! Once the ring has been still for `cleanup_delay_ms` and no node is
//! moving, each node drops the records of ranges it no longer replicates
//! (no tombstone: the data lives on at its replicas).
//!
//! # Files
//! - [`plan`]: which token intervals move where.
//! - [`drive`]: a movement from announcement to its end, and cancelling it.
//! - [`stream`]: copying one interval; both ends of a stream.
//! - [`pace`]: the rate limit and the pacing that yields to clients.
//! - [`cleanup`]: dropping what a node no longer replicates.
//! - [`record`]: what survives a restart of a movement.

pub mod cleanup;
pub mod drive;
pub mod pace;
pub mod plan;
pub mod record;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::api::{KvError, MoveCommand, MovementKind, MovementPhase, MovementStatus};
use crate::exec::BlockingError;
use crate::id::{NodeId, display};
use crate::membership::Membership;
use crate::membership::gossip::Gossip;
use crate::net::Peer;
use crate::net::message::NodeStatus;
use crate::repair::hints::Hints;
use crate::replica::LocalReplica;
use crate::ring::{RingError, RingNode, Token};
use crate::rpc::{PeerError, Rpc};
use crate::store::LocalStore;

pub use plan::{Transfer, transfers};
pub use record::{DoneTransfer, MemMoveRecords, MoveRecord, MoveRecordStore};
pub use stream::STREAM_BATCH_BYTES_MAX;

/// Settings of data movement.
#[derive(Debug, Clone)]
pub struct MoveConfig {
    /// Streaming rate limit per movement, bytes per second (0: none). The
    /// stream paces itself below it while peers answer slowly.
    pub bytes_per_sec_max: u64,
    /// Bytes per stream batch (at least one record).
    pub batch_bytes_max: u32,
    /// Wait between announcing a change and streaming, for writes
    /// coordinated under the old ring to finish (at least the request
    /// timeout; the node builder raises it to that).
    pub settle_ms: u64,
    /// How long the ring must be still before a node drops the data of
    /// ranges it no longer replicates; 0 turns cleanup off.
    pub cleanup_delay_ms: u64,
}

impl Default for MoveConfig {
    fn default() -> Self {
        Self {
            bytes_per_sec_max: 64 * 1024 * 1024,
            // Small batches keep a source's answers to clients from
            // queueing behind a big one (join benchmark: client p99 during
            // a join 1.8x the p99 before with 128 KiB, 1.9-2.1x with 1 MiB).
            batch_bytes_max: 128 * 1024,
            settle_ms: 2_000,
            cleanup_delay_ms: 60_000,
        }
    }
}

/// Why a movement, or a step of one, failed.
#[derive(Debug, thiserror::Error)]
pub enum MovementError {
    #[error("node {} has left the cluster; wipe its data directory to join again", display(*.0))]
    Left(NodeId),
    #[error("the movement record: {0}")]
    Record(#[source] std::io::Error),
    #[error("no seed answered within {wait:?} (seeds: {seeds})")]
    NoSeed { wait: Duration, seeds: String },
    #[error("picking tokens: {0}")]
    Tokens(#[from] RingError),
    #[error("no live replica holds [{lo}, {hi}] (holders: {holders})")]
    NoSource {
        lo: Token,
        hi: Token,
        holders: String,
    },
    #[error("target {} is down", display(*.0))]
    TargetDown(NodeId),
    #[error("batch from {} failed its checksum", display(*.0))]
    Checksum(NodeId),
    #[error("{}: {source}", display(*node))]
    Peer {
        node: NodeId,
        #[source]
        source: PeerError,
    },
    #[error(transparent)]
    Local(#[from] KvError),
    #[error(transparent)]
    Blocking(#[from] BlockingError),
    #[error("cancelled")]
    Cancelled,
}

/// The movement a driver runs, and the node whose ranges move (this node,
/// or a dead one being removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drive {
    pub kind: MovementKind,
    pub node: NodeId,
}

/// A node's data movement: joining, decommissioning, removing dead nodes,
/// answering streams, and cleaning up.
pub struct Movements<S> {
    replica: Arc<LocalReplica<S>>,
    membership: Arc<Membership>,
    rpc: Rpc,
    gossip: Gossip,
    hints: Arc<Hints<S>>,
    records: Arc<dyn MoveRecordStore>,
    config: MoveConfig,
    status: Mutex<Option<MovementStatus>>,
    running: AtomicBool,
    cancel: AtomicBool,
    /// Set when this node has left the ring (decommissioned or its join
    /// cancelled): the process should stop.
    left: tokio::sync::watch::Sender<bool>,
    /// The foreign ranges last cleaned up (a digest) and when (monotonic),
    /// so an unchanged ring is scanned again only every
    /// [`cleanup::CLEANUP_RECHECK`].
    cleaned: Mutex<Option<(u64, Duration)>>,
}

impl<S: LocalStore> Movements<S> {
    pub fn new(
        replica: Arc<LocalReplica<S>>,
        membership: Arc<Membership>,
        rpc: Rpc,
        gossip: Gossip,
        hints: Arc<Hints<S>>,
        records: Arc<dyn MoveRecordStore>,
        config: MoveConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            replica,
            membership,
            rpc,
            gossip,
            hints,
            records,
            config,
            status: Mutex::new(None),
            running: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            left: tokio::sync::watch::channel(false).0,
            cleaned: Mutex::new(None),
        })
    }

    fn id(&self) -> NodeId {
        self.replica.id()
    }

    pub fn config(&self) -> &MoveConfig {
        &self.config
    }

    fn save_record(&self, record: Option<&MoveRecord>) -> Result<(), MovementError> {
        self.records.save(record).map_err(MovementError::Record)
    }

    fn load_record(&self) -> Result<Option<MoveRecord>, MovementError> {
        self.records.load().map_err(MovementError::Record)
    }

    /// Resolves once this node has left the ring.
    pub fn left_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.left.subscribe()
    }

    /// The movement this node drives or last drove.
    pub fn status(&self) -> Option<MovementStatus> {
        self.status.lock().clone()
    }

    fn set_status(&self, f: impl FnOnce(&mut MovementStatus)) {
        let now = self.replica.now_ms();
        if let Some(s) = self.status.lock().as_mut() {
            f(s);
            s.updated_ms = now;
        }
    }

    /// Learns the ring from `seeds` and picks this node's tokens so that
    /// what each node owns and replicates evens out (see
    /// [`crate::ring::alloc`]). A node with no seed other than itself starts
    /// a new ring. A node that joins a ring saves its movement record (a
    /// join) before returning, so the caller saves the tokens after it.
    /// Fails when no seed answers within `wait`.
    pub async fn choose_tokens(
        &self,
        seeds: &[String],
        wait: Duration,
    ) -> Result<Vec<Token>, MovementError> {
        let m = &self.membership;
        let me = m
            .state(self.id())
            .ok_or_else(|| MovementError::Local(KvError::Storage("own state missing".into())))?;
        let others: Vec<String> = seeds
            .iter()
            .filter(|s| **s != me.cluster_addr)
            .cloned()
            .collect();
        if !others.is_empty() {
            let deadline = tokio::time::Instant::now() + wait;
            let mut i = 0usize;
            while m.current_ring().ring().is_empty() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(MovementError::NoSeed {
                        wait,
                        seeds: others.join(", "),
                    });
                }
                let peer = Peer {
                    id: 0,
                    addr: others[i % others.len()].clone(),
                };
                i += 1;
                if !self.gossip.exchange(&peer).await {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        // The ring with the nodes still joining: two nodes joining at once
        // do not pick the same gaps.
        let tokens = self.allocate_tokens().await?;
        // A node joining a ring says so on disk before its tokens are kept:
        // should it stop in between, it joins again on restart rather than
        // taking tokens whose data it never received as NORMAL.
        if !m.current_ring().ring().is_empty() && self.load_record()?.is_none() {
            self.save_record(Some(&MoveRecord::new(MovementKind::Join)))?;
        }
        Ok(tokens)
    }

    /// Tokens for this node against the pending ring without it.
    async fn allocate_tokens(&self) -> Result<Vec<Token>, MovementError> {
        let m = &self.membership;
        let me = m
            .state(self.id())
            .ok_or_else(|| MovementError::Local(KvError::Storage("own state missing".into())))?;
        let mut ring = m.ring_after_moves().ring().clone();
        let _ = ring.remove_node(me.id);
        let rf = m.replication().in_dc(&me.dc);
        let node = RingNode {
            id: me.id,
            dc: me.dc,
            rack: me.rack,
            weight: me.weight.max(1),
        };
        // Allocation takes up to a second on a large ring: off the executor.
        Ok(crate::exec::blocking(move || ring.add_node(node, rf)).await??)
    }

    /// Takes this node's place in the ring. A node with saved tokens and no
    /// movement record is NORMAL at once; a node whose record says it was
    /// joining or leaving resumes; the first node of a cluster (an empty
    /// ring) is NORMAL at once; any other node joins, streaming in the
    /// background. Fails when the record says this node has left.
    pub async fn take_place(
        self: &Arc<Self>,
        tokens: Vec<Token>,
        contacts: &[String],
    ) -> Result<(), MovementError> {
        let record = self.load_record()?;
        let fresh = self
            .membership
            .state(self.id())
            .is_some_and(|s| s.tokens.is_empty());
        let me = self.id();
        match record {
            Some(r) if r.left => return Err(MovementError::Left(me)),
            Some(r) => {
                let (kind, status) = match r.kind {
                    MovementKind::Join => (MovementKind::Join, NodeStatus::Joining),
                    _ => (MovementKind::Decommission, NodeStatus::Leaving),
                };
                self.begin(Drive { kind, node: me }, status, tokens, contacts);
            }
            None if fresh && !self.membership.current_ring().ring().is_empty() => {
                self.save_record(Some(&MoveRecord::new(MovementKind::Join)))?;
                let drive = Drive {
                    kind: MovementKind::Join,
                    node: me,
                };
                self.begin(drive, NodeStatus::Joining, tokens, contacts);
            }
            None => {
                // NORMAL at once; the seeds hear of the tokens now, so a
                // node joining next already sees them.
                self.membership.update_self(|s| {
                    s.tokens = tokens;
                    s.status = NodeStatus::Normal;
                });
                self.gossip.exchange_with_each(contacts).await;
            }
        }
        Ok(())
    }

    /// Sets this node's status and tokens and runs `drive` in the
    /// background.
    fn begin(
        self: &Arc<Self>,
        drive: Drive,
        status: NodeStatus,
        tokens: Vec<Token>,
        contacts: &[String],
    ) {
        self.membership.update_self(|s| {
            s.tokens = tokens;
            s.status = status;
        });
        self.spawn_drive(drive, contacts.to_vec());
    }

    fn spawn_drive(self: &Arc<Self>, drive: Drive, contacts: Vec<String>) {
        self.running.store(true, Ordering::SeqCst);
        self.cancel.store(false, Ordering::SeqCst);
        let now = self.replica.now_ms();
        // A resumed movement shows the ranges it finished before at once.
        let resumed = match drive.kind {
            MovementKind::Remove => 0,
            _ => self
                .records
                .load()
                .ok()
                .flatten()
                .map_or(0, |r| r.done.len() as u64),
        };
        *self.status.lock() = Some(MovementStatus {
            kind: drive.kind,
            ranges_done: resumed,
            node: drive.node,
            phase: MovementPhase::Settling,
            started_ms: now,
            updated_ms: now,
            ..MovementStatus::default()
        });
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let result = me.drive(drive, &contacts).await;
            let name = drive.kind.name();
            match result {
                Ok(phase) => {
                    tracing::info!(movement = name, phase = phase.name(), "movement finished");
                    me.set_status(|s| s.phase = phase);
                }
                Err(e) => {
                    tracing::error!(movement = name, error = %e, "movement failed");
                    me.set_status(|s| {
                        s.phase = MovementPhase::Failed;
                        s.last_error = Some(e.to_string());
                    });
                }
            }
            me.running.store(false, Ordering::SeqCst);
        });
    }

    /// Starts or cancels a movement (the admin verbs).
    pub fn command(self: &Arc<Self>, cmd: MoveCommand) -> Result<MovementStatus, KvError> {
        let m = &self.membership;
        let busy = || {
            KvError::InvalidArgument(format!(
                "a {} is already running here",
                self.status().map_or("movement", |s| s.kind.name())
            ))
        };
        match cmd {
            MoveCommand::Cancel => {
                if !self.running.load(Ordering::SeqCst) {
                    return Err(KvError::InvalidArgument(
                        "no movement is running here".into(),
                    ));
                }
                self.cancel.store(true, Ordering::SeqCst);
            }
            MoveCommand::Decommission => {
                if self.running.load(Ordering::SeqCst) {
                    return Err(busy());
                }
                let me = m.state(self.id()).map(|s| s.status);
                if me != Some(NodeStatus::Normal) {
                    return Err(KvError::InvalidArgument(format!(
                        "only a NORMAL node can be decommissioned; this one is {me:?}"
                    )));
                }
                self.check_replicas_after_leaving(self.id())?;
                self.save_record(Some(&MoveRecord::new(MovementKind::Decommission)))
                    .map_err(|e| KvError::Storage(e.to_string()))?;
                m.update_self(|s| s.status = NodeStatus::Leaving);
                let drive = Drive {
                    kind: MovementKind::Decommission,
                    node: self.id(),
                };
                self.spawn_drive(drive, Vec::new());
            }
            MoveCommand::Remove(id, grants) => {
                if self.running.load(Ordering::SeqCst) {
                    return Err(busy());
                }
                if id == self.id() {
                    return Err(KvError::InvalidArgument(
                        "a node cannot remove itself; decommission it".into(),
                    ));
                }
                let Some(state) = m.state(id) else {
                    return Err(KvError::InvalidArgument(format!(
                        "no node {} in this cluster",
                        display(id)
                    )));
                };
                if state.status == NodeStatus::Left {
                    return Err(KvError::InvalidArgument(format!(
                        "node {} has already left",
                        display(id)
                    )));
                }
                if m.is_alive(id) {
                    return Err(KvError::InvalidArgument(format!(
                        "node {} is alive: decommission it instead (remove is for dead nodes)",
                        display(id)
                    )));
                }
                m.set_removal_grants(id, grants)
                    .map_err(KvError::InvalidArgument)?;
                m.update_other(id, |s| s.status = NodeStatus::Leaving);
                let drive = Drive {
                    kind: MovementKind::Remove,
                    node: id,
                };
                self.spawn_drive(drive, Vec::new());
            }
        }
        Ok(self.status().unwrap_or_default())
    }

    /// Refuses a leave that would leave a data center with fewer NORMAL
    /// nodes than its replication factor.
    fn check_replicas_after_leaving(&self, leaving: NodeId) -> Result<(), KvError> {
        let m = &self.membership;
        let states = m.states();
        for (dc, rf) in &m.replication().per_dc {
            let remaining = states
                .iter()
                .filter(|s| s.id != leaving && s.status == NodeStatus::Normal && &s.dc == dc)
                .count();
            if remaining < *rf {
                return Err(KvError::InvalidArgument(format!(
                    "data center {dc:?} would keep {remaining} node(s) for replication factor {rf}; add a node first"
                )));
            }
        }
        Ok(())
    }

    /// True while a movement driven here runs.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}
