//! The key census: an exact count of this node's live keys, taken by a
//! background pass over the store and kept until the next.
//!
//! Every figure called "keys" (INFO, `ringkv status`, `ringkv_keys` in
//! `/metrics`, the load a node gossips) reads the last census, so they
//! agree with each other as of the moment of the count; the cluster's keys
//! (`DBSIZE`, INFO's keyspace line) are the censuses of the ring's nodes
//! over the copies of each key ([`cluster_keys`]). Table
//! statistics cannot give this: an overwritten key lives in several levels
//! until compaction meets it.
//!
//! A truncation ([`crate::truncate`]) sets the count to 0 at once
//! ([`Census::truncated`]), and the counts peers gossiped before it are
//! taken as 0 until they gossip again, so `DBSIZE` reads 0 right after
//! `FLUSHALL`; the next pass counts the writes made since.
//!
//! A pass reads the whole store, so passes are spaced by at least
//! [`CENSUS_INTERVAL_MIN`] and by [`CENSUS_SPACING`] times the last pass's
//! duration: a pass never takes more than one part in that many of the
//! node's time, however large the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::api::{ClusterKeys, KeyCount, KvError};
use crate::id::NodeId;
use crate::membership::Membership;
use crate::replica::LocalReplica;
use crate::store::LocalStore;

/// The shortest time between two passes.
pub const CENSUS_INTERVAL_MIN: Duration = Duration::from_secs(5);
/// Passes are at least this many times their own duration apart (a pass
/// takes at most 1% of the node's time).
pub const CENSUS_SPACING: u32 = 100;

/// The last count, shared by the census loop and its readers.
#[derive(Clone, Default)]
pub struct Census {
    last: Arc<Mutex<Option<KeyCount>>>,
    /// Per peer, the gossip version `(generation, heartbeat)` up to which
    /// its count predates the last truncation this node recorded.
    truncated_before: Arc<Mutex<HashMap<NodeId, (u64, u64)>>>,
}

impl Census {
    /// The last count, `None` before the first pass ends.
    pub fn last(&self) -> Option<KeyCount> {
        *self.last.lock()
    }

    /// A truncation point was recorded at `now_ms`: this node's count is 0
    /// from then (a pass begun before cannot replace it), and each peer's
    /// count is taken as 0 until a state of it newer by two heartbeats
    /// than the one known now (one may already be on its way) brings a
    /// count from after the point.
    pub fn truncated(&self, membership: &Membership, now_ms: u64) {
        *self.last.lock() = Some(KeyCount {
            counted_at_ms: now_ms,
            ..KeyCount::default()
        });
        let me = membership.self_id();
        let mut before = self.truncated_before.lock();
        before.clear();
        for s in membership.states() {
            if s.id != me {
                before.insert(s.id, (s.generation, s.heartbeat.saturating_add(1)));
            }
        }
    }

    /// Counts now (a full pass off the executor) and keeps the result,
    /// unless a newer count is kept already.
    pub async fn count<S: LocalStore>(
        &self,
        replica: &Arc<LocalReplica<S>>,
    ) -> Result<KeyCount, KvError> {
        self.count_until(replica, Arc::new(AtomicBool::new(false)))
            .await
            .map(Option::unwrap_or_default)
    }

    /// [`Census::count`], given up (`None`) once `stop` turns true.
    async fn count_until<S: LocalStore>(
        &self,
        replica: &Arc<LocalReplica<S>>,
        stop: Arc<AtomicBool>,
    ) -> Result<Option<KeyCount>, KvError> {
        let r = Arc::clone(replica);
        let count = crate::exec::blocking(move || r.count_keys_until(&stop))
            .await
            .map_err(|e| KvError::Storage(format!("counting keys: {e}")))??;
        if let Some(count) = count {
            let mut last = self.last.lock();
            if last.is_none_or(|l| l.counted_at_ms <= count.counted_at_ms) {
                *last = Some(count);
            }
        }
        Ok(count)
    }

