//! Node-to-node messages and their wire format.
//!
//! # Frame (format version 1; do not change without bumping the version)
//! ```text
//! frame    := len:u32be payload                 len <= frame_bytes_max
//! payload  := magic:u16be=0x524B ("RK") version:u8=1 kind:u8 id:u64le body
//! kind     := 0 request | 1 response | 2 hello
//! body     := postcard(Request) | postcard(Response) | postcard(Hello)
//! ```
//! `id` pairs a response with its request on a multiplexed connection (the
//! hello uses 0). The first frame each side sends on a new connection is a
//! hello naming the cluster and the sender; a peer of another cluster, or
//! speaking another version, is disconnected.
//!
//! Bodies are postcard (a stable, documented serde format). Enum variants are
//! appended, never reordered, so older variants keep their encodings; a peer
//! that does not know a newer request variant fails to decode it and answers
//! an `invalid_argument` error, keeping the connection.
//!
//! Anti-entropy (see [`crate::repair::anti_entropy`], hashes in [`crate::repair::merkle`]):
//! ```text
//! Request::MerkleNodes { start, end, depth, level, indexes }
//!     -> Response::MerkleNodes { keys, root, children }
//!        the responder's tree of (start, end] at `depth`: its key count, its
//!        root, and the 16 child hashes of each node `indexes[i]` of `level`
//!        (children[16 i .. 16 i + 16]); `indexes` empty asks for the root
//!        only (and makes the responder take a fresh snapshot).
//! Request::RangeDigests { ranges: [(start, end)] }
//!     -> Response::RangeDigests { ranges: [DigestList { digests, complete }] }
//!        (key, xxh3_64(record)) of each range in token order; answered in
//!        request order, possibly for fewer ranges than asked; the last list
//!        may be cut short (`complete = false`) at the responder's budget.
//! ```
//!
//! Streaming (see [`crate::movement`]):
//! ```text
//! Request::StreamRead { lo, hi, after, bytes_max }
//!     -> Response::StreamBatch { entries: [(key, record)], more, crc }
//!        records with token in [lo, hi] after the (token, key) cursor
//! Request::StreamPush { entries, crc } -> Response::Merged
//! crc := CRC-32C over (len:u32le key len:u32le record)*  (see stream_crc)
//! ```
//!
//! Forwarded writes:
//! ```text
//! Request::CoordinateOnce { generation, seq, write } -> Response::Coordinated
//!        `generation` is the sender's start time (ms), `seq` counts its
//!        forwarded writes since; the receiver remembers the ids of the last
//!        coord::FORWARDS_REMEMBERED_MAX and answers a copy of one already
//!        seen with the error `duplicate`, applying nothing, so a duplicated
//!        or replayed message never versions the client's write twice.
//! ```
//!
//! Truncation (see [`crate::truncate`]):
//! ```text
//! Request::TruncatePrepare -> Response::Truncation { clock, truncated_at }
//! Request::Truncate { at }  -> Response::Truncation { clock, truncated_at }
//!        `clock` is the responder's HLC now; `truncated_at` the point it
//!        has recorded (0: none), after `at` when the request carried one.
//! ```
//!
//! Digest gossip (see [`crate::membership::gossip`]):
//! ```text
//! Request::GossipDigest { digest }                                 SYN
//!     -> Response::GossipDelta { digest, states, refreshes, want } ACK
//! Request::GossipStates { states, refreshes, want: [(id, generation, version)] }  ACK2
//!     -> Response::GossipUpdates { states, refreshes }
//! StateRefresh := { id, generation, heartbeat, load, endpoint: u64,
//!                   signature: Option<(scheme: u16, sig: bytes)> }
//! GossipDigest := { count: u32, members: u64, entries }
//! entries      := Positional([(version, ahead)]) | Explicit([(id, generation, version, ahead)])
//! ```
//! A digest lists every member the sender knows, in ascending id order:
//! its state's version (the heartbeat the member last published its state
//! at) and how far the member's pulse (its latest heartbeat, which the
//! failure detector follows) is ahead of it. `members` is
//! [`members_hash`] of the sender's `(id, generation)` list: when the
//! receiver's list hashes the same, the positional form is read against
//! its own list; otherwise it answers with its explicit digest and
//! nothing else, and the sender works out from that what to send and what
//! to ask for. States travel only when their versions differ: as a
//! refresh when the receiver's version is at or after the point its sender
//! has held the member's endpoint (everything but heartbeat, load and
//! signature) since, and the member signed it itself; otherwise whole,
//! signed as in `Gossip`. A receiver rebuilds a refreshed state from its
//! own (same generation, same [`endpoint_hash`], the certificate of its
//! signature) and checks it as any state; one it cannot rebuild it asks for
//! whole (it shows the member at version 0 in its digests until one comes;
//! a `want` names the version the sender holds, and is answered with
//! refreshes where that allows). A message holds at most
//! `GOSSIP_STATES_PER_MESSAGE_MAX` states, as many refreshes and as many
//! wants; a positional digest at most `MEMBERS_MAX` entries (LEFT members
//! are not listed in it, only covered by its hash), an explicit one at
//! most `KNOWN_MAX` (members and departed members), as does `Gossip`'s
//! list of states. A receiver never holds a longer list: it is refused as
//! soon as its length is read, or at its element one past the bound
//! (`net/bounded.rs`); a state with more than `TOKENS_PER_NODE_MAX`
//! tokens is refused alone, once decoded (it keeps one past the bound at
//! most). A node of the version before
//! cannot decode `GossipDigest` and answers an error: the sender then uses
//! `Gossip` with that peer.
//!
//! # Signed states
//! ```text
//! body       := postcard(Request::Gossip | Request::GossipStates | Response::Gossip
//!                        | Response::GossipDelta | Response::GossipUpdates) signatures?
//! signatures := version:u8=1 postcard([Option<StateSignature>])  one per state, in order
//! StateSignature := { cert: DER bytes, scheme: u16 (TLS SignatureScheme), sig: bytes }
//! signed     := "ringkv node state v1\0" postcard(NodeState)
//! ```
//! A node signs its own state with its certificate's key each time it
//! changes it; a state about another node is relayed with the signature it
//! came with. Nodes before signatures existed stop decoding at the end of
//! the body and ignore them; a list of another length or version is
//! ignored (the states arrive unsigned).
//!
//! # Error answers
//! ```text
//! body    := postcard(Response::Error { code, message }) detail?
//! detail  := version:u8=1 postcard(ErrorDetail)
//! ```
//! `code` is stable (a [`crate::KvError`] code, or `not_a_replica`,
//! `duplicate`); `message` is for people. The detail after the body carries
//! the error's data typed (the counts of an `unavailable`, the sizes of a
//! `key_too_large`): a receiver rebuilds the error from it, never from the
//! message. Nodes before the detail existed stop decoding at the end of the
//! response and ignore it; their own error answers come without one, and a
//! receiver falls back to the code and the message. A detail of an unknown
//! version or variant is ignored the same way.
//!
//! Every field that
//! carries ringkv data is validated on decode: records are decoded with
//! [`SiblingSet::decode`](crate::SiblingSet::decode) by their users, version
//! vectors through [`VersionVector`]'s checked conversion.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

