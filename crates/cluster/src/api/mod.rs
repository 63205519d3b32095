//! The key-value API every front end (RESP, HTTP) calls.
//!
//! This is the seam between the protocol crates and the cluster: a front end
//! turns bytes into a call on [`Kv`] and turns the result (or [`KvError`]) back
//! into bytes. Whether the answer comes from one local engine or from a quorum
//! of replicas is invisible here. Nothing in this module does I/O.

mod error;

use std::future::Future;

use bytes::Bytes;

use crate::causality::{CausalContext, Dot, Hlc};
use crate::id::NodeId;

/// How many replicas must answer a request.
///
/// Levels name a count relative to the replication factor N; `Count` is an
/// explicit R or W. On a single node every level is satisfied by the one
/// replica, except that a count above 1 cannot be met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Consistency {
    One,
    Two,
    Three,
    Quorum,
    All,
    LocalOne,
    LocalQuorum,
    EachQuorum,
    /// An explicit number of replicas (R for reads, W for writes).
    Count(u8),
}

impl Consistency {
    /// Parses a level name (`ONE`, `QUORUM`, `LOCAL_QUORUM`, ...) or a count.
    pub fn parse(text: &str) -> Option<Self> {
        let upper = text.trim().to_ascii_uppercase();
        Some(match upper.as_str() {
            "ONE" => Self::One,
            "TWO" => Self::Two,
            "THREE" => Self::Three,
            "QUORUM" => Self::Quorum,
            "ALL" => Self::All,
            "LOCAL_ONE" => Self::LocalOne,
            "LOCAL_QUORUM" => Self::LocalQuorum,
            "EACH_QUORUM" => Self::EachQuorum,
            other => {
                let n: u8 = other.parse().ok()?;
                if n == 0 {
                    return None;
                }
                Self::Count(n)
            }
        })
    }

    /// The number of answers needed out of `n` replicas in one data center.
    pub fn required(self, n: usize) -> usize {
        let quorum = n / 2 + 1;
        match self {
            Self::One | Self::LocalOne => 1,
            Self::Two => 2,
            Self::Three => 3,
            Self::Quorum | Self::LocalQuorum | Self::EachQuorum => quorum,
            Self::All => n,
            Self::Count(c) => c as usize,
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::One => "ONE".into(),
            Self::Two => "TWO".into(),
            Self::Three => "THREE".into(),
            Self::Quorum => "QUORUM".into(),
            Self::All => "ALL".into(),
            Self::LocalOne => "LOCAL_ONE".into(),
            Self::LocalQuorum => "LOCAL_QUORUM".into(),
            Self::EachQuorum => "EACH_QUORUM".into(),
            Self::Count(c) => c.to_string(),
        }
    }
}

/// Options of a read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// `None` takes the configured default (R).
    pub consistency: Option<Consistency>,
}

/// When a write applies, relative to what the coordinator reads first.
///
/// Conditions are checked against the coordinator's read at the requested
/// consistency; across replicas they are not atomic (see
/// docs/design/write-and-read-paths.md, "Consistency of the Redis-style
/// conditional commands").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Condition {
    #[default]
    Always,
    /// Only if no live value exists (Redis `NX`).
    IfAbsent,
    /// Only if a live value exists (Redis `XX`).
    IfPresent,
}

/// What a write does to the key's time to live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Expiry {
    /// No expiry (Redis `SET` without `EX`/`PX`/`KEEPTTL`).
    #[default]
    Never,
    /// Expire at this wall-clock time, in milliseconds since the Unix epoch.
    At(u64),
    /// Keep the expiry of the value being replaced (Redis `KEEPTTL`).
    Keep,
}

/// Options of a put or delete.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `None` takes the configured default (W).
    pub consistency: Option<Consistency>,
    /// The causal context from an earlier read: the write supersedes exactly
    /// what that read saw. `None` means "supersede what the coordinator sees
    /// now" (plain Redis `SET` semantics).
    pub context: Option<CausalContext>,
    pub condition: Condition,
    pub expiry: Expiry,
    /// Return the resolved value the write replaced (Redis `SET ... GET`).
    pub return_previous: bool,
}

/// One concurrent version of a key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub value: Bytes,
    /// Hybrid-logical-clock time of the write that made this sibling; the
    /// last-writer-wins resolver picks the greatest.
    pub hlc: Hlc,
    /// The node that coordinated the write (tie-break for equal `hlc`).
    pub actor: u64,
    pub expires_at_ms: Option<u64>,
}

