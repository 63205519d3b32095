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
//! [`Membership::pending_for_reads`](crate::membership::Membership::pending_for_reads)).
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
//! (see `Pacer`).
//! Progress (the ranges done) is kept through a [`MoveLog`], so a driver
//! that restarts resumes where it stopped; merges are idempotent, so a
//! range copied twice is harmless. A movement can be cancelled: a join
//! turns into a leave of a node that owns nothing (the node exits), a
//! decommission or removal puts the node back to NORMAL.
//!
//! # Cleanup
//! Once the ring has been still for `cleanup_delay_ms` and no node is
//! moving, each node drops the records of ranges it no longer replicates
//! (no tombstone: the data lives on at its replicas).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::api::{KvError, MoveCommand, MovementStatus};
use crate::causality::SiblingSet;
use crate::net::message::{NodeStatus, Request, Response, stream_crc};
use crate::node::Node;
use crate::node_files::display;
use crate::ring::{Placement, token_of};
use crate::store::LocalStore;

/// Timeout of one stream call (a batch read or merged).
const STREAM_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between passes over ranges that failed to copy.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Rounds of telling every live peer of a hand-over before going on anyway.
const HANDOVER_ANNOUNCE_ROUNDS: usize = 10;
/// Keys removed per step of a cleanup.
const CLEANUP_BATCH_KEYS: usize = 10_000;
/// How often a node scans again the ranges it does not replicate when the
/// ring has not changed: a late write (a hint replayed or a read repair
/// from a node that had not yet heard of the ring change) may have landed
/// there since.
const CLEANUP_RECHECK: Duration = Duration::from_secs(600);
/// Attempts to reach each peer when announcing a change.
const ANNOUNCE_ATTEMPTS: usize = 3;

/// Settings of data movement.
#[derive(Debug, Clone)]
pub struct MoveConfig {
    /// Streaming rate limit per movement, bytes per second (0: none). The
    /// stream paces itself below it while peers answer slowly.
    pub bytes_per_sec_max: u64,
    /// Bytes per stream batch (at least one record).
    pub batch_bytes_max: u32,
    /// Wait between announcing a change and streaming, for writes
    /// coordinated under the old ring to finish.
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

/// One token interval to copy: the records with token in `[lo, hi]`, to
/// `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub lo: u64,
    pub hi: u64,
    pub target: u64,
    /// Current replicas that are not replicas in the pending ring.
    pub losers: Vec<u64>,
    /// Every current replica.
    pub holders: Vec<u64>,
}

/// The intervals `[lo, hi]` between consecutive tokens of both rings; each
/// lies within one vnode of either ring, so one preference list per ring
/// covers it (the list of `hi`).
fn intervals(a: &Placement, b: &Placement) -> Vec<(u64, u64)> {
    let mut tokens: Vec<u64> = a
        .ring()
        .tokens()
        .chain(b.ring().tokens())
        .map(|(t, _)| t)
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    let Some(&first) = tokens.first() else {
        return vec![(0, u64::MAX)];
    };
    let mut out = Vec::with_capacity(tokens.len() + 1);
    out.push((0, first));
    for w in tokens.windows(2) {
        out.push((w[0] + 1, w[1]));
    }
    if let Some(&last) = tokens.last()
        && last < u64::MAX
    {
        out.push((last + 1, u64::MAX));
    }
    out
}

/// Every copy the move from `current` to `pending` needs, adjacent
/// intervals with the same target and replicas merged.
pub fn transfers(current: &Placement, pending: &Placement) -> Vec<Transfer> {
    let mut out: Vec<Transfer> = Vec::new();
    for (lo, hi) in intervals(current, pending) {
        let cur = current.preference_list(hi);
        let fut = pending.preference_list(hi);
        let losers: Vec<u64> = cur.iter().copied().filter(|id| !fut.contains(id)).collect();
        for &target in fut.iter().filter(|id| !cur.contains(id)) {
            let t = Transfer {
                lo,
                hi,
                target,
                losers: losers.clone(),
                holders: cur.to_vec(),
            };
            // Intervals come in token order; extend a run of the same move.
            if let Some(prev) = out.iter_mut().rev().take(8).find(|p| {
                p.target == target
                    && p.hi.checked_add(1) == Some(lo)
                    && p.losers == t.losers
                    && p.holders == t.holders
            }) {
                prev.hi = hi;
            } else {
                out.push(t);
            }
        }
    }
    out
}

/// Which movement a [`MoveRecord`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveKind {
    /// This node is joining.
    Join,
    /// This node is leaving.
    Leave,
    /// This node has left: it may not serve again.
    Left,
}

/// What survives a restart of the movement a node drives of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub kind: MoveKind,
    /// `(lo, hi, target)` of every transfer done.
    pub done: Vec<(u64, u64, u64)>,
}

/// Where a node keeps its [`MoveRecord`] (a file in its data directory; in
/// memory for tests).
pub trait MoveLog: Send + Sync {
    fn load(&self) -> std::io::Result<Option<MoveRecord>>;
    /// Replaces the record (`None`: no movement).
    fn save(&self, record: Option<&MoveRecord>) -> std::io::Result<()>;
    /// Keeps the node's tokens (re-picked when a simultaneous joiner took
    /// the same ones).
    fn save_tokens(&self, tokens: &[u64]) -> std::io::Result<()> {
        let _ = tokens;
        Ok(())
    }
}

