//! An add-wins observed-remove set without tombstones (ORSWOT): the state
//! of a set key (docs/design/data-types.md, "Set").
//!
//! Each member carries the dots of the adds that put it there; the record's
//! version vector is the causal context. An add gives the member one fresh
//! dot (superseding the dots it observed); a remove drops the member's dots
//! and keeps nothing: the vector still covers them, so a replica that
//! joins this state drops them too, while an add the remover had not seen
//! (a dot its vector does not cover) survives. Add wins.
//!
//! Each dot carries its add's HLC, so a truncation point drops the adds
//! it lies after ([`OrSet::drop_truncated`]).
//!
//! ```text
//! state  := count:varint member*      ascending by bytes
//! member := len:varint bytes dots:varint (actor:u64le counter:varint hlc:u64le)*
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;

use super::super::DecodeError;
use super::super::codec::{Reader, put_varint};
use crate::causality::{Dot, Hlc, VersionVector};

/// The most members a decoded set may hold; writes are refused well before
/// (`set_members_max`).
pub const SET_MEMBERS_DECODE_MAX: usize = 1 << 20;
/// The most dots one member may carry when decoded (one per concurrent
/// add; a well-formed state has at most one per actor).
const MEMBER_DOTS_DECODE_MAX: usize = 4_096;

/// An add's dot and HLC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Added {
    dot: Dot,
    hlc: Hlc,
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrSet {
    /// Each member's adds, sorted by dot, never empty.
    members: BTreeMap<Bytes, Vec<Added>>,
}

impl OrSet {
    /// Adds `member` with the fresh `dot` of this write at `hlc`,
    /// superseding the dots of it this replica has seen. Returns whether
    /// it was absent.
    pub fn add(&mut self, member: Bytes, dot: Dot, hlc: Hlc) -> bool {
        self.members
            .insert(member, vec![Added { dot, hlc }])
            .is_none()
    }

