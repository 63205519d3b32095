//! Tests of the replica: the record cache kept in step with the store,
//! merges, pruning and the truncation purge.

use super::*;
use crate::causality::VersionVector;

/// Adds a sibling `v` by `actor` at `ms`, concurrent with the others.
fn add(set: &mut SiblingSet, actor: u64, ms: u64, v: &'static [u8]) {
    set.update(
        &VersionVector::new(),
        actor,
        ms << 16,
        Some(Bytes::from_static(v)),
        None,
    );
}

/// Replica 1 on an empty in-memory store, its clock at 10 s.
fn replica() -> LocalReplica<crate::store::MemStore> {
    let clock: SharedClock = std::sync::Arc::new(ringkv_env::ManualClock::new(10_000));
    LocalReplica::new(1, crate::store::MemStore::default(), clock, 64)
}

/// [`replica`] with a record cache filled from its (empty) store.
fn cached_replica(plant: bool) -> LocalReplica<crate::store::MemStore> {
    let mut r = replica().with_record_cache(1 << 20);
    if plant {
        r = r.with_stale_cache_plant();
    }
    assert!(r.warm_cache().expect("warm"), "an empty store fits");
    r
}

fn put(r: &LocalReplica<crate::store::MemStore>, key: &[u8], v: &'static [u8]) {
    r.update_buffered(
        key,
        Change::Put(Bytes::from_static(v)),
        &WriteOptions::default(),
    )
    .expect("write");
}

/// A client write reads, through the cache, the sibling a peer merged
/// in, and supersedes it; with the planted stale cache it does not (the
/// peer's version survives as a concurrent sibling: the history the
/// simulation's checkers catch).
#[test]
fn a_write_supersedes_what_a_peer_merged_through_the_cache() {
    for plant in [false, true] {
        let r = cached_replica(plant);
        put(&r, b"k", b"mine");
        let mut theirs = r.read(b"k").expect("read");
        let ctx = theirs.vv.clone();
        theirs.update(
            &ctx,
            2,
            11_000 << 16,
            Some(Bytes::from_static(b"theirs")),
            None,
        );
        assert!(r.merge(b"k", &Record::from(theirs.clone())).expect("merge"));
        put(&r, b"k", b"after");
        let stored = SiblingSet::decode(&r.store().get(b"k").expect("get").expect("stored"))
            .expect("decode");
        assert_eq!(stored.siblings.len(), 1);
        // The peer sends its version again (anti-entropy).
        r.merge(b"k", &Record::from(theirs.clone()))
            .expect("merge again");
        let now = SiblingSet::decode(&r.store().get(b"k").expect("get").expect("stored"))
            .expect("decode");
        if plant {
            assert_eq!(
                now.siblings.len(),
                2,
                "the stale cache lost a version: {now:?}"
            );
        } else {
            assert_eq!(stored.vv.get(2), theirs.vv.get(2), "covers the peer's dot");
            assert_eq!(now.siblings.len(), 1, "superseded: {now:?}");
        }
    }
}

/// After any mix of writes, merges, removals and a truncation purge,
/// the cache and the store hold the same record for every key.
#[test]
fn the_cache_and_the_store_agree_after_every_kind_of_change() {
    let r = cached_replica(false);
    let mut draw: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        draw ^= draw << 13;
        draw ^= draw >> 7;
        draw ^= draw << 17;
        draw % n
    };
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("key{i}").into_bytes()).collect();
    for step in 0..3_000u64 {
        let key = &keys[next(keys.len() as u64) as usize];
        match next(5) {
            0 | 1 => put(&r, key, b"v"),
            2 => {
                let mut set = SiblingSet::default();
                add(&mut set, 2 + next(3), 1_000 + step, b"peer");
                r.merge(key, &Record::from(set.clone())).expect("merge");
            }
            3 => {
                r.update_buffered(key, Change::Delete, &WriteOptions::default())
                    .expect("delete");
            }
            _ => r.remove_record(key).expect("remove"),
        }
        if step == 2_000 {
            r.set_truncated_at(1_500 << 16);
            r.purge_truncated().expect("purge");
        }
    }
    for key in &keys {
        let cached = r.read(key).expect("read");
        let mut stored = match r.store().get(key).expect("get") {
            Some(bytes) => SiblingSet::decode(&bytes).expect("decode"),
            None => SiblingSet::default(),
        };
        r.drop_truncated(&mut stored);
        assert_eq!(cached, stored, "{}", String::from_utf8_lossy(key));
    }
    // The truncation emptied the cache and ended completeness; reads
    // filled it again.
    let stats = r.cache_stats();
    assert!(
        !stats.complete && stats.hits > 0 && stats.misses > 0,
        "{stats:?}"
    );
}

