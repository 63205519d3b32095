//! A peer's side of a sync: trees and digest lists of a range this node
//! replicates, from snapshots kept for the rest of the sync.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::net::message::{DigestList, Request, Response};
use crate::repair::merkle::{DEPTH_MAX, FANOUT};

impl<S: LocalStore> AntiEntropy<S> {
    /// Scans `range` into a summary, off the executor.
    pub(super) async fn scan_summary(
        self: &Arc<Self>,
        range: TokenRange,
    ) -> Result<RangeSummary, KvError> {
        let node = Arc::clone(self);
        crate::exec::blocking(move || {
            let ae = &node.state;
            let now = ae.clock.now_ms();
            let grace = node.grace_ms;
            let at = node.replica.truncated_at();
            let mut builder = RangeSummary::builder(range);
            let mut corrupt = 0;
            for (start, end, include_start) in range.scans() {
                node.store()
                    .scan_tokens(start, end, include_start, &mut |key, record| {
                        if let Some(d) =
                            tree_digest(&ae.ledger, key, record, now, grace, at, &mut corrupt)
                        {
                            builder.add(token_of(key), key, d);
                        }
                        true
                    })
                    .map_err(crate::replica::store_error)?;
            }
            ae.count_corrupt(corrupt);
            Ok(builder.finish())
        })
        .await
        .map_err(|e| KvError::Storage(format!("anti-entropy scan task failed: {e}")))?
    }

    /// This node's (key, digest) pairs of `ranges`, off the executor.
    pub(super) async fn local_digests(
        self: &Arc<Self>,
        ranges: Vec<TokenRange>,
    ) -> Result<BTreeMap<Bytes, u64>, KvError> {
        let node = Arc::clone(self);
        crate::exec::blocking(move || {
            let (lists, _) = node.digest_lists(&ranges, usize::MAX, usize::MAX)?;
            Ok(lists
                .into_iter()
                .flat_map(|l| l.digests)
                .collect::<BTreeMap<Bytes, u64>>())
        })
        .await
        .map_err(|e| KvError::Storage(format!("anti-entropy scan task failed: {e}")))?
    }

    /// The digest lists of `ranges` within a budget: lists in order, the
    /// last possibly cut short. Returns the lists and the digests listed.
    fn digest_lists(
        self: &Arc<Self>,
        ranges: &[TokenRange],
        digests_max: usize,
        bytes_max: usize,
    ) -> Result<(Vec<DigestList>, usize), KvError> {
        let ae = &self.state;
        let now = ae.clock.now_ms();
        let grace = self.grace_ms;
        let at = self.replica.truncated_at();
        let mut out = Vec::with_capacity(ranges.len());
        let mut count = 0usize;
        let mut bytes = 0usize;
        let mut corrupt = 0;
        for range in ranges {
            if count >= digests_max || bytes >= bytes_max {
                break;
            }
            let mut list = DigestList {
                digests: Vec::new(),
                complete: true,
            };
            for (start, end, include_start) in range.scans() {
                self.store()
                    .scan_tokens(start, end, include_start, &mut |key, record| {
                        let Some(d) =
                            tree_digest(&ae.ledger, key, record, now, grace, at, &mut corrupt)
                        else {
                            return true;
                        };
                        if count >= digests_max || bytes >= bytes_max {
                            list.complete = false;
                            return false;
                        }
                        list.digests.push((Bytes::copy_from_slice(key), d));
                        count += 1;
                        bytes += key.len() + 8;
                        true
                    })
                    .map_err(crate::replica::store_error)?;
                if !list.complete {
                    break;
                }
            }
            let complete = list.complete;
            out.push(list);
            if !complete {
                break;
            }
        }
        ae.count_corrupt(corrupt);
        Ok((out, count))
    }

