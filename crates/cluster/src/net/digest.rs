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
/// DER). Streamed into the hasher: no copy of the state, no buffer.
pub fn endpoint_hash(s: &NodeState) -> u64 {
    // The certificate a refresh's signature is checked with: a node that
    // reloads its certificate sends its next state whole.
    let hasher = Hasher {
        xxh3: xxhash_rust::xxh3::Xxh3::new(),
        tail: s.signature.as_ref().map(|sig| &sig.cert[..]),
    };
    // Strings, integers and a slice into a hasher: cannot fail.
    postcard::serialize_with_flavor(&EndpointView::of(s), hasher).unwrap_or_default()
}

/// True when `a` and `b` differ in nothing but heartbeat, load and
/// signature, the certificate of which is the same: what
/// [`endpoint_hash`] covers, compared without copying either state.
pub fn same_endpoint(a: &NodeState, b: &NodeState) -> bool {
    fn cert(s: &NodeState) -> Option<&Bytes> {
        s.signature.as_ref().map(|sig| &sig.cert)
    }
    EndpointView::of(a) == EndpointView::of(b) && cert(a) == cert(b)
}

/// [`NodeState`]'s postcard layout, borrowed (the signature is not part of
/// the body). A field added to the state must be added here: the test
/// against [`endpoint_of`]'s encoding says so.
#[derive(Serialize, PartialEq)]
struct EndpointView<'a> {
    id: NodeId,
    generation: u64,
    heartbeat: u64,
    cluster_addr: &'a str,
    resp_addr: &'a str,
    http_addr: &'a str,
    dc: &'a str,
    rack: &'a str,
    weight: u32,
    tokens: &'a [u64],
    status: super::message::NodeStatus,
    load: Load,
}

impl<'a> EndpointView<'a> {
    fn of(s: &'a NodeState) -> Self {
        Self {
            id: s.id,
            generation: s.generation,
            heartbeat: 0,
            cluster_addr: &s.cluster_addr,
            resp_addr: &s.resp_addr,
            http_addr: &s.http_addr,
            dc: &s.dc,
            rack: &s.rack,
            weight: s.weight,
            tokens: &s.tokens,
            status: s.status,
            load: Load::default(),
        }
    }
}

/// A postcard output that hashes the bytes as they come, then `tail`.
struct Hasher<'a> {
    xxh3: xxhash_rust::xxh3::Xxh3,
    tail: Option<&'a [u8]>,
}

impl postcard::ser_flavors::Flavor for Hasher<'_> {
    type Output = u64;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.xxh3.update(&[data]);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.xxh3.update(data);
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<u64> {
        if let Some(tail) = self.tail {
            self.xxh3.update(tail);
        }
        Ok(self.xxh3.digest())
    }
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
    /// `(version, ahead)` by position in the member list the hash names,
    /// LEFT members skipped (their states are final: the hash, which
    /// covers them, says both sides hold the same ones).
    #[serde(deserialize_with = "super::bounded::vec::<{ crate::membership::MEMBERS_MAX }, _, _>")]
    Positional(Vec<(u64, u64)>),
    /// Each member named, LEFT ones too.
    #[serde(deserialize_with = "super::bounded::vec::<{ crate::membership::KNOWN_MAX }, _, _>")]
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

#[cfg(test)]
mod tests {
    use super::super::message::{NodeStatus, StateSignature};
    use super::*;

    /// The streamed hash is the documented one: xxh3-64 of the postcard
    /// body of [`endpoint_of`], then the certificate. Every field is set
    /// (a field added to the state must be set here, and to the view).
    #[test]
    fn the_streamed_endpoint_hash_is_the_documented_one() {
        let reference = |s: &NodeState| {
            let mut body = postcard::to_allocvec(&endpoint_of(s)).expect("encode");
            if let Some(sig) = &s.signature {
                body.extend_from_slice(&sig.cert);
            }
            xxhash_rust::xxh3::xxh3_64(&body)
        };
        let mut s = NodeState {
            id: 0xfeed_beef,
            generation: 1_765_000_000_000,
            heartbeat: 4242,
            cluster_addr: "10.1.2.3:7400".into(),
            resp_addr: "10.1.2.3:6379".into(),
            http_addr: "10.1.2.3:8080".into(),
            dc: "eu-west".into(),
            rack: "r17".into(),
            weight: 3,
            tokens: (0..300u64)
                .map(|i| i.wrapping_mul(0x0123_4567_89ab_cdef))
                .collect(),
            status: NodeStatus::LeaveHandover,
            load: Load {
                ops_per_sec: 1,
                p99_us: 2,
                disk_bytes: 3,
                keys: 4,
            },
            signature: None,
        };
        assert_eq!(endpoint_hash(&s), reference(&s));
        s.signature = Some(StateSignature {
            scheme: 0x0807,
            cert: Bytes::from(vec![7u8; 900]),
            sig: Bytes::from_static(b"sig"),
        });
        assert_eq!(endpoint_hash(&s), reference(&s));
        let before = endpoint_hash(&s);
        s.heartbeat += 1;
        s.load.keys += 1;
        assert_eq!(
            endpoint_hash(&s),
            before,
            "heartbeat and load are not part of it"
        );
        s.rack = "r18".into();
        assert_ne!(endpoint_hash(&s), before);
    }
}