/// The answer to a read: every live sibling plus the causal context that a
/// later write passes back to supersede them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadResult {
    /// Live (not deleted, not expired) siblings, in a stable order.
    pub siblings: Vec<Sibling>,
    pub context: CausalContext,
}

impl ReadResult {
    /// The sibling the last-writer-wins resolver picks, if any is live.
    pub fn resolved(&self) -> Option<&Sibling> {
        self.siblings.iter().max_by_key(|s| (s.hlc, s.actor))
    }

    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }
}

/// The answer to a put or delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// False when a [`Condition`] was not met and nothing was written.
    pub applied: bool,
    /// The resolved value before the write, when asked for.
    pub previous: Option<Sibling>,
    /// A data type's write: its integer reply (`INCR`: the value after
    /// it; `SADD`, `SREM`, `HSET`, `HDEL`: how many members or fields it
    /// added or removed; `HSETNX`: 1 when it set the field).
    pub integer: Option<i64>,
}

/// Why an import of a batch of records stopped (see [`Kv::import_records`]):
/// the records before `merged` all met their level; the one at `merged`
/// did not, for `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportStopped {
    pub merged: usize,
    pub error: KvError,
}

pub use error::KvError;

/// A snapshot of what a node knows about itself, for `INFO`, `/v1/status` and
/// the metrics.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub node_id: u64,
    pub version: &'static str,
    pub uptime_ms: u64,
    pub replication_factor: usize,
    pub default_read: String,
    pub default_write: String,
    /// Live keys in local storage (replicas of every range this node
    /// holds), as of the last count; `None` before the first count ends.
    pub keys: Option<KeyCount>,
    /// Live keys in the whole cluster from the last censuses (see
    /// [`Kv::cluster_keys`]); `None` before this node's first count ends.
    pub cluster_keys: Option<ClusterKeys>,
    pub storage: Vec<crate::store::StoreFigure>,
}

/// A node's live keys, counted exactly by a pass over its store (the key
/// census). Every figure named "keys" (INFO, `ringkv status`, `/metrics`,
/// gossip load) is this count; it is as old as `counted_at_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyCount {
    /// Keys with a live value.
    pub live: u64,
    /// Live keys whose every value has an expiry (Redis's `expires`).
    pub expiring: u64,
    /// Mean time to live of the expiring keys at the count, in ms.
    pub avg_ttl_ms: u64,
    /// Wall-clock time of the count, ms since the Unix epoch.
    pub counted_at_ms: u64,
    /// How long the pass took.
    pub took_ms: u64,
}

impl NodeInfo {
    /// The store's figure `name` (see [`crate::store::StoreFigure`]), 0
    /// when the store has none by that name.
    pub fn storage_figure(&self, name: &str) -> f64 {
        self.storage
            .iter()
            .find(|f| f.name == name)
            .map_or(0.0, |f| f.value)
    }
}

/// A node's life cycle in the ring. (Encoded by variant index: new
/// variants go at the end.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NodeStatus {
    /// Owns tokens, serves reads and writes.
    #[default]
    Normal,
    /// Taking ownership (streaming in); receives writes for its ranges.
    Joining,
    /// Handing its ranges away (decommission, removal).
    Leaving,
    /// Gone from the ring.
    Left,
    /// Joining, streaming done: for a settle period before NORMAL, reads
    /// consult the pending ring too, so a node that sees NORMAL first and
    /// one that sees it later still overlap on a quorum.
    JoinHandover,
    /// Leaving, streaming done: the same hand-over before LEFT.
    LeaveHandover,
}

impl NodeStatus {
    /// The name operators see: the hand-over steps show as JOINING and
    /// LEAVING (the movement's phase tells them apart).
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Joining | Self::JoinHandover => "JOINING",
            Self::Leaving | Self::LeaveHandover => "LEAVING",
            Self::Left => "LEFT",
        }
    }

    /// Joining, streaming or handing over.
    pub fn is_joining(self) -> bool {
        matches!(self, Self::Joining | Self::JoinHandover)
    }

    /// Leaving, streaming or handing over.
    pub fn is_leaving(self) -> bool {
        matches!(self, Self::Leaving | Self::LeaveHandover)
    }

    /// In the hand-over step of a join or leave.
    pub fn is_handover(self) -> bool {
        matches!(self, Self::JoinHandover | Self::LeaveHandover)
    }
}

