//! A node: its services, assembled in one place ([`builder`]), behind the
//! [`Kv`] API for the front ends and the [`Handler`] for its peers.
//!
//! Each service owns its state and reaches what it needs through narrow
//! handles:
//! - [`Coordinator`]: client reads and writes (`crate::coord`).
//! - [`Gossip`]: membership rounds and pushes (`crate::membership`).
//! - [`Hints`]: hinted handoff (`crate::repair::hints`).
//! - [`AntiEntropy`]: Merkle-tree repair (`crate::repair::anti_entropy`).
//! - [`Movements`]: joins, decommissions, removals, cleanup
//!   (`crate::movement`).
//!
//! Below them: the [`LocalReplica`] (this node's versioned copy, over the
//! [`LocalStore`]), [`Membership`] (the cluster as this node sees it) and
//! [`Rpc`](crate::rpc::Rpc) (calls to peers over the
//! [`Transport`](crate::net::Transport)).

pub mod builder;
pub mod census;
mod handler;
pub mod history;
pub mod storage;

use std::sync::Arc;

use bytes::Bytes;

use crate::api::{
    ClusterView, Consistency, Expiry, Explain, HintsDropped, Kv, KvError, MoveCommand,
    MovementStatus, NodeInfo, NodeView, RangeState, ReadOptions, ReadResult, RepairStatus,
    WriteOptions, WriteOutcome,
};
use crate::causality::SiblingSet;
use crate::coord::Coordinator;
use crate::id::NodeId;
use crate::membership::gossip::Gossip;
use crate::membership::{Membership, MembershipConfig};
use crate::movement::{MoveConfig, Movements};
use crate::net::Handler;
use crate::repair::anti_entropy::{AntiEntropy, AntiEntropyConfig};
use crate::repair::hints::{HintConfig, Hints};
use crate::replica::{Change, LocalReplica, store_error};
use crate::store::{LocalStore, StoreFigure};

pub use builder::{BuildError, NodeBuilder, NodePlace};
pub use storage::{NodeStorage, StorageCloser, StorageError};

/// The record cache's default size: 512 MiB, about two million records
/// of 100-byte values.
pub const RECORD_CACHE_BYTES_DEFAULT: usize = 512 * 1024 * 1024;

/// Settings of a node.
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
    /// How long a new node waits for a seed to answer.
    pub join_timeout_ms: u64,
    pub membership: MembershipConfig,
    pub hints: HintConfig,
    pub anti_entropy: AntiEntropyConfig,
    pub movement: MoveConfig,
    /// The slow log and the latency monitor.
    pub slowlog: crate::slowlog::SlowLogConfig,
    /// Where snapshots are copied when a copy is asked for (another disk
    /// or mount); `None`: copies are refused.
    pub backup_dir: Option<std::path::PathBuf>,
    /// Memory for the newest records of this node's keys (see
    /// [`crate::record_cache`]); 0: none, every read searches the store.
    pub record_cache_bytes: usize,
    /// A weakness planted on purpose, for the simulation only: merges from
    /// peers leave the record cache stale.
    pub plant_stale_record_cache: bool,
    /// What a client write may make a data type (a set, a hash, a
    /// counter) hold.
    pub type_limits: crate::replica::TypeLimits,
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
            join_timeout_ms: 30_000,
            membership: MembershipConfig::default(),
            hints: HintConfig::default(),
            anti_entropy: AntiEntropyConfig::default(),
            movement: MoveConfig::default(),
            slowlog: crate::slowlog::SlowLogConfig::default(),
            backup_dir: None,
            record_cache_bytes: RECORD_CACHE_BYTES_DEFAULT,
            plant_stale_record_cache: false,
            type_limits: crate::replica::TypeLimits::default(),
        }
    }
}

/// A ringkv node: replica of its ranges, coordinator of any request.
pub struct Node<S> {
    inner: Arc<Services<S>>,
}

