//! Cleanup: once the ring has been still for `cleanup_delay_ms` and no
//! node is moving, a node drops the records of the ranges it no longer
//! replicates (no tombstone: the data lives on at its replicas).

use std::sync::Arc;
use std::time::Duration;

use super::Movements;
use super::plan::intervals;
use crate::api::KvError;
use crate::net::message::NodeStatus;
use crate::store::LocalStore;

/// Keys removed per step of a cleanup.
const CLEANUP_BATCH_KEYS: usize = 10_000;
/// How often a node scans again the ranges it does not replicate when the
/// ring has not changed: a late write (a hint replayed or a read repair
/// from a node that had not yet heard of the ring change) may have landed
/// there since.
pub(super) const CLEANUP_RECHECK: Duration = Duration::from_secs(600);

impl<S: LocalStore> Movements<S> {
    /// Drops, once the ring has been still for `cleanup_delay_ms` and no
    /// node is moving, the records of ranges this node does not replicate.
    /// Returns the records dropped.
    pub async fn cleanup_once(&self) -> Result<u64, KvError> {
        let m = &self.membership;
        let delay = self.config.cleanup_delay_ms;
        let me = m.state(self.id());
        if delay == 0
            || m.pending_ring().is_some()
            || m.ring_still_for() < Duration::from_millis(delay)
            || me.is_none_or(|s| s.status != NodeStatus::Normal)
        {
            return Ok(0);
        }
        let placement = m.current_ring();
        let foreign: Vec<(u64, u64)> = intervals(&placement, &placement)
            .into_iter()
            .filter(|&(_, hi)| !placement.preference_list(hi).contains(&self.id()))
            .collect();
        let digest = foreign
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &(lo, hi)| {
                (h ^ lo).wrapping_mul(0x100_0000_01b3) ^ hi
            });
        let now = self.replica.clock().monotonic();
        if let Some((last, at)) = *self.cleaned.lock()
            && last == digest
            && now.saturating_sub(at) < CLEANUP_RECHECK
        {
            return Ok(0);
        }
        let replica = Arc::clone(&self.replica);
        let dropped = crate::exec::blocking(move || -> Result<u64, KvError> {
            let mut dropped = 0u64;
            for (lo, hi) in foreign {
                loop {
                    let mut keys = Vec::new();
                    replica
                        .store()
                        .scan_tokens(lo, hi, true, &mut |key, _| {
                            keys.push(key.to_vec());
                            keys.len() < CLEANUP_BATCH_KEYS
                        })
                        .map_err(crate::replica::store_error)?;
                    for key in &keys {
                        replica.remove_record(key)?;
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
        *self.cleaned.lock() = Some((digest, now));
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

    /// Runs [`Movements::cleanup_once`] now and then until `shutdown`
    /// resolves.
    pub async fn run_cleanup(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let interval = Duration::from_millis((self.config.cleanup_delay_ms / 4).clamp(100, 10_000));
        crate::exec::every(interval, shutdown, || async {
            if let Err(e) = self.cleanup_once().await {
                tracing::warn!(error = %e, "cleanup failed");
            }
        })
        .await;
    }
}
