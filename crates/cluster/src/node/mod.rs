//! The coordinator: every node accepts every request and runs it against
//! the key's replicas. No client is ever redirected.
//!
//! # Request path
//! 1. Validate limits (key and value size).
//! 2. Find the key's preference list: `token = xxh3_64(key)`, then the ring
//!    walk (see [`crate::ring`]). Drop replicas known to be down.
//! 3. Work out what the consistency level requires (a total count, or counts
//!    per data center for `LOCAL_*` and `EACH_QUORUM`), counted against the
//!    preference list. If the live replicas cannot meet it, fail at once
//!    with `Unavailable`.
//! 4. Reads: ask every live replica (this node's own copy directly), answer
//!    as soon as enough have answered with the merge of their records, and
//!    let the rest finish in the background: replicas whose record differs
//!    from the merge get the merge (read repair).
//! 5. Writes: if this node is a replica, it coordinates: it applies the write
//!    to its own copy (minting the new version, see [`crate::replica`]), then
//!    sends the new record to the other live replicas and answers when enough
//!    have acknowledged; the others keep going in the background. If this
//!    node is not a replica, it forwards the write to the first live replica,
//!    which coordinates it.
//!
//! A failed write may still have reached some replicas (as in every Dynamo
//! store): the client learns the outcome is unknown, never that it is false.

use crate::det::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ringkv_env::SharedClock;

use crate::api::{
    ClusterView, Consistency, Expiry, Explain, Kv, KvError, NodeInfo, NodeView, ReadOptions,
    ReadResult, ReplicaView, WriteOptions, WriteOutcome,
};
use crate::causality::SiblingSet;
use crate::membership::{Membership, MembershipConfig};
use crate::net::message::{
    CoordinatedOutcome, ForwardedWrite, Load, NodeState, NodeStatus, Request, Response,
    WireContext, WriteOp,
};
use crate::net::{BoxFut, Handled, Handler, MemNetwork, Transport, TransportError};
use crate::repair::hints::{DropReason, HintConfig, HintStore};
use crate::replica::{Change, Handoff, Replica, store_error, to_sibling};
use crate::ring::{Placement, Replication, Ring, RingNode, token_of};
use crate::store::LocalStore;

pub use crate::replica::record_purgeable;

/// Settings of the request layer.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Largest key accepted, in bytes.
    pub key_bytes_max: usize,
    /// Largest value accepted, in bytes.
    pub value_bytes_max: usize,
    /// Replication factor N (copies of each key when the ring has N nodes).
    pub replication_factor: usize,
    pub default_read: Consistency,
    pub default_write: Consistency,
    /// Most siblings kept per key; the oldest beyond it are dropped.
    pub siblings_max: usize,
    /// How long a tombstone is kept before compaction may purge it.
    pub tombstone_grace_ms: u64,
    /// How long a coordinator waits for replicas.
    pub request_timeout_ms: u64,
    /// When true, hinted writes held by stand-ins do not count towards W
    /// (read-your-writes under R + W > N even while replicas are down).
    pub strict_quorum: bool,
    /// How often held hints are offered to their returned owners.
    pub hint_replay_interval_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            key_bytes_max: 1024,
            value_bytes_max: 1024 * 1024,
            replication_factor: 3,
            default_read: Consistency::Quorum,
            default_write: Consistency::Quorum,
            siblings_max: 64,
            tombstone_grace_ms: 24 * 3600 * 1000,
            request_timeout_ms: 2_000,
            strict_quorum: false,
            hint_replay_interval_ms: 1_000,
        }
    }
}

/// A ringkv node: replica of its ranges, coordinator of any request.
pub struct Node<S: LocalStore> {
    inner: Arc<Inner<S>>,
}

impl<S: LocalStore> Clone for Node<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Buckets of the coordinator's latency histogram: bucket `i` counts
/// operations that took less than `2^i` microseconds.
const LATENCY_BUCKETS: usize = 32;

/// Coordinated operations and their latency, cheap enough for every request.
#[derive(Default)]
struct OpStats {
    ops: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl OpStats {
    fn record(&self, micros: u64) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let i = (64 - micros.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (u64, [u64; LATENCY_BUCKETS]) {
        let mut b = [0u64; LATENCY_BUCKETS];
        for (i, x) in self.buckets.iter().enumerate() {
            b[i] = x.load(Ordering::Relaxed);
        }
        (self.ops.load(Ordering::Relaxed), b)
    }
}

/// The p99 (upper bucket bound, microseconds) of the operations between two
/// snapshots.
fn p99_between(before: &[u64; LATENCY_BUCKETS], after: &[u64; LATENCY_BUCKETS]) -> u64 {
    let deltas: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let total: u64 = deltas.iter().sum();
    if total == 0 {
        return 0;
    }
    let target = total - total / 100;
    let mut seen = 0;
    for (i, d) in deltas.iter().enumerate() {
        seen += d;
        if seen >= target {
            return 1u64 << i;
        }
    }
    1u64 << (LATENCY_BUCKETS - 1)
}

/// Coordinated operation kinds, for the latency histograms.
#[derive(Debug, Clone, Copy)]
enum OpKind {
    Get = 0,
    Put = 1,
    Delete = 2,
}

struct Inner<S> {
    replica: Replica<S>,
    /// `ringkv_coordinator_seconds{op}`, registered once (no lookup per
    /// request); indexed by [`OpKind`].
    latency: [metrics::Histogram; 3],
    hints: HintStore,
    ops: OpStats,
    /// Snapshot at the last load report: (monotonic ms, ops, buckets).
    last_report: parking_lot::Mutex<(u64, u64, [u64; LATENCY_BUCKETS])>,
    membership: Arc<Membership>,
    transport: Arc<dyn Transport>,
    config: NodeConfig,
    started_ms: u64,
    /// Anti-entropy state: sync ledger, responder snapshots, progress.
    ae: crate::repair::anti_entropy::AntiEntropy,
    /// Joins, decommissions and removals this node drives.
    moves: crate::movement::Movements,
    /// Forwarded writes sent, and those received lately.
    forward_seq: std::sync::atomic::AtomicU64,
    forwards_seen: parking_lot::Mutex<RecentForwards>,
}

/// Forwarded writes a coordinator remembers, so that a copy of one is not
/// applied twice.
pub const FORWARDS_REMEMBERED_MAX: usize = 16_384;

/// The identity of a forwarded write: (sender, sender's epoch, seq).
type ForwardId = (u64, u64, u64);

/// Forwarded writes seen lately. Only their ids: a copy is never answered
/// with the first answer, because nobody waits for it (a forwarder sends
/// one id to one node once; copies come from the network).
#[derive(Default)]
struct RecentForwards {
    ids: crate::det::HashSet<ForwardId>,
    order: std::collections::VecDeque<ForwardId>,
}

impl RecentForwards {
    /// True the first time `id` is seen.
    fn first(&mut self, id: ForwardId) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > FORWARDS_REMEMBERED_MAX
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

/// Where a coordinator sent a record.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// To the replica itself.
    Replica(u64),
    /// To a stand-in holding a hint for `target`.
    Hinted { target: u64, via: u64 },
}

impl Sent {
    fn target(self) -> u64 {
        match self {
            Sent::Replica(id) | Sent::Hinted { target: id, .. } => id,
        }
    }

    fn via(self) -> u64 {
        match self {
            Sent::Replica(id) | Sent::Hinted { via: id, .. } => id,
        }
    }
}

/// The data center of each replica in a preference list; empty when the
/// consistency level does not look at data centers.
type DcOf = Vec<(u64, String)>;

/// What a consistency level asks of the preference list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    /// Answers needed from any data center.
    total: usize,
    /// Answers needed from specific data centers.
    per_dc: Vec<(String, usize)>,
}

impl Requirement {
    fn count(&self) -> usize {
        self.total + self.per_dc.iter().map(|(_, n)| n).sum::<usize>()
    }

    fn met(&self, answered: &[u64], dc_of: &DcOf) -> bool {
        if answered.len() < self.total {
            return false;
        }
        self.per_dc.iter().all(|(dc, need)| {
            answered
                .iter()
                .filter(|id| dc_of.iter().any(|(n, d)| n == *id && d == dc))
                .count()
                >= *need
        })
    }
}

/// One ring's side of a request: its replicas and what the level needs of
/// them. While nodes move a request has two, the current ring's and the
/// pending ring's, and must meet both.
struct RingPlan {
    prefs: Vec<u64>,
    dc_of: DcOf,
    req: Requirement,
}

impl RingPlan {
    /// True when the answers of this ring's replicas among `answered` meet
    /// its requirement. Answers of the other ring's replicas do not count
    /// here: a node that only joins holds nothing yet.
    fn met(&self, answered: &[u64]) -> bool {
        let mine: Vec<u64> = answered
            .iter()
            .copied()
            .filter(|id| self.prefs.contains(id))
            .collect();
        self.req.met(&mine, &self.dc_of)
    }
}

impl<S: LocalStore> Node<S> {
    /// A node alone in its cluster (no peers yet). Its ring holds itself.
    pub fn new(id: u64, store: S, clock: SharedClock, config: NodeConfig) -> Self {
        let replication = Replication::simple("dc1", config.replication_factor);
        let mut ring = Ring::new(MembershipConfig::default().tokens_per_weight);
        let tokens = ring
            .add_node(
                RingNode {
                    id,
                    dc: "dc1".into(),
                    rack: "rack1".into(),
                    weight: 1,
                },
                config.replication_factor,
            )
            .unwrap_or_default();
        let me = NodeState {
            id,
            generation: clock.now_ms(),
            heartbeat: 0,
            cluster_addr: String::new(),
            resp_addr: String::new(),
            http_addr: String::new(),
            dc: "dc1".into(),
            rack: "rack1".into(),
            weight: 1,
            tokens,
            status: NodeStatus::Normal,
            load: Load::default(),
        };
        let membership = Arc::new(Membership::new(
            me,
            replication,
            clock.clone(),
            MembershipConfig::default(),
        ));
        let transport: Arc<dyn Transport> = Arc::new(MemNetwork::new(0).transport(id));
        let hints = HintStore::in_memory(HintConfig::default());
        Self::with_cluster(store, hints, clock, config, membership, transport)
    }