impl<S> Clone for Node<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// A node's services and the layers under them.
struct Services<S> {
    replica: Arc<LocalReplica<S>>,
    membership: Arc<Membership>,
    coord: Arc<Coordinator<S>>,
    gossip: Gossip,
    hints: Arc<Hints<S>>,
    anti_entropy: Arc<AntiEntropy<S>>,
    movements: Arc<Movements<S>>,
    census: census::Census,
    slow_log: Arc<crate::slowlog::SlowLog>,
    history: history::LoadHistory,
    config: NodeConfig,
    files: crate::node_files::NodeFiles,
    /// Held while a truncation point is recorded, so two points never
    /// race to the `TRUNCATED` file (the greater one always stays).
    truncating: tokio::sync::Mutex<()>,
    /// When this node last sent its truncation point back to each peer
    /// (see [`Node::tell_if_stale`]).
    truncation_told: parking_lot::Mutex<std::collections::HashMap<NodeId, u64>>,
    /// Which record formats each member reads (the data types' gate).
    formats: crate::formats::RecordFormats,
    started_ms: u64,
}

impl<S: LocalStore> Node<S> {
    pub fn id(&self) -> NodeId {
        self.inner.replica.id()
    }

    pub fn store(&self) -> &S {
        self.inner.replica.store()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// This node's own files (id, epoch, tokens, truncation point, ...).
    pub(crate) fn census(&self) -> &census::Census {
        &self.inner.census
    }

    pub(crate) fn truncation_told(
        &self,
    ) -> &parking_lot::Mutex<std::collections::HashMap<NodeId, u64>> {
        &self.inner.truncation_told
    }

    /// The lock [`Node::truncate_locally`] holds.
    /// Which record formats each member reads (see [`crate::formats`]).
    pub(crate) fn record_formats(&self) -> &crate::formats::RecordFormats {
        &self.inner.formats
    }

    pub(crate) fn truncating(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.truncating
    }

    pub fn files(&self) -> &crate::node_files::NodeFiles {
        &self.inner.files
    }

    pub fn replica(&self) -> &Arc<LocalReplica<S>> {
        &self.inner.replica
    }

    pub fn membership(&self) -> &Arc<Membership> {
        &self.inner.membership
    }

    pub fn coordinator(&self) -> &Arc<Coordinator<S>> {
        &self.inner.coord
    }

    pub fn gossip(&self) -> &Gossip {
        &self.inner.gossip
    }

    pub fn hints(&self) -> &Arc<Hints<S>> {
        &self.inner.hints
    }

    pub fn anti_entropy(&self) -> &Arc<AntiEntropy<S>> {
        &self.inner.anti_entropy
    }

    pub fn movements(&self) -> &Arc<Movements<S>> {
        &self.inner.movements
    }

    /// This node as a request handler for its peers.
    pub fn handler(&self) -> Arc<dyn Handler> {
        Arc::new(self.clone())
    }

    /// Makes every acknowledged write durable (shutdown).
    pub fn sync(&self) -> Result<(), KvError> {
        self.store().sync().map_err(store_error)
    }

    /// This node's own stored record of `key` (tests, `explain`).
    pub fn debug_local_record(&self, key: &[u8]) -> SiblingSet {
        self.inner.replica.read(key).unwrap_or_default()
    }

    /// Hands this node's buffered writes to the OS (see
    /// [`crate::replica::LogWrite`]).
    fn release_buffered(&self) -> Result<(), KvError> {
        self.store()
            .release_buffered()
            .map_err(|e| KvError::Storage(format!("log write failed: {e}")))
    }
}

impl<S: LocalStore> Kv for Node<S> {
    fn release_writes(&self) -> Result<(), KvError> {
        self.release_buffered()
    }

    fn writes_buffered(&self) -> bool {
        self.store().has_buffered()
    }

    fn prefetch(&self, keys: &[&[u8]]) {
        self.inner.replica.prefetch(keys);
    }

    async fn get(&self, key: Bytes, opts: ReadOptions) -> Result<ReadResult, KvError> {
        self.inner.coord.get(key, opts).await
    }

