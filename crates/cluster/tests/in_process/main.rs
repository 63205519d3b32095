//! Multi-node behaviour in one process: real nodes assembled by the node
//! builder on the in-memory network, a manual clock, and stores in memory
//! (see `ringkv_cluster::testing`).

mod formats;
mod forwarding;
mod hints;
mod import;
mod movement;
mod quorum;
mod scan;
mod truncate;

use std::time::Duration;

use bytes::Bytes;

use ringkv_cluster::api::{Consistency, Kv, KvError, ReadOptions, WriteOptions};
use ringkv_cluster::node::{Node, NodeConfig};
use ringkv_cluster::repair::hints::HintConfig;
use ringkv_cluster::ring::token_of;
use ringkv_cluster::store::MemStore;
use ringkv_cluster::testing::{TestCluster, test_config};

fn cluster(n: usize, rf: usize) -> TestCluster {
    TestCluster::new(n, rf)
}

fn cluster_with(n: usize, rf: usize, strict_quorum: bool) -> TestCluster {
    cluster_full(n, rf, strict_quorum, HintConfig::default())
}

fn config(rf: usize, strict_quorum: bool, hints: HintConfig) -> NodeConfig {
    NodeConfig {
        strict_quorum,
        hints,
        ..test_config(rf)
    }
}

fn cluster_full(n: usize, rf: usize, strict_quorum: bool, hints: HintConfig) -> TestCluster {
    TestCluster::with_config(n, config(rf, strict_quorum, hints))
}

/// `n` nodes that know only themselves.
fn strangers(n: usize, rf: usize, strict_quorum: bool, hints: HintConfig) -> TestCluster {
    TestCluster::strangers(n, config(rf, strict_quorum, hints))
}

/// The hints every node holds, as (target, count, bytes).
fn pending_hints(node: &Node<MemStore>) -> Vec<(u64, u64, u64)> {
    node.hints()
        .pending()
        .into_iter()
        .map(|h| (h.target, h.count, h.bytes))
        .collect()
}

/// Hints held on every node for `target`.
fn hints_held_for(c: &TestCluster, target: u64) -> u64 {
    c.nodes
        .iter()
        .flat_map(pending_hints)
        .filter(|(t, _, _)| *t == target)
        .map(|(_, count, _)| count)
        .sum()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn at(level: Consistency) -> ReadOptions {
    ReadOptions {
        consistency: Some(level),
    }
}

fn w(level: Consistency) -> WriteOptions {
    WriteOptions {
        consistency: Some(level),
        ..WriteOptions::default()
    }
}

async fn read_one(node: &Node<MemStore>, key: &str, level: Consistency) -> Option<Bytes> {
    node.get(b(key), at(level))
        .await
        .expect("read")
        .resolved()
        .map(|s| s.value.clone())
}

fn own_value(c: &TestCluster, id: u64, key: &str) -> Option<Bytes> {
    ringkv_cluster::replica::resolved(&c.node(id).debug_local_record(key.as_bytes()), c.now_ms())
        .map(|s| s.value)
}
