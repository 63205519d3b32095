//! A coordinated read: ask the live replicas, answer with the merge of the
//! first that meet the level, repair the stale ones in the background.

use std::sync::Arc;

use bytes::Bytes;

use super::Coordinator;
use crate::api::{KvError, ReadOptions, ReadResult, Sibling};
use crate::causality::types::{Kind, Record};
use crate::id::NodeId;
use crate::replica::into_sibling;
use crate::rpc::{Call, Fanout, PeerError};
use crate::store::LocalStore;

impl<S: LocalStore> Coordinator<S> {
    pub(super) async fn read(
        self: &Arc<Self>,
        key: Bytes,
        opts: ReadOptions,
    ) -> Result<ReadResult, KvError> {
        let record = self.read_record(key, opts).await?;
        let now = self.replica.now_ms();
        // A key of a data type: a counter reads as its value (a string, as
        // in Redis); a set or a hash is the wrong kind for a string read.
        if !record.strings_only() {
            match record.kind(now) {
                Some(Kind::Counter) => {
                    return Ok(ReadResult {
                        siblings: vec![Sibling {
                            value: Bytes::from(record.counter.state.value().to_string()),
                            hlc: record.counter.hlc,
                            actor: record.counter.state.base.actor,
                            expires_at_ms: None,
                        }],
                        context: record.strings.vv,
                    });
                }
                Some(Kind::Set | Kind::Hash) => return Err(KvError::WrongType),
                Some(Kind::String) | None => {}
            }
        }
        let set = record.strings;
        Ok(ReadResult {
            siblings: (set.siblings.into_iter())
                .filter(|s| s.is_live(now))
                .map(into_sibling)
                .collect(),
            context: set.vv,
        })
    }

    /// The merge of the records of `key` of the replicas that meet the
    /// level, data types included; the stale replicas are repaired in the
    /// background.
    pub(super) async fn read_record(
        self: &Arc<Self>,
        key: Bytes,
        opts: ReadOptions,
    ) -> Result<Record, KvError> {
        self.check_key(&key)?;
        let level = opts.consistency.unwrap_or(self.config.default_read);
        // While a movement hands over, the pending ring's replicas are
        // asked too and must meet the level as well.
        let plan = self.planner.read(&key, level)?;
        // One replica, and it is us: no fan-out, no repair.
        if plan.live == [self.id()] && plan.pending.is_none() {
            return self.replica.read_record(&key);
        }
        let mut fanout = Fanout::new();
        for &id in &plan.live {
            if id == self.id() {
                // This node's own copy: read here, no call.
                let own = self.replica.read_record(&key).map_err(PeerError::from);
                fanout.answered(Call::replica(id), own);
            } else {
                fanout.push(Call::replica(id), self.read_remote(id, key.clone()));
            }
        }
        if let Err(short) = fanout.wait(&plan, |_, _| None).await {
            metrics::counter!("ringkv_unavailable_total", "op" => "read").increment(1);
            return Err(KvError::Unavailable {
                required: short.required,
                answered: short.acked.len(),
                why: short.why(),
            });
        }
        let mut records: Vec<(NodeId, Record)> = fanout
            .take_answers()
            .into_iter()
            .map(|(call, set)| (call.to, set))
            .collect();
        let mut merged = Record::default();
        for (_, set) in &records {
            merged.merge_changed(set);
        }
        let result = merged.clone();
        // The rest answer in the background; every stale replica of the
        // current ring gets the merge (read repair). A replica of the
        // pending ring only is left to the stream: it holds little yet, and
        // repairing it on every read would be an unthrottled second stream.
        let current = plan.current.prefs;
        let me = Arc::clone(self);
        let finished = fanout.finish(&self.background, move |late| async move {
            for (call, answer) in late {
                if let Ok(set) = answer {
                    merged.merge_changed(&set);
                    records.push((call.to, set));
                }
            }
            records.retain(|(id, _)| current.contains(id));
            me.read_repair(key, merged, records).await;
        });
        if finished.is_err() {
            // Too much in the background already: anti-entropy mends what
            // this read repair would have.
            metrics::counter!("ringkv_read_repairs_skipped_total").increment(1);
        }
        Ok(result)
    }

    /// Sends `merged` to every replica whose record differs from it.
    async fn read_repair(&self, key: Bytes, merged: Record, records: Vec<(NodeId, Record)>) {
        let stale: Vec<NodeId> = records
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
                if let Err(e) = self.replica.merge_now(key.clone(), merged.clone()).await {
                    tracing::warn!(error = %e, "local read repair failed");
                }
            } else if let Err(e) = self.rpc.merge(id, key.clone(), record.clone()).await {
                tracing::debug!(node = %crate::id::display(id), error = %e, "read repair failed");
            }
        }
    }
}