/// A merge prunes what the rule allows, so a pruned replica that
/// receives an unpruned copy stays pruned and reports no change.
#[test]
fn merges_prune_the_entries_of_departed_nodes() {
    let r = replica();
    r.set_pruner(Arc::new(|_, set| {
        crate::causality::purge::prune_departed(set, 10_000, 1_000, |a| a == 9, || Some(9_000))
    }));
    let mut old = SiblingSet::default();
    add(&mut old, 9, 1_000, b"a");
    let ctx = old.vv.clone();
    old.update(&ctx, 2, 2_000 << 16, Some(Bytes::from_static(b"b")), None);
    assert!(r.merge(b"k", &Record::from(old.clone())).expect("merge"));
    let stored = r.read(b"k").expect("read");
    assert_eq!(stored.vv.get(9), 0, "pruned on the way in");
    assert_eq!(stored.siblings, old.siblings);
    assert!(
        !r.merge(b"k", &Record::from(old.clone()))
            .expect("merge again"),
        "an unpruned copy changes nothing"
    );
    assert_eq!(r.read(b"k").expect("read"), stored);
}

/// An import after a truncation lands while the old record is still
/// stored (its compaction not run yet): its versions, stamped after the
/// point with their old dots, are taken; a stale copy is not.
#[test]
fn an_import_lands_on_a_truncated_record_not_yet_purged() {
    let r = replica();
    let mut old = SiblingSet::default();
    add(&mut old, 2, 1_000, b"a");
    add(&mut old, 3, 1_001, b"b");
    assert!(r.merge(b"k", &Record::from(old.clone())).expect("merge"));
    let at = 5_000 << 16;
    assert!(r.set_truncated_at(at));
    assert_eq!(r.read(b"k").expect("read"), SiblingSet::default());
    // The import of the same versions, restamped, onto the old record
    // still stored.
    assert!(r.store().get(b"k").expect("get").is_some(), "still stored");
    let mut imported = old.clone();
    assert!(imported.restamp_truncated(at));
    assert!(
        r.merge(b"k", &Record::from(imported.clone()))
            .expect("import")
    );
    let back = r.read(b"k").expect("read");
    assert_eq!(back.siblings.len(), 2, "both siblings back: {back:?}");
    assert!(back.siblings.iter().all(|s| s.hlc == at + 1));
    // Imported twice: nothing changes; the stale copy, as a replica
    // that missed the point sends it, changes nothing either.
    assert!(
        !r.merge(b"k", &Record::from(imported.clone()))
            .expect("again")
    );
    assert!(
        !r.merge(b"k", &Record::from(old.clone()))
            .expect("stale merge")
    );
    assert_eq!(r.read(b"k").expect("read"), back);
}

/// The purge goes through more keys than one pass collects.
#[test]
fn the_purge_mends_every_key_in_bounded_passes() {
    let r = replica();
    let n = PURGE_BATCH_KEYS * 2 + 7;
    for i in 0..n {
        let mut set = SiblingSet::default();
        add(&mut set, 2, if i % 10 == 0 { 9_000 } else { 1_000 }, b"v");
        r.store()
            .put(format!("k{i}").as_bytes(), &set.encode())
            .expect("put");
    }
    r.set_truncated_at(5_000 << 16);
    let kept = n.div_ceil(10);
    assert_eq!(r.purge_truncated().expect("purge"), (n - kept) as u64);
    let mut left = 0;
    r.store()
        .for_each(&mut |_, _| {
            left += 1;
            true
        })
        .expect("scan");
    assert_eq!(left, kept, "the writes after the point stay");
}