/// The cluster's traffic at one moment, as a node saw it (the dashboard's
/// chart; see `node::history`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSample {
    /// Wall-clock time, ms since the Unix epoch.
    pub at_ms: u64,
    /// Sum of the alive nodes' coordinator operations per second.
    pub ops_per_sec: u64,
    /// The largest p99 of the alive nodes, in microseconds.
    pub p99_us: u64,
    pub nodes_down: u64,
}

/// One node as the cluster view shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    pub id: NodeId,
    /// The node's life: it grows at each start (removal grants name it).
    pub generation: u64,
    pub cluster_addr: String,
    pub resp_addr: String,
    pub http_addr: String,
    pub dc: String,
    pub rack: String,
    pub weight: u32,
    pub status: NodeStatus,
    /// Believed alive by the node answering.
    pub alive: bool,
    /// Suspicion level of the failure detector (0 for the answering node).
    pub phi: f64,
    /// Share of the ring this node is primary for (0..1).
    pub ownership: f64,
    pub tokens: usize,
    pub ops_per_sec: u64,
    pub p99_us: u64,
    pub disk_bytes: u64,
    pub keys: u64,
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// The node answering.
    pub self_id: u64,
    pub nodes: Vec<NodeView>,
    /// Replication factor per data center.
    pub replication: Vec<(String, usize)>,
    /// Every (token, owner) of the ring, in token order.
    pub tokens: Vec<(u64, u64)>,
    /// Hints the answering node holds, per target.
    pub hints_pending: Vec<HintsPending>,
    /// Hints the answering node dropped.
    pub hints_dropped: HintsDropped,
}

/// Hints a node holds for one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintsPending {
    pub target: NodeId,
    pub count: u64,
    pub bytes: u64,
}

/// Hints a node dropped since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintsDropped {
    /// Refused: the target's byte budget was used up.
    pub full: u64,
    /// Older than `hints.age_ms_max` at replay.
    pub expired: u64,
}

/// A data movement a node can be asked to drive (`ringkv decommission`,
/// `ringkv remove`, `ringkv cancel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveCommand {
    /// Stream this node's ranges to their new owners, then leave the ring.
    Decommission,
    /// Re-replicate the ranges of a dead node from its surviving replicas,
    /// then drop it from the ring. Under mutual TLS, with an admin's grant
    /// for each status of [`REMOVAL_STATUSES`](crate::net::message::REMOVAL_STATUSES).
    Remove(NodeId, Vec<crate::net::message::RemovalGrant>),
    /// Stop the join, decommission or removal this node drives.
    Cancel,
}

/// A data movement: what changes hands when the ring changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MovementKind {
    /// A node takes its place in the ring, streaming in what it gains.
    #[default]
    Join,
    /// A live node streams its data away and leaves the ring.
    Decommission,
    /// A dead node's data is re-replicated from its surviving replicas,
    /// then it is dropped from the ring.
    Remove,
}

impl MovementKind {
    /// The name operators see.
    pub fn name(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Decommission => "decommission",
            Self::Remove => "remove",
        }
    }
}

/// Where a movement is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MovementPhase {
    /// Announced; waiting for writes started under the old ring to finish.
    #[default]
    Settling,
    /// Copying the token intervals that change hands.
    Streaming,
    /// Streaming done; reads consult both rings for a settle period.
    HandingOver,
    /// A leaving node gives the hints it holds to a peer.
    PassingOnHints,
    Done,
    Cancelled,
    Failed,
}

impl MovementPhase {
    /// The name operators see.
    pub fn name(self) -> &'static str {
        match self {
            Self::Settling => "settling",
            Self::Streaming => "streaming",
            Self::HandingOver => "handing over",
            Self::PassingOnHints => "passing on hints",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    /// The movement has ended, one way or another.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Cancelled | Self::Failed)
    }
}

