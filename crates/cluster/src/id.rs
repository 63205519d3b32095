//! Node ids.
//!
//! A node id is a random 64-bit number drawn on the node's first start and
//! kept in its data directory (see [`crate::node_files`]). It names the node
//! on the wire, in version vectors (a node is the actor of the writes it
//! coordinates) and in the ring. Zero is never an id.

/// A node's id.
pub type NodeId = u64;

/// A node id the way logs and admin output show it: 16 hex digits.
pub fn display(id: NodeId) -> String {
    format!("{id:016x}")
}
