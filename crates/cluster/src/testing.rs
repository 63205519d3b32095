//! In-process clusters for tests: real nodes, assembled by the
//! [`NodeBuilder`] as every node is, on a [`SimNet`], a manual clock,
//! [`MemStore`]s (or any store) and in-memory disks for their files.
//! Nothing runs in the background: tests drive gossip with
//! [`TestCluster::pass`] and everything else by calling the services.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringkv_env::{Clock, ManualClock};

use crate::id::NodeId;
use crate::membership::MembershipConfig;
use crate::net::SimNet;
use crate::net::message::{Load, NodeState, NodeStatus};
use crate::node::{Node, NodeBuilder, NodeConfig, NodePlace};
use crate::node_files::NodeFiles;
use crate::repair::hints::HintStore;
use crate::ring::{Replication, Ring, RingNode, token_of};
use crate::store::{LocalStore, MemStore};

/// The wall clock a test cluster starts at (2023-11-14).
pub const TEST_EPOCH_MS: u64 = 1_700_000_000_000;

/// Node settings for in-process tests: gossip every 100 ms, 16 tokens per
/// weight, replicas answer within 200 ms.
pub fn test_config(rf: usize) -> NodeConfig {
    NodeConfig {
        replication_factor: rf,
        request_timeout_ms: 200,
        membership: MembershipConfig {
            gossip_interval_ms: 100,
            tokens_per_weight: 16,
            ..MembershipConfig::default()
        },
        ..NodeConfig::default()
    }
}

/// Nodes in one process.
pub struct TestCluster<S: LocalStore = MemStore> {
    pub nodes: Vec<Node<S>>,
    pub net: Arc<SimNet>,
    pub clock: Arc<ManualClock>,
    /// Nodes [`TestCluster::kill`]ed and not revived.
    pub down: Vec<NodeId>,
    /// Every node's state at the start.
    pub states: Vec<NodeState>,
    config: NodeConfig,
    make: Box<dyn Fn(NodeId) -> S>,
}

impl TestCluster<MemStore> {
    /// `n` nodes with replication factor `rf` that know each other.
    pub fn new(n: usize, rf: usize) -> Self {
        Self::with_config(n, test_config(rf))
    }

    /// `n` nodes with these settings that know each other.
    pub fn with_config(n: usize, config: NodeConfig) -> Self {
        let c = Self::strangers(n, config);
        c.introduce();
        c
    }

    /// `n` nodes that know only themselves.
    pub fn strangers(n: usize, config: NodeConfig) -> Self {
        Self::with_stores(n, config, Box::new(|_| MemStore::default()))
    }
}

impl<S: LocalStore> TestCluster<S> {
    /// `n` nodes that know only themselves, each storing in `make(id)`.
    pub fn with_stores(n: usize, config: NodeConfig, make: Box<dyn Fn(NodeId) -> S>) -> Self {
        let clock = Arc::new(ManualClock::new(TEST_EPOCH_MS));
        let states = ring_states(n, config.membership.tokens_per_weight);
        let mut c = Self {
            nodes: Vec::new(),
            net: SimNet::quiet(7),
            clock,
            down: Vec::new(),
            states: states.clone(),
            config,
            make,
        };
        for state in states {
            let node = c.start(state);
            c.nodes.push(node);
        }
        c
    }

    /// Everyone learns everyone, as after a few gossip rounds.
    pub fn introduce(&self) {
        for a in &self.nodes {
            for b in &self.nodes {
                a.membership().merge(b.membership().states());
            }
        }
    }

    /// Builds a node for `state` (its id, place and tokens) with a fresh
    /// store and disk, and attaches it to the network.
    pub fn start(&self, state: NodeState) -> Node<S> {
        let disk = ringkv_storage::FaultFs::new(state.id);
        self.start_on(state, disk)
            .unwrap_or_else(|e| panic!("building a node: {e}"))
    }