    /// Counts at once, then again and again, spaced as the module says,
    /// until `shutdown` resolves.
    pub async fn run<S: LocalStore>(
        self,
        replica: Arc<LocalReplica<S>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            // A pass in progress stops with the node: the scan checks the
            // flag at every record.
            let stop = Arc::new(AtomicBool::new(false));
            let counted = tokio::select! {
                biased;
                _ = &mut shutdown => {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                counted = self.count_until(&replica, Arc::clone(&stop)) => counted,
            };
            let took = match counted {
                Ok(c) => Duration::from_millis(c.map_or(0, |c| c.took_ms)),
                Err(e) => {
                    tracing::warn!(error = %e, "key census failed");
                    Duration::ZERO
                }
            };
            let wait = CENSUS_INTERVAL_MIN.max(took * CENSUS_SPACING);
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The cluster's live keys from the censuses: this node's count `own`,
/// and the last count every other member of the current ring gossiped
/// (a node down counts with its last), summed and divided by the replicas
/// each key has. Nodes still joining hold copies only, and are left out.
/// A peer's count from before the last truncation counts 0
/// ([`Census::truncated`]).
pub fn cluster_keys(membership: &Membership, own: u64, census: &Census) -> ClusterKeys {
    let before = census.truncated_before.lock().clone();
    let ring = membership.current_ring();
    let me = membership.self_id();
    let mut sum = 0u64;
    let mut nodes = 0usize;
    for node in ring.ring().nodes() {
        nodes += 1;
        sum += if node.id == me {
            own
        } else {
            let stale = before.get(&node.id).is_some_and(|&version| {
                membership
                    .version_of(node.id)
                    .is_some_and(|known| known <= version)
            });
            if stale {
                0
            } else {
                membership.load_of(node.id).map_or(0, |l| l.keys)
            }
        };
    }
    if nodes == 0 {
        return ClusterKeys {
            keys: own,
            exact: true,
            nodes: 1,
            replicas: 1,
        };
    }
    let replicas = ring.preference_list(0).len().max(1);
    ClusterKeys {
        keys: sum.div_ceil(replicas as u64),
        exact: nodes == 1,
        nodes,
        replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::types::Record;
    use crate::causality::{SiblingSet, VersionVector};
    use crate::store::MemStore;
    use bytes::Bytes;

    fn record(expires_at_ms: Option<u64>) -> SiblingSet {
        let mut set = SiblingSet::default();
        let value = Some(Bytes::from_static(b"v"));
        set.update(&VersionVector::new(), 1, 1_000 << 16, value, expires_at_ms);
        set
    }

    #[tokio::test(start_paused = true)]
    async fn the_census_counts_live_and_expiring_keys_and_recounts() {
        let now = 1_000_000;
        let clock: ringkv_env::SharedClock = Arc::new(ringkv_env::ManualClock::new(now));
        let replica = Arc::new(LocalReplica::new(1, MemStore::default(), clock, 64));
        for i in 0..10u32 {
            let expiry = (i < 4).then_some(now + 100_000);
            let key = format!("k{i}");
            replica
                .merge(key.as_bytes(), &Record::from(record(expiry)))
                .expect("write");
        }
        // Expired already: not counted.
        replica
            .merge(b"gone", &Record::from(record(Some(now - 1))))
            .expect("write");
        let census = Census::default();
        assert_eq!(census.last(), None);
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(census.clone().run(Arc::clone(&replica), async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let first = census.last().expect("counted at start");
        assert_eq!((first.live, first.expiring), (10, 4));
        assert_eq!(first.avg_ttl_ms, 100_000);
        assert_eq!(first.counted_at_ms, now);
        for i in 0..2u32 {
            let key = format!("new{i}");
            replica
                .merge(key.as_bytes(), &Record::from(record(None)))
                .expect("write");
        }
        assert_eq!(
            census.last().map(|c| c.live),
            Some(10),
            "kept until the next pass"
        );
        tokio::time::sleep(CENSUS_INTERVAL_MIN + Duration::from_millis(10)).await;
        let second = census.last().expect("recounted");
        assert_eq!((second.live, second.expiring), (12, 4));
        let _ = stop_tx.send(true);
        task.await.expect("census loop stops");
    }
}
