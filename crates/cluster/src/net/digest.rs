//! The digest gossip's wire types: digests, their entries and the
//! member-list hash, and state refreshes (formats in
//! [`super::message`], "Digest gossip").

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::message::{Load, NodeState};
use crate::id::NodeId;

/// A member's new publication that changed nothing but its heartbeat and
/// load, for a receiver that holds the member's state of the same endpoint:
/// it rebuilds the new state from its own (see "Digest gossip" above).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRefresh {
    pub id: NodeId,
    pub generation: u64,
    pub heartbeat: u64,
    pub load: Load,
    /// [`endpoint_hash`] of the state: a receiver whose state of the member
    /// hashes otherwise asks for the whole state instead.
    pub endpoint: u64,
    /// The member's signature over the new state, `(scheme, signature)`,
    /// by the certificate of the state the receiver holds.
    pub signature: Option<(u16, Bytes)>,
}

/// What a refresh keeps of a state: `s` with heartbeat, load and
/// signature zeroed.
pub fn endpoint_of(s: &NodeState) -> NodeState {
    NodeState {
        heartbeat: 0,
        load: Load::default(),
        signature: None,
        ..s.clone()
    }
}

/// The hash of what a refresh keeps of a state: every field but the
/// heartbeat, the load and the signature, and the signature's certificate
/// (xxh3-64 of the postcard body with those zeroed, then the certificate's
/// DER).
pub fn endpoint_hash(s: &NodeState) -> u64 {
    // Strings, integers and a vector: postcard cannot fail on them.
    let mut body = postcard::to_allocvec(&endpoint_of(s)).unwrap_or_default();
    // The certificate a refresh's signature is checked with: a node that
    // reloads its certificate sends its next state whole.
    if let Some(sig) = &s.signature {
        body.extend_from_slice(&sig.cert);
    }
    xxhash_rust::xxh3::xxh3_64(&body)
}

/// Member-list hash, positions and entries of a gossip digest: see
/// "Digest gossip" in the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipDigest {
    /// Members the sender knows.
    pub count: u32,
    /// [`members_hash`] of the sender's members.
    pub members: u64,
    pub entries: DigestEntries,
}

/// The entries of a digest, one per member in ascending id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DigestEntries {
    /// `(version, ahead)` by position in the member list the hash names.
    Positional(Vec<(u64, u64)>),
    /// Each member named.
    Explicit(Vec<DigestEntry>),
}

impl DigestEntries {
    pub fn len(&self) -> usize {
        match self {
            Self::Positional(v) => v.len(),
            Self::Explicit(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One member of an explicit digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    pub id: NodeId,
    pub generation: u64,
    /// The heartbeat of the member's state as the sender holds it.
    pub version: u64,
    /// How far the member's pulse known to the sender is past `version`.
    pub ahead: u64,
}

/// The hash a positional digest names its member list by: xxh3-64 of each
/// member's id and generation (u64 little-endian each), ascending id.
pub fn members_hash(members: impl Iterator<Item = (NodeId, u64)>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (id, generation) in members {
        h.update(&id.to_le_bytes());
        h.update(&generation.to_le_bytes());
    }
    h.digest()
}