    /// A node in a cluster: `membership` holds its own state (tokens
    /// included), `transport` reaches its peers.
    pub fn with_cluster(
        store: S,
        hints: HintStore,
        clock: SharedClock,
        config: NodeConfig,
        membership: Arc<Membership>,
        transport: Arc<dyn Transport>,
    ) -> Self {
        let id = membership.self_id();
        let started_ms = clock.now_ms();
        let ae =
            crate::repair::anti_entropy::AntiEntropy::new(Arc::clone(&membership), clock.clone());
        // Compaction purges a dead record only once its range is synced
        // with every replica past it (the tombstone rule).
        let ledger = Arc::clone(ae.ledger());
        store.set_synced_at(Arc::new(move |token| ledger.synced_at(token)));
        // Version vectors drop the entries of nodes that left, under the
        // same rule.
        let pruner: crate::store::Pruner = {
            let ledger = Arc::clone(ae.ledger());
            let membership = Arc::clone(&membership);
            let clock = clock.clone();
            let grace_ms = config.tombstone_grace_ms;
            Arc::new(move |token, set| {
                crate::repair::anti_entropy::prune_departed(
                    set,
                    clock.now_ms(),
                    grace_ms,
                    |id| membership.status(id) == Some(crate::net::message::NodeStatus::Left),
                    || ledger.synced_at(token),
                )
            })
        };
        store.set_pruner(Arc::clone(&pruner));
        let replica = Replica::new(id, store, clock, config.siblings_max);
        replica.set_pruner(pruner);
        Self {
            inner: Arc::new(Inner {
                replica,
                latency: [
                    metrics::histogram!("ringkv_coordinator_seconds", "op" => "get"),
                    metrics::histogram!("ringkv_coordinator_seconds", "op" => "put"),
                    metrics::histogram!("ringkv_coordinator_seconds", "op" => "delete"),
                ],
                hints,
                ops: OpStats::default(),
                last_report: parking_lot::Mutex::new((0, 0, [0; LATENCY_BUCKETS])),
                membership,
                transport,
                config,
                started_ms,
                ae,
                moves: crate::movement::Movements::default(),
                forward_seq: std::sync::atomic::AtomicU64::new(0),
                forwards_seen: parking_lot::Mutex::default(),
            }),
        }
    }

    /// Sets this node's epoch (bumped on every start and kept in its data
    /// directory, see [`crate::node_files::bump_epoch`]): its dot counters
    /// start above the epoch's floor.
    pub fn set_epoch(&self, epoch: u64) {
        self.inner.replica.set_epoch(epoch);
    }

    pub fn id(&self) -> u64 {
        self.inner.replica.id()
    }

    pub fn store(&self) -> &S {
        self.inner.replica.store()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub fn membership(&self) -> &Arc<Membership> {
        &self.inner.membership
    }

    /// Makes every acknowledged write durable (shutdown).
    pub fn flush(&self) -> Result<(), KvError> {
        self.store().flush().map_err(store_error)
    }

    /// This node's own stored record of `key` (tests, `explain`).
    pub fn debug_local_record(&self, key: &[u8]) -> SiblingSet {
        self.inner.replica.read(key).unwrap_or_default()
    }

    pub(crate) fn anti_entropy(&self) -> &crate::repair::anti_entropy::AntiEntropy {
        &self.inner.ae
    }

    pub(crate) fn transport(&self) -> &Arc<dyn Transport> {
        &self.inner.transport
    }

    pub(crate) fn movements(&self) -> &crate::movement::Movements {
        &self.inner.moves
    }

    pub(crate) fn membership_clock(&self) -> &SharedClock {
        self.inner.replica.clock()
    }

    pub(crate) fn replica(&self) -> &Replica<S> {
        &self.inner.replica
    }

    pub(crate) fn hints(&self) -> &HintStore {
        &self.inner.hints
    }

    /// This node as a request handler for its peers.
    pub fn handler(&self) -> Arc<dyn Handler> {
        Arc::new(self.clone())
    }

    /// Gossips until `shutdown` resolves: one round per
    /// `gossip_interval_ms` with a random peer, and with a seed whenever no
    /// peer is known alive (and now and then anyway, to heal partitions of
    /// the membership view).
    pub async fn run_gossip(
        self,
        seeds: Vec<String>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let interval = Duration::from_millis(self.inner.membership.config().gossip_interval_ms);
        let mut round: u64 = 0;
        every(interval, shutdown, || {
            round += 1;
            self.gossip_round(&seeds, round)
        })
        .await;
    }

    /// Learns the ring from `seeds` and picks this node's tokens so that
    /// what each node owns and replicates evens out (see
    /// [`crate::ring::alloc`]). A node with no seed other
    /// than itself starts a new ring. Fails when no seed answers within
    /// `wait`.
    pub async fn choose_tokens(
        &self,
        seeds: &[String],
        wait: Duration,
    ) -> Result<Vec<u64>, String> {
        let m = &self.inner.membership;
        let me = m
            .state(m.self_id())
            .ok_or_else(|| "own state missing".to_string())?;
        let others: Vec<String> = seeds
            .iter()
            .filter(|s| **s != me.cluster_addr)
            .cloned()
            .collect();
        if !others.is_empty() {
            let deadline = tokio::time::Instant::now() + wait;
            let mut i = 0usize;
            while m.placement().ring().is_empty() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "no seed answered within {wait:?} (seeds: {})",
                        others.join(", ")
                    ));
                }
                let peer = crate::net::Peer {
                    id: 0,
                    addr: others[i % others.len()].clone(),
                };
                i += 1;
                if !self.gossip_with(&peer).await {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        // The ring with the nodes still joining: two nodes joining at once
        // do not pick the same gaps.
        let mut ring = m.future_placement().ring().clone();
        let _ = ring.remove_node(me.id);
        let rf = m.replication().in_dc(&me.dc);
        let node = RingNode {
            id: me.id,
            dc: me.dc,
            rack: me.rack,
            weight: me.weight.max(1),
        };
        // Allocation takes up to a second on a large ring: off the executor.
        crate::exec::blocking(move || ring.add_node(node, rf))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Takes ownership of `tokens` (status NORMAL) and tells the seeds at
    /// once, so a node joining next already sees these tokens.
    pub async fn announce(&self, tokens: Vec<u64>, seeds: &[String]) {
        let m = &self.inner.membership;
        let own_addr = m
            .state(m.self_id())
            .map(|s| s.cluster_addr)
            .unwrap_or_default();
        m.update_self(|s| {
            s.tokens = tokens;
            s.status = NodeStatus::Normal;
        });
        for addr in seeds.iter().filter(|a| **a != own_addr) {
            let peer = crate::net::Peer {
                id: 0,
                addr: addr.clone(),
            };
            self.gossip_with(&peer).await;
        }
    }

    /// One push-pull exchange with `peer`; true when it answered.
    pub async fn gossip_with(&self, peer: &crate::net::Peer) -> bool {
        let m = &self.inner.membership;
        let req = Request::Gossip { states: m.states() };
        let timeout = Duration::from_millis(m.config().gossip_interval_ms.max(500));
        match self.inner.transport.call(peer, req, timeout).await {
            Ok(Response::Gossip { states }) => {
                m.merge(states);
                true
            }
            Ok(other) => {
                tracing::debug!(?other, "unexpected gossip answer");
                false
            }
            Err(e) => {
                tracing::debug!(peer = %peer.addr, error = %e, "gossip failed");
                false
            }
        }
    }

    /// Measures this node's load since the last report and puts it in its
    /// gossiped state.
    fn report_load(&self) {
        let now_ms = self.inner.replica.clock().monotonic().as_millis() as u64;
        let (ops, buckets) = self.inner.ops.snapshot();
        let mut last = self.inner.last_report.lock();
        let (t0, ops0, buckets0) = *last;
        let elapsed_ms = now_ms.saturating_sub(t0).max(1);
        let load = Load {
            ops_per_sec: (ops - ops0) * 1000 / elapsed_ms,
            p99_us: p99_between(&buckets0, &buckets),
            disk_bytes: self
                .store()
                .stats()
                .iter()
                .find(|(k, _)| k == "disk_bytes")
                .map_or(0, |(_, v)| *v),
            keys: self.store().keys_estimate(),
        };
        *last = (now_ms, ops, buckets);
        drop(last);
        self.inner.membership.set_load(load);
    }

    /// Times a coordinated operation for the load report and the metrics.
    async fn timed<T>(&self, op: OpKind, f: impl std::future::Future<Output = T>) -> T {
        let clock = self.inner.replica.clock();
        let start = clock.monotonic();
        let out = f.await;
        let elapsed = clock.monotonic().saturating_sub(start);
        self.inner.ops.record(elapsed.as_micros() as u64);
        self.inner.latency[op as usize].record(elapsed.as_secs_f64());
        out
    }

    /// One gossip exchange. Public so tests and simulations can drive it.
    pub async fn gossip_round(&self, seeds: &[String], round: u64) {
        let m = &self.inner.membership;
        if round.is_multiple_of(LOAD_REPORT_ROUNDS) {
            self.report_load();
        }
        m.tick();
        let draw = splitmix(self.id() ^ round);
        let target = match m.gossip_target(draw) {
            Some(p) if !round.is_multiple_of(10) || seeds.is_empty() => Some(p),
            other => seeds
                .get((draw as usize) % seeds.len().max(1))
                .map(|addr| crate::net::Peer {
                    id: 0,
                    addr: addr.clone(),
                })
                .filter(|p| {
                    m.state(m.self_id())
                        .is_none_or(|me| me.cluster_addr != p.addr)
                })
                .or(other),
        };
        let Some(peer) = target else {
            return;
        };
        self.gossip_with(&peer).await;
    }

    /// Runs a blocking local write off the executor when the store may wait
    /// for an fsync.
    async fn local_update(
        &self,
        key: Bytes,
        change: Change,
        opts: WriteOptions,
    ) -> Result<(WriteOutcome, Option<SiblingSet>), KvError> {
        if self.store().blocking_writes() {
            let node = self.clone();
            crate::exec::blocking(move || node.inner.replica.update_buffered(&key, change, &opts))
                .await
                .map_err(|e| KvError::Storage(format!("write: {e}")))?
        } else {
            self.inner.replica.update_buffered(&key, change, &opts)
        }
    }

    pub(crate) async fn local_merge(&self, key: Bytes, set: SiblingSet) -> Result<bool, KvError> {
        self.local_merge_with(key, set, Handoff::Now).await
    }

    async fn local_merge_with(
        &self,
        key: Bytes,
        set: SiblingSet,
        handoff: Handoff,
    ) -> Result<bool, KvError> {
        if self.store().blocking_writes() {
            let node = self.clone();
            crate::exec::blocking(move || node.inner.replica.merge_with(&key, &set, handoff))
                .await
                .map_err(|e| KvError::Storage(format!("merge: {e}")))?
        } else {
            self.inner.replica.merge_with(&key, &set, handoff)
        }
    }

    /// Hands this node's buffered writes to the OS (see [`Handoff`]).
    fn flush_store_buffer(&self) -> Result<(), KvError> {
        self.store()
            .flush_buffered()
            .map_err(|e| KvError::Storage(format!("log write failed: {e}")))
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        let max = self.inner.config.key_bytes_max;
        if key.len() > max {
            return Err(KvError::KeyTooLarge {
                len: key.len(),
                max,
            });
        }
        if key.is_empty() {
            return Err(KvError::InvalidArgument("empty key".into()));
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.request_timeout_ms)
    }

    /// The preference list of a key, the live part of it, and what `level`
    /// requires of it.
    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        key: &[u8],
        level: Consistency,
        sloppy: bool,
    ) -> Result<(Vec<u64>, Vec<u64>, DcOf, Requirement), KvError> {
        let m = &self.inner.membership;
        let prefs = m.preference_list(token_of(key));
        let (dc_of, req) = self.requirement(&prefs, level)?;
        let live: Vec<u64> = prefs.iter().copied().filter(|&id| m.is_alive(id)).collect();
        let enough = if sloppy {
            !live.is_empty()
        } else {
            req.met(&live, &dc_of)
        };
        if !enough {
            let down: Vec<String> = prefs
                .iter()
                .filter(|id| !live.contains(id))
                .map(|id| crate::node_files::display(*id))
                .collect();
            return Err(KvError::Unavailable {
                required: req.count(),
                answered: live.len(),
                why: format!("replicas down: {}", down.join(", ")),
            });
        }
        Ok((prefs, live, dc_of, req))
    }