pub use crate::api::NodeStatus;
use crate::api::{Condition, Consistency, Expiry};
use crate::causality::VersionVector;
use crate::id::NodeId;

pub use super::error_detail::{
    DUPLICATE, ERROR_DETAIL_VERSION, ErrorDetail, IncompleteDetail, NOT_A_REPLICA,
};

/// Magic number opening every payload: "RK".
pub const FRAME_MAGIC: u16 = 0x524B;
/// Wire format version.
pub const WIRE_VERSION: u8 = 1;
/// Fixed header bytes before the body.
pub const HEADER_BYTES: usize = 2 + 1 + 1 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request = 0,
    Response = 1,
    Hello = 2,
}

/// The first frame on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster: String,
    pub node_id: NodeId,
}

/// Load figures a node gossips about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Client operations per second coordinated, over the last interval.
    pub ops_per_sec: u64,
    /// p99 latency of coordinated operations, microseconds.
    pub p99_us: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Estimated stored keys.
    pub keys: u64,
}

/// What a node says about itself through gossip. A state with a greater
/// `(generation, heartbeat)` replaces an older one whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub id: NodeId,
    /// Start time (ms) of this incarnation: a restarted node outranks every
    /// heartbeat of its previous life.
    pub generation: u64,
    /// Bumped every gossip round by the node itself.
    pub heartbeat: u64,
    pub cluster_addr: String,
    pub resp_addr: String,
    pub http_addr: String,
    pub dc: String,
    pub rack: String,
    pub weight: u32,
    /// At most `TOKENS_PER_NODE_MAX`, checked once decoded (a state with
    /// more is refused alone and counted); a decoded state keeps one more
    /// than that at most, so a peer cannot make a node hold more.
    #[serde(
        deserialize_with = "super::bounded::kept::<{ crate::ring::TOKENS_PER_NODE_MAX + 1 }, _, _>"
    )]
    pub tokens: Vec<u64>,
    pub status: NodeStatus,
    pub load: Load,
    /// Who vouches for this state: the node itself, signing with its
    /// certificate's key (see "Signed states" above). Not part of the
    /// postcard body: it travels after a gossip message's body, and is not
    /// kept in `PEERS`.
    #[serde(skip)]
    pub signature: Option<StateSignature>,
}

impl NodeState {
    /// The version of this state for gossip merges.
    pub fn freshness(&self) -> (u64, u64) {
        (self.generation, self.heartbeat)
    }

