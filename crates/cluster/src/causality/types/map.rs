//! A map of fields, each an observed-remove multi-value register beside a
//! reset-remove counter: the state of a hash key (docs/design/data-types.md,
//! "Hash").
//!
//! Every `HSET` or `HINCRBY` of a field adds one write tagged with a fresh
//! dot, superseding the field's writes it observed; the set's rule (see
//! [`super::orset`]) decides which writes survive a join, so a field is
//! present while one does, and `HDEL` removes exactly what it saw. A
//! field reads as its latest surviving write by `(hlc, actor)`: a value,
//! or, for a counter write, the field's counter. The counter is joined
//! entry-wise whatever the writes, and outlives them (its removals must
//! reach every replica, as tombstones do), so concurrent `HSET`, `HINCRBY`
//! and `HDEL` of one field merge in any order to the same state.
//!
//! ```text
//! state  := count:varint field*                 ascending by name
//! field  := len:varint name writes:varint write* counter
//! write  := actor:u64le counter:varint hlc:u64le kind:u8 [len:varint value]
//!           kind 0: a value follows; kind 1: the field's counter
//! counter:= see [`super::counter`]
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;

use super::super::DecodeError;
use super::super::codec::{Reader, put_varint};
use super::counter::Counter;
use crate::causality::{Dot, Hlc, VersionVector};

/// The most fields a decoded hash may hold; writes are refused well before
/// (`hash_fields_max`).
pub const HASH_FIELDS_DECODE_MAX: usize = 1 << 20;
/// The most surviving writes one decoded field may hold (one per
/// concurrent write).
const FIELD_WRITES_DECODE_MAX: usize = 4_096;

/// One write of a field: a value, or "the field is a counter" (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldWrite {
    pub dot: Dot,
    pub hlc: Hlc,
    pub value: Option<Bytes>,
}

/// One field's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Field {
    /// Surviving writes, ascending by dot.
    writes: Vec<FieldWrite>,
    counter: Counter,
}

/// What a present field reads as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Value(&'a Bytes),
    Counter(&'a Counter),
}

impl Field {
    /// The latest surviving write's reading; `None` when the field is
    /// absent (no write survives).
    pub fn read(&self) -> Option<FieldValue<'_>> {
        let latest = (self.writes.iter()).max_by_key(|w| (w.hlc, w.dot.actor))?;
        Some(match &latest.value {
            Some(v) => FieldValue::Value(v),
            None => FieldValue::Counter(&self.counter),
        })
    }

    /// The field's counter, for `HINCRBY` to increment before
    /// [`Map::write`] records the counter write.
    pub fn counter_mut(&mut self) -> &mut Counter {
        &mut self.counter
    }

    fn is_void(&self) -> bool {
        self.writes.is_empty() && self.counter == Counter::default()
    }
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Map {
    fields: BTreeMap<Bytes, Field>,
}

impl Map {
    /// The field `name`, present or not.
    pub fn field(&self, name: &[u8]) -> Option<&Field> {
        self.fields.get(name)
    }

    /// The field `name` to change, created when missing.
    pub fn field_mut(&mut self, name: Bytes) -> &mut Field {
        self.fields.entry(name).or_default()
    }

    /// Records a write of `name` (`value`, or `None` after incrementing its
    /// counter) with the fresh `dot`, superseding the field's writes this
    /// replica has seen.
    pub fn write(&mut self, name: Bytes, dot: Dot, hlc: Hlc, value: Option<Bytes>) {
        let field = self.fields.entry(name).or_default();
        field.writes = vec![FieldWrite { dot, hlc, value }];
    }

    /// `HDEL`: removes the field's writes this replica has seen and what its
    /// counter counted. Returns whether the field was present.
    pub fn remove(&mut self, name: &[u8], hlc: Hlc, actor: u64) -> bool {
        let Some(field) = self.fields.get_mut(name) else {
            return false;
        };
        let present = !field.writes.is_empty();
        field.writes.clear();
        if field.counter == Counter::default() {
            self.fields.remove(name);
        } else {
            field.counter.remove_observed(hlc, actor);
        }
        present
    }