    /// While nodes join or leave: the replicas of `key` in the pending ring
    /// (see [`crate::movement`]), which get every write and are asked on
    /// every read, and what `level` requires of them. `None` while nothing
    /// moves, or when the pending ring cannot meet `level` (a removal that
    /// leaves fewer nodes than the replication factor).
    fn pending_plan(&self, key: &[u8], level: Consistency) -> Option<RingPlan> {
        self.plan_in(self.inner.membership.pending_placement()?, key, level)
    }

    /// The pending ring's side of a read: only while a movement hands over
    /// (see [`Membership::pending_for_reads`]).
    fn pending_read_plan(&self, key: &[u8], level: Consistency) -> Option<RingPlan> {
        self.plan_in(self.inner.membership.pending_for_reads()?, key, level)
    }

    fn plan_in(&self, ring: Arc<Placement>, key: &[u8], level: Consistency) -> Option<RingPlan> {
        let prefs = ring.preference_list(token_of(key)).to_vec();
        let (dc_of, req) = self.requirement(&prefs, level).ok()?;
        Some(RingPlan { prefs, dc_of, req })
    }

    /// What `level` requires of the preference list `prefs`.
    fn requirement(
        &self,
        prefs: &[u64],
        level: Consistency,
    ) -> Result<(DcOf, Requirement), KvError> {
        let m = &self.inner.membership;
        let dc_aware = matches!(
            level,
            Consistency::LocalOne | Consistency::LocalQuorum | Consistency::EachQuorum
        );
        // Only data-center-aware levels pay for looking up data centers.
        let dc_of: DcOf = if dc_aware {
            prefs
                .iter()
                .filter_map(|&id| m.dc_of(id).map(|dc| (id, dc)))
                .collect()
        } else {
            Vec::new()
        };
        let local_dc = if dc_aware {
            m.dc_of(m.self_id()).unwrap_or_default()
        } else {
            String::new()
        };
        let mut n_dc: HashMap<&str, usize> = HashMap::default();
        for (_, dc) in &dc_of {
            *n_dc.entry(dc.as_str()).or_default() += 1;
        }
        let n = prefs.len();
        let quorum = |k: usize| k / 2 + 1;
        let req = match level {
            Consistency::LocalOne | Consistency::LocalQuorum => {
                let local_n = n_dc.get(local_dc.as_str()).copied().unwrap_or(0);
                if local_n == 0 {
                    return Err(KvError::Unavailable {
                        required: 1,
                        answered: 0,
                        why: format!(
                            "no replica of this key in the local data center {local_dc:?}"
                        ),
                    });
                }
                let need = if level == Consistency::LocalOne {
                    1
                } else {
                    quorum(local_n)
                };
                Requirement {
                    total: 0,
                    per_dc: vec![(local_dc, need)],
                }
            }
            Consistency::EachQuorum => Requirement {
                total: 0,
                per_dc: n_dc
                    .iter()
                    .map(|(dc, &k)| (dc.to_string(), quorum(k)))
                    .collect(),
            },
            other => Requirement {
                total: other.required(n),
                per_dc: Vec::new(),
            },
        };
        if req.count() > n || n == 0 {
            return Err(KvError::Unavailable {
                required: req.count(),
                answered: n,
                why: format!(
                    "{} needs {} replicas; the ring holds {n} replica(s) of this key",
                    level.name(),
                    req.count()
                ),
            });
        }
        Ok((dc_of, req))
    }

