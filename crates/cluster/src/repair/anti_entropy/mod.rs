//! Anti-entropy: the replicas of a token range compare Merkle trees and
//! exchange only the keys that differ, continuously in the background and on
//! demand.
//!
//! This module owns the sync protocol (`sync.rs`: this node initiates;
//! `answer.rs`: it answers a peer), the background loop and on-demand passes,
//! repair progress and figures, and the sync ledger ([`SyncLedger`]) that the
//! tombstone purge rule reads. It reaches storage only through
//! [`LocalStore`] scans, peers only through [`Rpc`], and changes records
//! only through the replica's merge. Tree shape and hashes are
//! [`crate::repair::merkle`]'s; the messages are in [`crate::net::message`].
//!
//! # Unit and schedule
//! The unit is a vnode range `(previous token, token]`: every key in it has
//! the same preference list. A *pass* visits every range this node
//! replicates and syncs it with each other live replica in turn. The
//! background loop ([`AntiEntropy::run`]) runs passes forever, starting
//! at most `ranges_per_sec_max` range syncs a second (a node with 64 tokens
//! and N = 3 holds about 192 ranges, two peers each: about 3 minutes a pass
//! at the default of 2/s). [`AntiEntropy::repair_once`] runs one pass now, at
//! most `repair_ranges_per_sec_max` syncs a second (20 by default: about
//! 20 s a pass; `ringkv repair`, `POST /v1/repair`); the background loop
//! yields to it.
//!
//! # One sync (this node A initiates, peer B answers)
//! 1. A notes its wall clock `t0`, then scans the range into a
//!    [`RangeSummary`].
//! 2. `MerkleNodes` with no indexes: B takes a fresh snapshot and answers its
//!    key count and root. The depth is [`merkle::depth_for`] of the larger
//!    count; if that is not the depth asked, A asks again. Equal roots: in
//!    sync, done.
//! 3. Level by level, A asks for the children of the nodes that differ only
//!    (at most [`NODE_INDEXES_MAX`] parents a request); B answers from the
//!    snapshot it keeps for `tree_cache_ms`.
//! 4. For the differing leaves (batches of [`DIGEST_RANGES_MAX`]), A scans
//!    its own slice and asks B for its (key, digest) list (`RangeDigests`,
//!    paged at [`DIGESTS_MAX`] / [`DIGEST_BYTES_MAX`] a response).
//! 5. Each key that differs: when B has it, A pulls B's record (`Read`) and
//!    merges it into its own; then, unless B holds exactly the merged
//!    record, A sends it (`Merge`). Both end with the merge of the two
//!    (at most [`REPAIR_INFLIGHT_MAX`] keys at once).
//! 6. The ledger notes that A and B were in sync for the range as of `t0`.
//!
//! What a tree holds: every record that decodes, except dead records the
//! purge rule below already allows to drop (they are as good as gone and must
//! not be copied back). A record that fails to decode is skipped, counted and
//! logged: it is never compared and never sent.
//!
//! # Tombstone rule
//! A dead record (every sibling deleted or expired) may be purged by
//! compaction only when its newest write is older than the grace period AND
//! the ledger says its range completed a sync with every other replica at a
//! time `t0` later than that write ([`crate::causality::purge::dead_record_purgeable`]). Then every
//! replica holds the tombstone or something newer, so no replica can bring
//! the old value back; a replica that missed the delete gets the tombstone
//! from the sync, and the DVV merge lets the tombstone supersede its older
//! value. The ledger lives in memory: after a restart nothing is purged until
//! the ranges have been synced again. A replica that stays down keeps its
//! ranges' tombstones from being purged (as in Cassandra, remove a dead node
//! to let them go). Hints must not outlive the grace period
//! (`hints.age_ms_max < tombstone_grace_ms`), or a late hint could deliver a
//! value whose tombstone is gone.
//!
//! Times are wall-clock ms compared with the HLC's physical part, so the
//! rule assumes clock skew far below the grace period (a day by default).

mod answer;
mod ledger;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use ringkv_env::SharedClock;
use serde::Serialize;

