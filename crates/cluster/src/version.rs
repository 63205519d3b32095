//! Versioning: hybrid logical clocks, version vectors, and the sibling set
//! stored under every key.
//!
//! A key's stored record is a *dotted version vector set* (the form Riak uses
//! to stop sibling explosion): one version vector that summarises every write
//! the replica has seen for the key, plus the siblings still live, each tagged
//! with the single event ("dot") that created it. A write carries the causal
//! context (a version vector) its client read; it removes exactly the siblings
//! that context covers and adds one new sibling. Two replicas' records merge by
//! keeping every sibling that the other side has not seen superseded.
//!
//! Actors are node ids (the coordinator of a write), never clients, so a
//! vector has at most one entry per node that ever coordinated a write of the
//! key. Pruning rule: the entry of a node that has left the ring is dropped
//! once nothing can bring back a sibling it covers (see
//! [`crate::anti_entropy::prune_departed`] and ARCHITECTURE.md,
//! "Versioning"); a vector holds at most [`VV_ENTRIES_MAX`]. Dot counters of a node start
//! above its epoch's floor ([`epoch_floor`]), so a node that lost its own
//! latest writes never issues one of their dots again.
//!
//! Sibling bound: at most `siblings_max` siblings are kept; beyond it the
//! oldest by HLC are dropped and counted (`ringkv_siblings_dropped_total`).
//! Concurrent writes by well-behaved clients that pass their context back never
//! reach the bound.

use bytes::Bytes;

/// A hybrid-logical-clock timestamp: the high 48 bits are wall-clock
/// milliseconds, the low 16 bits a logical counter that orders events within a
/// millisecond and across skewed clocks.
pub type Hlc = u64;

const HLC_LOGICAL_BITS: u32 = 16;

/// The wall-clock milliseconds of an HLC timestamp.
pub fn hlc_physical_ms(hlc: Hlc) -> u64 {
    hlc >> HLC_LOGICAL_BITS
}

/// Generates HLC timestamps that never go backwards, even if the wall clock
/// does, and that stay ahead of every timestamp observed from peers.
#[derive(Debug, Default)]
pub struct HlcState {
    last: Hlc,
}

impl HlcState {
    /// The next timestamp for a local event at wall time `now_ms`.
    pub fn next(&mut self, now_ms: u64) -> Hlc {
        let physical = now_ms << HLC_LOGICAL_BITS;
        self.last = if physical > self.last {
            physical
        } else {
            self.last + 1
        };
        self.last
    }

    /// Folds in a timestamp seen from elsewhere.
    pub fn observe(&mut self, seen: Hlc) {
        self.last = self.last.max(seen);
    }
}

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
    /// [`crate::anti_entropy::prune_departed`] for when that is safe).
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

    fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.entries.len() as u64);
        for &(actor, counter) in &self.entries {
            out.extend_from_slice(&actor.to_le_bytes());
            put_varint(out, counter);
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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

/// A stored sibling: one concurrent version, or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSibling {
    pub dot: Dot,
    pub hlc: Hlc,
    pub expires_at_ms: Option<u64>,
    /// `None` is a tombstone: the key was deleted by this event.
    pub value: Option<Bytes>,
}

impl StoredSibling {
    /// Live: a value that has not expired at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.value.is_some() && self.expires_at_ms.is_none_or(|t| t > now_ms)
    }
}

/// Everything stored under one key: the dotted version vector set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiblingSet {
    /// Every write of this key this replica has seen.
    pub vv: VersionVector,
    /// Siblings not superseded, sorted by dot.
    pub siblings: Vec<StoredSibling>,
}

/// Magic byte opening a stored record. Do not change: on disk.
const RECORD_MAGIC: u8 = 0xD7;
/// Format version of the stored record. Do not change: on disk.
const RECORD_FORMAT: u8 = 1;
/// The largest number of siblings a decoded record may hold.
pub const SIBLINGS_DECODE_MAX: usize = 65_536;

const FLAG_TOMBSTONE: u8 = 1;
const FLAG_EXPIRES: u8 = 2;

