//! Merging a whole record (a key's siblings and version vector, as an
//! export holds it) into the cluster: what `ringkv import` does per key.
//!
//! Nothing is versioned anew: the record is merged into every replica of
//! the key, as read repair and hints merge (this node's own copy directly
//! when it is one), so the import is commutative with whatever the cluster
//! holds: siblings concurrent with the cluster's stay siblings, versions
//! the cluster has superseded stay superseded. Replicas down get hints;
//! the write's level must be met, as for a client write.
//!
//! After a truncation, siblings older than its point are stamped as written
//! just after it, so the keys an export held before a truncation come back
//! (see [`crate::truncate`]).

use std::sync::Arc;

use bytes::Bytes;

use super::Coordinator;
use crate::api::{KvError, WriteOptions};
use crate::causality::SiblingSet;
use crate::rpc::{Call, Fanout, PeerError};
use crate::store::LocalStore;

impl<S: LocalStore> Coordinator<S> {
    /// Merges `set` into the replicas of `key` at the options' level.
    pub async fn merge_record(
        self: &Arc<Self>,
        key: Bytes,
        mut set: SiblingSet,
        opts: WriteOptions,
    ) -> Result<(), KvError> {
        let max = self.config.value_bytes_max;
        let refused = self.check_key(&key).and_then(|()| {
            match set
                .siblings
                .iter()
                .filter_map(|s| s.value.as_ref().map(Bytes::len))
                .find(|&len| len > max)
            {
                Some(len) => Err(KvError::ValueTooLarge { len, max }),
                None => Ok(()),
            }
        });
        super::log_size_refusal(&refused);
        refused?;
        set.restamp_truncated(self.replica.truncated_at());
        let level = opts.consistency.unwrap_or(self.config.default_write);
        let strict = self.config.strict_quorum;
        let plan = self.planner.write(&key, level, !strict)?;
        let record = Bytes::from(set.encode());
        let mut fanout = Fanout::new();
        if plan.live.contains(&self.id()) {
            let merged = self
                .replica
                .merge_now(key.clone(), set)
                .await
                .map(|_| ())
                .map_err(PeerError::from);
            fanout.answered(Call::replica(self.id()), merged);
        }
        let mut stand_ins = Vec::new();
        self.send_to_replicas(&mut fanout, &plan, &key, &record, &mut stand_ins);
        let met = fanout
            .wait(&plan, |failed, _| {
                let _ = self.hold_hint(failed.replica, &key, &record);
                None
            })
            .await;
        self.finish_sends(fanout, key, record);
        met.map_err(|short| self.write_unavailable(short, &plan, strict))
    }
}
