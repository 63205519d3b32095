//! One sync, this node initiating: compare Merkle trees with a peer and
//! exchange the keys that differ (see the module docs, "One sync").

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;

use super::*;
use crate::causality::types::Record;
use crate::net::Peer;
use crate::net::message::{Request, Response};
use crate::repair::merkle::FANOUT;

impl<S: LocalStore> AntiEntropy<S> {
    /// Syncs one range with one peer (see the module docs).
    pub async fn sync_range(
        self: &Arc<Self>,
        range: TokenRange,
        peer_id: NodeId,
    ) -> Result<SyncReport, SyncError> {
        let ae = &self.state;
        let peer = self
            .membership
            .peer(peer_id)
            .ok_or(SyncError::UnknownPeer(peer_id))?;
        // The snapshot time comes before the scan: whatever either side held
        // then is reconciled by the time this sync completes.
        let started_ms = ae.clock.now_ms();
        let summary = self.scan_summary(range).await?;
        let mut report = SyncReport {
            range,
            peer: peer_id,
            depth: merkle::depth_for(summary.keys()),
            keys_local: summary.keys(),
            keys_peer: 0,
            in_sync: false,
            leaves_differing: 0,
            keys_differing: 0,
            keys_repaired: 0,
            bytes_sent: 0,
            bytes_received: 0,
        };
        let result = self.reconcile(&peer, &summary, &mut report).await;
        ae.count_bytes(report.bytes_sent, report.bytes_received);
        ae.keys_repaired
            .fetch_add(report.keys_repaired, Ordering::Relaxed);
        metrics::counter!("ringkv_ae_keys_repaired_total").increment(report.keys_repaired);
        result?;
        ae.ledger.record(range, peer_id, started_ms);
        if report.keys_repaired > 0 {
            tracing::info!(peer = %crate::id::display(peer_id), ?range,
                keys = report.keys_repaired, bytes = report.bytes_sent + report.bytes_received,
                "anti-entropy repaired keys");
        }
        Ok(report)
    }

    async fn reconcile(
        self: &Arc<Self>,
        peer: &Peer,
        summary: &RangeSummary,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let range = summary.range();
        let (mut peer_keys, mut peer_root) =
            self.peer_root(peer, range, report.depth, report).await?;
        let depth = merkle::depth_for(summary.keys().max(peer_keys));
        if depth != report.depth {
            report.depth = depth;
            (peer_keys, peer_root) = self.peer_root(peer, range, depth, report).await?;
        }
        report.keys_peer = peer_keys;
        let tree = summary.tree(depth);
        if tree.root() == peer_root {
            report.in_sync = true;
            return Ok(());
        }
        let differing = self
            .differing_leaves(peer, range, &tree, depth, report)
            .await?;
        report.leaves_differing = differing.len() as u64;
        let leaves: Vec<TokenRange> = differing
            .iter()
            .filter_map(|&i| range.slice(depth, i))
            .collect();
        for batch in leaves.chunks(DIGEST_RANGES_MAX) {
            self.repair_leaves(peer, batch, report).await?;
        }
        Ok(())
    }

    /// Descends the trees through the nodes that differ only; returns the
    /// differing leaves (indexes at `depth`).
    async fn differing_leaves(
        self: &Arc<Self>,
        peer: &Peer,
        range: TokenRange,
        tree: &MerkleTree,
        depth: u8,
        report: &mut SyncReport,
    ) -> Result<Vec<u32>, SyncError> {
        let mut differing: Vec<u32> = vec![0];
        for level in 0..depth {
            let mut next = Vec::new();
            for parents in differing.chunks(NODE_INDEXES_MAX) {
                let req = Request::MerkleNodes {
                    start: range.start,
                    end: range.end,
                    depth,
                    level,
                    indexes: parents.to_vec(),
                };
                let (_, _, children) = self
                    .ae_call(peer, req, Response::into_merkle_nodes, report)
                    .await?;
                if children.len() != parents.len() * FANOUT {
                    return Err(SyncError::Protocol(format!(
                        "{} child hashes for {} parents",
                        children.len(),
                        parents.len()
                    )));
                }
                for (&parent, theirs) in parents.iter().zip(children.chunks_exact(FANOUT)) {
                    let mine = tree.children(level, parent).ok_or_else(|| {
                        SyncError::Protocol(format!("node {parent} of level {level}"))
                    })?;
                    for (c, (a, b)) in mine.iter().zip(theirs).enumerate() {
                        if a != b {
                            next.push(parent * FANOUT as u32 + c as u32);
                        }
                    }
                }
            }
            differing = next;
        }
        Ok(differing)
    }

