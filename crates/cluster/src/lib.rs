//! ringkv's request layer: everything between a front end and local storage.
//!
//! Front ends (RESP, HTTP) call the [`Kv`] API; the [`Node`] implements it by
//! versioning each write into the key's sibling set and applying it to the
//! local store through the [`LocalStore`] trait. This crate never parses
//! client bytes and never touches files directly.
//!
//! # Layout
//! - [`api`]: the `Kv` trait, request options, results and errors.
//! - [`version`]: hybrid logical clocks, version vectors, sibling sets and
//!   their encodings.
//! - [`store`]: the `LocalStore` trait the node uses to reach storage, and its
//!   implementation over the LSM engine.
//! - [`node`]: the coordinator.
//! - [`node_id`]: a node's stable identity, kept in its data directory.
//! - [`exec`]: where blocking work runs (the blocking pool, or inline in a
//!   simulation).
//! - [`merkle`]: Merkle trees over token ranges.
//! - [`anti_entropy`]: replicas comparing those trees and exchanging the
//!   keys that differ, continuously and on demand; the sync ledger behind
//!   the tombstone purge rule.
//! - [`movement`]: joins, decommissions and removals: which token ranges
//!   move where, streaming them, and dropping what a node no longer owns.

pub mod api;
/// Hash maps and sets with a fixed hasher: their iteration order is the same
/// on every run, so a seeded simulation replays exactly. Maps keyed by what
/// clients choose are ordered maps instead (a fixed hasher invites
/// collisions).
pub mod det {
    use std::hash::{BuildHasherDefault, DefaultHasher};
    pub type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<DefaultHasher>>;
    pub type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<DefaultHasher>>;
}
pub mod causality;
pub mod exec;
pub mod membership;
pub mod movement;
pub mod net;
pub mod node;
pub mod node_files;
pub mod repair;
pub mod replica;
pub mod ring;
pub mod store;

#[cfg(test)]
mod testing;

pub use api::{
    ClusterView, Condition, Consistency, Expiry, Explain, Kv, KvError, MoveCommand, MovementStatus,
    NodeInfo, NodeView, RangeState, ReadOptions, ReadResult, RepairStatus, ReplicaView, Sibling,
    WriteOptions, WriteOutcome,
};
pub use causality::{CausalContext, Hlc, SiblingSet, VersionVector};
pub use node::{Node, NodeConfig};
pub use store::{LocalStore, StoreError};
