//! Test doubles shared by the cluster's tests.

pub use crate::store::MemStore as MapStore;

/// States of `n` nodes (ids 1000, 1001, ...; one rack each, all in `dc1`)
/// whose tokens were allocated one join after another, as a real cluster
/// would.
pub fn ring_states(n: usize, tokens_per_weight: usize) -> Vec<crate::net::message::NodeState> {
    use crate::net::message::{Load, NodeState, NodeStatus};
    use crate::ring::{Ring, RingNode};
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
            }
        })
        .collect()
}