    /// Present fields, ascending by name, with their readings.
    pub fn present(&self) -> impl Iterator<Item = (&Bytes, FieldValue<'_>)> {
        (self.fields.iter()).filter_map(|(name, f)| f.read().map(|v| (name, v)))
    }

    /// Fields held, present or not (a field whose writes are all removed
    /// keeps its counter's removals).
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// The number of present fields.
    pub fn len(&self) -> usize {
        self.present().count()
    }

    pub fn is_empty(&self) -> bool {
        self.present().next().is_none()
    }

    /// Joins another replica's state (`other`, its record's vector
    /// `theirs`) into this one (vector `ours`; the caller merges the
    /// vectors).
    pub fn join(&mut self, ours: &VersionVector, other: &Map, theirs: &VersionVector) {
        let empty = Field::default();
        let names: Vec<Bytes> = (self.fields.keys().chain(other.fields.keys()))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for name in names {
            let theirs_field = other.fields.get(&name).unwrap_or(&empty);
            let mine = self.fields.entry(name.clone()).or_default();
            let mut writes: Vec<FieldWrite> = (mine.writes.iter())
                .filter(|w| {
                    theirs_field.writes.iter().any(|t| t.dot == w.dot) || !theirs.covers(w.dot)
                })
                .cloned()
                .collect();
            writes.extend(
                (theirs_field.writes.iter())
                    .filter(|t| !mine.writes.iter().any(|w| w.dot == t.dot) && !ours.covers(t.dot))
                    .cloned(),
            );
            writes.sort_unstable_by_key(|w| w.dot);
            mine.writes = writes;
            mine.counter.join(&theirs_field.counter);
            if mine.is_void() {
                self.fields.remove(&name);
            }
        }
    }

    /// Applies the truncation point `at` (0: none): field writes at or
    /// before it are dropped, the fields' counters reset-remove what it
    /// lies after ([`Counter::drop_truncated`]); a field left void goes.
    /// True when the state changed.
    pub fn drop_truncated(&mut self, at: Hlc) -> bool {
        if at == 0 {
            return false;
        }
        let mut changed = false;
        self.fields.retain(|_, f| {
            let before = f.writes.len();
            f.writes.retain(|w| w.hlc > at);
            changed |= f.writes.len() != before;
            changed |= f.counter.drop_truncated(at);
            !f.is_void()
        });
        changed
    }

    /// What an import after the truncation point `at` loads: writes at or
    /// before it stamped `at + 1` (dots and values kept), counters as
    /// [`Counter::restamp_truncated`]. True when it changed.
    pub fn restamp_truncated(&mut self, at: Hlc) -> bool {
        if at == 0 {
            return false;
        }
        let mut changed = false;
        for f in self.fields.values_mut() {
            for w in f.writes.iter_mut().filter(|w| w.hlc <= at) {
                w.hlc = at.saturating_add(1);
                changed = true;
            }
            changed |= f.counter.restamp_truncated(at);
        }
        changed
    }