use crate::api::{KvError, RepairStatus};
use crate::causality::Hlc;
use crate::causality::purge::{dead_record_purgeable, dead_record_with_types_purgeable};
use crate::causality::types::Record;
use crate::det::HashSet;
use crate::id::NodeId;
use crate::membership::Membership;
use crate::net::message::HEADER_BYTES;
use crate::repair::merkle::{self, MerkleTree, RangeSummary, TokenRange};
use crate::replica::LocalReplica;
use crate::ring::{Placement, token_of};
use crate::rpc::{PeerError, Rpc};
use crate::store::LocalStore;

pub use ledger::SyncLedger;

/// Parents whose children one `MerkleNodes` request may ask for.
pub const NODE_INDEXES_MAX: usize = 256;
/// Ranges one `RangeDigests` request may name.
pub const DIGEST_RANGES_MAX: usize = 64;
/// Digests one `RangeDigests` answer carries at most.
pub const DIGESTS_MAX: usize = 4096;
/// Key bytes one `RangeDigests` answer carries at most.
pub const DIGEST_BYTES_MAX: usize = 1024 * 1024;
/// `RangeDigests` round trips one batch of leaves may take.
pub const DIGEST_ROUNDS_MAX: usize = 10_000;
/// Keys repaired at once by one sync.
pub const REPAIR_INFLIGHT_MAX: usize = 16;
/// Snapshots a responder keeps for syncs in progress.
pub const TREE_CACHE_ENTRIES_MAX: usize = 16;

/// Settings of anti-entropy.
#[derive(Debug, Clone)]
pub struct AntiEntropyConfig {
    /// Range syncs (one range with one peer) the background loop starts per
    /// second, at most.
    pub ranges_per_sec_max: u32,
    /// The same for an on-demand pass (`ringkv repair`); 0: as fast as it
    /// goes. Unthrottled passes on every node tripled client p99 in the
    /// repair benchmark.
    pub repair_ranges_per_sec_max: u32,
    /// Pause between two background passes.
    pub pass_pause_ms: u64,
    /// How long a responder keeps a snapshot for the rest of a sync.
    pub tree_cache_ms: u64,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        Self {
            ranges_per_sec_max: 2,
            repair_ranges_per_sec_max: 20,
            pass_pause_ms: 10_000,
            tree_cache_ms: 5_000,
        }
    }
}