/// Progress of the movement a node drives (a join, a decommission or a
/// removal), shown by `ringkv status` and `GET /v1/movement`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MovementStatus {
    pub kind: MovementKind,
    /// The node whose ranges move (this node, or the removed one).
    pub node: NodeId,
    pub phase: MovementPhase,
    pub ranges_done: u64,
    pub ranges_total: u64,
    /// Records and bytes copied so far.
    pub keys: u64,
    pub bytes: u64,
    /// The stream rate now, bytes per second (it yields to client traffic,
    /// up to `movement.bytes_per_sec_max`).
    pub rate_bytes_per_sec: u64,
    /// Wall-clock start and last change, ms.
    pub started_ms: u64,
    pub updated_ms: u64,
    /// The last copy failure (retried), if any.
    pub last_error: Option<String>,
}

/// Anti-entropy progress and figures of one node (`ringkv repair`,
/// `GET /v1/repair`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairStatus {
    /// An on-demand pass is running.
    pub running: bool,
    /// Ranges of the on-demand pass (running or last) done, and in all.
    pub ranges_done: u64,
    pub ranges_total: u64,
    /// Ranges of the background pass done so far, and in all.
    pub background_ranges_done: u64,
    pub background_ranges_total: u64,
    /// Full passes completed (on demand or in the background).
    pub passes_completed: u64,
    /// Ranges this node replicates.
    pub ranges_replicated: u64,
    /// Ranges whose last sync with every other replica succeeded.
    pub ranges_in_sync: u64,
    /// Time since the least recently fully synced range was synced (since
    /// the node started when it never was), in ms.
    pub oldest_unsynced_range_age_ms: u64,
    /// Keys whose record changed here or on a peer, since start.
    pub keys_repaired: u64,
    /// Anti-entropy bytes sent and received, since start.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Stored records that failed to decode: skipped, never sent.
    pub corrupt_records_skipped: u64,
    /// Range syncs that failed (peer unreachable, timeouts, ...).
    pub sync_failures: u64,
}

/// One replica's copy of a key, for `explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaView {
    pub node_id: NodeId,
    pub alive: bool,
    /// The replica's version vector, one entry per actor (its writes
    /// seen as a dot: actor and counter), or why it could not be read.
    pub version: Result<Vec<Dot>, KvError>,
    /// Live siblings held.
    pub siblings: Vec<SiblingView>,
    pub tombstones: usize,
    /// Values held past their expiry (dead, not yet purged).
    pub expired: usize,
}

/// One live sibling a replica holds, as `explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiblingView {
    pub dot: Dot,
    pub hlc: u64,
    pub value_bytes: usize,
    /// Wall-clock expiry, ms since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

/// One replicated range's anti-entropy state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeState {
    /// The range `(start, end]` of tokens.
    pub start: u64,
    pub end: u64,
    pub replicas: Vec<u64>,
    /// Wall-clock ms of the last sync that reached every other replica;
    /// `None` while some replica was never synced.
    pub synced_at_ms: Option<u64>,
}

/// Where a key lives and what each replica holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Explain {
    pub token: u64,
    pub preference_list: Vec<u64>,
    pub replicas: Vec<ReplicaView>,
}

/// One live key a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedKey {
    pub key: Bytes,
    /// Bytes of its largest live value.
    pub value_bytes: usize,
    /// Wall-clock expiry of the key (ms since the Unix epoch), when every
    /// live value has one: the latest of them.
    pub expires_at_ms: Option<u64>,
    /// Live siblings (more than one: concurrent writes not yet resolved).
    pub siblings: usize,
    /// Its type as Redis names it: `string` (a counter too), `set`,
    /// `hash`.
    pub kind: &'static str,
}

/// One page of a scan of the whole keyspace, in token order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub keys: Vec<ScannedKey>,
    /// The token the next page starts from; 0 when the scan is done.
    pub next: u64,
}

/// The number of live keys in the whole cluster (`DBSIZE`), worked out
/// from every node's last key census.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterKeys {
    /// The sum of the censuses divided by the replicas each key has.
    pub keys: u64,
    /// True when it is exact: one node holding every key (a cluster of one,
    /// or one replica per key on one node). Otherwise an estimate, exact
    /// once every replica holds every key it should and each census is
    /// newer than the last write.
    pub exact: bool,
    /// Nodes whose census counted (members of the current ring).
    pub nodes: usize,
    /// Replicas of each key in the current ring.
    pub replicas: usize,
}