    /// The greatest HLC of anything in the state (0 when empty).
    pub fn max_hlc(&self) -> Hlc {
        (self.fields.values())
            .flat_map(|f| f.writes.iter().map(|w| w.hlc).chain([f.counter.max_hlc()]))
            .max()
            .unwrap_or(0)
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.fields.len() as u64);
        for (name, f) in &self.fields {
            put_varint(out, name.len() as u64);
            out.extend_from_slice(name);
            put_varint(out, f.writes.len() as u64);
            for w in &f.writes {
                out.extend_from_slice(&w.dot.actor.to_le_bytes());
                put_varint(out, w.dot.counter);
                out.extend_from_slice(&w.hlc.to_le_bytes());
                match &w.value {
                    Some(v) => {
                        out.push(0);
                        put_varint(out, v.len() as u64);
                        out.extend_from_slice(v);
                    }
                    None => out.push(1),
                }
            }
            f.counter.encode_into(out);
        }
    }

    /// Decodes a state encoded by `encode_into`, all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let count = r.varint()? as usize;
        if count > HASH_FIELDS_DECODE_MAX {
            return Err(DecodeError::TooMany("hash fields", count));
        }
        let mut fields = BTreeMap::new();
        let mut prev: Option<Bytes> = None;
        for _ in 0..count {
            let len = r.varint()? as usize;
            let name = Bytes::copy_from_slice(r.bytes(len)?);
            if prev.as_ref().is_some_and(|p| *p >= name) {
                return Err(DecodeError::NotCanonical);
            }
            prev = Some(name.clone());
            let n = r.varint()? as usize;
            if n > FIELD_WRITES_DECODE_MAX {
                return Err(DecodeError::TooMany("field writes", n));
            }
            let mut writes: Vec<FieldWrite> = Vec::with_capacity(n);
            for _ in 0..n {
                let dot = Dot {
                    actor: r.u64()?,
                    counter: r.varint()?,
                };
                let hlc = r.u64()?;
                let value = match r.u8()? {
                    0 => {
                        let len = r.varint()? as usize;
                        Some(Bytes::copy_from_slice(r.bytes(len)?))
                    }
                    1 => None,
                    _ => return Err(DecodeError::NotCanonical),
                };
                if writes.last().is_some_and(|w| w.dot >= dot) {
                    return Err(DecodeError::NotCanonical);
                }
                writes.push(FieldWrite { dot, hlc, value });
            }
            let counter = Counter::decode_from(&mut r)?;
            let field = Field { writes, counter };
            if field.is_void() {
                return Err(DecodeError::NotCanonical);
            }
            fields.insert(name, field);
        }
        r.finish()?;
        Ok(Self { fields })
    }
}

#[cfg(test)]
mod tests {
    use super::super::counter::EntryId;
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1_000;

