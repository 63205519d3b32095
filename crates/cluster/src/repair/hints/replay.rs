//! [`Hints`]: a node's hinted handoff. It takes hints from coordinators
//! (`Request::Hint`), replays the hints it holds to their owners once they
//! are seen alive again, hands hints of a node that left the ring to the
//! keys' current replicas, and gives its hints away when this node leaves.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{DropReason, HintStore};
use crate::api::KvError;
use crate::causality::types::Record;
use crate::id::{NodeId, display};
use crate::membership::Membership;
use crate::net::message::{ErrorDetail, NodeStatus, Response};
use crate::replica::LocalReplica;
use crate::ring::token_of;
use crate::rpc::{All, Call, Fanout, PeerError, Rpc};
use crate::store::LocalStore;

/// Hints moved per step when this node gives its hints away.
const PASS_ON_BATCH_MAX: usize = 256;

/// Why a hint was not delivered (it stays held).
#[derive(Debug, thiserror::Error)]
enum Undelivered {
    #[error("replica {} is down", display(*.0))]
    ReplicaDown(NodeId),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("{0}")]
    Replicas(String),
}

/// A node's hinted handoff.
pub struct Hints<S> {
    store: Arc<HintStore>,
    membership: Arc<Membership>,
    rpc: Rpc,
    replica: Arc<LocalReplica<S>>,
    replay_interval: Duration,
}

