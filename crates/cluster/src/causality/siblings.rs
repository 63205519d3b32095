//! The dotted version vector set stored under every key: its operations
//! and its record encoding.

use bytes::Bytes;

use super::codec::{Reader, put_varint, varint_len};
use super::{DecodeError, Dot, Hlc, VersionVector};

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

/// A sibling's header as decoding meets it, with its value's position.
struct SiblingAt {
    dot: Dot,
    hlc: Hlc,
    expires_at_ms: Option<u64>,
    value: Option<std::ops::Range<usize>>,
}

/// Magic byte opening a stored record. Do not change: on disk.
const RECORD_MAGIC: u8 = 0xD7;
/// Format version of the stored record. Do not change: on disk.
pub(super) const RECORD_FORMAT: u8 = 1;
/// Format of a record that holds data-type components after its string
/// siblings ([`super::types::record`]).
pub const RECORD_FORMAT_TYPED: u8 = 2;
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
    /// floor of the actor's current epoch (see [`super::epoch_floor`]), so a node
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
        let dot = self.advance_above(context, actor, floor);
        let new = StoredSibling {
            dot,
            hlc,
            expires_at_ms,
            value,
        };
        let pos = self.siblings.partition_point(|s| s.dot < dot);
        self.siblings.insert(pos, new);
        debug_assert!(self.vv.covers(dot), "the new dot is covered by the vector");
        dot
    }

    /// The causal part of a write coordinated by `actor`: the siblings
    /// `context` covers are superseded, and the vector takes the context
    /// and a fresh dot above `floor`, which it returns. A data type's
    /// write ([`super::types::Record`]) tags its change with the dot.
    pub fn advance_above(&mut self, context: &VersionVector, actor: u64, floor: u64) -> Dot {
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
        dot
    }

    /// Merges another replica's record into this one (commutative,
    /// associative, idempotent). True when this set changed.
    pub fn merge(&mut self, other: &SiblingSet) -> bool {
        let inputs_well_formed =
            cfg!(debug_assertions) && self.well_formed() && other.well_formed();
        // Whether the set changes: a sibling of ours dropped, one of
        // theirs added, or their vector beyond ours.
        let mut changed = !self.vv.descends(&other.vv);
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
                    if other.vv.covers(x.dot) {
                        changed = true;
                    } else {
                        out.push((*x).clone());
                    }
                    a.next();
                }
                (Some(_), Some(y)) => {
                    if !self.vv.covers(y.dot) {
                        out.push((*y).clone());
                        changed = true;
                    }
                    b.next();
                }
                (Some(x), None) => {
                    if other.vv.covers(x.dot) {
                        changed = true;
                    } else {
                        out.push((*x).clone());
                    }
                    a.next();
                }
                (None, Some(y)) => {
                    if !self.vv.covers(y.dot) {
                        out.push((*y).clone());
                        changed = true;
                    }
                    b.next();
                }
                (None, None) => break,
            }
        }
        if changed {
            self.siblings = out;
            self.vv.merge(&other.vv);
        }
        debug_assert!(
            !inputs_well_formed || self.well_formed(),
            "a merge keeps a set well formed"
        );
        changed
    }

    /// The set's invariants: siblings in strictly ascending dot order, each
    /// dot covered by the vector (a record decoded from a peer is checked
    /// for the first only).
    pub fn well_formed(&self) -> bool {
        self.siblings.windows(2).all(|w| w[0].dot < w[1].dot)
            && self.siblings.iter().all(|s| self.vv.covers(s.dot))
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

    /// Drops the siblings written at or before the truncation point `at`
    /// (see [`crate::truncate`]); true when it changed the set. A record
    /// left with no sibling forgets its vector too: it is absent, so an
    /// import of its old versions (stamped after the point, with their old
    /// dots) is taken, not mistaken for events this replica has seen (no
    /// older version can come back through the forgotten vector: every
    /// merge drops what is at or before the point). `at == 0` (never
    /// truncated) drops nothing.
    pub fn drop_truncated(&mut self, at: Hlc) -> bool {
        if at == 0 {
            return false;
        }
        let before = self.siblings.len();
        self.siblings.retain(|s| s.hlc > at);
        if self.siblings.is_empty() && !self.vv.is_empty() {
            self.vv = VersionVector::default();
            return true;
        }
        self.siblings.len() != before
    }

    /// Stamps the siblings written at or before the truncation point `at`
    /// as written just after it (`at + 1`), keeping their dots, values and
    /// expiries: what an import after a truncation does, so the keys it
    /// loads come back (the same file imported twice stamps the same way,
    /// so replicas agree). True when it changed any.
    pub fn restamp_truncated(&mut self, at: Hlc) -> bool {
        let mut changed = false;
        if at == 0 {
            return false;
        }
        for s in self.siblings.iter_mut().filter(|s| s.hlc <= at) {
            s.hlc = at.saturating_add(1);
            changed = true;
        }
        changed
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
        // Exactly the record's size: a vector whose length is its capacity
        // becomes a boxed slice or `Bytes` without another allocation.
        let siblings: usize = (self.siblings.iter())
            .map(|s| {
                8 + varint_len(s.dot.counter)
                    + 9
                    + s.expires_at_ms.map_or(0, |_| 8)
                    + s.value
                        .as_ref()
                        .map_or(0, |v| varint_len(v.len() as u64) + v.len())
            })
            .sum();
        let size = 2 + self.vv.encoded_len() + varint_len(self.siblings.len() as u64) + siblings;
        let mut out = Vec::with_capacity(size);
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
        debug_assert_eq!(out.len(), size, "the record's size is computed exactly");
        out
    }

    /// Decodes a stored record. Values are sliced out of `bytes` without
    /// copying.
    pub fn decode(bytes: &Bytes) -> Result<Self, DecodeError> {
        Self::decode_with(bytes, |range| bytes.slice(range))
    }

    /// Decodes a stored record borrowed from elsewhere (the record cache),
    /// copying the values out of it.
    pub fn decode_copied(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with(bytes, |range| Bytes::copy_from_slice(&bytes[range]))
    }

    /// The version vector of a stored record as [`SiblingSet::decode`]
    /// then [`SiblingSet::drop_truncated`]`(at)` would leave it, without
    /// copying a value: all a write that supersedes every sibling needs of
    /// the record it replaces. The siblings' headers are checked as a full
    /// decode checks them (values skipped); `Ok(None)` when a sibling lies
    /// outside the vector (a malformed peer record, whose sibling such a
    /// write would not supersede), or when the record holds data types
    /// (format 2, whose components the write supersedes): the caller
    /// decodes it all instead.
    pub fn decode_vv(bytes: &[u8], at: Hlc) -> Result<Option<VersionVector>, DecodeError> {
        let mut r = Reader::new(bytes);
        if Self::decode_header(&mut r, RECORD_FORMAT_TYPED)? == RECORD_FORMAT_TYPED {
            return Ok(None);
        }
        let vv = VersionVector::decode_from(&mut r)?;
        let (mut covered, mut after_point) = (true, false);
        Self::each_sibling(&mut r, |s| {
            covered &= vv.covers(s.dot);
            after_point |= s.hlc > at;
        })?;
        r.finish()?;
        Ok(match (covered, at > 0 && !after_point) {
            (false, _) => None,
            // Every sibling is at or before the truncation point: the
            // record forgets its vector (`drop_truncated`).
            (true, true) => Some(VersionVector::default()),
            (true, false) => Some(vv),
        })
    }

    /// Reads the magic byte and the format, which must be 1 or at most
    /// `newest`; returns the format.
    fn decode_header(r: &mut Reader<'_>, newest: u8) -> Result<u8, DecodeError> {
        if r.u8()? != RECORD_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let format = r.u8()?;
        if !(RECORD_FORMAT..=newest).contains(&format) {
            return Err(DecodeError::UnknownFormat(format));
        }
        Ok(format)
    }

    fn decode_with(
        bytes: &[u8],
        value_at: impl Fn(std::ops::Range<usize>) -> Bytes,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        Self::decode_header(&mut r, RECORD_FORMAT)?;
        let set = Self::decode_body(&mut r, value_at)?;
        r.finish()?;
        Ok(set)
    }

    /// The first part of a record of format 1 or 2 (see
    /// [`super::types::record`]): its format, and its vector and string
    /// siblings (values made by `value_at` of their positions in the
    /// reader's whole buffer); the reader is left after them.
    pub(super) fn decode_prefix(
        r: &mut Reader<'_>,
        value_at: impl Fn(std::ops::Range<usize>) -> Bytes,
    ) -> Result<(u8, Self), DecodeError> {
        let format = Self::decode_header(r, RECORD_FORMAT_TYPED)?;
        let set = Self::decode_body(r, value_at)?;
        Ok((format, set))
    }

    fn decode_body(
        r: &mut Reader<'_>,
        value_at: impl Fn(std::ops::Range<usize>) -> Bytes,
    ) -> Result<Self, DecodeError> {
        let vv = VersionVector::decode_from(r)?;
        let mut siblings = Vec::new();
        Self::each_sibling(r, |s| {
            siblings.push(StoredSibling {
                dot: s.dot,
                hlc: s.hlc,
                expires_at_ms: s.expires_at_ms,
                value: s.value.map(&value_at),
            });
        })?;
        Ok(Self { vv, siblings })
    }

    /// Reads the sibling count and every sibling's header, checking the
    /// count's limit and the dots' order, and hands each to `each` with its
    /// value's position in the buffer (skipped, not copied).
    fn each_sibling(
        r: &mut Reader<'_>,
        mut each: impl FnMut(SiblingAt),
    ) -> Result<(), DecodeError> {
        let count = r.varint()? as usize;
        if count > SIBLINGS_DECODE_MAX {
            return Err(DecodeError::TooMany("siblings", count));
        }
        let mut prev: Option<Dot> = None;
        for _ in 0..count {
            let dot = Dot {
                actor: r.u64()?,
                counter: r.varint()?,
            };
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
                Some(start..start + len)
            };
            if prev.is_some_and(|p| p >= dot) {
                return Err(DecodeError::NotCanonical);
            }
            prev = Some(dot);
            each(SiblingAt {
                dot,
                hlc,
                expires_at_ms,
                value,
            });
        }
        Ok(())
    }
}