/// The key-value API. Implemented by the coordinator; called by every front
/// end. Keys and values are opaque bytes; limits are enforced here so every
/// front end reports them the same way.
pub trait Kv: Send + Sync + 'static {
    /// Reads every live sibling of `key` and its causal context.
    fn get(
        &self,
        key: Bytes,
        opts: ReadOptions,
    ) -> impl Future<Output = Result<ReadResult, KvError>> + Send;

    /// Reads `key`'s whole record, its data types included (the reads of
    /// sets, hashes and counters: see
    /// [`crate::causality::types::Record::kind`]); the default refuses.
    fn get_record(
        &self,
        key: Bytes,
        opts: ReadOptions,
    ) -> impl Future<Output = Result<crate::causality::types::Record, KvError>> + Send {
        let _ = (key, opts);
        async {
            Err(KvError::InvalidArgument(
                "data types are not served here".into(),
            ))
        }
    }

    /// Writes `value` under `key`.
    fn put(
        &self,
        key: Bytes,
        value: Bytes,
        opts: WriteOptions,
    ) -> impl Future<Output = Result<WriteOutcome, KvError>> + Send;

    /// Deletes `key` with a versioned tombstone. `applied` is true when a live
    /// value existed (Redis `DEL` counts it).
    fn delete(
        &self,
        key: Bytes,
        opts: WriteOptions,
    ) -> impl Future<Output = Result<WriteOutcome, KvError>> + Send;

    /// A write of a data type (`INCR`, `SADD`, `HSET`, ...; see
    /// [`crate::replica::TypedChange`]), answered with its integer reply in
    /// [`WriteOutcome::integer`]. Refused while a member of the cluster
    /// cannot read records of data types (a rolling upgrade, see
    /// [`crate::formats`]); the default refuses it always.
    fn write_typed(
        &self,
        key: Bytes,
        change: crate::replica::TypedChange,
        opts: WriteOptions,
    ) -> impl Future<Output = Result<WriteOutcome, KvError>> + Send {
        let _ = (key, change, opts);
        async {
            Err(KvError::InvalidArgument(
                "data types are not served here".into(),
            ))
        }
    }

    /// Changes the expiry of a live key without changing its value; false when
    /// the key has no live value. `Expiry::Keep` is a no-op that reports
    /// existence.
    fn set_expiry(
        &self,
        key: Bytes,
        expiry: Expiry,
        opts: WriteOptions,
    ) -> impl Future<Output = Result<bool, KvError>> + Send;

    /// Hands the writes this node applied but left buffered to the OS (one
    /// system call for all of them; see [`crate::replica::LogWrite`]). A
    /// front end calls it once before sending a batch of replies: an
    /// acknowledged write, and any value a read returned, must survive a
    /// crash of the process. An error means they may not: send none of the
    /// replies (close the connection).
    fn release_writes(&self) -> Result<(), KvError> {
        Ok(())
    }

    /// A hint that `keys` are about to be read or written (the keys of a
    /// pipeline): their records may be brought into memory's fastest
    /// levels together. Changes nothing; the default does nothing.
    fn prefetch(&self, _keys: &[&[u8]]) {}

    /// True while writes wait for [`Kv::release_writes`] (cheap).
    fn writes_buffered(&self) -> bool {
        false
    }

    /// Counts live keys exactly (a full local scan; `DBSIZE`).
    fn count_keys(&self) -> impl Future<Output = Result<u64, KvError>> + Send;

    /// Live keys in the whole cluster (`DBSIZE`, `INFO keyspace`); by
    /// default this node's count.
    fn cluster_keys(&self) -> impl Future<Output = Result<ClusterKeys, KvError>> + Send {
        async {
            Ok(ClusterKeys {
                keys: self.count_keys().await?,
                exact: true,
                nodes: 1,
                replicas: 1,
            })
        }
    }

    /// One page of the live keys of the whole cluster from token `cursor`
    /// on (0 starts a scan), about `count` of them, read at the options'
    /// level from the replicas of each range. A key live for the whole of
    /// a scan is returned at least once, whatever joins or leaves
    /// meanwhile; a key may be returned twice.
    fn scan(
        &self,
        cursor: u64,
        count: usize,
        opts: ReadOptions,
    ) -> impl Future<Output = Result<ScanPage, KvError>> + Send {
        let _ = (cursor, count, opts);
        async {
            Err(KvError::InvalidArgument(
                "key scans are not supported here".into(),
            ))
        }
    }

    /// What the node knows about itself.
    fn info(&self) -> NodeInfo;

    /// The current wall-clock time of the node, in ms (for TTL answers).
    fn now_ms(&self) -> u64;

    /// The cluster's recent traffic, oldest first (empty: not kept).
    fn load_history(&self) -> Vec<LoadSample> {
        Vec::new()
    }

    /// The node's slow log and latency monitor (`None`: not kept).
    fn slow_log(&self) -> Option<std::sync::Arc<crate::slowlog::SlowLog>> {
        None
    }

    /// The cluster as this node sees it.
    fn cluster(&self) -> ClusterView {
        ClusterView::default()
    }

    /// Anti-entropy progress, where the implementation has it.
    fn repair_status(&self) -> Option<RepairStatus> {
        None
    }

    /// Every range this node replicates and when it last completed a sync
    /// with all its other replicas.
    fn range_states(&self) -> Vec<RangeState> {
        Vec::new()
    }

    /// Starts a full anti-entropy pass over every range this node
    /// replicates, in the background; false when one is already running.
    fn start_repair(&self) -> Result<bool, KvError> {
        Err(KvError::InvalidArgument(
            "repair is not supported here".into(),
        ))
    }

    /// The movement this node drives or last drove, if any.
    fn movement(&self) -> Option<MovementStatus> {
        None
    }

    /// Starts (or cancels) a data movement in the background.
    fn start_movement(&self, cmd: MoveCommand) -> Result<MovementStatus, KvError> {
        let _ = cmd;
        Err(KvError::InvalidArgument(
            "data movement is not supported here".into(),
        ))
    }

    /// One page of whole records (key, encoded record) of live keys from
    /// token `cursor` on, read like [`Kv::scan`]; and the next cursor (0:
    /// done). What `ringkv export` writes (see [`crate::export`]).
    fn export_page(
        &self,
        cursor: u64,
        count: usize,
        opts: ReadOptions,
    ) -> impl Future<Output = Result<(Vec<(Bytes, Bytes)>, u64), KvError>> + Send {
        let _ = (cursor, count, opts);
        async {
            Err(KvError::InvalidArgument(
                "export is not supported here".into(),
            ))
        }
    }

    /// Merges whole records `(key, encoded record)` into the replicas of
    /// their keys at the options' level, versioning nothing anew (what
    /// `ringkv import` does). Stops at the first record refused or short of
    /// its level; the records before it all met theirs.
    fn import_records(
        &self,
        records: Vec<(Bytes, Bytes)>,
        opts: WriteOptions,
    ) -> impl Future<Output = Result<(), ImportStopped>> + Send {
        let _ = (records, opts);
        async {
            Err(ImportStopped {
                merged: 0,
                error: KvError::InvalidArgument("import is not supported here".into()),
            })
        }
    }

    /// Takes a snapshot of this node's data while writes go on (see
    /// [`crate::snapshot`]), tagged `tag` (the time when `None`), and copies
    /// it to the backup directory when `copy`.
    fn snapshot(
        &self,
        tag: Option<String>,
        copy: bool,
    ) -> impl Future<Output = Result<crate::snapshot::SnapshotInfo, KvError>> + Send {
        let _ = (tag, copy);
        async {
            Err(KvError::InvalidArgument(
                "snapshots are not supported here".into(),
            ))
        }
    }

    /// This node's snapshots, oldest first.
    fn snapshots(&self) -> Result<Vec<crate::snapshot::SnapshotInfo>, KvError> {
        Err(KvError::InvalidArgument(
            "snapshots are not supported here".into(),
        ))
    }

    /// Removes this node's snapshot tagged `tag`, or all of them; the tags
    /// removed.
    fn clear_snapshots(&self, tag: Option<String>) -> Result<Vec<String>, KvError> {
        let _ = tag;
        Err(KvError::InvalidArgument(
            "snapshots are not supported here".into(),
        ))
    }

    /// Empties the whole cluster (see [`crate::truncate`]): every node
    /// must be up; nothing written before the truncation point is read
    /// again anywhere.
    fn truncate(&self) -> impl Future<Output = Result<crate::truncate::Truncated, KvError>> + Send {
        async {
            Err(KvError::InvalidArgument(
                "truncation is not supported here".into(),
            ))
        }
    }

    /// A key's token, preference list and each replica's version.
    fn explain(&self, key: Bytes) -> impl Future<Output = Result<Explain, KvError>> + Send {
        let _ = key;
        async {
            Err(KvError::InvalidArgument(
                "explain is not supported here".into(),
            ))
        }
    }
}