    /// The bytes a signature covers: a domain tag, then the state's
    /// postcard body (every field but the signature).
    pub fn signed_bytes(&self) -> Result<Vec<u8>, WireError> {
        let mut out = STATE_SIGNATURE_DOMAIN.to_vec();
        let body = postcard::to_allocvec(self).map_err(|e| WireError::Encode(e.to_string()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// What an admin signs to let the cluster take node `id`'s status (in its
/// life `generation`) to `status` on its behalf, during a removal
/// (`ringkv remove`): a domain tag, the id and generation (big-endian) and
/// the status (postcard). A state of a node carried with such a signature
/// may differ from the one it replaces only in status, heartbeat and load.
pub fn removal_grant_bytes(id: NodeId, generation: u64, status: NodeStatus) -> Vec<u8> {
    let mut out = REMOVAL_GRANT_DOMAIN.to_vec();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&generation.to_be_bytes());
    // A unit variant: postcard writes its index, never fails.
    out.extend(postcard::to_allocvec(&status).unwrap_or_default());
    out
}

/// Prefix of a removal grant's signed bytes.
pub const REMOVAL_GRANT_DOMAIN: &[u8] = b"ringkv removal grant v1\0";

/// The statuses a removal takes a node through; a removal needs a grant
/// for each (cancel brings it back to NORMAL).
pub const REMOVAL_STATUSES: [NodeStatus; 4] = [
    NodeStatus::Leaving,
    NodeStatus::LeaveHandover,
    NodeStatus::Left,
    NodeStatus::Normal,
];

/// An admin's signature over [`removal_grant_bytes`] for one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalGrant {
    pub status: NodeStatus,
    pub signature: StateSignature,
}

impl RemovalGrant {
    /// The status's name in a removal request (`Leaving`, `LeaveHandover`,
    /// `Left`, `Normal`).
    pub fn status_name(status: NodeStatus) -> &'static str {
        match status {
            NodeStatus::Leaving => "Leaving",
            NodeStatus::LeaveHandover => "LeaveHandover",
            NodeStatus::Left => "Left",
            NodeStatus::Normal => "Normal",
            NodeStatus::Joining => "Joining",
            NodeStatus::JoinHandover => "JoinHandover",
        }
    }

    /// The status of one of [`REMOVAL_STATUSES`] by name.
    pub fn status_from_name(name: &str) -> Option<NodeStatus> {
        REMOVAL_STATUSES
            .into_iter()
            .find(|s| Self::status_name(*s) == name)
    }
}

/// Prefix of the bytes a node state's signature covers, so that a
/// signature over a state can never pass for one over anything else.
pub const STATE_SIGNATURE_DOMAIN: &[u8] = b"ringkv node state v1\0";

/// A signature over [`NodeState::signed_bytes`]: the signer's certificate
/// (DER; it names the signer's node id and chains to the cluster CA), the
/// TLS signature scheme, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSignature {
    pub cert: Bytes,
    pub scheme: u16,
    pub sig: Bytes,
}

/// Version of the signatures after a gossip message's body.
pub const SIGNATURES_VERSION: u8 = 1;

/// A version vector on the wire, validated on decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WireContext(pub Bytes);

impl WireContext {
    pub fn from_vv(vv: &VersionVector) -> Self {
        Self(Bytes::from(vv.encode_context()))
    }

    pub fn to_vv(&self) -> Result<VersionVector, crate::causality::DecodeError> {
        VersionVector::decode_context(&self.0)
    }
}