    async fn get_record(
        &self,
        key: Bytes,
        opts: ReadOptions,
    ) -> Result<crate::causality::types::Record, KvError> {
        self.inner.coord.get_record(key, opts).await
    }

    async fn put(
        &self,
        key: Bytes,
        value: Bytes,
        opts: WriteOptions,
    ) -> Result<WriteOutcome, KvError> {
        self.inner.coord.put(key, Change::Put(value), opts).await
    }

    async fn delete(&self, key: Bytes, opts: WriteOptions) -> Result<WriteOutcome, KvError> {
        self.inner.coord.put(key, Change::Delete, opts).await
    }

    async fn write_typed(
        &self,
        key: Bytes,
        change: crate::replica::TypedChange,
        opts: WriteOptions,
    ) -> Result<WriteOutcome, KvError> {
        self.data_types_gate()?;
        self.inner.coord.put(key, Change::Typed(change), opts).await
    }

    async fn set_expiry(
        &self,
        key: Bytes,
        expiry: Expiry,
        opts: WriteOptions,
    ) -> Result<bool, KvError> {
        self.inner.coord.set_expiry(key, expiry, opts).await
    }

    async fn count_keys(&self) -> Result<u64, KvError> {
        let count = self.inner.census.count(&self.inner.replica).await?;
        Ok(count.live)
    }

    async fn cluster_keys(&self) -> Result<crate::api::ClusterKeys, KvError> {
        // The last census, as INFO and the status show it (a count now only
        // before the first one ends): DBSIZE stays cheap on a large store.
        let own = match self.inner.census.last() {
            Some(count) => count.live,
            None => self.inner.census.count(&self.inner.replica).await?.live,
        };
        Ok(census::cluster_keys(
            &self.inner.membership,
            own,
            &self.inner.census,
        ))
    }

    async fn scan(
        &self,
        cursor: u64,
        count: usize,
        opts: ReadOptions,
    ) -> Result<crate::api::ScanPage, KvError> {
        self.inner.coord.scan(cursor, count, opts).await
    }

    async fn export_page(
        &self,
        cursor: u64,
        count: usize,
        opts: ReadOptions,
    ) -> Result<(Vec<(Bytes, Bytes)>, u64), KvError> {
        let (records, next) = self.inner.coord.scan_records(cursor, count, opts).await?;
        let records = records
            .into_iter()
            .map(|(_, key, set)| (key, Bytes::from(set.encode())))
            .collect();
        Ok((records, next))
    }

    async fn import_records(
        &self,
        records: Vec<(Bytes, Bytes)>,
        opts: WriteOptions,
    ) -> Result<(), crate::api::ImportStopped> {
        let data_types = self.data_types_gate().is_ok();
        self.inner
            .coord
            .merge_records(records, opts, data_types)
            .await
    }

    async fn snapshot(
        &self,
        tag: Option<String>,
        copy: bool,
    ) -> Result<crate::snapshot::SnapshotInfo, KvError> {
        let inner = Arc::clone(&self.inner);
        let backup = match (copy, &inner.config.backup_dir) {
            (false, _) => None,
            (true, Some(dir)) => Some(dir.clone()),
            (true, None) => {
                return Err(KvError::InvalidArgument(
                    "no backup directory: set [backup] dir to copy snapshots".into(),
                ));
            }
        };
        crate::exec::blocking(move || {
            let epoch = inner
                .files
                .epoch()
                .map_err(|e| KvError::Storage(format!("reading the epoch: {e}")))?;
            let taker = crate::snapshot::Taker {
                store: inner.replica.store(),
                data_dir: inner.files.dir(),
                node_id: inner.replica.id(),
                epoch,
                now_ms: inner.replica.now_ms(),
                grace_ms: inner.config.tombstone_grace_ms,
            };
            let info = taker.take(tag.as_deref(), backup.as_deref())?;
            tracing::info!(tag = %info.meta.tag, tables = info.meta.tables, bytes = info.meta.bytes,
                copied_to = ?info.copied_to, "snapshot taken");
            Ok(info)
        })
        .await
        .map_err(|e| KvError::Storage(format!("snapshot task failed: {e}")))?
    }