    /// Reads one replica's record.
    fn read_from(&self, id: u64, key: Bytes) -> BoxFut<(u64, Result<SiblingSet, String>)> {
        let node = self.clone();
        Box::pin(async move {
            if id == node.id() {
                return (id, node.inner.replica.read(&key).map_err(|e| e.to_string()));
            }
            let Some(peer) = node.inner.membership.peer(id) else {
                return (id, Err("unknown node".into()));
            };
            let timeout = node.timeout();
            let answer = match node
                .inner
                .transport
                .call(&peer, Request::Read { key }, timeout)
                .await
            {
                Ok(Response::Record(None)) => Ok(SiblingSet::default()),
                Ok(Response::Record(Some(bytes))) => {
                    SiblingSet::decode(&bytes).map_err(|e| format!("bad record: {e}"))
                }
                Ok(Response::Error { message, .. }) => Err(message),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            (id, answer)
        })
    }

    /// Sends a record to one replica to merge.
    /// Merges a record into every replica of its key in the current ring
    /// (this node's own copy included); fails unless all of them took it.
    async fn hand_to_replicas(&self, key: Bytes, record: Bytes) -> Result<(), String> {
        let replicas = self
            .inner
            .membership
            .preference_list(crate::ring::token_of(&key));
        let mut sends = Vec::with_capacity(replicas.len());
        for id in replicas {
            if id == self.id() {
                let set = SiblingSet::decode(&record).map_err(|e| e.to_string())?;
                self.local_merge(key.clone(), set)
                    .await
                    .map_err(|e| e.to_string())?;
            } else if self.inner.membership.is_alive(id) {
                sends.push(self.merge_to(id, key.clone(), record.clone()));
            } else {
                return Err(format!(
                    "replica {} is down",
                    crate::node_files::display(id)
                ));
            }
        }
        for (id, r) in futures::future::join_all(sends).await {
            r.map_err(|e| format!("{}: {e}", crate::node_files::display(id)))?;
        }
        Ok(())
    }

    fn merge_to(&self, id: u64, key: Bytes, record: Bytes) -> BoxFut<(u64, Result<(), String>)> {
        let node = self.clone();
        Box::pin(async move {
            let Some(peer) = node.inner.membership.peer(id) else {
                return (id, Err("unknown node".into()));
            };
            let timeout = node.timeout();
            let answer = match node
                .inner
                .transport
                .call(&peer, Request::Merge { key, record }, timeout)
                .await
            {
                Ok(Response::Merged) => Ok(()),
                Ok(Response::Error { message, .. }) => Err(message),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            (id, answer)
        })
    }

    async fn coordinate_read(&self, key: Bytes, opts: ReadOptions) -> Result<ReadResult, KvError> {
        self.check_key(&key)?;
        let level = opts.consistency.unwrap_or(self.inner.config.default_read);
        let (prefs, mut live, dc_of, req) = self.plan(&key, level, false)?;
        // Local levels read only the local data center's replicas.
        if matches!(level, Consistency::LocalOne | Consistency::LocalQuorum)
            && let Some((dc, _)) = req.per_dc.first()
        {
            live.retain(|id| dc_of.iter().any(|(n, d)| n == id && d == dc));
        }
        // While a movement hands over, the pending ring's replicas are
        // asked too and must meet the level as well.
        let pending = self.pending_read_plan(&key, level);
        if let Some(p) = &pending {
            let m = &self.inner.membership;
            let local_dc = match level {
                Consistency::LocalOne | Consistency::LocalQuorum => {
                    req.per_dc.first().map(|(dc, _)| dc.clone())
                }
                _ => None,
            };
            for &id in &p.prefs {
                let in_dc = local_dc
                    .as_ref()
                    .is_none_or(|dc| p.dc_of.iter().any(|(n, d)| *n == id && d == dc));
                if !live.contains(&id) && in_dc && m.is_alive(id) {
                    live.push(id);
                }
            }
        }
        let current = RingPlan { prefs, dc_of, req };
        let met = |answered: &[u64]| {
            current.met(answered) && pending.as_ref().is_none_or(|p| p.met(answered))
        };
        let now = self.inner.replica.now_ms();
        let to_result = |set: &SiblingSet| ReadResult {
            siblings: set.live(now).map(to_sibling).collect(),
            context: set.vv.clone(),
        };
        // One replica, and it is us: no fan-out, no repair.
        if live.len() == 1 && live[0] == self.id() && pending.is_none() {
            let set = self.inner.replica.read(&key)?;
            return Ok(to_result(&set));
        }
        let mut pending: FuturesUnordered<_> = live
            .iter()
            .map(|&id| self.read_from(id, key.clone()))
            .collect();
        let mut answered: Vec<u64> = Vec::new();
        let mut records: Vec<(u64, SiblingSet)> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        while let Some((id, answer)) = pending.next().await {
            match answer {
                Ok(set) => {
                    answered.push(id);
                    records.push((id, set));
                }
                Err(why) => failures.push(format!("{}: {why}", crate::node_files::display(id))),
            }
            if met(&answered) {
                break;
            }
        }
        if !met(&answered) {
            metrics::counter!("ringkv_unavailable_total", "op" => "read").increment(1);
            return Err(KvError::Unavailable {
                required: current.req.count(),
                answered: answered.len(),
                why: failures.join("; "),
            });
        }
        let mut merged = SiblingSet::default();
        for (_, set) in &records {
            merged.merge(set);
        }
        let result = to_result(&merged);
        // The rest answer in the background; every stale replica of the
        // current ring gets the merge (read repair). A replica of the
        // pending ring only is left to the stream: it holds little yet, and
        // repairing it on every read would be an unthrottled second stream.
        let current_prefs = current.prefs;
        let node = self.clone();
        tokio::spawn(async move {
            while let Some((id, answer)) = pending.next().await {
                if let Ok(set) = answer {
                    merged.merge(&set);
                    records.push((id, set));
                }
            }
            records.retain(|(id, _)| current_prefs.contains(id));
            node.read_repair(key, merged, records).await;
        });
        Ok(result)
    }

    async fn read_repair(&self, key: Bytes, merged: SiblingSet, records: Vec<(u64, SiblingSet)>) {
        let stale: Vec<u64> = records
            .iter()
            .filter(|(_, set)| *set != merged)
            .map(|(id, _)| *id)
            .collect();
        if stale.is_empty() {
            return;
        }
        let record = Bytes::from(merged.encode());
        for id in stale {
            metrics::counter!("ringkv_read_repairs_total").increment(1);
            if id == self.id() {
                if let Err(e) = self.local_merge(key.clone(), merged.clone()).await {
                    tracing::warn!(error = %e, "local read repair failed");
                }
            } else {
                let (_, r) = self.merge_to(id, key.clone(), record.clone()).await;
                if let Err(e) = r {
                    tracing::debug!(node = %crate::node_files::display(id), error = %e, "read repair failed");
                }
            }
        }
    }

    async fn coordinate_write(
        &self,
        key: Bytes,
        change: Change,
        opts: WriteOptions,
    ) -> Result<WriteOutcome, KvError> {
        self.check_key(&key)?;
        if let Change::Put(v) = &change
            && v.len() > self.inner.config.value_bytes_max
        {
            return Err(KvError::ValueTooLarge {
                len: v.len(),
                max: self.inner.config.value_bytes_max,
            });
        }
        let level = opts.consistency.unwrap_or(self.inner.config.default_write);
        let strict = self.inner.config.strict_quorum;
        // Sloppy quorum: stand-ins may take the place of down replicas; with
        // every replica down, this node coordinates as a stand-in.
        let (prefs, mut live, dc_of, req) = match self.plan(&key, level, !strict) {
            Err(KvError::Unavailable { why, .. }) if !strict => {
                let prefs = self.inner.membership.preference_list(token_of(&key));
                let (dc_of, req) = self.requirement(&prefs, level)?;
                let plan = RingPlan { prefs, dc_of, req };
                return self
                    .coordinate_as_stand_in(key, change, opts, &plan, why)
                    .await;
            }
            planned => planned?,
        };
        // Only a live replica of the current ring coordinates: it holds the
        // key's versions. A replica of the pending ring only may not have
        // them yet (it is still streaming).
        let coordinator = live.contains(&self.id());
        // While nodes move, the write also goes to the pending ring's
        // replicas and must meet the level there too (see
        // [`crate::movement`]).
        let moving = self.pending_plan(&key, level);
        let current = RingPlan {
            prefs: prefs.clone(),
            dc_of,
            req,
        };
        let mut prefs = prefs;
        for &id in moving.iter().flat_map(|p| &p.prefs) {
            if !prefs.contains(&id) {
                prefs.push(id);
                if self.inner.membership.is_alive(id) {
                    live.push(id);
                }
            }
        }
        // Anyone else forwards: to the current replicas first; a node whose
        // view of the ring differs declines and the next one is tried.
        if !coordinator {
            let retry = (change.clone(), opts.clone());
            return match self
                .forward(key.clone(), change, opts, &live, &current.req)
                .await
            {
                Ok(done) => done,
                Err(why) if !strict => {
                    let (change, opts) = retry;
                    self.coordinate_as_stand_in(key, change, opts, &current, why)
                        .await
                }
                Err(why) => Err(KvError::Unavailable {
                    required: current.req.count(),
                    answered: 0,
                    why: format!("no replica could coordinate: {why}"),
                }),
            };
        }
        let req = &current.req;
        let met =
            |acked: &[u64]| current.met(acked) && moving.as_ref().is_none_or(|p| p.met(acked));
        let (outcome, record) = self.local_update(key.clone(), change, opts).await?;
        let Some(record) = record else {
            return Ok(outcome);
        };
        let mut acked = vec![self.id()];
        if met(&acked) && prefs.len() == 1 {
            return Ok(outcome);
        }
        let bytes = Bytes::from(record.encode());
        let mut pending: FuturesUnordered<BoxFut<(Sent, Result<(), String>)>> = live
            .iter()
            .filter(|&&id| id != self.id())
            .map(|&id| {
                let f = self.merge_to(id, key.clone(), bytes.clone());
                Box::pin(async move {
                    let (_, r) = f.await;
                    (Sent::Replica(id), r)
                }) as BoxFut<_>
            })
            .collect();
        // Down replicas: a stand-in holds a hint for each.
        let token = token_of(&key);
        let mut used: Vec<u64> = Vec::new();
        for &down in prefs.iter().filter(|id| !live.contains(id)) {
            if self.beyond_hint_window(down) {
                continue;
            }
            match self.stand_in(token, down, &prefs, &used) {
                Some(via) => {
                    used.push(via);
                    pending.push(self.hint_to(via, down, key.clone(), bytes.clone()));
                }
                None => self.hold_hint(down, &key, &bytes),
            }
        }
        let mut failures = Vec::new();
        while !met(&acked) {
            let Some((sent, answer)) = pending.next().await else {
                break;
            };
            match (sent, answer) {
                (Sent::Replica(id), Ok(())) => acked.push(id),
                // A stand-in stands for the replica it holds the hint of.
                (Sent::Hinted { target, .. }, Ok(())) if !strict => acked.push(target),
                (Sent::Hinted { .. }, Ok(())) => {}
                (sent, Err(why)) => {
                    failures.push(format!("{}: {why}", crate::node_files::display(sent.via())));
                    // A replica that fails before the failure detector
                    // noticed gets a stand-in too (sloppy quorum), so the
                    // write need not fail for a node that just died.
                    let stand_in = match sent {
                        Sent::Replica(id) if !strict => self.stand_in(token, id, &prefs, &used),
                        _ => None,
                    };
                    match stand_in {
                        Some(via) => {
                            used.push(via);
                            pending.push(self.hint_to(
                                via,
                                sent.target(),
                                key.clone(),
                                bytes.clone(),
                            ));
                        }
                        None => self.hold_hint(sent.target(), &key, &bytes),
                    }
                }
            }
        }
        // Replicas beyond the requirement still get the write.
        self.finish_sends(pending, key.clone(), bytes.clone());
        if !met(&acked) {
            metrics::counter!("ringkv_unavailable_total", "op" => "write").increment(1);
            let mut why = failures.join("; ");
            if strict && prefs.len() > live.len() {
                why = format!("strict quorum: hints do not count; {why}");
            }
            return Err(KvError::Unavailable {
                required: req.count(),
                answered: acked.len(),
                why,
            });
        }
        Ok(outcome)
    }

    /// Lets the sends a write no longer waits for finish in the background;
    /// a failed one becomes a hint held here.
    fn finish_sends(
        &self,
        mut pending: FuturesUnordered<BoxFut<(Sent, Result<(), String>)>>,
        key: Bytes,
        bytes: Bytes,
    ) {
        if pending.is_empty() {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            while let Some((sent, answer)) = pending.next().await {
                if answer.is_err() {
                    node.hold_hint(sent.target(), &key, &bytes);
                }
            }
        });
    }

    /// The stand-in for a down replica: the next live node on the ring walk
    /// that is not a replica of the key and not already standing in,
    /// preferring the down node's data center.
    fn stand_in(&self, token: u64, down: u64, prefs: &[u64], used: &[u64]) -> Option<u64> {
        let m = &self.inner.membership;
        let dc = m.dc_of(down);
        let candidates: Vec<u64> = m
            .placement()
            .ring()
            .walk_nodes(token)
            .into_iter()
            .filter(|id| !prefs.contains(id) && !used.contains(id) && m.is_alive(*id))
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
    fn beyond_hint_window(&self, target: u64) -> bool {
        let window = Duration::from_millis(self.inner.hints.config().age_ms_max);
        let beyond = self
            .inner
            .membership
            .silent_for(target)
            .is_some_and(|silent| silent > window);
        if beyond {
            metrics::counter!("ringkv_hints_dropped_total", "reason" => "window").increment(1);
        }
        beyond
    }

    /// Sends a hint to a stand-in.
    fn hint_to(
        &self,
        via: u64,
        target: u64,
        key: Bytes,
        record: Bytes,
    ) -> BoxFut<(Sent, Result<(), String>)> {
        let node = self.clone();
        Box::pin(async move {
            let sent = Sent::Hinted { target, via };
            let Some(peer) = node.inner.membership.peer(via) else {
                return (sent, Err("unknown node".into()));
            };
            let req = Request::Hint {
                target,
                key,
                record,
            };
            let r = match node.inner.transport.call(&peer, req, node.timeout()).await {
                Ok(Response::Merged) => Ok(()),
                Ok(Response::Error { message, .. }) => Err(message),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            (sent, r)
        })
    }

    /// Keeps a hint here for `target` (it missed a write this node
    /// coordinated). Failures are logged and counted, never fatal to the
    /// client's write, which has its answer already.
    fn hold_hint(&self, target: u64, key: &[u8], record: &[u8]) {
        if target == self.id() || self.beyond_hint_window(target) {
            return;
        }
        let now = self.inner.replica.now_ms();
        match self.inner.hints.add(target, now, key, record) {
            Ok(_) => {}
            Err(e) => {
                metrics::counter!("ringkv_hints_dropped_total", "reason" => "error").increment(1);
                tracing::warn!(target = %crate::node_files::display(target), error = %e, "hint not stored");
            }
        }
    }

    /// Hints held here, per target: (target, count, bytes).
    pub fn hints_pending(&self) -> Vec<(u64, u64, u64)> {
        self.inner
            .hints
            .pending()
            .into_iter()
            .map(|(t, p)| (t, p.count, p.bytes))
            .collect()
    }

    /// Replays held hints to their owners until `shutdown` resolves.
    pub async fn run_hint_replay(self, shutdown: impl std::future::Future<Output = ()>) {
        let interval = Duration::from_millis(self.inner.config.hint_replay_interval_ms.max(1));
        every(interval, shutdown, || async {
            self.replay_hints_once().await;
        })
        .await;
    }

    /// One replay pass: every live target gets its oldest hints, at most
    /// `replay_per_sec_max` per second. Returns how many were delivered.
    pub async fn replay_hints_once(&self) -> u64 {
        let hints = &self.inner.hints;
        let config = hints.config().clone();
        let mut delivered = 0;
        for (target, _) in hints.pending() {
            // A target that has left the ring will never take its hints:
            // they go to the keys' current replicas instead.
            let gone = self
                .inner
                .membership
                .status(target)
                .is_none_or(|s| s == crate::net::message::NodeStatus::Left);
            if !gone && !self.inner.membership.is_alive(target) {
                continue;
            }
            loop {
                let batch = match hints.oldest(target, config.replay_batch_max) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading hints failed");
                        break;
                    }
                };
                if batch.is_empty() {
                    break;
                }
                let now = self.inner.replica.now_ms();
                let mut stalled = false;
                let started = tokio::time::Instant::now();
                // A batch goes out at once: merges commute, so hints of one
                // key may land in any order.
                let mut sends = Vec::with_capacity(batch.len());
                for hint in &batch {
                    if now.saturating_sub(hint.created_ms) > config.age_ms_max {
                        let _ = hints.remove(hint, Some(DropReason::Expired));
                        continue;
                    }
                    let node = self.clone();
                    sends.push(async move {
                        let sent = if gone {
                            node.hand_to_replicas(hint.key.clone(), hint.record.clone())
                                .await
                        } else {
                            node.merge_to(target, hint.key.clone(), hint.record.clone())
                                .await
                                .1
                        };
                        (hint, sent)
                    });
                }
                for (hint, r) in futures::future::join_all(sends).await {
                    match r {
                        Ok(()) => {
                            delivered += 1;
                            if let Err(e) = hints.remove(hint, None) {
                                tracing::warn!(error = %e, "removing a delivered hint failed");
                            }
                        }
                        Err(why) => {
                            tracing::debug!(target = %crate::node_files::display(target), %why, "hint replay paused");
                            stalled = true;
                        }
                    }
                }
                if stalled {
                    break;
                }
                // Bounded rate: a batch takes at least its share of a second.
                let floor = Duration::from_secs_f64(
                    batch.len() as f64 / config.replay_per_sec_max.max(1) as f64,
                );
                if let Some(rest) = floor.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
        }
        delivered
    }

    /// Hands a write to a replica that coordinates it.
    async fn forward(
        &self,
        key: Bytes,
        change: Change,
        opts: WriteOptions,
        live: &[u64],
        req: &Requirement,
    ) -> Result<Result<WriteOutcome, KvError>, String> {
        let op = match change {
            Change::Put(value) => WriteOp::Put {
                value,
                expiry: opts.expiry,
            },
            Change::Delete => WriteOp::Delete,
            Change::Expiry(e) => WriteOp::SetExpiry { expiry: e },
        };
        let write = ForwardedWrite {
            key,
            op,
            consistency: opts.consistency,
            context: opts.context.as_ref().map(WireContext::from_vv),
            condition: opts.condition,
            return_previous: opts.return_previous,
        };
        let request = Request::CoordinateOnce {
            epoch: self.inner.started_ms,
            seq: self
                .inner
                .forward_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            write,
        };
        let mut failures = Vec::new();
        for &id in live {
            let Some(peer) = self.inner.membership.peer(id) else {
                continue;
            };
            // The coordinator's own wait plus one hop.
            let timeout = self.timeout() * 2;
            match self
                .inner
                .transport
                .call(&peer, request.clone(), timeout)
                .await
            {
                Ok(Response::Coordinated(out)) => {
                    return Ok(Ok(WriteOutcome {
                        applied: out.applied,
                        previous: out.previous.map(|(value, hlc, actor, expires_at_ms)| {
                            crate::api::Sibling {
                                value,
                                hlc,
                                actor,
                                expires_at_ms,
                            }
                        }),
                    }));
                }
                // Nothing was applied there: the next replica may take it.
                Ok(Response::Error { code, message }) if code == NOT_A_REPLICA => {
                    failures.push(format!("{}: {message}", crate::node_files::display(id)));
                }
                Ok(Response::Error { code, message }) => {
                    return Ok(Err(error_from_wire(&code, message)));
                }
                // Nothing known of what happened there: no other attempt.
                Ok(other) => {
                    return Ok(Err(KvError::Unavailable {
                        required: req.count(),
                        answered: 0,
                        why: format!("unexpected answer {other:?}"),
                    }));
                }
                // Not reached at all: another replica may coordinate.
                Err(e @ (TransportError::Unreachable(_) | TransportError::Overloaded)) => {
                    failures.push(format!("{}: {e}", crate::node_files::display(id)));
                }
                // It may have been applied: do not apply it twice.
                Err(e) => {
                    return Ok(Err(KvError::Unavailable {
                        required: req.count(),
                        answered: 0,
                        why: format!(
                            "coordinator {} did not answer: {e}",
                            crate::node_files::display(id)
                        ),
                    }));
                }
            }
        }
        // No replica was reached: nothing was applied anywhere.
        Err(failures.join("; "))
    }

    /// No replica of `key` can be reached, and hints count (sloppy
    /// quorum): this node versions the write from what it knows of the key
    /// (usually nothing, so the write becomes a sibling of what the
    /// replicas hold) and leaves it as hints, one per replica, held here
    /// and by live stand-ins further along the ring. Each stored hint
    /// counts for its replica. Dots stay unique: a node's counters rise
    /// across all keys (see [`crate::causality::epoch_floor`]).
    async fn coordinate_as_stand_in(
        &self,
        key: Bytes,
        change: Change,
        opts: WriteOptions,
        plan: &RingPlan,
        why: String,
    ) -> Result<WriteOutcome, KvError> {
        let (outcome, record) = self.inner.replica.version_detached(&key, change, &opts)?;
        let Some(record) = record else {
            return Ok(outcome);
        };
        let bytes = Bytes::from(record.encode());
        let token = token_of(&key);
        let mut acked = Vec::new();
        let mut used = vec![self.id()];
        let mut pending: FuturesUnordered<BoxFut<(Sent, Result<(), String>)>> =
            FuturesUnordered::new();
        // A replica silent longer than hints live would never get its hint.
        let targets: Vec<u64> = plan
            .prefs
            .iter()
            .copied()
            .filter(|&t| !self.beyond_hint_window(t))
            .collect();
        for (i, &target) in targets.iter().enumerate() {
            if i == 0 {
                let now = self.inner.replica.now_ms();
                match self.inner.hints.add(target, now, &key, &bytes) {
                    Ok(true) => acked.push(target),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "stand-in hint not stored"),
                }
                continue;
            }
            match self.stand_in(token, target, &plan.prefs, &used) {
                Some(via) => {
                    used.push(via);
                    pending.push(self.hint_to(via, target, key.clone(), bytes.clone()));
                }
                // No other stand-in: held here too, not counted.
                None => self.hold_hint(target, &key, &bytes),
            }
        }
        let mut failures = vec![why];
        while !plan.met(&acked) {
            let Some((sent, answer)) = pending.next().await else {
                break;
            };
            match answer {
                Ok(()) => acked.push(sent.target()),
                Err(e) => {
                    failures.push(format!("{}: {e}", crate::node_files::display(sent.via())));
                    // Held here instead, not counted.
                    self.hold_hint(sent.target(), &key, &bytes);
                }
            }
        }
        self.finish_sends(pending, key, bytes);
        if !plan.met(&acked) {
            metrics::counter!("ringkv_unavailable_total", "op" => "write").increment(1);
            return Err(KvError::Unavailable {
                required: plan.req.count(),
                answered: acked.len(),
                why: format!(
                    "no replica reachable; stand-ins took {} hints: {}",
                    acked.len(),
                    failures.join("; ")
                ),
            });
        }
        metrics::counter!("ringkv_stand_in_writes_total").increment(1);
        Ok(outcome)
    }

    fn read_answer(&self, key: &[u8]) -> Response {
        match self.inner.replica.read_raw(key) {
            Ok(rec) => Response::Record(rec),
            Err(e) => error_to_wire(&e),
        }
    }

    fn decode_merged(record: &Bytes) -> Result<SiblingSet, Response> {
        SiblingSet::decode(record).map_err(|e| {
            error_to_wire(&KvError::InvalidArgument(format!(
                "record does not decode: {e}"
            )))
        })
    }

    /// The TCP server's fast path ([`Handler::handle_now`]): answers the
    /// requests that need no waiting (a ping, a replica read, a buffered
    /// merge when writes do not block) on the spot, as
    /// [`Node::handle_request`] would; gives the others back.
    fn handle_request_now(&self, req: Request) -> Handled {
        Handled::Now(match req {
            Request::Ping => Response::Pong,
            Request::Read { key } => self.read_answer(&key),
            Request::Merge { key, record } if !self.store().blocking_writes() => {
                match Self::decode_merged(&record) {
                    // Buffered: the transport flushes before the answer
                    // goes out (`Handler::before_reply`).
                    Ok(set) => match self.inner.replica.merge_with(&key, &set, Handoff::Buffered) {
                        Ok(_) => Response::Merged,
                        Err(e) => error_to_wire(&e),
                    },
                    Err(answer) => answer,
                }
            }
            other => return Handled::Later(other),
        })
    }

    async fn handle_request(&self, from: u64, req: Request) -> Response {
        let _ = from;
        match req {
            Request::Ping => Response::Pong,
            Request::Gossip { states } => {
                self.inner.membership.merge(states);
                Response::Gossip {
                    states: self.inner.membership.states(),
                }
            }
            Request::Read { key } => self.read_answer(&key),
            Request::Merge { key, record } => {
                let set = match Self::decode_merged(&record) {
                    Ok(set) => set,
                    Err(answer) => return answer,
                };
                // Buffered: the transport flushes before the answer goes
                // out (`Handler::before_reply`).
                match self.local_merge_with(key, set, Handoff::Buffered).await {
                    Ok(_) => Response::Merged,
                    Err(e) => error_to_wire(&e),
                }
            }
            Request::Hint {
                target,
                key,
                record,
            } => {
                if SiblingSet::decode(&record).is_err() {
                    return error_to_wire(&KvError::InvalidArgument(
                        "hinted record does not decode".into(),
                    ));
                }
                let now = self.inner.replica.now_ms();
                match self.inner.hints.add(target, now, &key, &record) {
                    Ok(true) => Response::Merged,
                    Ok(false) => error_to_wire(&KvError::Unavailable {
                        required: 1,
                        answered: 0,
                        why: "hint budget for the target is full".into(),
                    }),
                    Err(e) => error_to_wire(&crate::replica::store_error(e)),
                }
            }
            Request::StreamRead {
                lo,
                hi,
                after,
                bytes_max,
            } => match self.stream_read_local(lo, hi, after, bytes_max).await {
                Ok((entries, more)) => {
                    let crc = crate::net::message::stream_crc(&entries);
                    Response::StreamBatch { entries, more, crc }
                }
                Err(e) => error_to_wire(&e),
            },
            Request::StreamPush { entries, crc } => {
                if crate::net::message::stream_crc(&entries) != crc {
                    metrics::counter!("ringkv_stream_checksum_failures_total").increment(1);
                    return error_to_wire(&KvError::InvalidArgument(
                        "streamed batch failed its checksum".into(),
                    ));
                }
                match self.stream_merge_local(entries).await {
                    Ok(()) => Response::Merged,
                    Err(e) => error_to_wire(&e),
                }
            }
            req @ (Request::MerkleNodes { .. } | Request::RangeDigests { .. }) => {
                match self.answer_anti_entropy(req).await {
                    Ok(resp) => resp,
                    Err(e) => error_to_wire(&e),
                }
            }
            Request::Coordinate(fw) => self.coordinate_forwarded(fw).await,
            Request::CoordinateOnce { epoch, seq, write } => {
                let first = self.inner.forwards_seen.lock().first((from, epoch, seq));
                if first {
                    self.coordinate_forwarded(write).await
                } else {
                    Response::Error {
                        code: "duplicate".into(),
                        message: "a copy of a forwarded write already received; not applied".into(),
                    }
                }
            }
        }
    }

    /// Coordinates a write another node forwarded here.
    async fn coordinate_forwarded(&self, fw: ForwardedWrite) -> Response {
        let context = match fw.context.as_ref().map(WireContext::to_vv).transpose() {
            Ok(c) => c,
            Err(e) => return error_to_wire(&KvError::BadContext(e.to_string())),
        };
        let (change, expiry) = match fw.op {
            WriteOp::Put { value, expiry } => (Change::Put(value), expiry),
            WriteOp::Delete => (Change::Delete, Expiry::Never),
            WriteOp::SetExpiry { expiry } => (Change::Expiry(expiry), Expiry::Never),
        };
        let opts = WriteOptions {
            consistency: fw.consistency,
            context,
            condition: fw.condition,
            expiry,
            return_previous: fw.return_previous,
        };
        // Coordinate here only if we are a replica; never forward
        // again (no loops).
        let level = opts.consistency.unwrap_or(self.inner.config.default_write);
        // Views of the ring differ for a moment while nodes move:
        // a node that is not a live replica of its current ring says
        // so, and the forwarder tries the next replica.
        match self.plan(&fw.key, level, !self.inner.config.strict_quorum) {
            Ok((_, live, _, _)) if live.contains(&self.id()) => {}
            Ok(_) => {
                return Response::Error {
                    code: NOT_A_REPLICA.into(),
                    message: "forwarded to a node that is not a replica".into(),
                };
            }
            Err(e) => return error_to_wire(&e),
        }
        match self.coordinate_write(fw.key, change, opts).await {
            Ok(out) => Response::Coordinated(CoordinatedOutcome {
                applied: out.applied,
                previous: out
                    .previous
                    .map(|p| (p.value, p.hlc, p.actor, p.expires_at_ms)),
            }),
            Err(e) => error_to_wire(&e),
        }
    }
}

/// The wire error code of a forwarded write that reached a node which is
/// not a live replica of the key in its current ring. Nothing was applied.
const NOT_A_REPLICA: &str = "not_a_replica";

/// Runs `tick` every `interval` (a late tick waits, none is skipped) until
/// `shutdown` resolves. The background loops of a node.
pub(crate) async fn every<F, Fut>(
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            // Shutdown first, and a fixed order: a simulation replays.
            biased;
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        tick().await;
    }
}

/// Gossip rounds between two load reports.
const LOAD_REPORT_ROUNDS: u64 = 5;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn error_to_wire(e: &KvError) -> Response {
    Response::Error {
        code: e.code().to_string(),
        message: e.to_string(),
    }
}

/// Rebuilds a coordinator's error from the wire, keeping its kind.
fn error_from_wire(code: &str, message: String) -> KvError {
    match code {
        "read_only" => KvError::ReadOnly(message),
        "invalid_argument" | "key_too_large" | "value_too_large" => {
            KvError::InvalidArgument(message)
        }
        "bad_context" => KvError::BadContext(message),
        "unavailable" => unavailable_from_wire(message),
        "shutting_down" => KvError::ShuttingDown,
        _ => KvError::Storage(message),
    }
}

/// Reads back the counts an `Unavailable` error's message carries
/// ("2 required, 1 answered: why"), so a forwarded error reads as the
/// coordinator's own.
fn unavailable_from_wire(message: String) -> KvError {
    let parsed = message.split_once(": ").and_then(|(counts, why)| {
        let (r, a) = counts.split_once(", ")?;
        let required = r.strip_suffix(" required")?.parse().ok()?;
        let answered = a.strip_suffix(" answered")?.parse().ok()?;
        Some((required, answered, why.to_string()))
    });
    match parsed {
        Some((required, answered, why)) => KvError::Unavailable {
            required,
            answered,
            why,
        },
        None => KvError::Unavailable {
            required: 0,
            answered: 0,
            why: message,
        },
    }
}

impl<S: LocalStore> Handler for Node<S> {
    fn handle(&self, from: u64, req: Request) -> BoxFut<Response> {
        let node = self.clone();
        Box::pin(async move { node.handle_request(from, req).await })
    }