/// A client write forwarded to a replica that coordinates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedWrite {
    pub key: Bytes,
    pub op: WriteOp,
    pub consistency: Option<Consistency>,
    pub context: Option<WireContext>,
    pub condition: Condition,
    pub return_previous: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put {
        value: Bytes,
        expiry: Expiry,
    },
    Delete,
    SetExpiry {
        expiry: Expiry,
    },
    /// A data type's write (only between nodes that read data types).
    Typed(crate::replica::TypedChange),
}

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Ping,
    /// Push-pull gossip: the sender's view; the answer is the receiver's.
    Gossip {
        #[serde(
            deserialize_with = "super::bounded::vec::<{ crate::membership::KNOWN_MAX }, _, _>"
        )]
        states: Vec<NodeState>,
    },
    /// Read this replica's record of a key.
    Read {
        key: Bytes,
    },
    /// Merge this record (an encoded sibling set) into the replica's own.
    Merge {
        key: Bytes,
        record: Bytes,
    },
    /// Coordinate this client write as a replica of its key.
    Coordinate(ForwardedWrite),
    /// Hold this record of `key` for `target`, which is down (hinted
    /// handoff); answered `Merged` once stored durably.
    Hint {
        target: NodeId,
        key: Bytes,
        record: Bytes,
    },
    /// Anti-entropy: nodes of the Merkle tree of `(start, end]` at `depth`:
    /// the 16 children of each node `indexes` of `level` (the root only when
    /// `indexes` is empty). At most `merkle::NODE_INDEXES_MAX` indexes.
    MerkleNodes {
        start: u64,
        end: u64,
        depth: u8,
        level: u8,
        indexes: Vec<u32>,
    },
    /// Anti-entropy: the (key, record digest) pairs of each `(start, end]`.
    /// At most `anti_entropy::DIGEST_RANGES_MAX` ranges.
    RangeDigests {
        ranges: Vec<(u64, u64)>,
    },
    /// Streaming: the records whose token lies in `[lo, hi]`, in token
    /// order, after `after` (a `(token, key)` cursor) when given, up to
    /// about `bytes_max` bytes (at least one record).
    StreamRead {
        lo: u64,
        hi: u64,
        after: Option<(u64, Bytes)>,
        bytes_max: u32,
    },
    /// Streaming: merge these records (key, encoded sibling set) into the
    /// replica's own; `crc` is [`stream_crc`] of the entries.
    StreamPush {
        entries: Vec<(Bytes, Bytes)>,
        crc: u32,
    },
    /// [`Request::Coordinate`], applied at most once per `(sender,
    /// generation, seq)`: a copy of a request already seen is refused (see the module
    /// documentation).
    CoordinateOnce {
        generation: u64,
        seq: u64,
        write: ForwardedWrite,
    },
    /// The sender stops gracefully: its state of `(generation, heartbeat)`
    /// is its last, so the receiver sees it down at once, until a newer
    /// state of it arrives. Taken only from the node itself (the
    /// authenticated sender); answered `Pong`. A node of the version before
    /// cannot decode it and answers an error (the connection stays): it
    /// sees the sender down when its heartbeats stop.
    Goodbye {
        generation: u64,
        heartbeat: u64,
    },
    /// A truncation's first step: the receiver's clock now, above every
    /// write it has coordinated (see [`crate::truncate`]). Answered
    /// `Truncation`; a node of the version before answers an error.
    TruncatePrepare,
    /// Record the truncation point `at` (an HLC): durably, then applied
    /// (nothing written at or before it is read, merged or kept). Answered
    /// `Truncation` once recorded; also how a point travels to a node that
    /// missed it.
    Truncate {
        at: u64,
    },
    /// Digest gossip, first message (SYN): the sender's digest of every
    /// member it knows. Answered [`Response::GossipDelta`] (see "Digest
    /// gossip" above); a node of the version before answers an error.
    GossipDigest {
        digest: GossipDigest,
    },
    /// Digest gossip, third message (ACK2): states the receiver lacks, and
    /// the states the sender wants, each with the `(generation, version)`
    /// it holds (`(0, 0)`: none). Answered [`Response::GossipUpdates`]
    /// with the states wanted.
    GossipStates {
        #[serde(
            deserialize_with = "super::bounded::vec::<{ crate::membership::GOSSIP_STATES_PER_MESSAGE_MAX }, _, _>"
        )]
        states: Vec<NodeState>,
        #[serde(
            deserialize_with = "super::bounded::vec::<{ crate::membership::GOSSIP_STATES_PER_MESSAGE_MAX }, _, _>"
        )]
        refreshes: Vec<StateRefresh>,
        #[serde(
            deserialize_with = "super::bounded::vec::<{ crate::membership::GOSSIP_STATES_PER_MESSAGE_MAX }, _, _>"
        )]
        want: Vec<(NodeId, u64, u64)>,
    },
    /// Which record formats the receiver reads (see [`crate::formats`]):
    /// answered [`Response::RecordFormats`]. A node of the version before
    /// cannot decode it and answers an error: it reads format 1.
    RecordFormats,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Pong,
    Gossip {
        #[serde(
            deserialize_with = "super::bounded::vec::<{ crate::membership::KNOWN_MAX }, _, _>"
        )]
        states: Vec<NodeState>,
    },
    /// The replica's record, if it has one.
    Record(Option<Bytes>),
    Merged,
    /// The outcome of a coordinated write.
    Coordinated(CoordinatedOutcome),
    /// The request failed; `code` is a [`crate::KvError`] code (or
    /// `not_a_replica`, `duplicate`). `detail` travels after the body (see
    /// "Error answers" above).
    Error {
        code: String,
        message: String,
        #[serde(skip)]
        detail: Option<ErrorDetail>,
    },
    /// The responder's key count and root for the range, and the requested
    /// children, 16 per index, in request order.
    MerkleNodes {
        keys: u64,
        root: u64,
        children: Vec<u64>,
    },
    /// One list per answered range, in request order.
    RangeDigests {
        ranges: Vec<DigestList>,
    },
    /// Records of a [`Request::StreamRead`]; `more` is false when the range
    /// is done; `crc` is [`stream_crc`] of the entries.
    StreamBatch {
        entries: Vec<(Bytes, Bytes)>,
        more: bool,
        crc: u32,
    },
    /// The answer to `TruncatePrepare` and `Truncate`: the responder's
    /// clock now and the truncation point it has recorded (0: none).
    Truncation {
        clock: u64,
        truncated_at: u64,
    },
    /// Digest gossip, second message (ACK): the responder's digest, the
    /// states it holds newer than the sender's digest showed, and the ids
    /// of the states it wants (sent empty since the sender reads them from
    /// `digest`; taken when a node of an earlier version sends them). When
    /// the sender's positional digest named another member list, `digest`
    /// is explicit and the rest empty.
    GossipDelta {
        digest: GossipDigest,
        #[serde(
            deserialize_with = "super::bounded::vec::<{ crate::membership::GOSSIP_STATES_PER_MESSAGE_MAX }, _, _>"
        )]
        states: Vec<NodeState>,
        #[serde(
            deserialize_with = "super::bounded::vec::<{ crate::membership::GOSSIP_STATES_PER_MESSAGE_MAX }, _, _>"
        )]
        refreshes: Vec<StateRefresh>,
        #[serde(
            deserialize_with = "super::bounded::vec::<{ crate::membership::GOSSIP_STATES_PER_MESSAGE_MAX }, _, _>"
        )]
        want: Vec<NodeId>,
    },
    /// The states a [`Request::GossipStates`] wanted: whole, or as
    /// refreshes where the version it said it holds allows.
    GossipUpdates {
        #[serde(
            deserialize_with = "super::bounded::vec::<{ crate::membership::GOSSIP_STATES_PER_MESSAGE_MAX }, _, _>"
        )]
        states: Vec<NodeState>,
        #[serde(
            deserialize_with = "super::bounded::vec::<{ crate::membership::GOSSIP_STATES_PER_MESSAGE_MAX }, _, _>"
        )]
        refreshes: Vec<StateRefresh>,
    },
    /// The outcome of a coordinated write of a data type: whether it
    /// applied, and its integer reply. (Only between nodes that read data
    /// types.)
    CoordinatedTyped {
        applied: bool,
        integer: i64,
    },
    /// The newest record format the responder reads.
    RecordFormats {
        newest: u8,
    },
}

