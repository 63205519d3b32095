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
//! [`crate::causality::purge::prune_departed`] and
//! docs/design/write-and-read-paths.md,
//! "Versioning"); a vector holds at most [`VV_ENTRIES_MAX`]. Dot counters of a node start
//! above its epoch's floor ([`epoch_floor`]), so a node that lost its own
//! latest writes never issues one of their dots again.
//!
//! Sibling bound: at most `siblings_max` siblings are kept; beyond it the
//! oldest by HLC are dropped and counted (`ringkv_siblings_dropped_total`).
//! Concurrent writes by well-behaved clients that pass their context back never
//! reach the bound.

mod codec;
mod hlc;
pub mod purge;
mod siblings;
pub mod types;
mod vector;

pub use hlc::{Hlc, HlcState, hlc_physical_ms};
pub use siblings::{RECORD_FORMAT_TYPED, SIBLINGS_DECODE_MAX, SiblingSet, StoredSibling};
pub use vector::{
    COUNTER_MAX, CausalContext, DecodeError, Dot, EPOCH_SHIFT, VV_ENTRIES_MAX, VersionVector,
    epoch_floor,
};

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
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
    fn a_record_is_encoded_into_exactly_its_size() {
        let mut set = SiblingSet::default();
        set.update(&VersionVector::new(), 1, 1, b("x"), Some(5_000));
        let mut other = SiblingSet::default();
        other.update(&VersionVector::new(), 300, 2, None, None);
        other.update(&VersionVector::new(), 300, 3, b(&"v".repeat(200)), None);
        set.merge(&other);
        let enc = set.encode();
        assert_eq!(enc.len(), enc.capacity());
        assert_eq!(SiblingSet::decode_copied(&enc), Ok(set));
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

        /// A merge says whether it changed the set (a replica stores the
        /// result only then).
        #[test]
        fn a_merge_says_whether_it_changed_the_set(r in arb_replicas()) {
            for (x, y) in [(0, 1), (1, 0), (0, 2), (2, 2)] {
                let mut merged = r[x].clone();
                let changed = merged.merge(&r[y]);
                prop_assert_eq!(changed, merged != r[x]);
                let mut again = merged.clone();
                prop_assert!(!again.merge(&r[y]), "a second merge changes nothing");
            }
        }

        /// A plain overwrite read only the record's vector (the replica's
        /// fast path): it must leave what a write from the whole record
        /// leaves.
        #[test]
        fn an_overwrite_from_the_vector_alone_matches_one_from_the_record(r in arb_replicas()) {
            let full = r[2].clone();
            let mut from_record = full.clone();
            let context = full.vv.clone();
            from_record.update_above(&context, 7, 3, 99, b("new"), None);
            let mut from_vector = SiblingSet { vv: full.vv.clone(), siblings: Vec::new() };
            from_vector.update_above(&context, 7, 3, 99, b("new"), None);
            prop_assert_eq!(from_record, from_vector);
        }

        #[test]
        fn record_and_context_roundtrip(r in arb_replicas()) {
            let set = r[1].clone();
            let enc = Bytes::from(set.encode());
            prop_assert_eq!(SiblingSet::decode(&enc), Ok(set.clone()));
            prop_assert_eq!(SiblingSet::decode_copied(&enc), Ok(set.clone()));
            prop_assert_eq!(SiblingSet::decode_vv(&enc, 0), Ok(Some(set.vv.clone())));
            // With a truncation point: the vector a full decode leaves.
            for at in [1, 3, 50] {
                let mut truncated = set.clone();
                truncated.drop_truncated(at);
                prop_assert_eq!(SiblingSet::decode_vv(&enc, at), Ok(Some(truncated.vv)));
            }
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