/// What one sync of one range with one peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub range: TokenRange,
    pub peer: u64,
    pub depth: u8,
    pub keys_local: u64,
    pub keys_peer: u64,
    /// The roots were equal: nothing to do.
    pub in_sync: bool,
    pub leaves_differing: u64,
    pub keys_differing: u64,
    /// Keys whose record changed here or on the peer.
    pub keys_repaired: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Why a sync did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("peer {0:016x} is unknown")]
    UnknownPeer(NodeId),
    #[error("peer: {0}")]
    Peer(#[from] PeerError),
    #[error("peer broke the protocol: {0}")]
    Protocol(String),
    #[error("local: {0}")]
    Local(#[from] KvError),
}

/// The bytes a message takes on the wire (length prefix and header
/// included).
fn wire_bytes<T: Serialize>(msg: &T) -> u64 {
    (postcard::experimental::serialized_size(msg).unwrap_or(0) + HEADER_BYTES + 4) as u64
}

/// A responder's snapshot of one range, kept for the rest of a sync.
struct CachedTree {
    range: TokenRange,
    built_ms: u64,
    summary: Arc<RangeSummary>,
    trees: Vec<Arc<MerkleTree>>,
}

#[derive(Default)]
struct Progress {
    ranges_done: u64,
    ranges_total: u64,
    background_done: u64,
    background_total: u64,
    passes_completed: u64,
}

/// A node's anti-entropy state.
struct State {
    config: RwLock<AntiEntropyConfig>,
    ledger: Arc<SyncLedger>,
    clock: SharedClock,
    started_ms: u64,
    cache: Mutex<VecDeque<CachedTree>>,
    on_demand: AtomicBool,
    progress: Mutex<Progress>,
    /// Where the next background pass starts: after the end token of the
    /// last range the previous one finished, when a ring change stopped it.
    /// Under steady churn every range still gets its turn.
    resume_after: Mutex<Option<u64>>,
    keys_repaired: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    corrupt_skipped: AtomicU64,
    sync_failures: AtomicU64,
}

impl State {
    fn new(membership: Arc<Membership>, clock: SharedClock) -> Self {
        Self {
            config: RwLock::new(AntiEntropyConfig::default()),
            ledger: Arc::new(SyncLedger::new(membership)),
            started_ms: clock.now_ms(),
            clock,
            cache: Mutex::new(VecDeque::new()),
            on_demand: AtomicBool::new(false),
            progress: Mutex::new(Progress::default()),
            resume_after: Mutex::new(None),
            keys_repaired: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            corrupt_skipped: AtomicU64::new(0),
            sync_failures: AtomicU64::new(0),
        }
    }

    fn monotonic_ms(&self) -> u64 {
        self.clock.monotonic().as_millis() as u64
    }

    fn count_corrupt(&self, n: u64) {
        if n > 0 {
            self.corrupt_skipped.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("ringkv_ae_corrupt_records_skipped_total").increment(n);
        }
    }

    fn count_bytes(&self, sent: u64, received: u64) {
        self.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        self.bytes_received.fetch_add(received, Ordering::Relaxed);
        metrics::counter!("ringkv_ae_bytes_sent_total").increment(sent);
        metrics::counter!("ringkv_ae_bytes_received_total").increment(received);
    }
}

/// Clears the on-demand flag when a pass ends, however it ends.
struct OnDemandGuard(Arc<dyn Fn() + Send + Sync>);

impl Drop for OnDemandGuard {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A record as anti-entropy sees it: its digest, or `None` when it must be
/// neither compared nor sent (it does not decode, it may be purged, or the
/// truncation point `truncated_at` hides all of it). A record the point
/// hides in part is digested as a peer would receive it, so replicas that
/// have compacted the hidden siblings away and those that have not agree.
fn tree_digest(
    ledger: &SyncLedger,
    key: &[u8],
    record: &Bytes,
    now_ms: u64,
    grace_ms: u64,
    truncated_at: Hlc,
    corrupt: &mut u64,
) -> Option<u64> {
    let mut set = match Record::decode(record) {
        Ok(set) => set,
        Err(e) => {
            *corrupt += 1;
            if *corrupt == 1 {
                tracing::warn!(key = ?String::from_utf8_lossy(key), error = %e,
                    "stored record does not decode: anti-entropy skips it");
            }
            return None;
        }
    };
    let synced_at = || ledger.synced_at(token_of(key));
    if set.drop_truncated(truncated_at) {
        if set.is_void() {
            return None;
        }
        if dead_record_with_types_purgeable(&set, now_ms, grace_ms, synced_at) {
            return None;
        }
        return Some(merkle::record_digest(&set.encode()));
    }
    if dead_record_with_types_purgeable(&set, now_ms, grace_ms, synced_at) {
        return None;
    }
    Some(merkle::record_digest(record))
}

/// A node's anti-entropy: the background loop, on-demand passes, both
/// sides of a sync, and the ledger.
pub struct AntiEntropy<S> {
    replica: Arc<LocalReplica<S>>,
    membership: Arc<Membership>,
    rpc: Rpc,
    grace_ms: u64,
    state: State,
}

impl<S: LocalStore> AntiEntropy<S> {
    /// `grace_ms` is the tombstone grace period.
    pub fn new(
        replica: Arc<LocalReplica<S>>,
        membership: Arc<Membership>,
        rpc: Rpc,
        grace_ms: u64,
    ) -> Arc<Self> {
        let state = State::new(Arc::clone(&membership), replica.clock().clone());
        Arc::new(Self {
            replica,
            membership,
            rpc,
            grace_ms,
            state,
        })
    }

    fn id(&self) -> NodeId {
        self.replica.id()
    }

    fn store(&self) -> &S {
        self.replica.store()
    }

    /// The sync ledger the compaction filter consults.
    pub fn ledger(&self) -> &Arc<SyncLedger> {
        &self.state.ledger
    }
}

impl<S: LocalStore> AntiEntropy<S> {
    /// Replaces the anti-entropy settings (takes effect at the next range).
    pub fn set_config(&self, config: AntiEntropyConfig) {
        *self.state.config.write() = config;
    }

    /// Every range this node replicates, with its preference list.
    pub fn replicated_ranges(self: &Arc<Self>) -> Vec<(TokenRange, Vec<u64>)> {
        ranges_replicated_by(&self.membership.current_ring(), self.id())
    }

    /// True when `range` is a whole range of the current ring and this node
    /// replicates it. A peer that asks about any other range works from a
    /// ring this node does not have (no longer, or not yet): syncing it
    /// could copy keys back to nodes that already dropped them.
    fn replicates_exactly(self: &Arc<Self>, range: TokenRange) -> bool {
        let placement = self.membership.current_ring();
        placement.ring().range_ending_at(range.end) == Some((range.start, range.end))
            && placement.preference_list(range.end).contains(&self.id())
    }

    /// True when compaction may purge this node's record of `key` now.
    pub fn purge_allowed(self: &Arc<Self>, key: &[u8]) -> bool {
        let Ok(Some(record)) = self.store().get(key) else {
            return false;
        };
        let ae = &self.state;
        dead_record_purgeable(&record, ae.clock.now_ms(), self.grace_ms, || {
            ae.ledger.synced_at(token_of(key))
        })
    }

    /// Runs background passes until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                // Shutdown first, and a fixed order: a simulation replays.
                biased;
                _ = &mut shutdown => return,
                _ = self.pass(true) => {}
            }
            let pause = self.state.config.read().pass_pause_ms;
            tokio::select! {
                // Shutdown first, and a fixed order: a simulation replays.
                biased;
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
            }
        }
    }

    /// Runs one full pass now: every range this node replicates, with every
    /// other live replica. `None` when an on-demand pass is running already.
    pub async fn repair_once(self: &Arc<Self>) -> Option<RepairStatus> {
        let guard = self.claim_on_demand()?;
        self.pass(false).await;
        drop(guard);
        Some(self.status())
    }

    /// Starts [`AntiEntropy::repair_once`] in the background; false when a pass is
    /// running already.
    pub fn start_repair(self: &Arc<Self>) -> Result<bool, KvError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| KvError::Storage(format!("no runtime to repair on: {e}")))?;
        let Some(guard) = self.claim_on_demand() else {
            return Ok(false);
        };
        let node = Arc::clone(self);
        runtime.spawn(async move {
            node.pass(false).await;
            drop(guard);
        });
        Ok(true)
    }

    fn claim_on_demand(self: &Arc<Self>) -> Option<OnDemandGuard> {
        let ae = &self.state;
        ae.on_demand
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let node = Arc::clone(self);
        Some(OnDemandGuard(Arc::new(move || {
            node.state.on_demand.store(false, Ordering::Release);
        })))
    }

    /// Progress and figures, with the range gauges brought up to date.
    pub fn status(self: &Arc<Self>) -> RepairStatus {
        let ae = &self.state;
        let counts = self.publish_range_gauges();
        let p = ae.progress.lock();
        RepairStatus {
            running: ae.on_demand.load(Ordering::Acquire),
            ranges_done: p.ranges_done,
            ranges_total: p.ranges_total,
            background_ranges_done: p.background_done,
            background_ranges_total: p.background_total,
            passes_completed: p.passes_completed,
            ranges_replicated: counts.replicated,
            ranges_in_sync: counts.in_sync,
            oldest_unsynced_range_age_ms: counts.oldest_unsynced_ms,
            keys_repaired: ae.keys_repaired.load(Ordering::Relaxed),
            bytes_sent: ae.bytes_sent.load(Ordering::Relaxed),
            bytes_received: ae.bytes_received.load(Ordering::Relaxed),
            corrupt_records_skipped: ae.corrupt_skipped.load(Ordering::Relaxed),
            sync_failures: ae.sync_failures.load(Ordering::Relaxed),
        }
    }

    /// How the ranges this node replicates stand, also set as gauges.
    fn publish_range_gauges(self: &Arc<Self>) -> RangeCounts {
        let ae = &self.state;
        let now = ae.clock.now_ms();
        let ranges = self.replicated_ranges();
        let mut in_sync = 0u64;
        let mut oldest_ms = 0u64;
        for (range, prefs) in &ranges {
            if ae.ledger.range_in_sync(*range, prefs) {
                in_sync += 1;
            }
            if prefs.iter().any(|&p| p != self.id()) {
                let at = ae
                    .ledger
                    .range_synced_at(*range, prefs)
                    .unwrap_or(ae.started_ms);
                oldest_ms = oldest_ms.max(now.saturating_sub(at));
            }
        }
        metrics::gauge!("ringkv_ae_ranges").set(ranges.len() as f64);
        metrics::gauge!("ringkv_ae_ranges_in_sync").set(in_sync as f64);
        metrics::gauge!("ringkv_ae_oldest_unsynced_range_age_seconds")
            .set(oldest_ms as f64 / 1000.0);
        RangeCounts {
            replicated: ranges.len() as u64,
            in_sync,
            oldest_unsynced_ms: oldest_ms,
        }
    }

    /// One pass over every replicated range. The background pass keeps the
    /// configured rate and waits while an on-demand pass runs.
    async fn pass(self: &Arc<Self>, background: bool) {
        let ae = &self.state;
        let placement = self.membership.current_ring();
        let mut ranges = ranges_replicated_by(&placement, self.id());
        if background {
            resume_order(&mut ranges, *ae.resume_after.lock());
        }
        {
            let mut p = ae.progress.lock();
            if background {
                p.background_done = 0;
                p.background_total = ranges.len() as u64;
            } else {
                p.ranges_done = 0;
                p.ranges_total = ranges.len() as u64;
            }
        }
        for (range, prefs) in &ranges {
            for &peer in prefs.iter().filter(|&&p| p != self.id()) {
                // A pass works on one ring: once it changes, the ranges and
                // their replicas are not those any more. The next pass
                // takes the new ones.
                if !Arc::ptr_eq(&placement, &self.membership.current_ring()) {
                    return;
                }
                if !self.membership.is_alive(peer) {
                    continue;
                }
                if background {
                    let per_sec = ae.config.read().ranges_per_sec_max.max(1);
                    let interval = Duration::from_millis(1000 / u64::from(per_sec));
                    tokio::time::sleep(interval).await;
                    while ae.on_demand.load(Ordering::Acquire) {
                        tokio::time::sleep(interval).await;
                    }
                } else {
                    let per_sec = ae.config.read().repair_ranges_per_sec_max;
                    if per_sec > 0 {
                        tokio::time::sleep(Duration::from_millis(1000 / u64::from(per_sec))).await;
                    }
                }
                if let Err(e) = self.sync_range(*range, peer).await {
                    ae.sync_failures.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("ringkv_ae_sync_failures_total").increment(1);
                    ae.ledger.record_failure(*range, peer);
                    tracing::warn!(peer = %crate::id::display(peer),
                        range = format_args!("({:016x}, {:016x}]", range.start, range.end),
                        error = %e, "anti-entropy sync of a range failed; retried next pass");
                }
            }
            {
                let mut p = ae.progress.lock();
                if background {
                    p.background_done += 1;
                    *ae.resume_after.lock() = Some(range.end);
                } else {
                    p.ranges_done += 1;
                }
            }
            self.publish_range_gauges();
        }
        if background {
            *ae.resume_after.lock() = None;
        }
        let current: HashSet<TokenRange> = ranges.iter().map(|(r, _)| *r).collect();
        ae.ledger.retain(&current);
        ae.progress.lock().passes_completed += 1;
    }
}