pub use super::digest::{
    DigestEntries, DigestEntry, GossipDigest, StateRefresh, endpoint_hash, endpoint_of,
    members_hash, same_endpoint,
};

impl Request {
    /// The variant's name, for errors and logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Gossip { .. } => "gossip",
            Self::Read { .. } => "read",
            Self::Merge { .. } => "merge",
            Self::Coordinate(_) => "coordinate",
            Self::Hint { .. } => "hint",
            Self::MerkleNodes { .. } => "merkle nodes",
            Self::RangeDigests { .. } => "range digests",
            Self::StreamRead { .. } => "stream read",
            Self::StreamPush { .. } => "stream push",
            Self::CoordinateOnce { .. } => "coordinate once",
            Self::Goodbye { .. } => "goodbye",
            Self::TruncatePrepare => "truncate prepare",
            Self::Truncate { .. } => "truncate",
            Self::GossipDigest { .. } => "gossip digest",
            Self::GossipStates { .. } => "gossip states",
            Self::RecordFormats => "record formats",
        }
    }
}

impl Response {
    /// An error answer with its typed detail.
    pub fn error(detail: ErrorDetail) -> Self {
        Self::Error {
            code: detail.code().to_string(),
            message: detail.to_string(),
            detail: Some(detail),
        }
    }

    /// The variant's name, for errors about unexpected answers.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Pong => "pong",
            Self::Gossip { .. } => "gossip",
            Self::Record(_) => "record",
            Self::Merged => "merged",
            Self::Coordinated(_) => "coordinated",
            Self::Error { .. } => "error",
            Self::MerkleNodes { .. } => "merkle nodes",
            Self::RangeDigests { .. } => "range digests",
            Self::StreamBatch { .. } => "stream batch",
            Self::Truncation { .. } => "truncation",
            Self::GossipDelta { .. } => "gossip delta",
            Self::GossipUpdates { .. } => "gossip updates",
            Self::CoordinatedTyped { .. } => "coordinated (data type)",
            Self::RecordFormats { .. } => "record formats",
        }
    }
}

/// The checksum of streamed entries: CRC-32C over each key and record,
/// each preceded by its length (u32 little-endian). Frames carry no
/// checksum of their own; streamed data is checked end to end, so a record
/// damaged in a buffer on either side is never merged.
pub fn stream_crc(entries: &[(Bytes, Bytes)]) -> u32 {
    let mut crc = 0u32;
    for (key, record) in entries {
        crc = crc32c::crc32c_append(crc, &(key.len() as u32).to_le_bytes());
        crc = crc32c::crc32c_append(crc, key);
        crc = crc32c::crc32c_append(crc, &(record.len() as u32).to_le_bytes());
        crc = crc32c::crc32c_append(crc, record);
    }
    crc
}

/// The (key, record digest) pairs of one token range, in token order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestList {
    pub digests: Vec<(Bytes, u64)>,
    /// False when the responder's budget cut the list short: the rest
    /// follows the last token listed.
    pub complete: bool,
}

/// A coordinated write's outcome, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatedOutcome {
    pub applied: bool,
    /// The previous resolved value: (value, hlc, actor, expires_at_ms).
    pub previous: Option<(Bytes, u64, u64, Option<u64>)>,
}

/// A malformed or foreign frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame shorter than its header")]
    Short,
    #[error("bad magic {0:#06x}")]
    BadMagic(u16),
    #[error("unsupported wire version {0}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("body does not decode: {0}")]
    Body(String),
    #[error("body does not encode: {0}")]
    Encode(String),
}

/// Encodes one payload (the length prefix is the codec's).
pub fn encode<T: Serialize>(kind: Kind, id: u64, body: &T) -> Result<Bytes, WireError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u16(FRAME_MAGIC);
    buf.put_u8(WIRE_VERSION);
    buf.put_u8(kind as u8);
    buf.put_u64_le(id);
    let body = postcard::to_allocvec(body).map_err(|e| WireError::Encode(e.to_string()))?;
    buf.extend_from_slice(&body);
    Ok(buf.freeze())
}

/// Appends the signatures of `states` after a gossip body, when any.
fn append_signatures(frame: Bytes, states: &[NodeState]) -> Result<Bytes, WireError> {
    if states.iter().all(|s| s.signature.is_none()) {
        return Ok(frame);
    }
    let sigs: Vec<Option<&StateSignature>> = states.iter().map(|s| s.signature.as_ref()).collect();
    let mut buf = BytesMut::from(&frame[..]);
    buf.put_u8(SIGNATURES_VERSION);
    let sigs = postcard::to_allocvec(&sigs).map_err(|e| WireError::Encode(e.to_string()))?;
    buf.extend_from_slice(&sigs);
    Ok(buf.freeze())
}