/// A plain overwrite reads only the record's vector; it must leave what a
/// write from the whole record leaves (here one keeping the old expiry,
/// which reads the whole record), before and after a truncation point, and
/// an import of the restamped old versions must come back the same way.
#[test]
fn an_overwrite_from_the_vector_alone_matches_one_from_the_whole_record() {
    for (cached, truncate) in [(false, false), (true, false), (false, true), (true, true)] {
        let make = || {
            let r = if cached {
                cached_replica(false)
            } else {
                replica()
            };
            let mut old = SiblingSet::default();
            add(&mut old, 2, 1_000, b"a");
            add(&mut old, 3, 1_001, b"b");
            assert!(r.merge(b"k", &Record::from(old.clone())).expect("merge"));
            if truncate {
                assert!(r.set_truncated_at(5_000 << 16));
            }
            (r, old)
        };
        let ((fast, old), (slow, _)) = (make(), make());
        let put = || Change::Put(Bytes::from_static(b"new"));
        let (fast_outcome, fast_set) = fast
            .update_buffered(b"k", put(), &WriteOptions::default())
            .expect("fast");
        let keep = WriteOptions {
            expiry: Expiry::Keep,
            ..WriteOptions::default()
        };
        let (slow_outcome, slow_set) = slow.update_buffered(b"k", put(), &keep).expect("slow");
        assert_eq!(fast_outcome, slow_outcome);
        let strip_hlc =
            |record: Option<Record>| record.map(|r| (r.strings.vv, r.strings.siblings.len()));
        assert_eq!(
            strip_hlc(fast_set),
            strip_hlc(slow_set),
            "cached {cached} truncate {truncate}"
        );
        let mut imported = old.clone();
        if truncate {
            imported.restamp_truncated(5_000 << 16);
        }
        fast.merge(b"k", &Record::from(imported.clone()))
            .expect("import");
        slow.merge(b"k", &Record::from(imported.clone()))
            .expect("import");
        let (f, s) = (
            fast.read(b"k").expect("read"),
            slow.read(b"k").expect("read"),
        );
        assert_eq!(f.vv, s.vv, "cached {cached} truncate {truncate}");
        assert_eq!(
            f.siblings.len(),
            s.siblings.len(),
            "cached {cached} truncate {truncate}"
        );
    }
}

/// A store that counts how its writes reach the log.
#[derive(Default)]
struct CountingStore {
    inner: crate::store::MemStore,
    now: std::sync::atomic::AtomicU64,
    buffered: std::sync::atomic::AtomicU64,
    releases: std::sync::atomic::AtomicU64,
}

impl LocalStore for CountingStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        self.inner.get(key)
    }
    fn put(&self, key: &[u8], record: &[u8]) -> Result<(), StoreError> {
        self.now.fetch_add(1, Ordering::Relaxed);
        self.inner.put(key, record)
    }
    fn put_buffered(&self, key: &[u8], record: &[u8]) -> Result<(), StoreError> {
        self.buffered.fetch_add(1, Ordering::Relaxed);
        self.inner.put(key, record)
    }
    fn release_buffered(&self) -> Result<(), StoreError> {
        self.releases.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.inner.remove(key)
    }
    fn scan_tokens(
        &self,
        start: u64,
        end: u64,
        include_start: bool,
        visit: &mut dyn FnMut(&[u8], &Bytes) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan_tokens(start, end, include_start, visit)
    }
    fn stats(&self) -> Vec<crate::store::StoreFigure> {
        Vec::new()
    }
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn blocking_writes(&self) -> bool {
        false
    }
}