/// A [`MoveLog`] in memory.
#[derive(Default)]
pub struct MemMoveLog(Mutex<Option<MoveRecord>>);

impl MoveLog for MemMoveLog {
    fn load(&self) -> std::io::Result<Option<MoveRecord>> {
        Ok(self.0.lock().clone())
    }
    fn save(&self, record: Option<&MoveRecord>) -> std::io::Result<()> {
        *self.0.lock() = record.cloned();
        Ok(())
    }
}

/// A node's movement state.
pub(crate) struct Movements {
    config: parking_lot::RwLock<MoveConfig>,
    log: parking_lot::RwLock<Arc<dyn MoveLog>>,
    status: Mutex<Option<MovementStatus>>,
    running: AtomicBool,
    cancel: AtomicBool,
    /// Set when this node has left the ring (decommissioned or its join
    /// cancelled): the process should stop.
    left: tokio::sync::watch::Sender<bool>,
    /// The foreign ranges last cleaned up (a digest) and when (monotonic),
    /// so an unchanged ring is scanned again only every
    /// [`CLEANUP_RECHECK`].
    cleaned: Mutex<Option<(u64, Duration)>>,
}

impl Default for Movements {
    fn default() -> Self {
        Self {
            config: parking_lot::RwLock::new(MoveConfig::default()),
            log: parking_lot::RwLock::new(Arc::new(MemMoveLog::default())),
            status: Mutex::new(None),
            running: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            left: tokio::sync::watch::channel(false).0,
            cleaned: Mutex::new(None),
        }
    }
}

/// Figures of one copy.
#[derive(Debug, Default, Clone, Copy)]
struct Copied {
    keys: u64,
    bytes: u64,
}

/// The movement a driver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drive {
    Join,
    Leave,
    Remove(u64),
}

impl Drive {
    fn name(self) -> &'static str {
        match self {
            Drive::Join => "join",
            Drive::Leave => "decommission",
            Drive::Remove(_) => "remove",
        }
    }
}

impl<S: LocalStore> Node<S> {
    fn moves(&self) -> &Movements {
        self.movements()
    }

    /// Replaces the movement settings.
    pub fn set_move_config(&self, config: MoveConfig) {
        *self.moves().config.write() = config;
    }

    /// Installs where the movement record is kept.
    pub fn set_move_log(&self, log: Arc<dyn MoveLog>) {
        *self.moves().log.write() = log;
    }

    fn move_config(&self) -> MoveConfig {
        self.moves().config.read().clone()
    }

    fn save_record(&self, record: Option<&MoveRecord>) -> Result<(), String> {
        let log = Arc::clone(&*self.moves().log.read());
        log.save(record)
            .map_err(|e| format!("saving the movement record: {e}"))
    }