/// Puts the signatures after a gossip body (when they decode, in a version
/// this node knows, one per state) on the states.
fn take_signatures(states: &mut [NodeState], rest: &[u8]) {
    let Some((&SIGNATURES_VERSION, bytes)) = rest.split_first() else {
        return;
    };
    // One per state, or none is taken: the count is read first, so a
    // trailer cannot make this node decode more signatures than states.
    if !matches!(postcard::take_from_bytes::<usize>(bytes), Ok((n, _)) if n == states.len()) {
        return;
    }
    if let Ok(sigs) = postcard::from_bytes::<Vec<Option<StateSignature>>>(bytes)
        && sigs.len() == states.len()
    {
        for (state, sig) in states.iter_mut().zip(sigs) {
            state.signature = sig;
        }
    }
}

/// Encodes a request, with the signatures of a gossip message's states
/// after its body.
pub fn encode_request(id: u64, req: &Request) -> Result<Bytes, WireError> {
    let frame = encode(Kind::Request, id, req)?;
    match req {
        Request::Gossip { states } | Request::GossipStates { states, .. } => {
            append_signatures(frame, states)
        }
        _ => Ok(frame),
    }
}

/// Decodes a request's body, with the signatures of a gossip message.
pub fn decode_request(body: &[u8]) -> Result<Request, WireError> {
    let (mut req, rest) =
        postcard::take_from_bytes::<Request>(body).map_err(|e| WireError::Body(e.to_string()))?;
    if let Request::Gossip { states } | Request::GossipStates { states, .. } = &mut req {
        take_signatures(states, rest);
    }
    Ok(req)
}

/// Encodes an answer, with the detail of an error answer (or the
/// signatures of a gossip answer) after its body.
pub fn encode_response(id: u64, resp: &Response) -> Result<Bytes, WireError> {
    let frame = encode(Kind::Response, id, resp)?;
    if let Response::Gossip { states }
    | Response::GossipDelta { states, .. }
    | Response::GossipUpdates { states, .. } = resp
    {
        return append_signatures(frame, states);
    }
    let Response::Error {
        detail: Some(detail),
        ..
    } = resp
    else {
        return Ok(frame);
    };
    let mut buf = BytesMut::from(&frame[..]);
    buf.put_u8(ERROR_DETAIL_VERSION);
    let detail = postcard::to_allocvec(detail).map_err(|e| WireError::Encode(e.to_string()))?;
    buf.extend_from_slice(&detail);
    Ok(buf.freeze())
}

/// Decodes an answer's body, with the detail of an error answer when one
/// follows in a version this node knows.
pub fn decode_response(body: &[u8]) -> Result<Response, WireError> {
    let (mut resp, rest) =
        postcard::take_from_bytes::<Response>(body).map_err(|e| WireError::Body(e.to_string()))?;
    if let Response::Error { detail, .. } = &mut resp
        && let Some((&ERROR_DETAIL_VERSION, bytes)) = rest.split_first()
    {
        *detail = postcard::from_bytes(bytes).ok();
    }
    if let Response::Gossip { states }
    | Response::GossipDelta { states, .. }
    | Response::GossipUpdates { states, .. } = &mut resp
    {
        take_signatures(states, rest);
    }
    Ok(resp)
}

/// Decodes the answer of a whole payload (header checked, kind and id
/// ignored): the in-process networks' way through the codec.
pub fn decode_response_payload(payload: Bytes) -> Result<Response, WireError> {
    let (_, _, body) = decode_header(payload)?;
    decode_response(&body)
}

/// Splits a payload into its kind, id and body bytes.
pub fn decode_header(mut payload: Bytes) -> Result<(Kind, u64, Bytes), WireError> {
    if payload.len() < HEADER_BYTES {
        return Err(WireError::Short);
    }
    let magic = payload.get_u16();
    if magic != FRAME_MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = payload.get_u8();
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let kind = match payload.get_u8() {
        0 => Kind::Request,
        1 => Kind::Response,
        2 => Kind::Hello,
        k => return Err(WireError::Kind(k)),
    };
    let id = payload.get_u64_le();
    Ok((kind, id, payload))
}

/// Decodes a body.
pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(body).map_err(|e| WireError::Body(e.to_string()))
}