/// Puts first the ranges (in ring order) that end after `after`, then the
/// rest: a pass resumes where the last one stopped.
fn resume_order<T>(ranges: &mut [(TokenRange, T)], after: Option<u64>) {
    if let Some(t) = after {
        let first = ranges.iter().position(|(r, _)| r.end > t).unwrap_or(0);
        ranges.rotate_left(first);
    }
}

/// Every range of `placement`'s ring that `me` replicates, with its
/// preference list.
fn ranges_replicated_by(placement: &Placement, me: NodeId) -> Vec<(TokenRange, Vec<u64>)> {
    let tokens: Vec<u64> = placement.ring().tokens().map(|(t, _)| t).collect();
    let n = tokens.len();
    (0..n)
        .filter_map(|i| {
            let range = TokenRange::new(tokens[(i + n - 1) % n], tokens[i]);
            let prefs = placement.preference_list(range.end);
            prefs.contains(&me).then(|| (range, prefs.to_vec()))
        })
        .collect()
}

/// How the ranges a node replicates stand.
struct RangeCounts {
    replicated: u64,
    /// Whose last sync with every other replica succeeded.
    in_sync: u64,
    /// Age of the least recently fully synced range (since the node started
    /// when it never was).
    oldest_unsynced_ms: u64,
}

/// Bytes moved by calls, counted as they go.
#[derive(Default)]
struct ScratchBytes {
    sent: u64,
    received: u64,
}

/// The outcome of repairing one key.
#[derive(Default)]
struct KeyRepair {
    changed: bool,
    bytes_sent: u64,
    bytes_received: u64,
    error: Option<SyncError>,
}
