//! The coordinator: every node accepts every request and runs it against
//! the key's replicas. No client is ever redirected.
//!
//! # Request path
//! 1. Validate limits (key and value size).
//! 2. Plan ([`plan`]): the key's preference list (`token = xxh3_64(key)`,
//!    then the ring walk, see [`crate::ring`]), the replicas known down
//!    dropped, and what the consistency level needs (a total count, or
//!    counts per data center for `LOCAL_*` and `EACH_QUORUM`), counted
//!    against the preference list. If the live replicas cannot meet it, the
//!    request fails at once with `Unavailable`.
//! 3. Reads ([`read`]): ask every live replica (this node's own copy
//!    directly), answer as soon as enough have answered with the merge of
//!    their records, and let the rest finish in the background: replicas
//!    whose record differs from the merge get the merge (read repair).
//! 4. Writes ([`mod@write`]): if this node is a replica, it coordinates: it
//!    applies the write to its own copy (minting the new version, see
//!    [`crate::replica`]), sends the new record to the other live replicas
//!    and a hint to a stand-in for each one down, and answers when enough
//!    have acknowledged; the others finish in the background. If this node
//!    is not a replica, it forwards the write to a live replica
//!    ([`forward`]), which coordinates it; when none can be reached it
//!    coordinates as a stand-in ([`stand_in`]).
//!
//! Every fan-out of the request paths goes through [`crate::rpc::Fanout`]
//! (`explain`, a diagnostic that waits for every replica, asks them all
//! with one `join_all`).
//!
//! A failed write may still have reached some replicas (as in every Dynamo
//! store): the client learns the outcome is unknown, never that it is false.

pub mod forward;
pub mod import;
pub mod plan;
pub mod read;
pub mod scan;
pub mod stand_in;
pub mod stats;
pub mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::api::{
    Consistency, Expiry, Explain, KvError, ReadOptions, ReadResult, ReplicaView, SiblingView,
    WriteOptions,
};
use crate::causality::Dot;
use crate::causality::types::Record;
use crate::id::NodeId;
use crate::membership::Membership;
use crate::repair::hints::HintStore;
use crate::replica::{Change, LocalReplica};
use crate::ring::token_of;
use crate::rpc::{Background, PeerError, Rpc};
use crate::store::LocalStore;

use forward::Forwards;
use plan::Planner;
use stats::{OpKind, OpStats};

/// The coordinator's settings (from the node's, see
/// [`crate::node::NodeConfig`]).
#[derive(Debug, Clone)]
pub struct CoordConfig {
    /// Largest key accepted, in bytes.
    pub key_bytes_max: usize,
    /// Largest value accepted, in bytes.
    pub value_bytes_max: usize,
    pub default_read: Consistency,
    pub default_write: Consistency,
    /// Hints held by stand-ins do not count towards W.
    pub strict_quorum: bool,
}

/// What the coordinator works with: this node's replica, its view of the
/// cluster, calls to peers, and the hints it holds.
pub struct Coordinator<S> {
    replica: Arc<LocalReplica<S>>,
    membership: Arc<Membership>,
    planner: Planner,
    rpc: Rpc,
    hints: Arc<HintStore>,
    config: CoordConfig,
    stats: Arc<OpStats>,
    forwards: Forwards,
    background: Background,
}