    /// Exchanges the keys that differ in one batch of differing leaves.
    async fn repair_leaves(
        self: &Arc<Self>,
        peer: &Peer,
        batch: &[TokenRange],
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let theirs = self.peer_digests(peer, batch, report).await?;
        let mine = self.local_digests(batch.to_vec()).await?;
        let mut keys: Vec<(Bytes, Option<u64>)> = mine
            .iter()
            .filter(|(k, d)| theirs.get(*k) != Some(*d))
            .map(|(k, _)| (k.clone(), theirs.get(k).copied()))
            .collect();
        keys.extend(
            theirs
                .iter()
                .filter(|(k, _)| !mine.contains_key(*k))
                .map(|(k, d)| (k.clone(), Some(*d))),
        );
        report.keys_differing += keys.len() as u64;
        let mut repairs = futures::stream::iter(keys)
            .map(|(key, their_digest)| self.repair_key(peer, key, their_digest))
            .buffer_unordered(REPAIR_INFLIGHT_MAX);
        let mut first_error = None;
        while let Some(outcome) = repairs.next().await {
            report.bytes_sent += outcome.bytes_sent;
            report.bytes_received += outcome.bytes_received;
            if outcome.changed {
                report.keys_repaired += 1;
            }
            if let Some(e) = outcome.error {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(())
    }

    /// The peer's key count and root at `depth`, from a fresh snapshot.
    async fn peer_root(
        self: &Arc<Self>,
        peer: &Peer,
        range: TokenRange,
        depth: u8,
        report: &mut SyncReport,
    ) -> Result<(u64, u64), SyncError> {
        let req = Request::MerkleNodes {
            start: range.start,
            end: range.end,
            depth,
            level: 0,
            indexes: Vec::new(),
        };
        let (keys, root, _) = self
            .ae_call(peer, req, Response::into_merkle_nodes, report)
            .await?;
        Ok((keys, root))
    }

    /// The peer's (key, digest) pairs of `leaves`, following its pages.
    pub(super) async fn peer_digests(
        self: &Arc<Self>,
        peer: &Peer,
        leaves: &[TokenRange],
        report: &mut SyncReport,
    ) -> Result<BTreeMap<Bytes, u64>, SyncError> {
        let mut out = BTreeMap::new();
        let mut todo: VecDeque<TokenRange> = leaves.iter().copied().collect();
        let mut rounds = 0;
        while !todo.is_empty() {
            rounds += 1;
            if rounds > DIGEST_ROUNDS_MAX {
                return Err(SyncError::Protocol("digest paging does not end".into()));
            }
            let asked: Vec<TokenRange> = todo.iter().take(DIGEST_RANGES_MAX).copied().collect();
            let req = Request::RangeDigests {
                ranges: asked.iter().map(|r| (r.start, r.end)).collect(),
            };
            let ranges = self
                .ae_call(peer, req, Response::into_range_digests, report)
                .await?;
            if ranges.is_empty() || ranges.len() > asked.len() {
                return Err(SyncError::Protocol(format!(
                    "{} digest lists for {} ranges",
                    ranges.len(),
                    asked.len()
                )));
            }
            for (list, range) in ranges.into_iter().zip(asked) {
                todo.pop_front();
                let last = list.digests.last().map(|(k, _)| token_of(k));
                for (key, digest) in list.digests {
                    if !range.contains(token_of(&key)) {
                        return Err(SyncError::Protocol("digest outside its range".into()));
                    }
                    out.insert(key, digest);
                }
                if !list.complete {
                    // The rest follows the last token; that token is asked
                    // again in case several keys share it.
                    let rest = last
                        .map(|t| TokenRange::new(t.wrapping_sub(1), range.end))
                        .filter(|r| *r != range && range.contains(r.end))
                        .ok_or_else(|| {
                            SyncError::Protocol("digest page made no progress".into())
                        })?;
                    todo.push_front(rest);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Pulls, merges and pushes one key; never fails the whole sync by
    /// itself, the error is returned with the figures.
    async fn repair_key(
        self: &Arc<Self>,
        peer: &Peer,
        key: Bytes,
        their_digest: Option<u64>,
    ) -> KeyRepair {
        let mut out = KeyRepair::default();
        let mut report = ScratchBytes::default();
        match self
            .repair_key_inner(peer, key, their_digest, &mut report)
            .await
        {
            Ok(changed) => out.changed = changed,
            Err(e) => out.error = Some(e),
        }
        out.bytes_sent = report.sent;
        out.bytes_received = report.received;
        out
    }

    async fn repair_key_inner(
        self: &Arc<Self>,
        peer: &Peer,
        key: Bytes,
        their_digest: Option<u64>,
        bytes: &mut ScratchBytes,
    ) -> Result<bool, SyncError> {
        let mut changed = false;
        let mut theirs_now = None;
        if their_digest.is_some() {
            let req = Request::Read { key: key.clone() };
            let theirs = self
                .ae_call_raw(peer, req, Response::into_record, bytes)
                .await?;
            if let Some(record) = theirs {
                let set = Record::decode(&record)
                    .map_err(|e| SyncError::Protocol(format!("record does not decode: {e}")))?;
                theirs_now = Some(merkle::record_digest(&record));
                changed |= self.replica.merge_now(key.clone(), set).await?;
            }
        }
        // What the truncation point hides is never sent.
        let Some(record) = self.replica.read_raw(&key)? else {
            return Ok(changed);
        };
        if Some(merkle::record_digest(&record)) == theirs_now {
            return Ok(changed);
        }
        // Never send what does not decode.
        if Record::decode(&record).is_err() {
            self.state.count_corrupt(1);
            return Ok(changed);
        }
        let req = Request::Merge { key, record };
        self.ae_call_raw(peer, req, Response::into_merged, bytes)
            .await?;
        Ok(true)
    }

    /// One call to `peer`, its bytes counted in `report`; `pick` takes the
    /// answer apart (another kind of answer is a protocol error).
    async fn ae_call<T>(
        self: &Arc<Self>,
        peer: &Peer,
        req: Request,
        pick: fn(Response) -> Result<T, Response>,
        report: &mut SyncReport,
    ) -> Result<T, SyncError> {
        let mut bytes = ScratchBytes::default();
        let r = self.ae_call_raw(peer, req, pick, &mut bytes).await;
        report.bytes_sent += bytes.sent;
        report.bytes_received += bytes.received;
        r
    }

    async fn ae_call_raw<T>(
        self: &Arc<Self>,
        peer: &Peer,
        req: Request,
        pick: fn(Response) -> Result<T, Response>,
        bytes: &mut ScratchBytes,
    ) -> Result<T, SyncError> {
        let asked = req.kind_name();
        bytes.sent += wire_bytes(&req);
        let answer = self.rpc.call_peer(peer, req, self.rpc.timeout()).await;
        // Error answers are counted too: they crossed the wire.
        bytes.received += match &answer {
            Ok(resp) => wire_bytes(resp),
            Err(PeerError::Refused(r)) => (r.code.len() + r.message.len()) as u64,
            Err(_) => 0,
        };
        pick(answer?).map_err(|other| {
            SyncError::Protocol(format!("asked {asked}, answered {}", other.kind_name()))
        })
    }
}