    /// Builds a node for `state` whose own files are on `disk` (tokens in
    /// `state` are saved there first), and attaches it to the network.
    pub fn start_on(
        &self,
        state: NodeState,
        disk: ringkv_storage::FaultFs,
    ) -> Result<Node<S>, crate::node::BuildError> {
        let id = state.id;
        let files = NodeFiles::new(Arc::new(disk), "/node");
        if !state.tokens.is_empty()
            && let Err(e) = files.save_tokens(&state.tokens)
        {
            panic!("an in-memory disk failed: {e}");
        }
        let place = NodePlace {
            dc: state.dc.clone(),
            rack: state.rack.clone(),
            weight: state.weight,
            cluster_addr: state.cluster_addr.clone(),
            resp_addr: String::new(),
            http_addr: String::new(),
        };
        let node = NodeBuilder::new(
            self.config.clone(),
            self.clock.clone(),
            (self.make)(id),
            HintStore::in_memory(self.config.hints.clone()),
            files,
            Arc::new(self.net.test_transport(id)),
        )
        .id(id)
        .place(place)
        .replication(Replication::simple("dc1", self.config.replication_factor))
        .build()?;
        self.net.register(id, node.handler());
        Ok(node)
    }

    /// Lets `ms` of time pass with a gossip round every 100 ms on every
    /// live node.
    pub async fn pass(&self, ms: u64) {
        for round in 0..ms / 100 {
            self.clock.advance(Duration::from_millis(100));
            for n in &self.nodes {
                if !self.down.contains(&n.id()) {
                    n.gossip().round(&[], round + 1).await;
                }
            }
        }
    }

    /// Takes node `id` off the network, as if it crashed.
    pub fn kill(&mut self, id: NodeId) {
        self.net.detach(id);
        self.down.push(id);
    }

    /// Puts node `id` back on the network.
    pub fn revive(&mut self, id: NodeId) {
        self.net.register(id, self.node(id).handler());
        self.down.retain(|&d| d != id);
    }

    pub fn node(&self, id: NodeId) -> &Node<S> {
        match self.nodes.iter().find(|n| n.id() == id) {
            Some(n) => n,
            None => panic!("no node {id} in the cluster"),
        }
    }

    /// The preference list of `key`, as the first node sees it.
    pub fn replicas(&self, key: &[u8]) -> Vec<NodeId> {
        self.nodes[0].membership().preference_list(token_of(key))
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Every stored `(key, record)` of node `i`, in key order.
    pub fn dump(&self, i: usize) -> Vec<(Vec<u8>, Bytes)> {
        let mut out = Vec::new();
        let scanned = self.nodes[i].store().for_each(&mut |k, v| {
            out.push((k.to_vec(), v.clone()));
            true
        });
        if let Err(e) = scanned {
            panic!("scanning node {i}: {e}");
        }
        out.sort();
        out
    }
}

/// States of `n` nodes (ids 1000, 1001, ...; one rack each, all in `dc1`)
/// whose tokens were allocated one join after another, as a real cluster
/// would.
pub fn ring_states(n: usize, tokens_per_weight: usize) -> Vec<NodeState> {
    let mut ring = Ring::new(tokens_per_weight);
    (0..n)
        .map(|i| {
            let id = 1000 + i as u64;
            let rack = format!("r{i}");
            let tokens = ring
                .add_node(
                    RingNode {
                        id,
                        dc: "dc1".into(),
                        rack: rack.clone(),
                        weight: 1,
                    },
                    3,
                )
                .unwrap_or_default();
            NodeState {
                id,
                generation: 1,
                heartbeat: 0,
                cluster_addr: format!("node{id}"),
                resp_addr: String::new(),
                http_addr: String::new(),
                dc: "dc1".into(),
                rack,
                weight: 1,
                tokens,
                status: NodeStatus::Normal,
                load: Load::default(),
                signature: None,
            }
        })
        .collect()
}
