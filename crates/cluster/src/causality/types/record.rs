//! A record that may hold data types: the string siblings of today beside
//! a counter, a set and a hash, one component per kind, each joined by its
//! own rule (docs/design/data-types.md, "Kind conflicts"). The product of
//! joins is a join, so records merge in any order to the same state; a
//! read resolves the key's kind as the non-empty component written last.
//!
//! ```text
//! record    := magic:u8=0xD7 format:u8 vv count:varint sibling*   (format 1)
//!              [components]                                       (format 2)
//! components:= count:u8 (kind:u8 hlc:u64le len:varint state)*     ascending by kind
//!              kind 1 counter, 2 set, 3 hash (states: counter.rs, orset.rs, map.rs)
//! ```
//!
//! A record with no typed component encodes as format 1, byte for byte what
//! [`SiblingSet::encode`] writes, so string records do not change.

use bytes::Bytes;

use super::super::DecodeError;
use super::super::codec::{Reader, put_varint};
use super::super::siblings::RECORD_FORMAT_TYPED;
use super::{Counter, Map, OrSet};
use crate::causality::{Hlc, SiblingSet};

/// The kinds a key can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    String,
    Counter,
    Set,
    Hash,
}

/// A typed component and the greatest HLC of the writes that made it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Typed<T> {
    pub state: T,
    pub hlc: Hlc,
}

/// A typed component's state: whether it is the default (a check that
/// builds no default to compare with: it runs several times a merge, on
/// the string writes' path too).
pub trait Component: Default {
    fn is_default(&self) -> bool;
}

impl Component for Counter {
    fn is_default(&self) -> bool {
        self.base == super::Base::default() && self.entry_count() == 0 && self.removed_count() == 0
    }
}

impl Component for OrSet {
    fn is_default(&self) -> bool {
        self.is_empty()
    }
}

impl Component for Map {
    fn is_default(&self) -> bool {
        self.field_count() == 0
    }
}

impl<T: Component> Typed<T> {
    /// Written at some time (so encoded, even if now empty).
    pub fn written(&self) -> bool {
        self.hlc != 0 || !self.state.is_default()
    }
}

/// [`Record::drop_truncated`] of one component: gone whole when it and
/// every part of its state (`newest`: a removal stamps parts with the
/// remover's HLC, not the component) lie at or before `at`, else `drop` of
/// its state.
fn truncate_component<T: Component>(
    c: &mut Typed<T>,
    at: Hlc,
    newest: impl FnOnce(&T) -> Hlc,
    drop: impl FnOnce(&mut T, Hlc) -> bool,
) -> bool {
    if !c.written() {
        false
    } else if c.hlc.max(newest(&c.state)) <= at {
        *c = Typed::default();
        true
    } else {
        // Kept for a removal stamped after the point only: its own writes
        // are all hidden, and so is their HLC (so that taking the point
        // before or after a merge gives the same component).
        let hidden = c.hlc != 0 && c.hlc <= at;
        if hidden {
            c.hlc = 0;
        }
        drop(&mut c.state, at) | hidden
    }
}

/// [`Record::restamp_truncated`] of one component: its state's parts at
/// or before `at`, and its own HLC, stamped `at + 1`.
fn restamp_component<T: Component>(
    c: &mut Typed<T>,
    at: Hlc,
    restamp: impl FnOnce(&mut T, Hlc) -> bool,
) -> bool {
    if !c.written() {
        return false;
    }
    let mut changed = restamp(&mut c.state, at);
    if c.hlc <= at {
        c.hlc = at.saturating_add(1);
        changed = true;
    }
    changed
}