    fn handle_now(&self, _from: u64, req: Request) -> Handled {
        self.handle_request_now(req)
    }

    fn before_reply(&self) -> Result<(), String> {
        self.flush_store_buffer().map_err(|e| e.to_string())
    }
}

impl<S: LocalStore> Kv for Node<S> {
    fn flush_writes(&self) -> Result<(), KvError> {
        self.flush_store_buffer()
    }

    fn writes_buffered(&self) -> bool {
        self.store().has_buffered()
    }

    async fn get(&self, key: Bytes, opts: ReadOptions) -> Result<ReadResult, KvError> {
        self.timed(OpKind::Get, self.coordinate_read(key, opts))
            .await
    }

    async fn put(
        &self,
        key: Bytes,
        value: Bytes,
        opts: WriteOptions,
    ) -> Result<WriteOutcome, KvError> {
        self.timed(
            OpKind::Put,
            self.coordinate_write(key, Change::Put(value), opts),
        )
        .await
    }

    async fn delete(&self, key: Bytes, opts: WriteOptions) -> Result<WriteOutcome, KvError> {
        self.timed(
            OpKind::Delete,
            self.coordinate_write(key, Change::Delete, opts),
        )
        .await
    }

    async fn set_expiry(
        &self,
        key: Bytes,
        expiry: Expiry,
        opts: WriteOptions,
    ) -> Result<bool, KvError> {
        self.coordinate_write(key, Change::Expiry(expiry), opts)
            .await
            .map(|o| o.applied)
    }