    /// Answers a peer's anti-entropy request (`MerkleNodes`,
    /// `RangeDigests`).
    pub async fn answer(self: &Arc<Self>, req: Request) -> Result<Response, KvError> {
        let ae = &self.state;
        let received = wire_bytes(&req);
        let resp = match req {
            Request::MerkleNodes {
                start,
                end,
                depth,
                level,
                indexes,
            } => {
                if !self.replicates_exactly(TokenRange::new(start, end)) {
                    return Err(KvError::InvalidArgument(format!(
                        "({start}, {end}] is not a range this node replicates in its ring"
                    )));
                }
                self.answer_merkle_nodes(TokenRange::new(start, end), depth, level, indexes)
                    .await?
            }
            Request::RangeDigests { ranges } => {
                if ranges.len() > DIGEST_RANGES_MAX {
                    return Err(KvError::InvalidArgument(format!(
                        "{} ranges asked, at most {DIGEST_RANGES_MAX}",
                        ranges.len()
                    )));
                }
                let node = Arc::clone(self);
                let ranges: Vec<TokenRange> = ranges
                    .into_iter()
                    .map(|(s, e)| TokenRange::new(s, e))
                    .collect();
                let (lists, _) = crate::exec::blocking(move || {
                    node.digest_lists(&ranges, DIGESTS_MAX, DIGEST_BYTES_MAX)
                })
                .await
                .map_err(|e| KvError::Storage(format!("anti-entropy scan task failed: {e}")))??;
                Response::RangeDigests { ranges: lists }
            }
            other => {
                return Err(KvError::InvalidArgument(format!(
                    "not an anti-entropy request: {other:?}"
                )));
            }
        };
        ae.count_bytes(wire_bytes(&resp), received);
        Ok(resp)
    }

    async fn answer_merkle_nodes(
        self: &Arc<Self>,
        range: TokenRange,
        depth: u8,
        level: u8,
        indexes: Vec<u32>,
    ) -> Result<Response, KvError> {
        if !(1..=DEPTH_MAX).contains(&depth) {
            return Err(KvError::InvalidArgument(format!(
                "tree depth {depth} outside 1..={DEPTH_MAX}"
            )));
        }
        if indexes.len() > NODE_INDEXES_MAX {
            return Err(KvError::InvalidArgument(format!(
                "{} tree nodes asked, at most {NODE_INDEXES_MAX}",
                indexes.len()
            )));
        }
        if !indexes.is_empty() && level >= depth {
            return Err(KvError::InvalidArgument(format!(
                "level {level} has no children in a tree of depth {depth}"
            )));
        }
        let (keys, tree) = self
            .responder_tree(range, depth, indexes.is_empty())
            .await?;
        let mut children = Vec::with_capacity(indexes.len() * FANOUT);
        for i in indexes {
            let c = tree
                .children(level, i)
                .ok_or_else(|| KvError::InvalidArgument(format!("no node {i} at level {level}")))?;
            children.extend_from_slice(c);
        }
        Ok(Response::MerkleNodes {
            keys,
            root: tree.root(),
            children,
        })
    }

    /// The responder's tree: from a fresh scan when `fresh` (the first
    /// request of a sync) or when no recent snapshot exists.
    async fn responder_tree(
        self: &Arc<Self>,
        range: TokenRange,
        depth: u8,
        fresh: bool,
    ) -> Result<(u64, Arc<MerkleTree>), KvError> {
        let ae = &self.state;
        let ttl = ae.config.read().tree_cache_ms;
        if !fresh {
            let now = ae.monotonic_ms();
            let mut cache = ae.cache.lock();
            cache.retain(|c| now.saturating_sub(c.built_ms) <= ttl);
            if let Some(c) = cache.iter_mut().find(|c| c.range == range) {
                if let Some(t) = c.trees.iter().find(|t| t.depth() == depth) {
                    return Ok((c.summary.keys(), Arc::clone(t)));
                }
                let t = Arc::new(c.summary.tree(depth));
                c.trees.push(Arc::clone(&t));
                return Ok((c.summary.keys(), t));
            }
        }
        let summary = Arc::new(self.scan_summary(range).await?);
        let tree = Arc::new(summary.tree(depth));
        let mut cache = ae.cache.lock();
        cache.retain(|c| c.range != range);
        while cache.len() >= TREE_CACHE_ENTRIES_MAX {
            cache.pop_front();
        }
        cache.push_back(CachedTree {
            range,
            built_ms: ae.monotonic_ms(),
            summary: Arc::clone(&summary),
            trees: vec![Arc::clone(&tree)],
        });
        Ok((summary.keys(), tree))
    }
}