impl From<SiblingSet> for Record {
    fn from(strings: SiblingSet) -> Self {
        Record {
            strings,
            ..Record::default()
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The vector (every write of the key this replica has seen, of any
    /// kind) and the string siblings.
    pub strings: SiblingSet,
    pub counter: Typed<Counter>,
    pub set: Typed<OrSet>,
    pub hash: Typed<Map>,
}

impl Record {
    /// Merges another replica's record into this one (commutative,
    /// associative, idempotent).
    pub fn merge(&mut self, other: &Record) {
        // The typed joins read both vectors before they are merged.
        let (ours, theirs) = (&self.strings.vv, &other.strings.vv);
        self.set.state.join(ours, &other.set.state, theirs);
        self.hash.state.join(ours, &other.hash.state, theirs);
        self.counter.state.join(&other.counter.state);
        self.counter.hlc = self.counter.hlc.max(other.counter.hlc);
        self.set.hlc = self.set.hlc.max(other.set.hlc);
        self.hash.hlc = self.hash.hlc.max(other.hash.hlc);
        self.strings.merge(&other.strings);
    }

    /// A write of `kind` at `hlc` supersedes what this replica holds of the
    /// other kinds: the counter's counts are removed (reset-remove), the
    /// set's members and the hash's fields it sees go. (Strings are
    /// superseded by the write's own context, `SiblingSet::update`.)
    pub fn supersede_other_kinds(&mut self, kind: Kind, hlc: Hlc, actor: u64) {
        if kind != Kind::Counter && !self.counter.state.is_empty() {
            self.counter.state.remove_observed(hlc, actor);
        }
        if kind != Kind::Set {
            self.set.state.clear();
        }
        if kind != Kind::Hash {
            let names: Vec<_> = self.hash.state.present().map(|(n, _)| n.clone()).collect();
            for name in names {
                self.hash.state.remove(&name, hlc, actor);
            }
        }
    }

    /// The key's kind at `now_ms`: the non-empty component written last
    /// (string siblings by their greatest HLC among live ones), `None` when
    /// every component is empty (the key is absent).
    pub fn kind(&self, now_ms: u64) -> Option<Kind> {
        let strings = self.strings.live(now_ms).map(|s| s.hlc).max();
        [
            (strings, Kind::String),
            (
                (!self.counter.state.is_empty()).then_some(self.counter.hlc),
                Kind::Counter,
            ),
            (
                (!self.set.state.is_empty()).then_some(self.set.hlc),
                Kind::Set,
            ),
            (
                (!self.hash.state.is_empty()).then_some(self.hash.hlc),
                Kind::Hash,
            ),
        ]
        .into_iter()
        .filter_map(|(hlc, kind)| hlc.map(|h| (h, kind)))
        .max()
        .map(|(_, kind)| kind)
    }

    /// True when no sibling is live at `now_ms` and every typed component
    /// is empty: the key is absent (deleted, expired, or never written).
    pub fn is_dead(&self, now_ms: u64) -> bool {
        self.strings.is_dead(now_ms) && self.typed_empty()
    }

    /// True when every typed component is empty (reads as absent).
    fn typed_empty(&self) -> bool {
        self.counter.state.is_empty() && self.set.state.is_empty() && self.hash.state.is_empty()
    }

    /// The greatest HLC of any write the record holds (0 when none).
    pub fn max_hlc(&self) -> Hlc {
        self.strings
            .max_hlc()
            .max(self.counter.hlc)
            .max(self.set.hlc)
            .max(self.hash.hlc)
    }

    /// The expiry the storage engine may apply to the whole record:
    /// [`SiblingSet::record_expiry`] when it holds strings only; typed
    /// components do not expire yet (docs/design/data-types.md, "Expiry").
    pub fn record_expiry(&self) -> Option<u64> {
        if self.strings_only() {
            self.strings.record_expiry()
        } else {
            None
        }
    }

    /// Applies the truncation point `at` (0: none; see `crate::truncate`
    /// and docs/design/data-types.md, "Truncation"): string siblings,
    /// set adds, field writes and counter entries at or before it go; a
    /// component written only at or before it goes whole. A record left
    /// with nothing forgets its vector, as [`SiblingSet::drop_truncated`]
    /// does. True when it changed.
    pub fn drop_truncated(&mut self, at: Hlc) -> bool {
        if at == 0 {
            return false;
        }
        let before = self.strings.siblings.len();
        self.strings.siblings.retain(|s| s.hlc > at);
        let mut changed = self.strings.siblings.len() != before;
        changed |= truncate_component(
            &mut self.counter,
            at,
            Counter::max_hlc,
            Counter::drop_truncated,
        );
        changed |= truncate_component(&mut self.set, at, OrSet::max_hlc, OrSet::drop_truncated);
        changed |= truncate_component(&mut self.hash, at, Map::max_hlc, Map::drop_truncated);
        if self.strings.siblings.is_empty() && self.strings_only() && !self.strings.vv.is_empty() {
            self.strings.vv = Default::default();
            changed = true;
        }
        changed
    }

    /// What an import after the truncation point `at` loads: everything at
    /// or before it stamped as written just after it (string siblings,
    /// set adds and field writes keep their dots; a counter becomes a base
    /// of its value), so the import's keys come back. True when it changed.
    pub fn restamp_truncated(&mut self, at: Hlc) -> bool {
        if at == 0 {
            return false;
        }
        let mut changed = self.strings.restamp_truncated(at);
        changed |= restamp_component(&mut self.counter, at, Counter::restamp_truncated);
        changed |= restamp_component(&mut self.set, at, OrSet::restamp_truncated);
        changed |= restamp_component(&mut self.hash, at, Map::restamp_truncated);
        changed
    }

    /// [`Record::merge`], and whether it changed this record (cheaply
    /// when both hold strings only, the common case).
    pub fn merge_changed(&mut self, other: &Record) -> bool {
        if self.strings_only() && other.strings_only() {
            return self.strings.merge(&other.strings);
        }
        let before = self.clone();
        self.merge(other);
        *self != before
    }

    /// True when the truncation point `at` hides anything of this record
    /// (what [`Record::drop_truncated`] would change).
    pub fn touched_by(&self, at: Hlc) -> bool {
        if at == 0 {
            return false;
        }
        if self.strings_only() {
            return self.strings.siblings.iter().any(|s| s.hlc <= at);
        }
        self.clone().drop_truncated(at)
    }

    /// True when the record holds nothing but (perhaps) a vector: no
    /// sibling, no typed component written.
    pub fn is_void(&self) -> bool {
        self.strings.siblings.is_empty() && self.strings_only()
    }

    /// True when no typed component was ever written here. A component
    /// once written is kept, even empty, with its HLC: dropping the HLC of
    /// an emptied component would make the merge depend on its order
    /// (the tombstone grace period purges whole records, not components).
    pub fn strings_only(&self) -> bool {
        !self.counter.written() && !self.set.written() && !self.hash.written()
    }

    /// Encodes the record: format 1 when it holds strings only.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.strings.encode();
        if self.strings_only() {
            return out;
        }
        out[1] = RECORD_FORMAT_TYPED;
        let mut components: Vec<(u8, Hlc, Vec<u8>)> = Vec::with_capacity(3);
        if self.counter.written() {
            let mut state = Vec::new();
            self.counter.state.encode_into(&mut state);
            components.push((1, self.counter.hlc, state));
        }
        if self.set.written() {
            let mut state = Vec::new();
            self.set.state.encode_into(&mut state);
            components.push((2, self.set.hlc, state));
        }
        if self.hash.written() {
            let mut state = Vec::new();
            self.hash.state.encode_into(&mut state);
            components.push((3, self.hash.hlc, state));
        }
        out.push(components.len() as u8);
        for (kind, hlc, state) in components {
            out.push(kind);
            out.extend_from_slice(&hlc.to_le_bytes());
            put_varint(&mut out, state.len() as u64);
            out.extend_from_slice(&state);
        }
        out
    }

    /// Decodes a record of format 1 or 2; string values are sliced out of
    /// `bytes` without copying.
    pub fn decode(bytes: &Bytes) -> Result<Self, DecodeError> {
        Self::decode_with(bytes, |range| bytes.slice(range))
    }

    /// Decodes a record borrowed from elsewhere (the record cache), copying
    /// the values out of it.
    pub fn decode_copied(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with(bytes, |range| Bytes::copy_from_slice(&bytes[range]))
    }

    fn decode_with(
        bytes: &[u8],
        value_at: impl Fn(std::ops::Range<usize>) -> Bytes,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let (format, strings) = SiblingSet::decode_prefix(&mut r, value_at)?;
        let mut record = Record {
            strings,
            ..Record::default()
        };
        if format == RECORD_FORMAT_TYPED {
            let count = r.u8()?;
            if count == 0 {
                return Err(DecodeError::NotCanonical);
            }
            let mut prev = 0u8;
            for _ in 0..count {
                let kind = r.u8()?;
                if kind <= prev {
                    return Err(DecodeError::NotCanonical);
                }
                prev = kind;
                let hlc = r.u64()?;
                let len = r.varint()? as usize;
                let state = r.bytes(len)?;
                match kind {
                    1 => {
                        record.counter = Typed {
                            state: Counter::decode(state)?,
                            hlc,
                        }
                    }
                    2 => {
                        record.set = Typed {
                            state: OrSet::decode(state)?,
                            hlc,
                        }
                    }
                    3 => {
                        record.hash = Typed {
                            state: Map::decode(state)?,
                            hlc,
                        }
                    }
                    _ => return Err(DecodeError::NotCanonical),
                }
            }
            if record.strings_only() {
                return Err(DecodeError::NotCanonical);
            }
        }
        r.finish()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::super::EntryId;
    use super::*;
    use crate::causality::{Dot, VersionVector};

    const MAX: usize = 1_000;

    thread_local! {
        /// Each actor's last dot counter in the current history: dots are
        /// never issued twice, even by a replica whose record forgot its
        /// vector (as the replica's dot floor ensures).
        static DOTS: std::cell::RefCell<[u64; 3]> = const { std::cell::RefCell::new([0; 3]) };
    }

    /// A write on one replica, as a coordinator would make it: a fresh dot
    /// of `actor`, superseding what the replica holds.
    fn next_dot(r: &Record, actor: u64) -> Dot {
        let counter = DOTS.with_borrow_mut(|dots| {
            let last = &mut dots[actor as usize % 3];
            *last = (*last).max(r.strings.vv.get(actor)) + 1;
            *last
        });
        Dot { actor, counter }
    }

    fn set_string(r: &mut Record, actor: u64, hlc: Hlc, value: Option<&str>) {
        r.supersede_other_kinds(Kind::String, hlc, actor);
        let context = r.strings.vv.clone();
        let value = value.map(|v| Bytes::copy_from_slice(v.as_bytes()));
        let floor = next_dot(r, actor).counter - 1;
        r.strings
            .update_above(&context, actor, floor, hlc, value, None);
    }

    /// Any typed write: supersedes the strings and other kinds it sees and
    /// advances the vector by one dot.
    fn typed_write(r: &mut Record, kind: Kind, actor: u64, hlc: Hlc) -> Dot {
        r.supersede_other_kinds(kind, hlc, actor);
        let dot = next_dot(r, actor);
        // Strings the write saw are superseded: none survive a typed write.
        r.strings.siblings.clear();
        r.strings.vv.raise(actor, dot.counter);
        dot
    }

    fn incr(r: &mut Record, actor: u64, hlc: Hlc, delta: i64) {
        incr_in(r, actor, 1, hlc, delta)
    }

    fn incr_in(r: &mut Record, actor: u64, epoch: u64, hlc: Hlc, delta: i64) {
        typed_write(r, Kind::Counter, actor, hlc);
        let entry = EntryId { actor, epoch };
        if r.counter.state.increment(entry, delta, hlc, MAX).is_ok() {
            r.counter.hlc = r.counter.hlc.max(hlc);
        }
    }

    fn sadd(r: &mut Record, actor: u64, hlc: Hlc, member: &str) {
        let dot = typed_write(r, Kind::Set, actor, hlc);
        r.set
            .state
            .add(Bytes::copy_from_slice(member.as_bytes()), dot, hlc);
        r.set.hlc = r.set.hlc.max(hlc);
    }

    fn hset(r: &mut Record, actor: u64, hlc: Hlc, field: &str) {
        let dot = typed_write(r, Kind::Hash, actor, hlc);
        let v = Some(Bytes::copy_from_slice(field.as_bytes()));
        r.hash
            .state
            .write(Bytes::copy_from_slice(field.as_bytes()), dot, hlc, v);
        r.hash.hlc = r.hash.hlc.max(hlc);
    }

    #[test]
    fn a_strings_only_record_is_format_1_byte_for_byte() {
        let mut r = Record::default();
        set_string(&mut r, 1, 5, Some("v"));
        assert_eq!(r.encode(), r.strings.encode());
        assert_eq!(Record::decode(&Bytes::from(r.encode())), Ok(r.clone()));
        // And a typed one is format 2, read back whole.
        incr(&mut r, 2, 6, 3);
        let enc = r.encode();
        assert_eq!(enc[1], 2);
        assert_eq!(Record::decode_copied(&enc), Ok(r.clone()));
        assert_eq!(
            SiblingSet::decode(&Bytes::from(enc)),
            Err(DecodeError::UnknownFormat(2)),
            "a reader of strings only refuses it, as an older node does"
        );
    }

    #[test]
    fn concurrent_kinds_are_kept_and_the_later_is_read() {
        let mut a = Record::default();
        let mut b = Record::default();
        set_string(&mut a, 1, 10, Some("text"));
        incr(&mut b, 2, 11, 4);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.kind(0), Some(Kind::Counter));
        assert_eq!(ab.counter.state.value(), 4);
        // A SET that saw both: the counter's counts are removed, the
        // string is read.
        set_string(&mut ab, 1, 12, Some("again"));
        assert_eq!(ab.kind(0), Some(Kind::String));
        assert!(ab.counter.state.is_empty());
        // A DEL that saw everything leaves nothing to read.
        set_string(&mut ab, 1, 13, None);
        assert_eq!(ab.kind(0), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set { replica: usize, value: Option<u8> },
        Incr { replica: usize, delta: i64 },
        Sadd { replica: usize, member: u8 },
        Hset { replica: usize, field: u8 },
        Merge { from: usize, to: usize },
    }

    fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            2 => (0usize..3, proptest::option::of(0u8..3))
                .prop_map(|(replica, value)| Op::Set { replica, value }),
            2 => (0usize..3, -9i64..9).prop_map(|(replica, delta)| Op::Incr { replica, delta }),
            2 => (0usize..3, 0u8..3).prop_map(|(replica, member)| Op::Sadd { replica, member }),
            2 => (0usize..3, 0u8..3).prop_map(|(replica, field)| Op::Hset { replica, field }),
            4 => (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Merge { from, to }),
        ];
        proptest::collection::vec(op, 0..40)
    }

    fn run(ops: &[Op]) -> Vec<Record> {
        DOTS.with_borrow_mut(|dots| *dots = [0; 3]);
        let mut replicas = vec![Record::default(); 3];
        for (i, op) in ops.iter().enumerate() {
            apply(&mut replicas, op, i as Hlc + 1, 1);
        }
        replicas
    }

    /// Runs `op` at `hlc`, counters counting in `epoch`.
    fn apply(replicas: &mut [Record], op: &Op, hlc: Hlc, epoch: u64) {
        {
            match *op {
                Op::Set { replica, value } => {
                    let v = value.map(|v| format!("v{v}"));
                    set_string(&mut replicas[replica], replica as u64, hlc, v.as_deref());
                }
                Op::Incr { replica, delta } => {
                    incr_in(&mut replicas[replica], replica as u64, epoch, hlc, delta)
                }
                Op::Sadd { replica, member } => {
                    sadd(
                        &mut replicas[replica],
                        replica as u64,
                        hlc,
                        &format!("m{member}"),
                    );
                }
                Op::Hset { replica, field } => {
                    hset(
                        &mut replicas[replica],
                        replica as u64,
                        hlc,
                        &format!("f{field}"),
                    );
                }
                Op::Merge { from, to } => {
                    let other = replicas[from].clone();
                    replicas[to].merge(&other);
                }
            }
        }
    }

    /// Runs `before`, a truncation at the clock then (every replica in a
    /// new epoch), then `after` where replica `i` takes the point before
    /// the op `learn[i]` (applying it to what it holds after every op, as
    /// the replica does to what it reads and merges); then all take it
    /// and merge. Returns the replicas and the point.
    fn run_truncation(before: &[Op], after: &[Op], learn: [usize; 3]) -> (Vec<Record>, Hlc) {
        let (replicas, point) = run_to_learning(before, after, learn);
        let mut replicas = replicas;
        for r in &mut replicas {
            r.drop_truncated(point);
        }
        for _ in 0..2 {
            for (from, to) in [(0, 1), (1, 2), (2, 0)] {
                let other = replicas[from].clone();
                replicas[to].merge(&other);
                replicas[to].drop_truncated(point);
            }
        }
        (replicas, point)
    }

    /// [`run_truncation`] up to the end of `after`, before every replica
    /// takes the point and all merge.
    fn run_to_learning(before: &[Op], after: &[Op], learn: [usize; 3]) -> (Vec<Record>, Hlc) {
        let mut replicas = run(before);
        let point = before.len() as Hlc;
        for (i, op) in after.iter().enumerate() {
            let hlc = point + 1 + i as Hlc;
            apply(&mut replicas, op, hlc, 2);
            for (r, &at) in replicas.iter_mut().zip(&learn) {
                if at <= i {
                    r.drop_truncated(point);
                }
            }
        }
        (replicas, point)
    }

    #[test]
    fn a_truncation_leaves_what_follows_it_and_forgets_an_emptied_vector() {
        let mut r = Record::default();
        set_string(&mut r, 1, 1, Some("old"));
        sadd(&mut r, 1, 2, "m");
        hset(&mut r, 1, 3, "f");
        incr(&mut r, 1, 4, 5);
        let old = r.clone();
        let mut gone = r.clone();
        assert!(gone.drop_truncated(4));
        assert_eq!(gone, Record::default(), "all of it at or before the point");
        assert_eq!(gone.encode(), SiblingSet::default().encode());
        // After the point: a new member beside the old one; the old goes,
        // the vector (which the set's adds need) stays.
        sadd(&mut r, 2, 6, "n");
        let mut kept = r.clone();
        assert!(kept.drop_truncated(4));
        assert_eq!(
            kept.set.state.members().collect::<Vec<_>>(),
            [&Bytes::from_static(b"n")]
        );
        assert!(kept.counter.state.is_empty() && kept.hash.state.is_empty());
        assert_eq!(kept.strings.vv, r.strings.vv);
        assert!(!kept.drop_truncated(4), "idempotent");
        // An import after the point brings the old parts back as of T + 1.
        let mut imported = old;
        assert!(imported.restamp_truncated(4));
        assert!(!imported.clone().drop_truncated(4));
        assert_eq!(imported.counter.state.value(), 5);
        assert_eq!(imported.max_hlc(), 5);
    }

    /// A history before a truncation, one after, and when each replica
    /// takes the point (an index into the second; past its end: never).
    fn arb_truncation() -> impl Strategy<Value = (Vec<Op>, Vec<Op>, [usize; 3])> {
        (arb_ops(), arb_ops()).prop_flat_map(|(b, a)| {
            let n = a.len();
            (Just(b), Just(a), [0..=n, 0..=n, 0..=n])
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(ops in arb_ops()) {
            let r = run(&ops);
            let ab_c = super::super::check_join_laws(&r[0], &r[1], &r[2], Record::merge)?;
            prop_assert_eq!(Record::decode(&Bytes::from(ab_c.encode())), Ok(ab_c.clone()));
        }

        /// Replicas that take a truncation point at different moments, and
        /// merge with those that have not, converge, and nothing written
        /// at or before the point is left.
        #[test]
        fn a_truncation_converges_and_leaves_nothing_before_its_point(
            (before, after, learn) in arb_truncation()
        ) {
            let (r, point) = run_truncation(&before, &after, learn);
            prop_assert_eq!(&r[0], &r[1]);
            prop_assert_eq!(&r[1], &r[2]);
            let mut again = r[0].clone();
            prop_assert!(!again.drop_truncated(point), "idempotent");
            prop_assert!(r[0].strings.siblings.iter().all(|s| s.hlc > point));
            // A component is kept only for something after the point: its
            // own writes, or a removal stamped after it.
            for (written, newest) in [
                (r[0].counter.written(), r[0].counter.hlc.max(r[0].counter.state.max_hlc())),
                (r[0].set.written(), r[0].set.hlc.max(r[0].set.state.max_hlc())),
                (r[0].hash.written(), r[0].hash.hlc.max(r[0].hash.state.max_hlc())),
            ] {
                prop_assert!(!written || newest > point);
            }
            prop_assert!(r[0].counter.state.max_hlc() == 0 || r[0].counter.state.max_hlc() > point);
            prop_assert!(r[0].set.state.max_hlc() == 0 || r[0].set.state.max_hlc() > point);
        }

        /// Taking the point commutes with merging: a replica that took it
        /// before a merge holds the same record as one that took it after
        /// (but for the vector, see below).
        #[test]
        fn taking_the_point_commutes_with_merging(
            (before, after, learn) in arb_truncation()
        ) {
            let (r, point) = run_to_learning(&before, &after, learn);
            for (x, y) in [(0, 1), (1, 2), (2, 0)] {
                let mut late = r[x].clone();
                late.merge(&r[y]);
                late.drop_truncated(point);
                let mut early = r[x].clone();
                early.drop_truncated(point);
                let mut other = r[y].clone();
                other.drop_truncated(point);
                early.merge(&other);
                early.drop_truncated(point);
                // The vectors may differ: a record the point emptied
                // forgets its vector (as a string record does), which a
                // later exchange mends (merges take the union).
                early.strings.vv = Default::default();
                late.strings.vv = Default::default();
                prop_assert_eq!(early, late);
            }
        }

        /// The vector of a merged record covers every dot any component
        /// holds: no write is outside the causal context.
        #[test]
        fn the_vector_covers_every_component(ops in arb_ops()) {
            let r = run(&ops);
            let mut all = r[0].clone();
            all.merge(&r[1]);
            all.merge(&r[2]);
            let vv: &VersionVector = &all.strings.vv;
            for s in &all.strings.siblings {
                prop_assert!(vv.covers(s.dot));
            }
            prop_assert!(all.strings.well_formed());
        }
    }
}
