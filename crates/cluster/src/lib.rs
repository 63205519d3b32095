//! ringkv's cluster layer: everything between a front end and local
//! storage.
//!
//! Front ends (RESP, HTTP) call the [`Kv`] API; a [`Node`] implements it by
//! running each request against the key's replicas, versioning each write
//! into the key's sibling set, and applying it to the local store through
//! the [`LocalStore`] trait. This crate never parses client bytes; it
//! reaches files only through storage's `Fs` trait.
//!
//! # Layout
//! Leaves, used by everything above them:
//! - [`api`]: the `Kv` trait, request options, results and errors.
//! - [`id`]: node ids.
//! - [`causality`]: hybrid logical clocks, version vectors, the dotted
//!   version vector set stored under every key, and the tombstone rule.
//! - [`exec`]: where blocking work runs (the blocking pool, or inline in a
//!   simulation). [`det`]: hash maps that iterate the same on every run.
//!
//! This node:
//! - [`store`]: the `LocalStore` trait the node uses to reach storage, its
//!   implementation over the LSM engine, and one in memory.
//! - [`replica`]: this node's copy of its keys and the versioned
//!   read-modify-write on it.
//! - [`node_files`]: the node's own small files (id, epoch, tokens, known
//!   peers, movement record).
//!
//! The cluster:
//! - [`ring`]: consistent hashing with virtual nodes, token allocation,
//!   placement across racks and data centers.
//! - [`net`]: the transport trait, TCP and in-memory transports, the wire
//!   format.
//! - [`membership`]: node states, the failure detector, gossip.
//! - [`rpc`]: typed calls to peers and the fan-out that waits for a
//!   quorum.
//!
//! Services, each owning its state:
//! - [`coord`]: the coordinator: reads, writes, forwarding, stand-ins, read
//!   repair.
//! - [`repair`]: hinted handoff, Merkle trees, anti-entropy.
//! - [`movement`]: joins, decommissions and removals: which token ranges
//!   move where, streaming them, and dropping what a node no longer owns.
//! - [`node`]: a node assembled from all of the above ([`NodeBuilder`]),
//!   answering clients ([`Kv`]) and peers ([`net::Handler`]).
//!
//! [`testing`]: in-process clusters for tests.

pub mod api;
pub mod causality;
pub mod coord;
/// Hash maps and sets with a fixed hasher: their iteration order is the same
/// on every run, so a seeded simulation replays exactly. Maps keyed by what
/// clients choose are ordered maps instead (a fixed hasher invites
/// collisions).
pub mod det {
    use std::hash::{BuildHasherDefault, DefaultHasher};
    pub type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<DefaultHasher>>;
    pub type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<DefaultHasher>>;
}
pub mod exec;
pub mod export;
pub mod formats;
pub mod id;
pub mod membership;
pub mod metrics;
pub mod movement;
pub mod net;
pub mod node;
pub mod node_files;
pub mod record_cache;
pub mod repair;
pub mod replica;
pub mod ring;
pub mod rpc;
pub mod slowlog;
pub mod snapshot;
pub mod store;
pub mod testing;
pub mod truncate;

pub use api::{
    ClusterKeys, ClusterView, Condition, Consistency, Expiry, Explain, ImportStopped, Kv, KvError,
    MoveCommand, MovementStatus, NodeInfo, NodeView, RangeState, ReadOptions, ReadResult,
    RepairStatus, ReplicaView, ScanPage, ScannedKey, Sibling, WriteOptions, WriteOutcome,
};
pub use causality::{CausalContext, Hlc, SiblingSet, VersionVector};
pub use id::NodeId;
pub use node::{Node, NodeBuilder, NodeConfig};
pub use store::{LocalStore, StoreError};