impl<S: LocalStore> Coordinator<S> {
    /// Calls to peers.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    pub fn new(
        replica: Arc<LocalReplica<S>>,
        membership: Arc<Membership>,
        rpc: Rpc,
        hints: Arc<HintStore>,
        config: CoordConfig,
        stats: Arc<OpStats>,
    ) -> Arc<Self> {
        let generation = replica.now_ms();
        Arc::new(Self {
            planner: Planner::new(Arc::clone(&membership)),
            replica,
            membership,
            rpc,
            hints,
            config,
            stats,
            forwards: Forwards::new(generation),
            background: Background::default(),
        })
    }

    fn id(&self) -> NodeId {
        self.replica.id()
    }

    /// Reads `key` at the options' level.
    pub async fn get(
        self: &Arc<Self>,
        key: Bytes,
        opts: ReadOptions,
    ) -> Result<ReadResult, KvError> {
        let started = self.replica.clock().monotonic();
        let out = self.read(key, opts).await;
        self.record(OpKind::Get, started);
        out
    }

    /// Reads `key`'s whole record, data types included, at the options'
    /// level (the reads of sets, hashes and counters).
    pub async fn get_record(
        self: &Arc<Self>,
        key: Bytes,
        opts: ReadOptions,
    ) -> Result<crate::causality::types::Record, KvError> {
        let started = self.replica.clock().monotonic();
        let out = self.read_record(key, opts).await;
        self.record(OpKind::Get, started);
        out
    }

    /// Writes `change` to `key` at the options' level.
    pub async fn put(
        self: &Arc<Self>,
        key: Bytes,
        change: Change,
        opts: WriteOptions,
    ) -> Result<crate::api::WriteOutcome, KvError> {
        let op = match change {
            Change::Delete => OpKind::Delete,
            _ => OpKind::Put,
        };
        let started = self.replica.clock().monotonic();
        let out = self.write(key, change, opts).await;
        self.record(op, started);
        out
    }

    /// Changes the expiry of a live key; false when it has no live value.
    pub async fn set_expiry(
        self: &Arc<Self>,
        key: Bytes,
        expiry: Expiry,
        opts: WriteOptions,
    ) -> Result<bool, KvError> {
        self.write(key, Change::Expiry(expiry), opts)
            .await
            .map(|o| o.applied)
    }

    /// Counts a coordinated operation begun at `started` (monotonic) for
    /// the load report and the metrics. (Timed in place, not by wrapping the
    /// operation's future: moving that future would copy it.)
    fn record(&self, op: OpKind, started: Duration) {
        let elapsed = self.replica.clock().monotonic().saturating_sub(started);
        self.stats.record(op, elapsed);
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        let max = self.config.key_bytes_max;
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

    /// Refuses a write whose key or value is over its limit, and logs the
    /// refusal (at most one line every 10 s, with how many were held back).
    fn check_write(&self, key: &[u8], change: &Change) -> Result<(), KvError> {
        let refused = self.check_key(key).and_then(|()| match change {
            Change::Put(v) if v.len() > self.config.value_bytes_max => {
                Err(KvError::ValueTooLarge {
                    len: v.len(),
                    max: self.config.value_bytes_max,
                })
            }
            _ => Ok(()),
        });
        log_size_refusal(&refused);
        refused
    }

    fn timeout(&self) -> Duration {
        self.rpc.timeout()
    }

    /// One replica's record of `key` (this node's own read directly).
    fn read_from(
        &self,
        id: NodeId,
        key: Bytes,
    ) -> impl std::future::Future<Output = Result<Record, PeerError>> + Send + 'static {
        use futures::future::Either;
        if id == self.id() {
            return Either::Left(std::future::ready(
                self.replica.read_record(&key).map_err(PeerError::from),
            ));
        }
        Either::Right(self.read_remote(id, key))
    }

    /// Another replica's record of `key`, without what this node's
    /// truncation point hides (that replica may not have heard of it yet).
    fn read_remote(
        &self,
        id: NodeId,
        key: Bytes,
    ) -> impl std::future::Future<Output = Result<Record, PeerError>> + Send + 'static {
        let at = self.replica.truncated_at();
        let read = self.rpc.read(id, key);
        async move {
            let mut record = read.await?;
            record.drop_truncated(at);
            Ok(record)
        }
    }

    /// A key's token, preference list and each replica's version.
    pub async fn explain(self: &Arc<Self>, key: Bytes) -> Result<Explain, KvError> {
        self.check_key(&key)?;
        let m = &self.membership;
        let token = token_of(&key);
        let prefs = m.preference_list(token);
        let now = self.replica.now_ms();
        let reads = prefs.iter().map(|&id| self.read_from(id, key.clone()));
        let answers = futures::future::join_all(reads).await;
        let replicas = prefs
            .iter()
            .zip(answers)
            .map(|(&id, answer)| {
                let (version, siblings, tombstones, expired) = match answer {
                    Ok(Record { strings: set, .. }) => (
                        Ok(set
                            .vv
                            .entries()
                            .iter()
                            .map(|&(actor, counter)| Dot { actor, counter })
                            .collect()),
                        set.live(now)
                            .map(|s| SiblingView {
                                dot: s.dot,
                                hlc: s.hlc,
                                value_bytes: s.value.as_ref().map_or(0, |v| v.len()),
                                expires_at_ms: s.expires_at_ms,
                            })
                            .collect(),
                        set.siblings.iter().filter(|s| s.value.is_none()).count(),
                        set.siblings
                            .iter()
                            .filter(|s| s.value.is_some() && !s.is_live(now))
                            .count(),
                    ),
                    Err(PeerError::Local(e)) => (Err(e), Vec::new(), 0, 0),
                    Err(e) => (
                        Err(KvError::Unavailable {
                            required: 1,
                            answered: 0,
                            why: e.to_string(),
                        }),
                        Vec::new(),
                        0,
                        0,
                    ),
                };
                ReplicaView {
                    node_id: id,
                    alive: m.is_alive(id),
                    version,
                    siblings,
                    tombstones,
                    expired,
                }
            })
            .collect();
        Ok(Explain {
            token,
            preference_list: prefs,
            replicas,
        })
    }

    /// Fan-outs of this coordinator still finishing in the background.
    pub fn background_fanouts(&self) -> usize {
        self.background.running()
    }
}

/// Logs a write refused for a key or value over its limit: at most one
/// line every 10 s (client writes and imports together), with how many
/// were held back.
fn log_size_refusal(result: &Result<(), KvError>) {
    if let Err(e @ (KvError::KeyTooLarge { .. } | KvError::ValueTooLarge { .. })) = result {
        static GATE: ringkv_env::log_every::LogEvery = ringkv_env::log_every::LogEvery::new(10_000);
        if let Some(held) = GATE.admit() {
            tracing::warn!(error = %e, held_back = held, "write refused: over a size limit");
        }
    }
}