    async fn truncate(&self) -> Result<crate::truncate::Truncated, KvError> {
        self.truncate_cluster().await
    }

    fn snapshots(&self) -> Result<Vec<crate::snapshot::SnapshotInfo>, KvError> {
        Ok(crate::snapshot::list(self.inner.files.dir())?)
    }

    fn clear_snapshots(&self, tag: Option<String>) -> Result<Vec<String>, KvError> {
        Ok(crate::snapshot::clear(
            self.inner.files.dir(),
            tag.as_deref(),
        )?)
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
            keys: self.inner.census.last(),
            cluster_keys: self
                .inner
                .census
                .last()
                .map(|c| census::cluster_keys(&inner.membership, c.live, &inner.census)),
            storage: {
                let mut figures = self.store().stats();
                figures.extend(record_cache_figures(&inner.replica.cache_stats()));
                figures
            },
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.replica.now_ms()
    }

    fn load_history(&self) -> Vec<crate::api::LoadSample> {
        self.inner.history.samples()
    }

    fn slow_log(&self) -> Option<Arc<crate::slowlog::SlowLog>> {
        Some(Arc::clone(&self.inner.slow_log))
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
                generation: s.generation,
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
                status: s.status,
                ops_per_sec: s.load.ops_per_sec,
                p99_us: s.load.p99_us,
                disk_bytes: s.load.disk_bytes,
                keys: s.load.keys,
            })
            .collect();
        let (full, expired) = self.inner.hints.store().dropped();
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
            hints_pending: self.inner.hints.pending(),
            hints_dropped: HintsDropped { full, expired },
        }
    }

    fn movement(&self) -> Option<MovementStatus> {
        self.inner.movements.status()
    }

    fn start_movement(&self, cmd: MoveCommand) -> Result<MovementStatus, KvError> {
        self.inner.movements.command(cmd)
    }

    fn repair_status(&self) -> Option<RepairStatus> {
        Some(self.inner.anti_entropy.status())
    }

    fn start_repair(&self) -> Result<bool, KvError> {
        self.inner.anti_entropy.start_repair()
    }

    fn range_states(&self) -> Vec<RangeState> {
        let ae = &self.inner.anti_entropy;
        ae.replicated_ranges()
            .into_iter()
            .map(|(range, replicas)| RangeState {
                start: range.start,
                end: range.end,
                synced_at_ms: ae.ledger().synced_at(range.end),
                replicas,
            })
            .collect()
    }

    async fn explain(&self, key: Bytes) -> Result<Explain, KvError> {
        self.inner.coord.explain(key).await
    }
}

/// The record cache's figures, beside the store's (`INFO`, `/v1/status`,
/// `ringkv_storage_record_cache_*`).
pub fn record_cache_figures(s: &crate::record_cache::RecordCacheStats) -> Vec<StoreFigure> {
    vec![
        StoreFigure::gauge(
            "record_cache_entries",
            s.entries as f64,
            "Records held in the record cache",
        ),
        StoreFigure::gauge(
            "record_cache_bytes",
            s.bytes as f64,
            "Bytes the record cache holds (records, keys and bookkeeping)",
        ),
        StoreFigure::gauge(
            "record_cache_capacity_bytes",
            s.bytes_max as f64,
            "The record cache's capacity in bytes ([storage] record_cache_bytes)",
        ),
        StoreFigure::counter(
            "record_cache_hits",
            s.hits,
            "Record reads answered by the record cache (a complete cache answers misses too)",
        ),
        StoreFigure::counter(
            "record_cache_misses",
            s.misses,
            "Record reads the record cache passed to the store",
        ),
        StoreFigure::counter(
            "record_cache_evictions",
            s.evictions,
            "Records evicted from the record cache to stay within its capacity",
        ),
        StoreFigure::gauge(
            "record_cache_complete",
            f64::from(u8::from(s.complete)),
            "1 while the record cache holds every record of this node (a miss means absent)",
        ),
    ]
}