    fn roundtrip(m: &Map) -> Map {
        let mut out = Vec::new();
        m.encode_into(&mut out);
        Map::decode(&out).expect("decodes")
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct Replica {
        map: Map,
        vv: VersionVector,
    }

    impl Replica {
        fn dot(&mut self, actor: u64) -> Dot {
            let dot = Dot {
                actor,
                counter: self.vv.get(actor) + 1,
            };
            self.vv.raise(actor, dot.counter);
            dot
        }

        fn hset(&mut self, actor: u64, hlc: Hlc, field: &str, value: &str) {
            let dot = self.dot(actor);
            let v = Bytes::copy_from_slice(value.as_bytes());
            self.map
                .write(Bytes::copy_from_slice(field.as_bytes()), dot, hlc, Some(v));
        }

        fn hincrby(&mut self, actor: u64, hlc: Hlc, field: &str, delta: i64) -> bool {
            let name = Bytes::copy_from_slice(field.as_bytes());
            let entry = EntryId { actor, epoch: 1 };
            let counted = (self.map.field_mut(name.clone()).counter_mut())
                .increment(entry, delta, hlc, MAX)
                .is_ok();
            if counted {
                let dot = self.dot(actor);
                self.map.write(name, dot, hlc, None);
            }
            counted
        }

        fn join(&mut self, other: &Replica) {
            self.map.join(&self.vv, &other.map, &other.vv);
            self.vv.merge(&other.vv);
        }
    }

    fn counter_value(m: &Map, field: &str) -> Option<i128> {
        match m.field(field.as_bytes())?.read()? {
            FieldValue::Counter(c) => Some(c.value()),
            FieldValue::Value(_) => None,
        }
    }

    #[test]
    fn hdel_removes_what_it_saw_and_concurrent_writes_survive() {
        let mut a = Replica::default();
        a.hset(1, 10, "f", "v1");
        a.hincrby(1, 11, "n", 5);
        let mut b = a.clone();
        // B deletes both fields; A concurrently sets f and adds 2 to n.
        assert!(b.map.remove(b"f", 12, 2));
        assert!(b.map.remove(b"n", 12, 2));
        assert!(b.map.is_empty());
        a.hset(1, 13, "f", "v2");
        a.hincrby(1, 14, "n", 2);
        let mut ab = a.clone();
        ab.join(&b);
        let mut ba = b.clone();
        ba.join(&a);
        assert_eq!(ab, ba);
        assert_eq!(
            ab.map.field(b"f").and_then(Field::read),
            Some(FieldValue::Value(&Bytes::from_static(b"v2")))
        );
        assert_eq!(
            counter_value(&ab.map, "n"),
            Some(2),
            "only what B had not seen"
        );
        assert_eq!(roundtrip(&ab.map), ab.map);
    }

    #[test]
    fn a_field_written_as_two_kinds_at_once_reads_the_later() {
        let mut a = Replica::default();
        let mut b = Replica::default();
        a.hset(1, 20, "f", "text");
        b.hincrby(2, 21, "f", 7);
        let mut ab = a.clone();
        ab.join(&b);
        assert_eq!(counter_value(&ab.map, "f"), Some(7));
        // A later HSET that saw both supersedes both; the counter's state
        // stays, hidden.
        ab.hset(1, 22, "f", "again");
        assert_eq!(
            ab.map.field(b"f").and_then(Field::read),
            Some(FieldValue::Value(&Bytes::from_static(b"again")))
        );
        assert_eq!(ab.map.len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set {
            replica: usize,
            field: u8,
            value: u8,
        },
        Incr {
            replica: usize,
            field: u8,
            delta: i64,
        },
        Del {
            replica: usize,
            field: u8,
        },
        Merge {
            from: usize,
            to: usize,
        },
    }

    fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            3 => (0usize..3, 0u8..3, 0u8..4)
                .prop_map(|(replica, field, value)| Op::Set { replica, field, value }),
            3 => (0usize..3, 0u8..3, -9i64..9)
                .prop_map(|(replica, field, delta)| Op::Incr { replica, field, delta }),
            2 => (0usize..3, 0u8..3).prop_map(|(replica, field)| Op::Del { replica, field }),
            3 => (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Merge { from, to }),
        ];
        proptest::collection::vec(op, 0..40)
    }

    fn run(ops: &[Op]) -> Vec<Replica> {
        let mut replicas = vec![Replica::default(); 3];
        for (hlc, op) in ops.iter().enumerate() {
            let hlc = hlc as Hlc + 1;
            match *op {
                Op::Set {
                    replica,
                    field,
                    value,
                } => {
                    replicas[replica].hset(
                        replica as u64,
                        hlc,
                        &format!("f{field}"),
                        &format!("v{value}"),
                    );
                }
                Op::Incr {
                    replica,
                    field,
                    delta,
                } => {
                    replicas[replica].hincrby(replica as u64, hlc, &format!("f{field}"), delta);
                }
                Op::Del { replica, field } => {
                    replicas[replica].map.remove(
                        format!("f{field}").as_bytes(),
                        hlc,
                        replica as u64,
                    );
                }
                Op::Merge { from, to } => {
                    let other = replicas[from].clone();
                    replicas[to].join(&other);
                }
            }
        }
        replicas
    }

    proptest! {
        #[test]
        fn join_is_commutative_associative_idempotent(ops in arb_ops()) {
            let r = run(&ops);
            let ab_c = super::super::check_join_laws(&r[0], &r[1], &r[2], Replica::join)?;
            prop_assert_eq!(roundtrip(&ab_c.map), ab_c.map);
        }
    }
}