/// A batch of merges (a stream's, an import's) reaches the log in one
/// release.
#[test]
fn a_batch_of_merges_reaches_the_log_once() {
    let clock: SharedClock = std::sync::Arc::new(ringkv_env::ManualClock::new(10_000));
    let r = LocalReplica::new(1, CountingStore::default(), clock, 64);
    let batch: Vec<(Bytes, Record)> = (0..20u64)
        .map(|i| {
            let mut set = SiblingSet::default();
            add(&mut set, 2, 1_000 + i, b"v");
            (Bytes::from(format!("k{i}")), set.into())
        })
        .collect();
    r.merge_batch(&batch).expect("merge");
    let store = r.store();
    assert_eq!(store.buffered.load(Ordering::Relaxed), 20);
    assert_eq!(store.now.load(Ordering::Relaxed), 0);
    assert_eq!(store.releases.load(Ordering::Relaxed), 1);
    for (key, set) in &batch {
        assert_eq!(&r.read(key).expect("read"), &set.strings);
    }
    // The same again changes nothing: nothing is written, one release.
    r.merge_batch(&batch).expect("merge again");
    assert_eq!(store.buffered.load(Ordering::Relaxed), 20);
    assert_eq!(store.releases.load(Ordering::Relaxed), 2);
}

/// Records with data types (format 2) merge into a replica by their own
/// joins, keep their format, and meet the truncation point; a replica that
/// holds one answers it whole to peers and counts it in the census.
#[test]
fn records_with_data_types_merge_and_meet_the_truncation_point() {
    use crate::causality::Dot;
    use crate::causality::types::{EntryId, Kind};
    let at_ms = |ms: u64| ms << 16;
    for cached in [false, true] {
        let r = if cached {
            cached_replica(false)
        } else {
            replica()
        };
        // Two replicas' counters of one key, and a set beside a string.
        let counter = |actor: u64, ms: u64, delta: i64| {
            let mut rec = Record::default();
            rec.supersede_other_kinds(Kind::Counter, at_ms(ms), actor);
            let entry = EntryId { actor, epoch: 1 };
            (rec.counter.state)
                .increment(entry, delta, at_ms(ms), 100)
                .expect("in range");
            rec.counter.hlc = at_ms(ms);
            rec
        };
        assert!(r.merge(b"c", &counter(2, 1_000, 5)).expect("merge"));
        assert!(r.merge(b"c", &counter(3, 2_000, 7)).expect("merge"));
        assert!(!r.merge(b"c", &counter(3, 2_000, 7)).expect("again"));
        let stored = r.store().get(b"c").expect("get").expect("stored");
        assert_eq!(stored[1], 2, "format 2");
        assert_eq!(r.read_record(b"c").expect("read").counter.state.value(), 12);
        let mut set = Record::default();
        let dot = Dot {
            actor: 2,
            counter: 1,
        };
        set.strings.vv.raise(2, 1);
        set.set
            .state
            .add(Bytes::from_static(b"m"), dot, at_ms(3_000));
        set.set.hlc = at_ms(3_000);
        assert!(r.merge(b"s", &set).expect("merge"));
        let raw = r.read_raw(b"s").expect("read").expect("present");
        assert_eq!(Record::decode(&raw).expect("decode"), set);
        // The census counts both keys.
        let count = r
            .count_keys_until(&std::sync::atomic::AtomicBool::new(false))
            .expect("count")
            .expect("finished");
        assert_eq!(count.live, 2);
        // A truncation after the first counter's increment and before the
        // second's: only the second counts; one before everything hides
        // the set, and the key is gone from what peers are sent.
        r.set_truncated_at(at_ms(1_500));
        assert_eq!(r.read_record(b"c").expect("read").counter.state.value(), 7);
        r.set_truncated_at(at_ms(3_500));
        assert!(r.read_record(b"s").expect("read").is_void());
        assert_eq!(r.read_raw(b"s").expect("read"), None);
        assert_eq!(r.purge_truncated().expect("purge"), 2, "both keys removed");
        // The old counter sent again by a peer that missed the point
        // brings nothing back.
        assert!(!r.merge(b"c", &counter(2, 1_000, 5)).expect("merge"));
        assert_eq!(r.store().get(b"c").expect("get"), None);
    }
}