impl SiblingSet {
    /// Applies a write coordinated by `actor`: the siblings `context` covers
    /// are superseded, and one new sibling (a value, or a tombstone when
    /// `value` is `None`) is added with a fresh dot. Returns the new dot.
    pub fn update(
        &mut self,
        context: &VersionVector,
        actor: u64,
        hlc: Hlc,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
    ) -> Dot {
        self.update_above(context, actor, 0, hlc, value, expires_at_ms)
    }

    /// [`SiblingSet::update`] with a dot counter above `floor` too: the
    /// floor of the actor's current epoch (see [`epoch_floor`]), so a node
    /// that lost its own latest writes of the key never issues one of their
    /// dots again.
    pub fn update_above(
        &mut self,
        context: &VersionVector,
        actor: u64,
        floor: u64,
        hlc: Hlc,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
    ) -> Dot {
        // The counter must exceed anything either side has seen for this
        // actor, so the new dot is unique. Decoded counters stay below
        // `COUNTER_MAX`, so this cannot overflow.
        let counter = self
            .vv
            .get(actor)
            .max(context.get(actor))
            .max(floor)
            .saturating_add(1);
        let dot = Dot { actor, counter };
        self.siblings.retain(|s| !context.covers(s.dot));
        self.vv.merge(context);
        self.vv.raise(actor, counter);
        let new = StoredSibling {
            dot,
            hlc,
            expires_at_ms,
            value,
        };
        let pos = self.siblings.partition_point(|s| s.dot < dot);
        self.siblings.insert(pos, new);
        dot
    }

    /// Merges another replica's record into this one (commutative,
    /// associative, idempotent).
    pub fn merge(&mut self, other: &SiblingSet) {
        let mut out: Vec<StoredSibling> =
            Vec::with_capacity(self.siblings.len() + other.siblings.len());
        let mut a = self.siblings.iter().peekable();
        let mut b = other.siblings.iter().peekable();
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.dot == y.dot => {
                    // The same event on both sides carries the same data.
                    out.push((*x).clone());
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.dot < y.dot => {
                    if !other.vv.covers(x.dot) {
                        out.push((*x).clone());
                    }
                    a.next();
                }
                (Some(_), Some(y)) => {
                    if !self.vv.covers(y.dot) {
                        out.push((*y).clone());
                    }
                    b.next();
                }
                (Some(x), None) => {
                    if !other.vv.covers(x.dot) {
                        out.push((*x).clone());
                    }
                    a.next();
                }
                (None, Some(y)) => {
                    if !self.vv.covers(y.dot) {
                        out.push((*y).clone());
                    }
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.siblings = out;
        self.vv.merge(&other.vv);
    }

    /// Keeps at most `max` siblings, dropping the oldest by HLC; returns how
    /// many were dropped.
    pub fn bound_siblings(&mut self, max: usize) -> usize {
        let max = max.max(1);
        if self.siblings.len() <= max {
            return 0;
        }
        let dropped = self.siblings.len() - max;
        let mut order: Vec<(Hlc, Dot)> = self.siblings.iter().map(|s| (s.hlc, s.dot)).collect();
        order.sort_unstable();
        let doomed: Vec<Dot> = order.iter().take(dropped).map(|&(_, d)| d).collect();
        self.siblings.retain(|s| !doomed.contains(&s.dot));
        dropped
    }

    /// True when no sibling is live at `now_ms` (deleted or expired).
    pub fn is_dead(&self, now_ms: u64) -> bool {
        !self.siblings.iter().any(|s| s.is_live(now_ms))
    }

    /// The live siblings at `now_ms`.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = &StoredSibling> {
        self.siblings.iter().filter(move |s| s.is_live(now_ms))
    }

    /// The greatest HLC of any sibling (0 when there are none).
    pub fn max_hlc(&self) -> Hlc {
        self.siblings.iter().map(|s| s.hlc).max().unwrap_or(0)
    }

    /// The expiry the storage engine may apply to the whole record: only when
    /// every sibling is a value with an expiry, the latest of them.
    pub fn record_expiry(&self) -> Option<u64> {
        let mut latest = 0;
        for s in &self.siblings {
            match (s.value.is_some(), s.expires_at_ms) {
                (true, Some(t)) => latest = latest.max(t),
                _ => return None,
            }
        }
        (!self.siblings.is_empty()).then_some(latest)
    }

    /// Encodes the record for storage.
    ///
    /// ```text
    /// record  := magic:u8=0xD7 format:u8=1 vv count:varint sibling*
    /// vv      := count:varint (actor:u64le counter:varint)*      actors ascending
    /// sibling := actor:u64le counter:varint hlc:u64le flags:u8
    ///            [expires_at_ms:u64le]      if flags & 2
    ///            [len:varint value:bytes]   unless flags & 1 (tombstone)
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let payload: usize = self
            .siblings
            .iter()
            .map(|s| s.value.as_ref().map_or(0, |v| v.len()) + 32)
            .sum();
        let mut out = Vec::with_capacity(8 + self.vv.entries.len() * 12 + payload);
        out.push(RECORD_MAGIC);
        out.push(RECORD_FORMAT);
        self.vv.encode_into(&mut out);
        put_varint(&mut out, self.siblings.len() as u64);
        for s in &self.siblings {
            out.extend_from_slice(&s.dot.actor.to_le_bytes());
            put_varint(&mut out, s.dot.counter);
            out.extend_from_slice(&s.hlc.to_le_bytes());
            let mut flags = 0;
            if s.value.is_none() {
                flags |= FLAG_TOMBSTONE;
            }
            if s.expires_at_ms.is_some() {
                flags |= FLAG_EXPIRES;
            }
            out.push(flags);
            if let Some(t) = s.expires_at_ms {
                out.extend_from_slice(&t.to_le_bytes());
            }
            if let Some(v) = &s.value {
                put_varint(&mut out, v.len() as u64);
                out.extend_from_slice(v);
            }
        }
        out
    }