    async fn count_keys(&self) -> Result<u64, KvError> {
        self.inner.replica.count_live()
    }

    fn info(&self) -> NodeInfo {
        let inner = &self.inner;
        NodeInfo {
            node_id: self.id(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_ms: inner.replica.now_ms().saturating_sub(inner.started_ms),
            replication_factor: inner.config.replication_factor,
            default_read: inner.config.default_read.name(),
            default_write: inner.config.default_write.name(),
            keys_estimate: self.store().keys_estimate(),
            storage: self.store().stats(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.replica.now_ms()
    }

    fn cluster(&self) -> ClusterView {
        let m = &self.inner.membership;
        let ring = m.ring();
        let ownership = ring.ownership();
        let nodes = m
            .states()
            .into_iter()
            .map(|s| NodeView {
                id: s.id,
                alive: m.is_alive(s.id),
                phi: m.phi(s.id),
                ownership: ownership.get(&s.id).copied().unwrap_or(0.0),
                tokens: s.tokens.len(),
                cluster_addr: s.cluster_addr,
                resp_addr: s.resp_addr,
                http_addr: s.http_addr,
                dc: s.dc,
                rack: s.rack,
                weight: s.weight,
                status: s.status.name().to_string(),
                ops_per_sec: s.load.ops_per_sec,
                p99_us: s.load.p99_us,
                disk_bytes: s.load.disk_bytes,
                keys: s.load.keys,
            })
            .collect();
        ClusterView {
            self_id: m.self_id(),
            nodes,
            replication: m
                .replication()
                .per_dc
                .iter()
                .map(|(dc, n)| (dc.clone(), *n))
                .collect(),
            tokens: ring.tokens().collect(),
            hints_pending: self.hints_pending(),
            hints_dropped: self.inner.hints.dropped(),
        }
    }

    fn movement(&self) -> Option<crate::api::MovementStatus> {
        self.movement_status()
    }

    fn start_movement(
        &self,
        cmd: crate::api::MoveCommand,
    ) -> Result<crate::api::MovementStatus, KvError> {
        self.command_movement(cmd)
    }

    fn repair_status(&self) -> Option<crate::api::RepairStatus> {
        Some(Node::repair_status(self))
    }

    fn start_repair(&self) -> Result<bool, KvError> {
        Node::start_repair(self)
    }

    fn range_states(&self) -> Vec<crate::api::RangeState> {
        self.replicated_ranges()
            .into_iter()
            .map(|(range, replicas)| crate::api::RangeState {
                start: range.start,
                end: range.end,
                synced_at_ms: self.sync_ledger().synced_at(range.end),
                replicas,
            })
            .collect()
    }

    async fn explain(&self, key: Bytes) -> Result<Explain, KvError> {
        self.check_key(&key)?;
        let m = &self.inner.membership;
        let token = token_of(&key);
        let prefs = m.preference_list(token);
        let now = self.inner.replica.now_ms();
        let reads = prefs.iter().map(|&id| self.read_from(id, key.clone()));
        let answers = futures::future::join_all(reads).await;
        let replicas = answers
            .into_iter()
            .map(|(id, answer)| {
                let (version, siblings, tombstones) = match answer {
                    Ok(set) => (
                        Ok(set.vv.entries().to_vec()),
                        set.live(now)
                            .map(|s| {
                                (
                                    s.dot.actor,
                                    s.dot.counter,
                                    s.hlc,
                                    s.value.as_ref().map_or(0, |v| v.len()),
                                )
                            })
                            .collect(),
                        set.siblings.iter().filter(|s| s.value.is_none()).count(),
                    ),
                    Err(e) => (Err(e), Vec::new(), 0),
                };
                ReplicaView {
                    node_id: id,
                    alive: m.is_alive(id),
                    version,
                    siblings,
                    tombstones,
                }
            })
            .collect();
        Ok(Explain {
            token,
            preference_list: prefs,
            replicas,
        })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn unavailable_errors_cross_the_wire_unchanged() {
        let e = KvError::Unavailable {
            required: 2,
            answered: 1,
            why: "n1: timed out: after 2, 3".into(),
        };
        let Response::Error { code, message } = error_to_wire(&e) else {
            panic!("an error answer");
        };
        assert_eq!(error_from_wire(&code, message), e);
        // A message in another shape is kept whole.
        assert_eq!(
            error_from_wire("unavailable", "odd: shape".into()),
            KvError::Unavailable {
                required: 0,
                answered: 0,
                why: "odd: shape".into()
            }
        );
    }

    #[test]
    fn p99_reads_the_right_bucket() {
        let stats = OpStats::default();
        let (_, before) = stats.snapshot();
        for _ in 0..990 {
            stats.record(100); // bucket 7: < 128 us
        }
        for _ in 0..10 {
            stats.record(5_000); // bucket 13: < 8192 us
        }
        let (ops, after) = stats.snapshot();
        assert_eq!(ops, 1000);
        assert_eq!(p99_between(&before, &after), 128);
        for _ in 0..20 {
            stats.record(5_000);
        }
        let (_, later) = stats.snapshot();
        assert_eq!(p99_between(&before, &later), 8192);
        assert_eq!(p99_between(&later, &later), 0);
    }
    use crate::api::Condition;
    use crate::causality::VersionVector;
    use crate::testing::MapStore;
    use ringkv_env::{Clock, ManualClock};
    use std::time::Duration;

    fn node() -> (Node<MapStore>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let config = NodeConfig {
            key_bytes_max: 8,
            value_bytes_max: 16,
            siblings_max: 3,
            ..NodeConfig::default()
        };
        let node = Node::new(7, MapStore::default(), clock.clone(), config);
        (node, clock)
    }

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    async fn value(node: &Node<MapStore>, key: &str) -> Option<Bytes> {
        let r = node.get(k(key), ReadOptions::default()).await.expect("get");
        r.resolved().map(|s| s.value.clone())
    }

    #[tokio::test]
    async fn put_get_delete_roundtrip() {
        let (node, _) = node();
        assert_eq!(value(&node, "a").await, None);
        let out = node
            .put(k("a"), k("1"), WriteOptions::default())
            .await
            .expect("put");
        assert!(out.applied);
        node.put(k("a"), k("2"), WriteOptions::default())
            .await
            .expect("put");
        assert_eq!(value(&node, "a").await, Some(k("2")));
        // Plain writes supersede what the node sees: no siblings.
        let r = node.get(k("a"), ReadOptions::default()).await.expect("get");
        assert_eq!(r.siblings.len(), 1);
        let del = node
            .delete(k("a"), WriteOptions::default())
            .await
            .expect("delete");
        assert!(del.applied);
        assert_eq!(value(&node, "a").await, None);
        let again = node
            .delete(k("a"), WriteOptions::default())
            .await
            .expect("delete");
        assert!(
            !again.applied,
            "deleting a missing key reports nothing deleted"
        );
        assert_eq!(node.count_keys().await.expect("count"), 0);
    }

    #[tokio::test]
    async fn conditions_and_previous_value() {
        let (node, _) = node();
        let nx = WriteOptions {
            condition: Condition::IfAbsent,
            ..WriteOptions::default()
        };
        assert!(
            node.put(k("a"), k("1"), nx.clone())
                .await
                .expect("nx")
                .applied
        );
        assert!(!node.put(k("a"), k("2"), nx).await.expect("nx").applied);
        assert_eq!(value(&node, "a").await, Some(k("1")));
        let xx = WriteOptions {
            condition: Condition::IfPresent,
            return_previous: true,
            ..WriteOptions::default()
        };
        let out = node.put(k("a"), k("3"), xx.clone()).await.expect("xx");
        assert!(out.applied);
        assert_eq!(out.previous.map(|p| p.value), Some(k("1")));
        assert!(!node.put(k("b"), k("3"), xx).await.expect("xx").applied);
        assert_eq!(value(&node, "b").await, None);
    }

    #[tokio::test]
    async fn expiry_hides_keys_and_can_be_changed() {
        let (node, clock) = node();
        let now = clock.now_ms();
        let opts = WriteOptions {
            expiry: Expiry::At(now + 1_000),
            ..WriteOptions::default()
        };
        node.put(k("a"), k("1"), opts).await.expect("put");
        // KEEPTTL keeps it through an overwrite.
        let keep = WriteOptions {
            expiry: Expiry::Keep,
            ..WriteOptions::default()
        };
        node.put(k("a"), k("2"), keep).await.expect("put");
        let r = node.get(k("a"), ReadOptions::default()).await.expect("get");
        assert_eq!(
            r.resolved().and_then(|s| s.expires_at_ms),
            Some(now + 1_000)
        );
        clock.advance(Duration::from_millis(999));
        assert_eq!(value(&node, "a").await, Some(k("2")));
        clock.advance(Duration::from_millis(1));
        assert_eq!(value(&node, "a").await, None);
        assert!(
            !node
                .set_expiry(k("a"), Expiry::Never, WriteOptions::default())
                .await
                .expect("persist"),
            "an expired key cannot be persisted"
        );
        node.put(k("b"), k("1"), WriteOptions::default())
            .await
            .expect("put");
        let later = clock.now_ms() + 50;
        assert!(
            node.set_expiry(k("b"), Expiry::At(later), WriteOptions::default())
                .await
                .expect("expire")
        );
        let r = node.get(k("b"), ReadOptions::default()).await.expect("get");
        assert_eq!(r.resolved().and_then(|s| s.expires_at_ms), Some(later));
        assert!(
            node.set_expiry(k("b"), Expiry::Never, WriteOptions::default())
                .await
                .expect("persist")
        );
        clock.advance(Duration::from_millis(100));
        assert_eq!(value(&node, "b").await, Some(k("1")));
        // An expiry in the past deletes.
        let past = clock.now_ms() - 1;
        assert!(
            node.set_expiry(k("b"), Expiry::At(past), WriteOptions::default())
                .await
                .expect("expire")
        );
        assert_eq!(value(&node, "b").await, None);
    }

    #[tokio::test]
    async fn stale_contexts_make_siblings_and_a_merged_context_resolves() {
        let (node, _) = node();
        node.put(k("a"), k("base"), WriteOptions::default())
            .await
            .expect("put");
        let seen = node.get(k("a"), ReadOptions::default()).await.expect("get");
        for v in ["x", "y"] {
            let opts = WriteOptions {
                context: Some(seen.context.clone()),
                ..WriteOptions::default()
            };
            node.put(k("a"), k(v), opts).await.expect("put");
        }
        let both = node.get(k("a"), ReadOptions::default()).await.expect("get");
        let mut values: Vec<_> = both.siblings.iter().map(|s| s.value.clone()).collect();
        values.sort();
        assert_eq!(values, vec![k("x"), k("y")]);
        // LWW resolver picks the later write.
        assert_eq!(both.resolved().map(|s| s.value.clone()), Some(k("y")));
        let opts = WriteOptions {
            context: Some(both.context.clone()),
            ..WriteOptions::default()
        };
        node.put(k("a"), k("z"), opts).await.expect("put");
        let one = node.get(k("a"), ReadOptions::default()).await.expect("get");
        assert_eq!(one.siblings.len(), 1);
        assert_eq!(one.siblings[0].value, k("z"));
    }

    #[tokio::test]
    async fn siblings_are_bounded() {
        let (node, _) = node();
        for i in 0..10 {
            let opts = WriteOptions {
                context: Some(VersionVector::new()),
                ..WriteOptions::default()
            };
            node.put(k("a"), k(&i.to_string()), opts)
                .await
                .expect("put");
        }
        let r = node.get(k("a"), ReadOptions::default()).await.expect("get");
        assert_eq!(r.siblings.len(), 3);
        let mut values: Vec<_> = r.siblings.iter().map(|s| s.value.clone()).collect();
        values.sort();
        assert_eq!(values, vec![k("7"), k("8"), k("9")]);
    }

    #[tokio::test]
    async fn limits_and_unreachable_levels_are_errors() {
        let (node, _) = node();
        let err = node
            .put(k("123456789"), k("v"), WriteOptions::default())
            .await
            .expect_err("key too large");
        assert_eq!(err, KvError::KeyTooLarge { len: 9, max: 8 });
        let err = node
            .put(k("a"), Bytes::from(vec![0u8; 17]), WriteOptions::default())
            .await
            .expect_err("value too large");
        assert_eq!(err, KvError::ValueTooLarge { len: 17, max: 16 });
        let two = ReadOptions {
            consistency: Some(Consistency::Count(2)),
        };
        let err = node.get(k("a"), two).await.expect_err("R=2 on one node");
        assert!(
            matches!(
                err,
                KvError::Unavailable {
                    required: 2,
                    answered: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(value(&node, "a").await, None, "nothing was written");
    }

    #[test]
    fn purge_rule_needs_dead_and_past_grace() {
        let mut set = SiblingSet::default();
        set.update(&VersionVector::new(), 1, 1_000 << 16, None, None);
        let rec = Bytes::from(set.encode());
        assert!(!record_purgeable(&rec, 1_500, 1_000));
        assert!(record_purgeable(&rec, 2_001, 1_000));
        let mut live = SiblingSet::default();
        live.update(&VersionVector::new(), 1, 1_000 << 16, Some(k("v")), None);
        assert!(!record_purgeable(
            &Bytes::from(live.encode()),
            u64::MAX / 2,
            0
        ));
        assert!(!record_purgeable(
            &Bytes::from_static(b"junk"),
            u64::MAX / 2,
            0
        ));
    }
}