impl<S: LocalStore> Hints<S> {
    pub fn new(
        store: Arc<HintStore>,
        membership: Arc<Membership>,
        rpc: Rpc,
        replica: Arc<LocalReplica<S>>,
        replay_interval: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            membership,
            rpc,
            replica,
            replay_interval,
        })
    }

    /// The hints held here.
    pub fn store(&self) -> &Arc<HintStore> {
        &self.store
    }

    /// Holds a hint a coordinator sent (`Request::Hint`): answered `Merged`
    /// once stored.
    pub fn accept(&self, target: NodeId, key: &[u8], record: &Bytes) -> Response {
        if Record::decode(record).is_err() {
            return Response::error(ErrorDetail::InvalidArgument(
                "hinted record does not decode".into(),
            ));
        }
        let now = self.replica.now_ms();
        match self.store.add(target, now, key, record) {
            Ok(true) => Response::Merged,
            Ok(false) => Response::error(ErrorDetail::Unavailable {
                required: 1,
                answered: 0,
                why: "hint budget for the target is full".into(),
            }),
            Err(e) => Response::from(&crate::replica::store_error(e)),
        }
    }

    /// Replays held hints to their owners until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let interval = self.replay_interval.max(Duration::from_millis(1));
        crate::exec::every(interval, shutdown, || async {
            self.replay_once().await;
        })
        .await;
    }

    /// One replay pass: every live target gets its oldest hints, at most
    /// `replay_per_sec_max` per second. Returns how many were delivered.
    pub async fn replay_once(&self) -> u64 {
        let config = self.store.config().clone();
        let mut delivered = 0;
        for (target, _) in self.store.pending() {
            // A target that has left the ring will never take its hints:
            // they go to the keys' current replicas instead.
            let gone = self
                .membership
                .status(target)
                .is_none_or(|s| s == NodeStatus::Left);
            if !gone && !self.membership.is_alive(target) {
                continue;
            }
            let before = delivered;
            loop {
                let batch = match self.store.oldest(target, config.replay_batch_max) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading hints failed");
                        break;
                    }
                };
                if batch.is_empty() {
                    break;
                }
                let now = self.replica.now_ms();
                let started = tokio::time::Instant::now();
                // A batch goes out at once: merges commute, so hints of one
                // key may land in any order.
                let mut sends = Vec::with_capacity(batch.len());
                for hint in &batch {
                    if now.saturating_sub(hint.created_ms) > config.age_ms_max {
                        let _ = self.store.remove(hint, Some(DropReason::Expired));
                        continue;
                    }
                    sends.push(async move {
                        let sent = if gone {
                            self.merge_into_replicas(hint.key.clone(), hint.record.clone())
                                .await
                        } else {
                            self.rpc
                                .merge(target, hint.key.clone(), hint.record.clone())
                                .await
                                .map_err(Undelivered::from)
                        };
                        (hint, sent)
                    });
                }
                let mut stalled = false;
                for (hint, r) in futures::future::join_all(sends).await {
                    match r {
                        Ok(()) => {
                            delivered += 1;
                            if let Err(e) = self.store.remove(hint, None) {
                                tracing::warn!(error = %e, "removing a delivered hint failed");
                            }
                        }
                        Err(why) => {
                            tracing::debug!(target = %crate::id::display(target), %why, "hint replay paused");
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
            if delivered > before {
                tracing::info!(
                    target = %crate::id::display(target),
                    delivered = delivered - before,
                    left = self.store.pending().iter().find(|(t, _)| *t == target).map_or(0, |(_, p)| p.count),
                    to = if gone { "its keys' current replicas" } else { "the replica" },
                    "replayed hints"
                );
            }
        }
        delivered
    }

    /// Merges a record into every replica of its key in the current ring
    /// (this node's own copy included); fails unless all of them took it.
    async fn merge_into_replicas(&self, key: Bytes, record: Bytes) -> Result<(), Undelivered> {
        let replicas = self.membership.preference_list(token_of(&key));
        if let Some(&down) = replicas.iter().find(|&&id| !self.membership.is_alive(id)) {
            return Err(Undelivered::ReplicaDown(down));
        }
        let mut fanout = Fanout::new();
        for &id in &replicas {
            if id == self.replica.id() {
                let set = Record::decode(&record).map_err(PeerError::from)?;
                let merged = self
                    .replica
                    .merge_now(key.clone(), set)
                    .await
                    .map(|_| ())
                    .map_err(PeerError::from);
                match merged {
                    Ok(()) => fanout.answered(Call::replica(id), Ok(())),
                    Err(e) => return Err(e.into()),
                }
            } else {
                let rpc = self.rpc.clone();
                let (key, record) = (key.clone(), record.clone());
                fanout.push(Call::replica(id), async move {
                    rpc.merge(id, key, record).await
                });
            }
        }
        fanout
            .wait(&All(replicas), |_, _| None)
            .await
            .map_err(|short| Undelivered::Replicas(short.why()))
    }

    /// Gives the hints this node holds to a live peer, which replays them
    /// (this node is leaving the ring).
    pub async fn pass_on(&self) {
        let m = &self.membership;
        let me = self.replica.id();
        for (target, _) in self.store.pending() {
            let heir = m
                .states()
                .into_iter()
                .filter(|s| {
                    s.id != me
                        && s.id != target
                        && s.status == NodeStatus::Normal
                        && m.is_alive(s.id)
                })
                .map(|s| s.id)
                .next();
            let Some(heir) = heir else {
                tracing::warn!(target = %crate::id::display(target), "no live peer to take the hints; anti-entropy will repair instead");
                continue;
            };
            loop {
                let batch = match self.store.oldest(target, PASS_ON_BATCH_MAX) {
                    Ok(b) if !b.is_empty() => b,
                    _ => break,
                };
                let mut moved = 0;
                for hint in batch {
                    let sent = self
                        .rpc
                        .hint(
                            heir,
                            target,
                            hint.key.clone(),
                            hint.record.clone(),
                            PASS_ON_CALL_TIMEOUT,
                        )
                        .await;
                    if sent.is_ok() && self.store.remove(&hint, None).is_ok() {
                        moved += 1;
                    }
                }
                if moved == 0 {
                    tracing::warn!(target = %crate::id::display(target), "passing on hints stalled; anti-entropy will repair instead");
                    break;
                }
            }
        }
    }

    /// Hints held here, per target: `(target, count, bytes)`.
    pub fn pending(&self) -> Vec<crate::api::HintsPending> {
        self.store
            .pending()
            .into_iter()
            .map(|(target, p)| crate::api::HintsPending {
                target,
                count: p.count,
                bytes: p.bytes,
            })
            .collect()
    }
}

/// Timeout of one call handing a hint to the heir.
const PASS_ON_CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl From<KvError> for Undelivered {
    fn from(e: KvError) -> Self {
        Self::Peer(PeerError::Local(e))
    }
}