    /// Resolves once this node has left the ring.
    pub fn left_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.moves().left.subscribe()
    }

    /// The movement this node drives or last drove.
    pub fn movement_status(&self) -> Option<MovementStatus> {
        self.moves().status.lock().clone()
    }

    fn set_status(&self, f: impl FnOnce(&mut MovementStatus)) {
        let now = self.now_wall_ms();
        if let Some(s) = self.moves().status.lock().as_mut() {
            f(s);
            s.updated_ms = now;
        }
    }

    fn now_wall_ms(&self) -> u64 {
        self.membership_clock().now_ms()
    }

    /// Takes this node's place in the ring. A node with saved tokens and no
    /// movement record is NORMAL at once; a node whose record says it was
    /// joining or leaving resumes; the first node of a cluster (an empty
    /// ring) is NORMAL at once; any other node joins, streaming in the
    /// background. Fails when the record says this node has left.
    pub async fn start(&self, tokens: Vec<u64>, contacts: &[String]) -> Result<(), String> {
        let log = Arc::clone(&*self.moves().log.read());
        let record = log
            .load()
            .map_err(|e| format!("reading the movement record: {e}"))?;
        let fresh = self
            .membership()
            .state(self.id())
            .is_some_and(|s| s.tokens.is_empty());
        match record.map(|r| r.kind) {
            Some(MoveKind::Left) => {
                return Err(format!(
                    "node {} has left the cluster; wipe its data directory to join again",
                    display(self.id())
                ));
            }
            Some(MoveKind::Join) => self.begin(Drive::Join, NodeStatus::Joining, tokens, contacts),
            Some(MoveKind::Leave) => {
                self.begin(Drive::Leave, NodeStatus::Leaving, tokens, contacts)
            }
            None if fresh && !self.membership().placement().ring().is_empty() => {
                self.save_record(Some(&MoveRecord {
                    kind: MoveKind::Join,
                    done: Vec::new(),
                }))?;
                self.begin(Drive::Join, NodeStatus::Joining, tokens, contacts);
            }
            None => self.announce(tokens, contacts).await,
        }
        Ok(())
    }

    /// Sets this node's status and tokens and runs `drive` in the
    /// background.
    fn begin(&self, drive: Drive, status: NodeStatus, tokens: Vec<u64>, contacts: &[String]) {
        self.membership().update_self(|s| {
            s.tokens = tokens;
            s.status = status;
        });
        self.spawn_drive(drive, contacts.to_vec());
    }

    fn spawn_drive(&self, drive: Drive, contacts: Vec<String>) {
        let moves = self.moves();
        moves.running.store(true, Ordering::SeqCst);
        moves.cancel.store(false, Ordering::SeqCst);
        let now = self.now_wall_ms();
        // A resumed movement shows the ranges it finished before at once.
        let resumed = match drive {
            Drive::Remove(_) => 0,
            _ => moves
                .log
                .read()
                .load()
                .ok()
                .flatten()
                .map_or(0, |r| r.done.len() as u64),
        };
        *moves.status.lock() = Some(MovementStatus {
            kind: drive.name().into(),
            ranges_done: resumed,
            node: match drive {
                Drive::Remove(id) => id,
                _ => self.id(),
            },
            phase: "settling".into(),
            started_ms: now,
            updated_ms: now,
            ..MovementStatus::default()
        });
        let node = self.clone();
        tokio::spawn(async move {
            let result = node.drive(drive, &contacts).await;
            match &result {
                Ok(phase) => {
                    tracing::info!(movement = drive.name(), %phase, "movement finished");
                    node.set_status(|s| s.phase = phase.clone());
                }
                Err(e) => {
                    tracing::error!(movement = drive.name(), error = %e, "movement failed");
                    node.set_status(|s| {
                        s.phase = "failed".into();
                        s.last_error = Some(e.clone());
                    });
                }
            }
            node.moves().running.store(false, Ordering::SeqCst);
        });
    }

    /// Starts or cancels a movement (the admin verbs).
    pub fn command_movement(&self, cmd: MoveCommand) -> Result<MovementStatus, KvError> {
        let moves = self.moves();
        let m = self.membership();
        let busy = || {
            KvError::InvalidArgument(format!(
                "a {} is already running here",
                self.movement_status().map(|s| s.kind).unwrap_or_default()
            ))
        };
        match cmd {
            MoveCommand::Cancel => {
                if !moves.running.load(Ordering::SeqCst) {
                    return Err(KvError::InvalidArgument(
                        "no movement is running here".into(),
                    ));
                }
                moves.cancel.store(true, Ordering::SeqCst);
            }
            MoveCommand::Decommission => {
                if moves.running.load(Ordering::SeqCst) {
                    return Err(busy());
                }
                let me = m.state(self.id()).map(|s| s.status);
                if me != Some(NodeStatus::Normal) {
                    return Err(KvError::InvalidArgument(format!(
                        "only a NORMAL node can be decommissioned; this one is {me:?}"
                    )));
                }
                self.check_replicas_after_leaving(self.id())?;
                self.save_record(Some(&MoveRecord {
                    kind: MoveKind::Leave,
                    done: Vec::new(),
                }))
                .map_err(KvError::Storage)?;
                m.update_self(|s| s.status = NodeStatus::Leaving);
                self.spawn_drive(Drive::Leave, Vec::new());
            }
            MoveCommand::Remove(id) => {
                if moves.running.load(Ordering::SeqCst) {
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
                m.update_other(id, |s| s.status = NodeStatus::Leaving);
                self.spawn_drive(Drive::Remove(id), Vec::new());
            }
        }
        Ok(self.movement_status().unwrap_or_default())
    }

    /// Refuses a leave that would leave a data center with fewer NORMAL
    /// nodes than its replication factor.
    fn check_replicas_after_leaving(&self, leaving: u64) -> Result<(), KvError> {
        let m = self.membership();
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

    /// Sends this node's view to every known peer (a few attempts each),
    /// so they learn a status change now rather than by gossip. Returns
    /// the peers that could not be reached.
    async fn announce_to_all(&self, contacts: &[String]) -> Vec<String> {
        let m = self.membership();
        let own = m
            .state(self.id())
            .map(|s| s.cluster_addr)
            .unwrap_or_default();
        let mut addrs: Vec<String> = m
            .states()
            .into_iter()
            .filter(|s| s.id != self.id() && s.status != NodeStatus::Left)
            .map(|s| s.cluster_addr)
            .chain(contacts.iter().cloned())
            .filter(|a| !a.is_empty() && *a != own)
            .collect();
        addrs.sort();
        addrs.dedup();
        let sends = addrs.into_iter().map(|addr| async move {
            let peer = crate::net::Peer {
                id: 0,
                addr: addr.clone(),
            };
            for _ in 0..ANNOUNCE_ATTEMPTS {
                if self.gossip_with(&peer).await {
                    return None;
                }
            }
            Some(addr)
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Runs one movement to its end; returns its final phase.
    async fn drive(&self, drive: Drive, contacts: &[String]) -> Result<String, String> {
        let settle = Duration::from_millis(self.move_config().settle_ms);
        loop {
            let unreachable = self.announce_to_all(contacts).await;
            if !unreachable.is_empty() {
                tracing::warn!(peers = ?unreachable, "peers not told of the movement (down?)");
            }
            if self.sleep_or_cancel(settle).await {
                return self.cancelled(drive).await;
            }
            if drive != Drive::Join || !self.repick_contested_tokens().await? {
                break;
            }
        }
        self.set_status(|s| s.phase = "streaming".into());
        let m = self.membership();
        let current = m.placement();
        let pending = m.future_placement();
        let mine: Vec<Transfer> = transfers(&current, &pending)
            .into_iter()
            .filter(|t| match drive {
                Drive::Join => t.target == self.id(),
                Drive::Leave => t.losers.contains(&self.id()),
                Drive::Remove(id) => t.losers.contains(&id),
            })
            .collect();
        let mut record = self
            .moves()
            .log
            .read()
            .load()
            .ok()
            .flatten()
            .unwrap_or(MoveRecord {
                kind: match drive {
                    Drive::Join => MoveKind::Join,
                    _ => MoveKind::Leave,
                },
                done: Vec::new(),
            });
        let persist = !matches!(drive, Drive::Remove(_));
        let mut todo: Vec<Transfer> = mine
            .iter()
            .filter(|t| !record.done.contains(&(t.lo, t.hi, t.target)))
            .cloned()
            .collect();
        let total = mine.len() as u64;
        self.set_status(|s| {
            s.ranges_total = total;
            s.ranges_done = total - todo.len() as u64;
        });
        let config = self.move_config();
        // The peers this stream works with: sources and targets not this
        // node.
        let mut peers: Vec<u64> = todo
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
        let baseline = self.pace_baseline(&peers).await;
        let mut pacer = Pacer::new(config.bytes_per_sec_max, baseline);
        let mut throttle = Throttle::new(pacer.rate);
        self.set_status(|s| s.rate_bytes_per_sec = pacer.rate);
        while !todo.is_empty() {
            let mut failed = Vec::new();
            for t in todo {
                if self.moves().cancel.load(Ordering::SeqCst) {
                    return self.cancelled(drive).await;
                }
                match self
                    .copy_transfer(&t, drive, &config, &mut throttle, &mut pacer, &peers)
                    .await
                {
                    Ok(()) => {
                        record.done.push((t.lo, t.hi, t.target));
                        if persist {
                            self.save_record(Some(&record))?;
                        }
                        self.set_status(|s| s.ranges_done += 1);
                    }
                    Err(e) => {
                        tracing::warn!(lo = t.lo, hi = t.hi, target = %display(t.target), error = %e, "range copy failed; will retry");
                        self.set_status(|s| s.last_error = Some(e.clone()));
                        failed.push(t);
                    }
                }
            }
            todo = failed;
            if !todo.is_empty() && self.sleep_or_cancel(RETRY_PAUSE).await {
                return self.cancelled(drive).await;
            }
        }
        // Hand-over: for one settle period reads consult both rings, so
        // nodes that see the end of the movement at different moments
        // still overlap on a quorum (before this, every write reached a
        // quorum of the current ring, and reads needed only that one).
        self.set_status(|s| s.phase = "handing over".into());
        match drive {
            Drive::Join => m.update_self(|s| s.status = NodeStatus::JoinHandover),
            Drive::Leave => m.update_self(|s| s.status = NodeStatus::LeaveHandover),
            Drive::Remove(id) => {
                m.update_other(id, |s| s.status = NodeStatus::LeaveHandover);
            }
        }
        // Every live peer must hear of the hand-over before the end of it:
        // one that jumped from the streaming step to the end would read
        // the old ring alone while others write the new one alone.
        for _ in 0..HANDOVER_ANNOUNCE_ROUNDS {
            let missed = self.announce_to_all(contacts).await;
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
                return self.cancelled(drive).await;
            }
        }
        if self.sleep_or_cancel(settle).await {
            return self.cancelled(drive).await;
        }
        match drive {
            Drive::Join => {
                // The record goes first: a node that restarts after this
                // point comes back NORMAL, never JOINING again after having
                // been NORMAL.
                self.save_record(None)?;
                m.update_self(|s| s.status = NodeStatus::Normal);
                self.announce_to_all(contacts).await;
            }
            Drive::Leave => {
                self.set_status(|s| s.phase = "handing off hints".into());
                self.hand_off_hints().await;
                self.leave_ring(contacts).await?;
            }
            Drive::Remove(id) => {
                m.update_other(id, |s| s.status = NodeStatus::Left);
                self.announce_to_all(contacts).await;
            }
        }
        Ok("done".into())
    }

    /// Two nodes that join at once may pick the same tokens (each against
    /// the ring without the other); a contested token goes to the lower
    /// id, so the other would own less than it should, or nothing. A joiner
    /// that lost tokens picks new ones against the ring with the other
    /// joiners and announces again; true when it did.
    async fn repick_contested_tokens(&self) -> Result<bool, String> {
        let m = self.membership();
        let Some(me) = m.state(self.id()) else {
            return Ok(false);
        };
        let future = m.future_placement();
        let held = future.ring().tokens_of(self.id());
        if held.len() == me.tokens.len() {
            return Ok(false);
        }
        let mut ring = future.ring().clone();
        let _ = ring.remove_node(self.id());
        let node = crate::ring::RingNode {
            id: self.id(),
            dc: me.dc.clone(),
            rack: me.rack.clone(),
            weight: me.weight.max(1),
        };
        let rf = m.replication().in_dc(&me.dc);
        // Allocation takes up to a second on a large ring: off the executor.
        let tokens = crate::exec::blocking(move || ring.add_node(node, rf))
            .await
            .map_err(|e| format!("re-picking tokens: {e}"))?
            .map_err(|e| format!("re-picking tokens: {e}"))?;
        tracing::warn!(
            lost = me.tokens.len() - held.len(),
            "another joining node took some of this node's tokens; picked new ones"
        );
        let log = Arc::clone(&*self.moves().log.read());
        log.save_tokens(&tokens)
            .map_err(|e| format!("saving the new tokens: {e}"))?;
        m.update_self(|s| s.tokens = tokens);
        Ok(true)
    }

    /// Marks this node LEFT, tells everyone, and signals the process.
    async fn leave_ring(&self, contacts: &[String]) -> Result<(), String> {
        self.save_record(Some(&MoveRecord {
            kind: MoveKind::Left,
            done: Vec::new(),
        }))?;
        self.membership()
            .update_self(|s| s.status = NodeStatus::Left);
        self.announce_to_all(contacts).await;
        let _ = self.moves().left.send(true);
        Ok(())
    }

    /// Undoes a movement on cancel.
    async fn cancelled(&self, drive: Drive) -> Result<String, String> {
        let m = self.membership();
        match drive {
            // A joining node owns nothing yet: it leaves (and exits).
            Drive::Join => self.leave_ring(&[]).await?,
            Drive::Leave => {
                m.update_self(|s| s.status = NodeStatus::Normal);
                self.save_record(None)?;
                self.announce_to_all(&[]).await;
            }
            Drive::Remove(id) => {
                m.update_other(id, |s| s.status = NodeStatus::Normal);
                self.announce_to_all(&[]).await;
            }
        }
        Ok("cancelled".into())
    }

    /// Sleeps; true when the movement was cancelled meanwhile.
    async fn sleep_or_cancel(&self, d: Duration) -> bool {
        let step = Duration::from_millis(50);
        let deadline = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < deadline {
            if self.moves().cancel.load(Ordering::SeqCst) {
                return true;
            }
            tokio::time::sleep(step.min(deadline - tokio::time::Instant::now())).await;
        }
        self.moves().cancel.load(Ordering::SeqCst)
    }

    /// The nodes to read a transfer from: the driver when it loses the
    /// range, else the first live loser, else every live holder.
    fn sources(&self, t: &Transfer, drive: Drive) -> Vec<u64> {
        let m = self.membership();
        if drive == Drive::Leave && t.losers.contains(&self.id()) {
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

    async fn copy_transfer(
        &self,
        t: &Transfer,
        drive: Drive,
        config: &MoveConfig,
        throttle: &mut Throttle,
        pacer: &mut Pacer,
        peers: &[u64],
    ) -> Result<(), String> {
        let sources = self.sources(t, drive);
        if sources.is_empty() {
            return Err(format!(
                "no live replica holds [{}, {}] (holders: {})",
                t.lo,
                t.hi,
                t.holders
                    .iter()
                    .map(|&id| display(id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if t.target != self.id() && !self.membership().is_alive(t.target) {
            return Err(format!("target {} is down", display(t.target)));
        }
        for source in sources {
            let mut after: Option<(u64, Bytes)> = None;
            loop {
                if self.moves().cancel.load(Ordering::SeqCst) {
                    return Err("cancelled".into());
                }
                let (entries, more) = self
                    .read_batch(source, t.lo, t.hi, after.clone(), config.batch_bytes_max)
                    .await?;
                if let Some((key, _)) = entries.last() {
                    after = Some((token_of(key), key.clone()));
                }
                let copied = Copied {
                    keys: entries.len() as u64,
                    bytes: entries
                        .iter()
                        .map(|(k, r)| (k.len() + r.len()) as u64)
                        .sum(),
                };
                if !entries.is_empty() {
                    self.write_batch(t.target, entries).await?;
                }
                metrics::counter!("ringkv_stream_keys_total").increment(copied.keys);
                metrics::counter!("ringkv_stream_bytes_total").increment(copied.bytes);
                self.set_status(|s| {
                    s.keys += copied.keys;
                    s.bytes += copied.bytes;
                });
                throttle.wait(copied.bytes).await;
                self.pace(pacer, throttle, peers).await;
                if !more {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One batch of `[lo, hi]` after `after`, from `source`.
    async fn read_batch(
        &self,
        source: u64,
        lo: u64,
        hi: u64,
        after: Option<(u64, Bytes)>,
        bytes_max: u32,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool), String> {
        if source == self.id() {
            return self
                .stream_read_local(lo, hi, after, bytes_max)
                .await
                .map_err(|e| e.to_string());
        }
        let req = Request::StreamRead {
            lo,
            hi,
            after,
            bytes_max,
        };
        match self.stream_call(source, req).await? {
            Response::StreamBatch { entries, more, crc } => {
                if stream_crc(&entries) != crc {
                    metrics::counter!("ringkv_stream_checksum_failures_total").increment(1);
                    return Err(format!(
                        "batch from {} failed its checksum",
                        display(source)
                    ));
                }
                Ok((entries, more))
            }
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// One stream call to `id`: its answer, or why there is none (unknown
    /// node, transport failure, or an error answer).
    async fn stream_call(&self, id: u64, req: Request) -> Result<Response, String> {
        let peer = self
            .membership()
            .peer(id)
            .ok_or_else(|| format!("unknown node {}", display(id)))?;
        match self.transport().call(&peer, req, STREAM_CALL_TIMEOUT).await {
            Ok(Response::Error { message, .. }) => Err(format!("{}: {message}", display(id))),
            Ok(answer) => Ok(answer),
            Err(e) => Err(format!("{}: {e}", display(id))),
        }
    }

    /// Merges a batch into `target`.
    async fn write_batch(&self, target: u64, entries: Vec<(Bytes, Bytes)>) -> Result<(), String> {
        if target == self.id() {
            return self
                .stream_merge_local(entries)
                .await
                .map_err(|e| e.to_string());
        }
        let crc = stream_crc(&entries);
        match self
            .stream_call(target, Request::StreamPush { entries, crc })
            .await?
        {
            Response::Merged => Ok(()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// This replica's records of `[lo, hi]` after `after`, up to about
    /// `bytes_max` bytes; true when more follow.
    pub(crate) async fn stream_read_local(
        &self,
        lo: u64,
        hi: u64,
        after: Option<(u64, Bytes)>,
        bytes_max: u32,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool), KvError> {
        if lo > hi {
            return Err(KvError::InvalidArgument(format!(
                "empty range [{lo}, {hi}]"
            )));
        }
        let node = self.clone();
        let budget = (bytes_max as usize).clamp(1, STREAM_BATCH_BYTES_MAX);
        crate::exec::blocking(move || {
            let start = after.as_ref().map_or(lo, |(t, _)| (*t).max(lo));
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            let mut more = false;
            node.store()
                .scan_tokens(start, hi, true, &mut |key, record| {
                    if let Some((t, k)) = &after
                        && (token_of(key), key) <= (*t, k.as_ref())
                    {
                        return true;
                    }
                    if bytes >= budget {
                        more = true;
                        return false;
                    }
                    bytes += key.len() + record.len();
                    entries.push((Bytes::copy_from_slice(key), record.clone()));
                    true
                })
                .map_err(crate::replica::store_error)?;
            Ok((entries, more))
        })
        .await
        .map_err(|e| KvError::Storage(format!("stream read task failed: {e}")))?
    }

    /// Merges streamed records into this replica.
    pub(crate) async fn stream_merge_local(
        &self,
        entries: Vec<(Bytes, Bytes)>,
    ) -> Result<(), KvError> {
        let mut sets = Vec::with_capacity(entries.len());
        for (key, record) in entries {
            let set = SiblingSet::decode(&record).map_err(|e| {
                KvError::InvalidArgument(format!("streamed record does not decode: {e}"))
            })?;
            sets.push((key, set));
        }
        let node = self.clone();
        crate::exec::blocking(move || {
            for (key, set) in sets {
                node.replica().merge(&key, &set)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| KvError::Storage(format!("stream merge task failed: {e}")))?
    }

    /// Gives the hints this node holds to a live peer, which replays them.
    async fn hand_off_hints(&self) {
        let m = self.membership();
        for (target, _) in self.hints().pending() {
            let heir = m
                .states()
                .into_iter()
                .filter(|s| {
                    s.id != self.id()
                        && s.id != target
                        && s.status == NodeStatus::Normal
                        && m.is_alive(s.id)
                })
                .map(|s| s.id)
                .next();
            let Some(heir) = heir else {
                tracing::warn!(target = %display(target), "no live peer to take the hints; anti-entropy will repair instead");
                continue;
            };
            loop {
                let batch = match self.hints().oldest(target, 256) {
                    Ok(b) if !b.is_empty() => b,
                    _ => break,
                };
                let mut moved = 0;
                for hint in batch {
                    let req = Request::Hint {
                        target,
                        key: hint.key.clone(),
                        record: hint.record.clone(),
                    };
                    let ok = matches!(self.stream_call(heir, req).await, Ok(Response::Merged));
                    if ok && self.hints().remove(&hint, None).is_ok() {
                        moved += 1;
                    }
                }
                if moved == 0 {
                    tracing::warn!(target = %display(target), "hint hand-off stalled; anti-entropy will repair instead");
                    break;
                }
            }
        }
    }

    /// Drops, once the ring has been still for `cleanup_delay_ms` and no
    /// node is moving, the records of ranges this node does not replicate.
    /// Returns the records dropped.
    pub async fn cleanup_once(&self) -> Result<u64, KvError> {
        let m = self.membership();
        let delay = self.move_config().cleanup_delay_ms;
        let me = m.state(self.id());
        if delay == 0
            || m.pending_placement().is_some()
            || m.ring_stable_for() < Duration::from_millis(delay)
            || me.is_none_or(|s| s.status != NodeStatus::Normal)
        {
            return Ok(0);
        }
        let placement = m.placement();
        let foreign: Vec<(u64, u64)> = intervals(&placement, &placement)
            .into_iter()
            .filter(|&(_, hi)| !placement.preference_list(hi).contains(&self.id()))
            .collect();
        let digest = foreign
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &(lo, hi)| {
                (h ^ lo).wrapping_mul(0x100_0000_01b3) ^ hi
            });
        let now = self.membership_clock().monotonic();
        if let Some((last, at)) = *self.moves().cleaned.lock()
            && last == digest
            && now.saturating_sub(at) < CLEANUP_RECHECK
        {
            return Ok(0);
        }
        let node = self.clone();
        let dropped = crate::exec::blocking(move || -> Result<u64, KvError> {
            let mut dropped = 0u64;
            for (lo, hi) in foreign {
                loop {
                    let mut keys = Vec::new();
                    node.store()
                        .scan_tokens(lo, hi, true, &mut |key, _| {
                            keys.push(key.to_vec());
                            keys.len() < CLEANUP_BATCH_KEYS
                        })
                        .map_err(crate::replica::store_error)?;
                    for key in &keys {
                        node.store()
                            .remove(key)
                            .map_err(crate::replica::store_error)?;
                    }
                    dropped += keys.len() as u64;
                    if keys.len() < CLEANUP_BATCH_KEYS {
                        break;
                    }
                }
            }
            Ok(dropped)
        })
        .await
        .map_err(|e| KvError::Storage(format!("cleanup task failed: {e}")))??;
        *self.moves().cleaned.lock() = Some((digest, now));
        tracing::debug!(keys = dropped, digest, "cleanup pass");
        if dropped > 0 {
            metrics::counter!("ringkv_cleanup_keys_total").increment(dropped);
            tracing::info!(
                keys = dropped,
                "dropped records of ranges this node no longer replicates"
            );
        }
        Ok(dropped)
    }

    /// Runs [`Node::cleanup_once`] now and then until `shutdown` resolves.
    pub async fn run_cleanup(self, shutdown: impl std::future::Future<Output = ()>) {
        let interval =
            Duration::from_millis((self.move_config().cleanup_delay_ms / 4).clamp(100, 10_000));
        crate::node::every(interval, shutdown, || async {
            if let Err(e) = self.cleanup_once().await {
                tracing::warn!(error = %e, "cleanup failed");
            }
        })
        .await;
    }
}

/// Largest stream batch a node answers, whatever is asked.
pub const STREAM_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Keeps a byte stream under a rate.
struct Throttle {
    rate: u64,
    start: tokio::time::Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            start: tokio::time::Instant::now(),
            bytes: 0,
        }
    }

    /// Changes the rate from now on.
    fn set_rate(&mut self, rate: u64) {
        *self = Self::new(rate);
    }

    async fn wait(&mut self, bytes: u64) {
        self.bytes += bytes;
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// Probes between two pace decisions.
const PACE_WINDOW: usize = 4;
/// Time between two probes.
const PACE_PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long a probe may take before it counts as slow.
const PACE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Streaming yields to client traffic. The driver pings the peers it
/// streams with (`Ping`, answered at once) every [`PACE_PROBE_EVERY`] and
/// compares the median of the last [`PACE_WINDOW`] round trips with the
/// median measured before streaming began: above twice that (and at least
/// 0.5 ms more) the rate halves, down to 1/64 of the maximum; under 1.5
/// times (plus 0.25 ms) it grows by an eighth of the maximum. It starts at a
/// quarter of the maximum. A round trip stands for what a replica's answer
/// to a coordinator costs while the stream runs: on a busy node both wait
/// for the same threads and disks.
struct Pacer {
    max: u64,
    rate: u64,
    baseline: Duration,
    window: Vec<Duration>,
    next_probe: tokio::time::Instant,
    turn: usize,
}

impl Pacer {
    fn new(max: u64, baseline: Duration) -> Self {
        Self {
            max,
            rate: if max == 0 { 0 } else { (max / 4).max(1) },
            baseline,
            window: Vec::with_capacity(PACE_WINDOW),
            next_probe: tokio::time::Instant::now() + PACE_PROBE_EVERY,
            turn: 0,
        }
    }

    fn floor(&self) -> u64 {
        (self.max / 64).max(1)
    }

    /// Takes one round trip; returns the new rate when it changes.
    fn observe(&mut self, rtt: Duration) -> Option<u64> {
        if self.max == 0 {
            return None;
        }
        self.window.push(rtt);
        if self.window.len() < PACE_WINDOW {
            return None;
        }
        let mut sorted = self.window.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        self.window.clear();
        let slow = (self.baseline * 2).max(self.baseline + Duration::from_micros(500));
        let calm = self.baseline * 3 / 2 + Duration::from_micros(250);
        let rate = if median > slow {
            (self.rate / 2).max(self.floor())
        } else if median < calm {
            (self.rate + self.max / 8).min(self.max)
        } else {
            self.rate
        };
        (rate != self.rate).then(|| {
            self.rate = rate;
            rate
        })
    }
}

impl<S: LocalStore> Node<S> {
    /// One round trip to `peer`; `None` when it is down or does not answer
    /// (a failure says nothing about load: the copy retries on its own).
    async fn probe(&self, peer: u64) -> Option<Duration> {
        if !self.membership().is_alive(peer) {
            return None;
        }
        let p = self.membership().peer(peer)?;
        let started = tokio::time::Instant::now();
        match self
            .transport()
            .call(&p, Request::Ping, PACE_PROBE_TIMEOUT)
            .await
        {
            Ok(Response::Pong) => Some(started.elapsed()),
            _ => None,
        }
    }

    /// The median round trip to `peers` before streaming begins (1 ms when
    /// none answers).
    async fn pace_baseline(&self, peers: &[u64]) -> Duration {
        let mut rtts = Vec::new();
        for _ in 0..3 {
            for &p in peers {
                rtts.extend(self.probe(p).await);
            }
        }
        rtts.sort_unstable();
        rtts.get(rtts.len() / 2)
            .copied()
            .unwrap_or(Duration::from_millis(1))
    }

    /// Probes one of `peers` when due and adjusts the throttle.
    async fn pace(&self, pacer: &mut Pacer, throttle: &mut Throttle, peers: &[u64]) {
        if peers.is_empty() || tokio::time::Instant::now() < pacer.next_probe {
            return;
        }
        pacer.next_probe = tokio::time::Instant::now() + PACE_PROBE_EVERY;
        let peer = peers[pacer.turn % peers.len()];
        pacer.turn += 1;
        let Some(rtt) = self.probe(peer).await else {
            return;
        };
        if let Some(rate) = pacer.observe(rtt) {
            throttle.set_rate(rate);
            metrics::gauge!("ringkv_stream_rate_bytes_per_sec").set(rate as f64);
            self.set_status(|s| s.rate_bytes_per_sec = rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Replication, Ring, RingNode};
    use proptest::prelude::*;

    fn placement(ids: &[u64], extra: Option<u64>) -> (Placement, Placement) {
        let mut ring = Ring::new(16);
        let add = |ring: &mut Ring, id: u64| {
            let node = RingNode {
                id,
                dc: "dc1".into(),
                rack: format!("r{}", id % 3),
                weight: 1,
            };
            ring.add_node(node, 3).expect("add");
        };
        for &id in ids {
            add(&mut ring, id);
        }
        let before = Placement::new(ring.clone(), Replication::simple("dc1", 3));
        if let Some(id) = extra {
            add(&mut ring, id);
        }
        (before, Placement::new(ring, Replication::simple("dc1", 3)))
    }

    #[test]
    fn the_pacer_halves_when_peers_slow_down_and_grows_when_they_are_calm() {
        let ms = Duration::from_millis;
        let mut p = Pacer::new(64 << 20, ms(1));
        assert_eq!(p.rate, 16 << 20, "starts at a quarter");
        let window = |p: &mut Pacer, rtt| {
            let mut last = None;
            for _ in 0..PACE_WINDOW {
                last = p.observe(rtt);
            }
            last
        };
        // Calm (under 1.5 ms + 0.25 ms): grows by an eighth of the maximum.
        assert_eq!(window(&mut p, ms(1)), Some(24 << 20));
        // Between calm and slow: unchanged.
        assert_eq!(window(&mut p, ms(2)), None);
        // Slow (over 2 ms): halves, never under 1/64 of the maximum.
        assert_eq!(window(&mut p, ms(3)), Some(12 << 20));
        for _ in 0..10 {
            window(&mut p, ms(50));
        }
        assert_eq!(p.rate, 1 << 20);
        // And back up to the maximum, not beyond.
        for _ in 0..20 {
            window(&mut p, Duration::from_micros(900));
        }
        assert_eq!(p.rate, 64 << 20);
        // A median, not a mean: one slow probe does not slow the stream.
        p.observe(ms(100));
        for _ in 1..PACE_WINDOW {
            assert_eq!(p.observe(ms(1)), None);
        }
        // No limit configured: nothing to pace.
        let mut free = Pacer::new(0, ms(1));
        assert_eq!(window(&mut free, ms(100)), None);
    }

    /// The transfer covering `token` to `target`, if any.
    fn covering(ts: &[Transfer], token: u64, target: u64) -> Option<&Transfer> {
        ts.iter()
            .find(|t| t.target == target && t.lo <= token && token <= t.hi)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every replica a key gains is a transfer target covering the
        /// key's token, from holders that were its replicas; nothing else
        /// moves.
        #[test]
        fn transfers_cover_exactly_what_each_replica_gains(
            n in 1usize..6,
            tokens in proptest::collection::vec(any::<u64>(), 64),
        ) {
            let ids: Vec<u64> = (1..=n as u64).map(|i| i * 1_000_003).collect();
            let (cur, fut) = placement(&ids, Some(77));
            let ts = transfers(&cur, &fut);
            for t in &ts {
                prop_assert!(t.lo <= t.hi);
                prop_assert!(!t.holders.contains(&t.target));
                prop_assert!(t.losers.iter().all(|l| t.holders.contains(l)));
            }
            for token in tokens {
                let before = cur.preference_list(token);
                let after = fut.preference_list(token);
                for &id in after.iter().filter(|id| !before.contains(id)) {
                    let t = covering(&ts, token, id);
                    prop_assert!(t.is_some(), "gain of {id} at {token} not covered");
                    prop_assert_eq!(&t.map(|t| t.holders.clone()).unwrap_or_default(), &before.to_vec());
                }
                for &id in after.iter().filter(|id| before.contains(id)) {
                    prop_assert!(covering(&ts, token, id).is_none(), "{id} keeps {token}: nothing to copy");
                }
            }
        }
    }

    #[test]
    fn a_join_moves_about_a_share_and_a_removal_names_the_dead_node_as_loser() {
        let ids: Vec<u64> = (1..=4).map(|i| i * 1_000_003).collect();
        let (cur, fut) = placement(&ids, Some(99));
        let ts = transfers(&cur, &fut);
        assert!(ts.iter().all(|t| t.target == 99));
        let moved: u128 = ts.iter().map(|t| u128::from(t.hi - t.lo) + 1).sum();
        // With N = 3 the new node replicates about 3/5 of the token space.
        let share = moved as f64 / 2f64.powi(64);
        assert!((0.4..0.8).contains(&share), "share {share}");
        // Removing a node: its ranges go to the others, it is the loser.
        let (full, _) = placement(&ids, None);
        let (less, _) = placement(&ids[..3], None);
        let ts = transfers(&full, &less);
        assert!(!ts.is_empty());
        assert!(ts.iter().all(|t| t.losers == vec![ids[3]]));
    }

    #[test]
    fn an_empty_ring_is_one_interval() {
        let (a, _) = placement(&[], None);
        assert_eq!(intervals(&a, &a), vec![(0, u64::MAX)]);
        assert!(transfers(&a, &a).is_empty());
    }
}
