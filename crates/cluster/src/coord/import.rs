//! Merging whole records (a key's siblings and version vector, as an
//! export holds it) into the cluster: what `ringkv import` does.
//!
//! Nothing is versioned anew: a record is merged into every replica of its
//! key, as read repair and hints merge (this node's own copy directly when
//! it is one), so the import is commutative with whatever the cluster
//! holds: siblings concurrent with the cluster's stay siblings, versions
//! the cluster has superseded stay superseded. Replicas down get hints;
//! the write's level must be met, as for a client write.
//!
//! A batch of records ([`Coordinator::merge_records`]) travels to each
//! replica together: one `StreamPush` per replica (and
//! [`IMPORT_PUSH_BYTES_MAX`]), merged there with one log write, instead of
//! one `Merge` per record and replica. Records some of whose replicas are
//! down go one by one (one `Merge` per live replica), through stand-ins
//! and hints.
//!
//! After a truncation, siblings older than its point are stamped as written
//! just after it, so the keys an export held before a truncation come back
//! (see [`crate::truncate`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::Coordinator;
use super::plan::Plan;
use crate::api::{Consistency, ImportStopped, KvError, WriteOptions};
use crate::causality::types::Record;
use crate::id::NodeId;
use crate::rpc::{Call, Fanout, PeerError, Requirement};
use crate::store::LocalStore;

/// Records of a batch with a replica down merged one by one at once.
const ONE_BY_ONE_IN_FLIGHT: usize = 16;