/// Decodes the request of a whole payload (header checked, kind and id
/// ignored): the in-process networks' way through the codec.
pub fn decode_request_payload(payload: Bytes) -> Result<Request, WireError> {
    let (_, _, body) = decode_header(payload)?;
    decode_request(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KvError;
    use proptest::prelude::*;

    fn state() -> NodeState {
        NodeState {
            id: 7,
            generation: 1,
            heartbeat: 2,
            cluster_addr: "127.0.0.1:7381".into(),
            resp_addr: "127.0.0.1:7379".into(),
            http_addr: "127.0.0.1:7380".into(),
            dc: "dc1".into(),
            rack: "r1".into(),
            weight: 1,
            tokens: vec![1, 2, 3],
            status: NodeStatus::Normal,
            load: Load::default(),
            signature: None,
        }
    }

    /// A length as postcard writes it.
    fn varint(n: usize) -> Vec<u8> {
        postcard::to_allocvec(&n).expect("encode")
    }

    /// Each bounded list of the gossip messages is refused for its length
    /// as it is read: the message is encoded with its lists empty, then
    /// one list's length is replaced by one past its bound, followed by as
    /// many zero bytes (the list's length fits the bytes left, so it is
    /// known before any element is decoded; at the bound, elements are
    /// decoded and the list is not refused for its length).
    #[test]
    fn gossip_lists_past_their_bounds_are_refused_for_their_length() {
        use crate::membership::{GOSSIP_STATES_PER_MESSAGE_MAX as PER, KNOWN_MAX, MEMBERS_MAX};
        let digest = |entries| GossipDigest {
            count: 0,
            members: 0,
            entries,
        };
        let req = |r: Request| encode_request(0, &r).expect("encode")[HEADER_BYTES..].to_vec();
        let resp = |r: Response| encode_response(0, &r).expect("encode")[HEADER_BYTES..].to_vec();
        // (body with its lists empty, empty lists at its end, the list made
        // too long (counted among them), its bound, a request)
        let cases = [
            (
                req(Request::Gossip { states: vec![] }),
                1,
                0,
                KNOWN_MAX,
                true,
            ),
            (
                req(Request::GossipDigest {
                    digest: digest(DigestEntries::Positional(vec![])),
                }),
                1,
                0,
                MEMBERS_MAX,
                true,
            ),
            (
                req(Request::GossipDigest {
                    digest: digest(DigestEntries::Explicit(vec![])),
                }),
                1,
                0,
                KNOWN_MAX,
                true,
            ),
            (
                resp(Response::Gossip { states: vec![] }),
                1,
                0,
                KNOWN_MAX,
                false,
            ),
        ]
        .into_iter()
        .chain((0..3).map(|which| {
            let body = req(Request::GossipStates {
                states: vec![],
                refreshes: vec![],
                want: vec![],
            });
            (body, 3, which, PER, true)
        }))
        .chain((0..3).map(|which| {
            let body = resp(Response::GossipDelta {
                digest: digest(DigestEntries::Explicit(vec![])),
                states: vec![],
                refreshes: vec![],
                want: vec![],
            });
            (body, 3, which, PER, false)
        }))
        .chain((0..2).map(|which| {
            let body = resp(Response::GossipUpdates {
                states: vec![],
                refreshes: vec![],
            });
            (body, 2, which, PER, false)
        }));
        let refused = WireError::Body(postcard::Error::SerdeDeCustom.to_string());
        for (i, (body, lists, which, bound, is_request)) in cases.enumerate() {
            assert!(
                body.ends_with(&vec![0; lists]),
                "case {i}: lists at the end"
            );
            let decode = |b: &[u8]| {
                if is_request {
                    decode_request(b).map(|_| ())
                } else {
                    decode_response(b).map(|_| ())
                }
            };
            assert_eq!(decode(&body), Ok(()), "case {i}: as encoded");
            let mut at_bound = body[..body.len() - lists + which].to_vec();
            at_bound.extend(varint(bound));
            at_bound.resize(at_bound.len() + bound, 0);
            assert_ne!(
                decode(&at_bound),
                Err(refused.clone()),
                "case {i}: a list at its bound is read on"
            );
            let mut past = body[..body.len() - lists + which].to_vec();
            past.extend(varint(bound + 1));
            past.resize(past.len() + bound + 1, 0);
            assert_eq!(decode(&past), Err(refused.clone()), "case {i}");
        }
    }

    /// A state's tokens past the bound are decoded and dropped (one past
    /// it is kept, so the state is still refused alone); a signature
    /// trailer is read only when it holds one per state.
    #[test]
    fn a_peer_cannot_make_a_node_hold_more_tokens_or_signatures_than_states() {
        use crate::ring::TOKENS_PER_NODE_MAX;
        let mut big = state();
        big.tokens = (0..TOKENS_PER_NODE_MAX as u64 + 500).collect();
        let frame = encode_request(
            0,
            &Request::Gossip {
                states: vec![big, state()],
            },
        )
        .expect("encode");
        let Ok(Request::Gossip { states }) = decode_request(&frame[HEADER_BYTES..]) else {
            panic!("decodes");
        };
        assert_eq!(states[0].tokens.len(), TOKENS_PER_NODE_MAX + 1);
        assert_eq!(states[1], state());
        // A trailer announcing a million signatures for one state, and
        // one announcing the right count: only the second is read.
        let sig = StateSignature {
            cert: Bytes::from_static(b"cert"),
            scheme: 7,
            sig: Bytes::from_static(b"sig"),
        };
        for (count, taken) in [(1_000_000, false), (1, true)] {
            let mut states = vec![state()];
            let mut trailer = vec![SIGNATURES_VERSION];
            trailer.extend(varint(count));
            trailer.extend(postcard::to_allocvec(&Some(&sig)).expect("encode"));
            take_signatures(&mut states, &trailer);
            assert_eq!(states[0].signature.is_some(), taken, "{count} announced");
        }
    }

    #[test]
    fn request_roundtrip() {
        let reqs = vec![
            Request::Ping,
            Request::Gossip {
                states: vec![state()],
            },
            Request::Read {
                key: Bytes::from_static(b"k"),
            },
            Request::Merge {
                key: Bytes::from_static(b"k"),
                record: Bytes::from_static(b"\xD7\x01\x00\x00"),
            },
            Request::Coordinate(ForwardedWrite {
                key: Bytes::from_static(b"k"),
                op: WriteOp::Put {
                    value: Bytes::from_static(b"v"),
                    expiry: Expiry::At(5),
                },
                consistency: Some(Consistency::Count(2)),
                context: Some(WireContext::from_vv(&VersionVector::from_entries([(1, 2)]))),
                condition: Condition::IfAbsent,
                return_previous: true,
            }),
            Request::MerkleNodes {
                start: u64::MAX,
                end: 5,
                depth: 2,
                level: 1,
                indexes: vec![0, 15],
            },
            Request::RangeDigests {
                ranges: vec![(1, 2), (u64::MAX, 0)],
            },
        ];
        for (i, req) in reqs.into_iter().enumerate() {
            let frame = encode(Kind::Request, i as u64, &req).expect("encode");
            let (kind, id, body) = decode_header(frame).expect("header");
            assert_eq!((kind, id), (Kind::Request, i as u64));
            let back: Request = decode_body(&body).expect("body");
            assert_eq!(back, req);
        }
    }

    #[test]
    fn anti_entropy_responses_roundtrip() {
        let resps = vec![
            Response::MerkleNodes {
                keys: 3,
                root: u64::MAX,
                children: (0..16).collect(),
            },
            Response::RangeDigests {
                ranges: vec![
                    DigestList {
                        digests: vec![(Bytes::from_static(b"k"), 9)],
                        complete: true,
                    },
                    DigestList {
                        digests: Vec::new(),
                        complete: false,
                    },
                ],
            },
        ];
        for resp in resps {
            let frame = encode(Kind::Response, 3, &resp).expect("encode");
            let (_, _, body) = decode_header(frame).expect("header");
            let back: Response = decode_body(&body).expect("body");
            assert_eq!(back, resp);
        }
    }

    #[test]
    fn error_answers_carry_their_detail_and_older_decoders_ignore_it() {
        let e = KvError::Unavailable {
            required: 2,
            answered: 1,
            why: "n1: timed out: after 2, 3".into(),
        };
        let resp = Response::from(&e);
        let frame = encode_response(9, &resp).expect("encode");
        let (kind, id, body) = decode_header(frame).expect("header");
        assert_eq!((kind, id), (Kind::Response, 9));
        // This version: the detail comes back whole.
        let back = decode_response(&body).expect("decode");
        assert_eq!(back, resp);
        let Response::Error {
            code,
            message,
            detail,
        } = back
        else {
            panic!("an error answer");
        };
        assert_eq!(code, "unavailable");
        assert_eq!(message, e.to_string());
        assert_eq!(
            detail,
            Some(ErrorDetail::Unavailable {
                required: 2,
                answered: 1,
                why: "n1: timed out: after 2, 3".into()
            })
        );
        // A node of the version before: the body alone, code and message
        // as they always were.
        let old: Response = decode_body(&body).expect("old decoder");
        assert_eq!(
            old,
            Response::Error {
                code: "unavailable".into(),
                message: e.to_string(),
                detail: None
            }
        );
        // Its answers carry no detail; a detail of an unknown version is
        // ignored.
        let plain = encode(Kind::Response, 1, &old).expect("encode");
        let (_, _, body) = decode_header(plain.clone()).expect("header");
        assert_eq!(decode_response(&body).expect("decode"), old);
        let mut future = BytesMut::from(&plain[..]);
        future.put_u8(ERROR_DETAIL_VERSION + 1);
        future.extend_from_slice(b"whatever");
        let (_, _, body) = decode_header(future.freeze()).expect("header");
        assert_eq!(decode_response(&body).expect("decode"), old);
        // Answers other than errors are unchanged.
        let pong = encode_response(2, &Response::Pong).expect("encode");
        assert_eq!(
            pong,
            encode(Kind::Response, 2, &Response::Pong).expect("encode")
        );
    }

    #[test]
    fn foreign_frames_are_refused() {
        assert_eq!(
            decode_header(Bytes::from_static(b"RK")),
            Err(WireError::Short)
        );
        let mut f = BytesMut::from(&encode(Kind::Hello, 0, &Request::Ping).expect("encode")[..]);
        f[0] = 0;
        assert!(matches!(
            decode_header(f.freeze()),
            Err(WireError::BadMagic(_))
        ));
        let mut f = BytesMut::from(&encode(Kind::Hello, 0, &Request::Ping).expect("encode")[..]);
        f[2] = 9;
        assert_eq!(decode_header(f.freeze()), Err(WireError::Version(9)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((_, _, body)) = decode_header(Bytes::from(bytes.clone())) {
                let _ = decode_body::<Request>(&body);
                let _ = decode_body::<Response>(&body);
                let _ = decode_body::<Hello>(&body);
            }
            let _ = decode_body::<Request>(&bytes);
            let _ = decode_body::<Response>(&bytes);
            let _ = decode_response(&bytes);
        }
    }
}