    /// Decodes a stored record. Values are sliced out of `bytes` without
    /// copying.
    pub fn decode(bytes: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != RECORD_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let format = r.u8()?;
        if format != RECORD_FORMAT {
            return Err(DecodeError::UnknownFormat(format));
        }
        let vv = VersionVector::decode_from(&mut r)?;
        let count = r.varint()? as usize;
        if count > SIBLINGS_DECODE_MAX {
            return Err(DecodeError::TooMany("siblings", count));
        }
        let mut siblings = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let actor = r.u64()?;
            let counter = r.varint()?;
            let hlc = r.u64()?;
            let flags = r.u8()?;
            let expires_at_ms = if flags & FLAG_EXPIRES != 0 {
                Some(r.u64()?)
            } else {
                None
            };
            let value = if flags & FLAG_TOMBSTONE != 0 {
                None
            } else {
                let len = r.varint()? as usize;
                let start = r.pos;
                r.skip(len)?;
                Some(bytes.slice(start..start + len))
            };
            let dot = Dot { actor, counter };
            if siblings
                .last()
                .is_some_and(|s: &StoredSibling| s.dot >= dot)
            {
                return Err(DecodeError::NotCanonical);
            }
            siblings.push(StoredSibling {
                dot,
                hlc,
                expires_at_ms,
                value,
            });
        }
        r.finish()?;
        Ok(Self { vv, siblings })
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let end = self.pos.checked_add(8).ok_or(DecodeError::Truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(slice);
        self.pos = end;
        Ok(u64::from_le_bytes(a))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    fn skip(&mut self, len: usize) -> Result<(), DecodeError> {
        let end = self.pos.checked_add(len).ok_or(DecodeError::Truncated)?;
        if end > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        self.pos = end;
        Ok(())
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::Trailing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn dots_count_from_the_epoch_floor_and_huge_counters_are_refused() {
        let mut set = SiblingSet::default();
        let floor = epoch_floor(3);
        let d1 = set.update_above(&VersionVector::new(), 7, floor, 1, b("a"), None);
        assert_eq!(d1.counter, floor + 1);
        let d2 = set.update_above(&set.vv.clone(), 7, floor, 2, b("b"), None);
        assert_eq!(d2.counter, floor + 2, "within an epoch, counters follow on");
        // A later epoch jumps above everything the earlier one issued.
        let d3 = set.update_above(&set.vv.clone(), 7, epoch_floor(4), 3, b("c"), None);
        assert_eq!(d3.counter, epoch_floor(4) + 1);
        // A context naming an absurd counter is refused on decode.
        let mut huge = VersionVector::new();
        huge.raise(7, COUNTER_MAX + 1);
        assert!(VersionVector::decode_context(&huge.encode_context()).is_err());
        let mut edge = VersionVector::new();
        edge.raise(7, COUNTER_MAX);
        let ok = VersionVector::decode_context(&edge.encode_context()).expect("at the limit");
        let d4 = set.update_above(&ok, 7, 0, 4, b("d"), None);
        assert_eq!(d4.counter, COUNTER_MAX + 1, "no overflow at the limit");
        assert_eq!(
            epoch_floor(u64::MAX),
            COUNTER_MAX >> EPOCH_SHIFT << EPOCH_SHIFT
        );
    }

    #[test]
    fn write_with_context_supersedes_what_it_saw() {
        let mut set = SiblingSet::default();
        set.update(&VersionVector::new(), 1, 10, b("a"), None);
        let ctx = set.vv.clone();
        set.update(&ctx, 1, 11, b("b"), None);
        assert_eq!(set.siblings.len(), 1);
        assert_eq!(set.siblings[0].value, b("b"));
    }

    #[test]
    fn blind_writes_become_siblings_and_context_resolves_them() {
        let mut set = SiblingSet::default();
        set.update(&VersionVector::new(), 1, 10, b("a"), None);
        set.update(&VersionVector::new(), 2, 11, b("b"), None);
        assert_eq!(set.siblings.len(), 2);
        let ctx = set.vv.clone();
        set.update(&ctx, 1, 12, b("c"), None);
        assert_eq!(set.siblings.len(), 1);
        assert_eq!(set.siblings[0].value, b("c"));
    }

    #[test]
    fn concurrent_replica_writes_merge_into_siblings() {
        // Two replicas start from the same state and each take a write with
        // the same (stale) context: both survive a merge.
        let mut base = SiblingSet::default();
        base.update(&VersionVector::new(), 1, 10, b("a"), None);
        let ctx = base.vv.clone();
        let mut left = base.clone();
        let mut right = base.clone();
        left.update(&ctx, 1, 11, b("left"), None);
        right.update(&ctx, 2, 12, b("right"), None);
        let mut merged = left.clone();
        merged.merge(&right);
        let values: Vec<_> = merged.siblings.iter().map(|s| s.value.clone()).collect();
        assert_eq!(values, vec![b("left"), b("right")]);
        // A later write with the merged context resolves both.
        let ctx = merged.vv.clone();
        merged.update(&ctx, 2, 13, b("final"), None);
        assert_eq!(merged.siblings.len(), 1);
        // And the stale replica learns it on merge.
        left.merge(&merged);
        assert_eq!(left, merged);
    }

    #[test]
    fn tombstones_hide_and_expiry_hides() {
        let mut set = SiblingSet::default();
        set.update(&VersionVector::new(), 1, 10, b("a"), Some(100));
        assert!(!set.is_dead(99));
        assert!(set.is_dead(100));
        assert_eq!(set.record_expiry(), Some(100));
        let ctx = set.vv.clone();
        set.update(&ctx, 1, 11, None, None);
        assert!(set.is_dead(0));
        assert_eq!(set.record_expiry(), None);
    }

    #[test]
    fn sibling_bound_drops_oldest() {
        let mut set = SiblingSet::default();
        for i in 0..10u64 {
            set.update(&VersionVector::new(), i, 100 - i, b(&i.to_string()), None);
        }
        assert_eq!(set.bound_siblings(4), 6);
        let mut hlcs: Vec<_> = set.siblings.iter().map(|s| s.hlc).collect();
        hlcs.sort_unstable();
        assert_eq!(hlcs, vec![97, 98, 99, 100]);
    }

    #[test]
    fn hlc_never_goes_backwards() {
        let mut h = HlcState::default();
        let a = h.next(1_000);
        let b = h.next(999); // wall clock stepped back
        let c = h.next(1_000);
        assert!(a < b && b < c);
        assert_eq!(hlc_physical_ms(a), 1_000);
        h.observe(5_000 << 16);
        assert!(h.next(1_001) > 5_000 << 16);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(
            SiblingSet::decode(&Bytes::from_static(b"")),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            SiblingSet::decode(&Bytes::from_static(b"\x00\x01")),
            Err(DecodeError::BadMagic)
        );
        assert_eq!(
            SiblingSet::decode(&Bytes::from_static(&[0xD7, 9])),
            Err(DecodeError::UnknownFormat(9))
        );
        let mut ok = SiblingSet::default();
        ok.update(&VersionVector::new(), 1, 1, b("x"), None);
        let mut enc = ok.encode();
        enc.push(0);
        assert_eq!(
            SiblingSet::decode(&Bytes::from(enc)),
            Err(DecodeError::Trailing)
        );
        assert_eq!(
            VersionVector::decode_context(b"\xC7\x01\x01"),
            Err(DecodeError::Truncated)
        );
    }

    fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..5, 0u64..6), 0..6).prop_map(VersionVector::from_entries)
    }

    /// Three replica states of one random history of updates and merges.
    /// (Independent histories could reuse a dot for different data, which
    /// real coordinators never do.)
    fn arb_replicas() -> impl Strategy<Value = Vec<SiblingSet>> {
        proptest::collection::vec((0u64..4, any::<bool>(), 0u8..3), 0..12).prop_map(|ops| {
            let mut replicas = vec![SiblingSet::default(); 3];
            for (i, (actor, with_ctx, replica)) in ops.into_iter().enumerate() {
                let r = replica as usize;
                // Each actor coordinates through one replica, so its counter
                // is always read from the state that issued the last dot.
                let owner = (actor % 3) as usize;
                let ctx = if with_ctx {
                    replicas[r].vv.clone()
                } else {
                    VersionVector::new()
                };
                let value = if i % 5 == 4 { None } else { b(&i.to_string()) };
                replicas[owner].update(&ctx, actor, i as u64, value, None);
                if r != owner {
                    let src = replicas[owner].clone();
                    replicas[r].merge(&src);
                }
            }
            replicas
        })
    }

    proptest! {
        #[test]
        fn vv_merge_is_commutative_associative_idempotent(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = a.clone(); aa.merge(&a);
            prop_assert_eq!(&aa, &a);
            prop_assert!(ab.descends(&a) && ab.descends(&b));
        }

        #[test]
        fn descends_is_a_partial_order(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            prop_assert!(a.descends(&a));
            if a.descends(&b) && b.descends(&a) { prop_assert_eq!(&a, &b); }
            if a.descends(&b) && b.descends(&c) { prop_assert!(a.descends(&c)); }
        }

        #[test]
        fn sibling_merge_is_commutative_associative_idempotent(r in arb_replicas()) {
            let (a, b, c) = (r[0].clone(), r[1].clone(), r[2].clone());
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = a.clone(); aa.merge(&a);
            prop_assert_eq!(&aa, &a);
        }

        #[test]
        fn record_and_context_roundtrip(r in arb_replicas()) {
            let set = r[1].clone();
            let enc = Bytes::from(set.encode());
            prop_assert_eq!(SiblingSet::decode(&enc), Ok(set.clone()));
            let ctx = set.vv.encode_context();
            prop_assert_eq!(VersionVector::decode_context(&ctx), Ok(set.vv.clone()));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = SiblingSet::decode(&Bytes::from(bytes.clone()));
            let _ = VersionVector::decode_context(&bytes);
        }
    }
}