/// Timeout of one batch of imported records sent to one replica.
const IMPORT_BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The most bytes of keys and records in one batch sent to one replica (a
/// batch of more travels in several).
pub const IMPORT_PUSH_BYTES_MAX: usize = 1024 * 1024;

/// An import batch checked and planned: each record's key, sibling set
/// (restamped) and plan, its encoding, and why the batch stopped early.
struct Prepared {
    planned: Vec<(Bytes, Record, Plan)>,
    encoded: Vec<Bytes>,
    refused: Option<ImportStopped>,
}

/// Records bound for one replica.
enum Push {
    Here(Vec<(Bytes, Record)>),
    Peer(NodeId, Vec<(Bytes, Bytes)>),
}

impl<S: LocalStore> Coordinator<S> {
    /// One record (`set`, encoded as `record`), checked and planned: one
    /// `Merge` per live replica, stand-ins and hints for the others.
    async fn merge_planned(
        self: &Arc<Self>,
        key: Bytes,
        set: Record,
        record: Bytes,
        plan: &Plan,
    ) -> Result<(), KvError> {
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
        self.send_to_replicas(&mut fanout, plan, &key, &record, &mut stand_ins);
        let met = fanout
            .wait(plan, |failed, _| {
                let _ = self.hold_hint(failed.replica, &key, &record);
                None
            })
            .await;
        self.finish_sends(fanout, key, record);
        met.map_err(|short| self.write_unavailable(short, plan, self.config.strict_quorum))
    }

    /// Merges a batch of records, each as a client write's record would be
    /// would, the records bound for one replica sent to it together, and
    /// waits for every replica's answer (at most `IMPORT_BATCH_TIMEOUT`).
    /// A replica whose batch fails gets hints for its records, as a failed
    /// `Merge` does. Stops at the first record that is refused or misses
    /// its level; the records before it all met theirs.
    /// `data_types`: whether records holding data types may be imported
    /// (every member reads them, see [`crate::formats`]).
    pub async fn merge_records(
        self: &Arc<Self>,
        records: Vec<(Bytes, Bytes)>,
        opts: WriteOptions,
        data_types: bool,
    ) -> Result<(), ImportStopped> {
        let level = opts.consistency.unwrap_or(self.config.default_write);
        // Decoded, checked, planned and encoded on the bulk pool.
        let me = Arc::clone(self);
        let prepared =
            crate::exec::bulk(move || me.prepare_import(records, level, data_types)).await;
        let Prepared {
            planned,
            encoded,
            refused,
        } = prepared.map_err(|e| ImportStopped {
            merged: 0,
            error: KvError::Storage(format!("import task failed: {e}")),
        })?;
        // Per replica, the indexes of its records; records with a replica
        // down go one by one.
        let mut by_replica: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        let mut one_by_one = Vec::new();
        for (i, (_, _, plan)) in planned.iter().enumerate() {
            if plan.live.len() < plan.replicas.len() {
                one_by_one.push(i);
            } else {
                for &id in &plan.live {
                    by_replica.entry(id).or_default().push(i);
                }
            }
        }
        let mut batches = Vec::new();
        for (id, indexes) in by_replica {
            let size = |i: usize| planned[i].0.len() + encoded[i].len();
            for chunk in chunk_by_bytes(&indexes, size) {
                let push = if id == self.id() {
                    Push::Here(
                        chunk
                            .iter()
                            .map(|&i| (planned[i].0.clone(), planned[i].1.clone()))
                            .collect(),
                    )
                } else {
                    Push::Peer(
                        id,
                        chunk
                            .iter()
                            .map(|&i| (planned[i].0.clone(), encoded[i].clone()))
                            .collect(),
                    )
                };
                batches.push((id, chunk, push));
            }
        }
        let (pushed, singles) = futures::future::join(
            futures::future::join_all(batches.iter_mut().map(|(_, _, push)| {
                let push = std::mem::replace(push, Push::Here(Vec::new()));
                self.push(push)
            })),
            futures::stream::iter(one_by_one.iter().copied())
                .map(|i: usize| {
                    let (key, set, plan) = &planned[i];
                    self.merge_planned(key.clone(), set.clone(), encoded[i].clone(), plan)
                })
                .buffered(ONE_BY_ONE_IN_FLIGHT)
                .collect::<Vec<_>>(),
        )
        .await;
        // Which replicas took each record; the others get hints.
        let mut outcome: Vec<Result<Vec<NodeId>, KvError>> = vec![Ok(Vec::new()); planned.len()];
        let mut failure: Vec<Option<(NodeId, String)>> = vec![None; planned.len()];
        for ((id, chunk, _), answer) in batches.iter().zip(pushed) {
            for &i in chunk {
                match (&answer, &mut outcome[i]) {
                    (Ok(()), Ok(acked)) => acked.push(*id),
                    (Err(why), _) => {
                        let _ = self.hold_hint(*id, &planned[i].0, &encoded[i]);
                        failure[i].get_or_insert_with(|| (*id, why.clone()));
                    }
                    _ => {}
                }
            }
        }
        for (&i, answer) in one_by_one.iter().zip(singles) {
            if let Err(e) = answer {
                outcome[i] = Err(e);
            }
        }
        for (i, ((_, _, plan), outcome)) in planned.iter().zip(outcome).enumerate() {
            let error = match outcome {
                Err(e) => e,
                Ok(acked) if plan.live.len() < plan.replicas.len() || plan.met(&acked) => continue,
                Ok(acked) => {
                    metrics::counter!("ringkv_incomplete_writes_total").increment(1);
                    KvError::Unavailable {
                        required: plan.required(),
                        answered: acked.len(),
                        why: match &failure[i] {
                            Some((id, why)) => format!(
                                "the batch sent to {} failed: {why}",
                                crate::id::display(*id)
                            ),
                            None => "replicas did not answer".into(),
                        },
                    }
                }
            };
            return Err(ImportStopped { merged: i, error });
        }
        refused.map_or(Ok(()), Err)
    }

    /// Decodes, checks and plans `records` in order, up to the first one
    /// refused; encodes each as restamped.
    fn prepare_import(
        &self,
        records: Vec<(Bytes, Bytes)>,
        level: Consistency,
        data_types: bool,
    ) -> Prepared {
        let sloppy = !self.config.strict_quorum;
        let truncated_at = self.replica.truncated_at();
        let mut refused = None;
        let mut planned = Vec::with_capacity(records.len());
        let mut encoded = Vec::with_capacity(records.len());
        for (i, (key, record)) in records.into_iter().enumerate() {
            let checked = Record::decode(&record)
                .map_err(|e| {
                    KvError::InvalidArgument(format!(
                        "the record of an imported key does not decode: {e}"
                    ))
                })
                .and_then(|mut set| {
                    self.check_import(&key, &set, record.len(), data_types)?;
                    let plan = self.planner.write(&key, level, sloppy)?;
                    let restamped = set.restamp_truncated(truncated_at);
                    Ok((set, plan, restamped))
                });
            match checked {
                Ok((set, plan, restamped)) => {
                    encoded.push(if restamped {
                        Bytes::from(set.encode())
                    } else {
                        record
                    });
                    planned.push((key, set, plan));
                }
                Err(error) => {
                    refused = Some(ImportStopped { merged: i, error });
                    break;
                }
            }
        }
        Prepared {
            planned,
            encoded,
            refused,
        }
    }

    /// Merges one batch into one replica: this node's directly (off the
    /// executor), a peer's with one `StreamPush`.
    async fn push(self: &Arc<Self>, push: Push) -> Result<(), String> {
        match push {
            Push::Here(sets) => {
                let replica = Arc::clone(&self.replica);
                // Normal priority: the merges take locks client writes
                // wait on.
                crate::exec::blocking(move || replica.merge_batch(&sets))
                    .await
                    .map_err(|e| format!("import merge task failed: {e}"))?
                    .map_err(|e| e.to_string())
            }
            Push::Peer(id, entries) => self
                .rpc
                .push_records(id, entries, IMPORT_BATCH_TIMEOUT)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// The checks of an imported record: its key's and values' sizes; a
    /// record of a data type (`len` bytes encoded) only while every
    /// member reads them (`data_types`), and no larger than a value.
    fn check_import(
        &self,
        key: &[u8],
        set: &Record,
        len: usize,
        data_types: bool,
    ) -> Result<(), KvError> {
        let max = self.config.value_bytes_max;
        if !set.strings_only() {
            if !data_types {
                return Err(KvError::InvalidArgument(
                    "the record of an imported key holds data types, which wait for every node \
                     to read them (rolling upgrade in progress)"
                        .into(),
                ));
            }
            if len > max {
                return Err(KvError::ValueTooLarge { len, max });
            }
        }
        let refused = self.check_key(key).and_then(|()| {
            match set
                .strings
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
        refused
    }
}

/// Splits `indexes` into runs of at most [`IMPORT_PUSH_BYTES_MAX`] bytes
/// (by `bytes`; a record larger than that travels alone).
fn chunk_by_bytes(indexes: &[usize], bytes: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut size = 0usize;
    for &i in indexes {
        let len = bytes(i);
        if !chunk.is_empty() && size + len > IMPORT_PUSH_BYTES_MAX {
            chunks.push(std::mem::take(&mut chunk));
            size = 0;
        }
        chunk.push(i);
        size += len;
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_at_most_the_limit_and_keep_the_order() {
        let sizes = [300_000, 300_000, 300_000, 300_000, 2_000_000, 10, 10];
        let indexes: Vec<usize> = (0..sizes.len()).collect();
        let chunks = chunk_by_bytes(&indexes, |i| sizes[i]);
        assert_eq!(chunks, vec![vec![0, 1, 2], vec![3], vec![4], vec![5, 6]]);
        assert!(chunk_by_bytes(&[], |_| 1).is_empty());
    }
}