    /// Removes `member` as this replica sees it. Returns whether it was
    /// present.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        self.members.remove(member).is_some()
    }

    /// Removes every member this replica sees (`DEL`).
    pub fn clear(&mut self) {
        self.members.clear();
    }

    pub fn contains(&self, member: &[u8]) -> bool {
        self.members.contains_key(member)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members in ascending byte order.
    pub fn members(&self) -> impl Iterator<Item = &Bytes> {
        self.members.keys()
    }

    /// Joins another replica's state, `other` with its record's vector
    /// `theirs`, into this one, whose record's vector is `ours` (the
    /// caller merges the vectors). A dot stays if both sides hold it, or
    /// if one side holds it and the other has not seen it.
    pub fn join(&mut self, ours: &VersionVector, other: &OrSet, theirs: &VersionVector) {
        let mut joined = BTreeMap::new();
        let mut mine = std::mem::take(&mut self.members);
        let holds = |adds: &[Added], a: &Added| adds.iter().any(|b| b.dot == a.dot);
        for (member, their_adds) in &other.members {
            let my_adds = mine.remove(member).unwrap_or_default();
            let mut adds: Vec<Added> = (my_adds.iter())
                .filter(|a| holds(their_adds, a) || !theirs.covers(a.dot))
                .copied()
                .collect();
            adds.extend((their_adds.iter()).filter(|a| !holds(&my_adds, a) && !ours.covers(a.dot)));
            if !adds.is_empty() {
                adds.sort_unstable();
                joined.insert(member.clone(), adds);
            }
        }
        // Members only this side holds: kept unless the other side saw them.
        for (member, my_adds) in mine {
            let adds: Vec<Added> = (my_adds.into_iter())
                .filter(|a| !theirs.covers(a.dot))
                .collect();
            if !adds.is_empty() {
                joined.insert(member, adds);
            }
        }
        self.members = joined;
    }

    /// Applies the truncation point `at` (0: none): adds at or before it
    /// are dropped, and members left with none go. True when it changed.
    pub fn drop_truncated(&mut self, at: Hlc) -> bool {
        if at == 0 {
            return false;
        }
        let before = self.members.len();
        let mut changed = false;
        self.members.retain(|_, adds| {
            let n = adds.len();
            adds.retain(|a| a.hlc > at);
            changed |= adds.len() != n;
            !adds.is_empty()
        });
        changed || self.members.len() != before
    }

    /// What an import after the truncation point `at` loads: adds at or
    /// before it stamped `at + 1`, dots kept. True when it changed any.
    pub fn restamp_truncated(&mut self, at: Hlc) -> bool {
        if at == 0 {
            return false;
        }
        let mut changed = false;
        for a in self.members.values_mut().flatten().filter(|a| a.hlc <= at) {
            a.hlc = at.saturating_add(1);
            changed = true;
        }
        changed
    }

    /// The greatest HLC of any add (0 when empty).
    pub fn max_hlc(&self) -> Hlc {
        (self.members.values().flatten())
            .map(|a| a.hlc)
            .max()
            .unwrap_or(0)
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.members.len() as u64);
        for (member, dots) in &self.members {
            put_varint(out, member.len() as u64);
            out.extend_from_slice(member);
            put_varint(out, dots.len() as u64);
            for a in dots {
                out.extend_from_slice(&a.dot.actor.to_le_bytes());
                put_varint(out, a.dot.counter);
                out.extend_from_slice(&a.hlc.to_le_bytes());
            }
        }
    }

    /// Decodes a state; members are copied out of `bytes`.
    /// Decodes a state encoded by `encode_into`, all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let state = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(state)
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.varint()? as usize;
        if count > SET_MEMBERS_DECODE_MAX {
            return Err(DecodeError::TooMany("set members", count));
        }
        let mut members = BTreeMap::new();
        let mut prev: Option<Bytes> = None;
        for _ in 0..count {
            let len = r.varint()? as usize;
            let member = Bytes::copy_from_slice(r.bytes(len)?);
            let dots_len = r.varint()? as usize;
            if dots_len == 0 {
                return Err(DecodeError::NotCanonical);
            }
            if dots_len > MEMBER_DOTS_DECODE_MAX {
                return Err(DecodeError::TooMany("member dots", dots_len));
            }
            let mut dots = Vec::with_capacity(dots_len);
            for _ in 0..dots_len {
                let dot = Dot {
                    actor: r.u64()?,
                    counter: r.varint()?,
                };
                let hlc = r.u64()?;
                if dots.last().is_some_and(|last: &Added| last.dot >= dot) {
                    return Err(DecodeError::NotCanonical);
                }
                dots.push(Added { dot, hlc });
            }
            if prev.as_ref().is_some_and(|p| *p >= member) {
                return Err(DecodeError::NotCanonical);
            }
            prev = Some(member.clone());
            members.insert(member, dots);
        }
        Ok(Self { members })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use proptest::prelude::*;

    fn roundtrip(s: &OrSet) -> OrSet {
        let mut out = Vec::new();
        s.encode_into(&mut out);
        OrSet::decode(&out).expect("decodes")
    }

    /// A replica: its set and its record's vector.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct Replica {
        set: OrSet,
        vv: VersionVector,
    }

    impl Replica {
        fn add(&mut self, actor: u64, member: &str) -> Dot {
            let dot = Dot {
                actor,
                counter: self.vv.get(actor) + 1,
            };
            self.vv.raise(actor, dot.counter);
            self.set
                .add(Bytes::copy_from_slice(member.as_bytes()), dot, dot.counter);
            dot
        }

        fn join(&mut self, other: &Replica) {
            self.set.join(&self.vv, &other.set, &other.vv);
            self.vv.merge(&other.vv);
        }
    }

    #[test]
    fn add_wins_over_a_concurrent_remove_and_loses_to_one_that_saw_it() {
        let mut a = Replica::default();
        a.add(1, "x");
        let mut b = a.clone();
        // B removes x (it saw A's add); A concurrently adds x again.
        assert!(b.set.remove(b"x"));
        a.add(1, "x");
        let mut ab = a.clone();
        ab.join(&b);
        assert!(ab.set.contains(b"x"), "the add B had not seen survives");
        let mut ba = b.clone();
        ba.join(&a);
        assert_eq!(ab, ba);
        // A remove that saw every add wins.
        let mut c = ab.clone();
        assert!(c.set.remove(b"x"));
        ab.join(&c);
        assert!(!ab.set.contains(b"x"));
        assert_eq!(roundtrip(&ab.set), ab.set);
    }

    #[test]
    fn decode_refuses_empty_members_and_disorder() {
        // One member "m" with zero dots.
        let bytes = [1u8, 1, b'm', 0];
        assert_eq!(OrSet::decode(&bytes), Err(DecodeError::NotCanonical));
        let mut s = OrSet::default();
        s.add(
            Bytes::from_static(b"a"),
            Dot {
                actor: 1,
                counter: 1,
            },
            1,
        );
        s.add(
            Bytes::from_static(b"b"),
            Dot {
                actor: 1,
                counter: 2,
            },
            2,
        );
        let mut out = Vec::new();
        s.encode_into(&mut out);
        // Swap the two one-byte members: "b" before "a".
        let (first, second) = (2, 2 + 1 + 1 + 8 + 1 + 8 + 1);
        out.swap(first, second);
        assert_eq!(OrSet::decode(&out), Err(DecodeError::NotCanonical));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add { replica: usize, member: u8 },
        Remove { replica: usize, member: u8 },
        Clear { replica: usize },
        Merge { from: usize, to: usize },
    }

    fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            4 => (0usize..3, 0u8..4).prop_map(|(replica, member)| Op::Add { replica, member }),
            2 => (0usize..3, 0u8..4).prop_map(|(replica, member)| Op::Remove { replica, member }),
            1 => (0usize..3).prop_map(|replica| Op::Clear { replica }),
            3 => (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Merge { from, to }),
        ];
        proptest::collection::vec(op, 0..40)
    }

    /// Runs `ops` on three replicas (actor = index); returns them and the
    /// members that must be present once all have merged: those with an
    /// add that no remove, clear or later add of the same member by a
    /// replica that had seen it superseded.
    fn run(ops: &[Op]) -> (Vec<Replica>, BTreeSet<String>) {
        let mut replicas = vec![Replica::default(); 3];
        let mut adds: Vec<(String, Dot)> = Vec::new();
        let mut killed: BTreeSet<Dot> = BTreeSet::new();
        let kill =
            |killed: &mut BTreeSet<Dot>, adds: &[(String, Dot)], r: &Replica, m: Option<&str>| {
                for (member, dot) in adds {
                    if m.is_none_or(|m| m == member) && r.vv.covers(*dot) {
                        killed.insert(*dot);
                    }
                }
            };
        for op in ops {
            match *op {
                Op::Add { replica, member } => {
                    let m = format!("m{member}");
                    kill(&mut killed, &adds, &replicas[replica], Some(&m));
                    let dot = replicas[replica].add(replica as u64, &m);
                    adds.push((m, dot));
                }
                Op::Remove { replica, member } => {
                    let m = format!("m{member}");
                    kill(&mut killed, &adds, &replicas[replica], Some(&m));
                    replicas[replica].set.remove(m.as_bytes());
                }
                Op::Clear { replica } => {
                    kill(&mut killed, &adds, &replicas[replica], None);
                    replicas[replica].set.clear();
                }
                Op::Merge { from, to } => {
                    let other = replicas[from].clone();
                    replicas[to].join(&other);
                }
            }
        }
        let present = (adds.iter())
            .filter(|(_, dot)| !killed.contains(dot))
            .map(|(m, _)| m.clone())
            .collect();
        (replicas, present)
    }

    proptest! {
        #[test]
        fn join_is_commutative_associative_idempotent(ops in arb_ops()) {
            let (r, _) = run(&ops);
            let ab_c = super::super::check_join_laws(&r[0], &r[1], &r[2], Replica::join)?;
            prop_assert_eq!(roundtrip(&ab_c.set), ab_c.set);
        }

        /// Once all have merged: a member is present exactly when one of
        /// its adds was superseded by nothing that had seen it.
        #[test]
        fn removes_remove_what_they_saw_and_concurrent_adds_win(ops in arb_ops()) {
            let (r, present) = run(&ops);
            let mut all = r[0].clone();
            all.join(&r[1]);
            all.join(&r[2]);
            let members: BTreeSet<String> = all
                .set
                .members()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect();
            prop_assert_eq!(members, present);
        }
    }
}
