//! Dots and version vectors, the causal context clients hold, and the
//! epoch floor of a node's dot counters.

use super::codec::{Reader, put_varint, varint_len};

/// One write event: the `counter`-th write coordinated by `actor` for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    pub actor: u64,
    pub counter: u64,
}

/// A version vector: for each actor, the number of its writes seen. Kept
/// sorted by actor with no zero entries, so equal vectors are equal values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    entries: Vec<(u64, u64)>,
}

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a vector from (actor, counter) pairs; duplicates keep the max.
    pub fn from_entries(pairs: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut vv = Self::new();
        for (actor, counter) in pairs {
            vv.raise(actor, counter);
        }
        vv
    }

    pub fn get(&self, actor: u64) -> u64 {
        match self.entries.binary_search_by_key(&actor, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// The actors with an entry.
    pub fn actors(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|e| e.0)
    }

    /// Drops `actor`'s entry (pruning; see
    /// [`crate::causality::purge::prune_departed`] for when that is safe).
    pub fn remove(&mut self, actor: u64) {
        self.entries.retain(|e| e.0 != actor);
    }

    /// Raises `actor`'s entry to at least `counter`.
    pub fn raise(&mut self, actor: u64, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.entries.binary_search_by_key(&actor, |e| e.0) {
            Ok(i) => self.entries[i].1 = self.entries[i].1.max(counter),
            Err(i) => self.entries.insert(i, (actor, counter)),
        }
    }

    /// The least upper bound of two vectors.
    pub fn merge(&mut self, other: &VersionVector) {
        for &(actor, counter) in &other.entries {
            self.raise(actor, counter);
        }
    }

    /// True when this vector has seen every event `other` has seen.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|&(a, c)| self.get(a) >= c)
    }

    /// True when neither vector descends the other.
    pub fn concurrent(&self, other: &VersionVector) -> bool {
        !self.descends(other) && !other.descends(self)
    }

    /// True when the event `dot` is summarised by this vector.
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes the entries of actors for which `keep` is false (pruning of
    /// departed nodes).
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.entries.retain(|&(a, _)| keep(a));
    }
}

/// The opaque causal context handed to clients: the version vector of what a
/// read saw. Clients pass it back unchanged on a write.
pub type CausalContext = VersionVector;

/// Magic byte opening an encoded causal context.
const CONTEXT_MAGIC: u8 = 0xC7;
/// Format version of the causal context encoding. Do not change: clients hold
/// these bytes.
const CONTEXT_FORMAT: u8 = 1;
/// The largest number of entries a context or record may carry (one per node
/// that ever coordinated a write of the key).
pub const VV_ENTRIES_MAX: usize = 4096;

/// Largest dot counter accepted on decode (contexts come from clients).
pub const COUNTER_MAX: u64 = 1 << 62;

/// Bits of a dot counter below a node's epoch: each start of a node bumps
/// its epoch (kept in `EPOCH` in its data directory), and its dot counters
/// start above `epoch << EPOCH_SHIFT`. A node whose disk lost its own
/// latest writes of a key (power loss with periodic sync) would otherwise
/// count from its stale record and issue a dot its peers already hold for
/// another value: they would take the new write for one they had seen and
/// drop it. Within an epoch a node's counters rise across all keys (the
/// replica keeps the last one issued), so 2^40 writes per node per epoch;
/// 2^22 epochs.
pub const EPOCH_SHIFT: u32 = 40;

/// The lowest dot counter of `epoch` (exclusive).
pub fn epoch_floor(epoch: u64) -> u64 {
    epoch.min(COUNTER_MAX >> EPOCH_SHIFT) << EPOCH_SHIFT
}

impl VersionVector {
    /// Encodes the vector as a causal context:
    /// `magic:u8=0xC7 format:u8=1 count:varint (actor:u64le counter:varint)*`.
    pub fn encode_context(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.entries.len() * 12);
        out.push(CONTEXT_MAGIC);
        out.push(CONTEXT_FORMAT);
        self.encode_into(&mut out);
        out
    }

    /// Decodes a causal context produced by [`Self::encode_context`].
    pub fn decode_context(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != CONTEXT_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let format = r.u8()?;
        if format != CONTEXT_FORMAT {
            return Err(DecodeError::UnknownFormat(format));
        }
        let vv = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(vv)
    }

    /// The bytes [`VersionVector::encode_into`] writes.
    pub(super) fn encoded_len(&self) -> usize {
        varint_len(self.entries.len() as u64)
            + (self.entries.iter())
                .map(|&(_, counter)| 8 + varint_len(counter))
                .sum::<usize>()
    }

    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.entries.len() as u64);
        for &(actor, counter) in &self.entries {
            out.extend_from_slice(&actor.to_le_bytes());
            put_varint(out, counter);
        }
    }

    pub(super) fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.varint()? as usize;
        if count > VV_ENTRIES_MAX {
            return Err(DecodeError::TooMany("version vector entries", count));
        }
        let mut entries = Vec::with_capacity(count);
        let mut prev: Option<u64> = None;
        for _ in 0..count {
            let actor = r.u64()?;
            let counter = r.varint()?;
            if prev.is_some_and(|p| p >= actor) || counter == 0 || counter > COUNTER_MAX {
                return Err(DecodeError::NotCanonical);
            }
            prev = Some(actor);
            entries.push((actor, counter));
        }
        Ok(Self { entries })
    }
}

/// Why stored or client-supplied version bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated")]
    Truncated,
    #[error("bad magic byte")]
    BadMagic,
    #[error("unknown format version {0}")]
    UnknownFormat(u8),
    #[error("varint too long")]
    VarintOverflow,
    #[error("too many {0}: {1}")]
    TooMany(&'static str, usize),
    #[error("entries not in canonical order")]
    NotCanonical,
    #[error("trailing bytes")]
    Trailing,
}
