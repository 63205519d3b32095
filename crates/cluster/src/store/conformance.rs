//! What every [`LocalStore`] must do, checked against each implementation
//! (the engine's and the one in memory), and a model test that the two
//! agree on any sequence of writes.

use bytes::Bytes;
use proptest::prelude::*;

use super::{EngineStore, LocalStore, MemStore};
use crate::ring::token_of;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Every record, in scan order.
fn all<S: LocalStore>(store: &S) -> Vec<(Vec<u8>, Bytes)> {
    let mut out = Vec::new();
    store
        .for_each(&mut |k, v| {
            out.push((k.to_vec(), v.clone()));
            true
        })
        .expect("scan");
    out
}

fn scan<S: LocalStore>(store: &S, start: u64, end: u64, include_start: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    store
        .scan_tokens(start, end, include_start, &mut |k, _| {
            out.push(k.to_vec());
            true
        })
        .expect("scan");
    out
}

/// The suite: `make` returns an empty store.
fn conforms<S: LocalStore>(make: impl Fn() -> S) {
    // Get, put, overwrite, remove.
    let s = make();
    assert_eq!(s.get(b"a").expect("get"), None);
    s.put(b"a", b"1").expect("put");
    assert_eq!(s.get(b"a").expect("get"), Some(b("1")));
    s.put(b"a", b"2").expect("overwrite");
    assert_eq!(s.get(b"a").expect("get"), Some(b("2")));
    s.remove(b"a").expect("remove");
    assert_eq!(s.get(b"a").expect("get"), None);
    s.remove(b"a").expect("removing an absent key is fine");

    // A buffered write is visible at once, and stays once released.
    let s = make();
    s.put_buffered(b"k", b"v").expect("put buffered");
    assert_eq!(s.get(b"k").expect("get"), Some(b("v")));
    s.release_buffered().expect("release");
    assert!(!s.has_buffered());
    assert_eq!(s.get(b"k").expect("get"), Some(b("v")));
    s.sync().expect("sync");

    // Scans: token order, exact bounds, stopping early.
    let s = make();
    let keys: Vec<String> = (0..200).map(|i| format!("key{i}")).collect();
    for k in &keys {
        s.put(k.as_bytes(), b"rec").expect("put");
    }
    let mut tokens: Vec<u64> = keys.iter().map(|k| token_of(k.as_bytes())).collect();
    tokens.sort_unstable();
    let scanned: Vec<u64> = all(&s).iter().map(|(k, _)| token_of(k)).collect();
    assert_eq!(scanned, tokens, "every record, in token order");
    let (start, end) = (tokens[40], tokens[90]);
    let toks = |keys: Vec<Vec<u8>>| keys.iter().map(|k| token_of(k)).collect::<Vec<_>>();
    assert_eq!(toks(scan(&s, start, end, false)), tokens[41..=90].to_vec());
    assert_eq!(toks(scan(&s, start, end, true)), tokens[40..=90].to_vec());
    assert_eq!(
        toks(scan(&s, tokens[199], u64::MAX, true)),
        vec![tokens[199]]
    );
    let mut two = 0;
    s.for_each(&mut |_, _| {
        two += 1;
        two < 2
    })
    .expect("stop");
    assert_eq!(two, 2, "a scan stops when told");
    assert!(!s.stats().is_empty());

    // Records are opaque: what was put comes back byte for byte, whatever
    // it holds (an expired record is never dropped by a store).
    let s = make();
    let record = vec![0u8, 0xD7, 1, 255, 0];
    s.put(b"raw", &record).expect("put");
    assert_eq!(s.get(b"raw").expect("get").as_deref(), Some(&record[..]));
}

fn engine_store(dir: &std::path::Path) -> EngineStore {
    let engine =
        ringkv_storage::Engine::open(dir, ringkv_storage::Options::default()).expect("open");
    EngineStore::new(engine, ringkv_env::SystemClock::shared(), 1_000, false)
}

#[test]
fn the_memory_store_conforms() {
    conforms(MemStore::default);
}

#[test]
fn the_engine_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = std::sync::atomic::AtomicUsize::new(0);
    conforms(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        engine_store(&dir.path().join(i.to_string()))
    });
}

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u8),
    Buffered(u8, u8),
    Remove(u8),
    Release,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Put(k % 64, v)),
        (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Buffered(k % 64, v)),
        any::<u8>().prop_map(|k| Step::Remove(k % 64)),
        Just(Step::Release),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The engine's store and the one in memory agree on every read and
    /// scan after the same writes.
    #[test]
    fn the_engine_and_memory_stores_agree(
        steps in proptest::collection::vec(step(), 1..120),
        bounds in (any::<u64>(), any::<u64>(), any::<bool>()),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_store(dir.path());
        let memory = MemStore::default();
        let key = |k: u8| format!("k{k}").into_bytes();
        for s in &steps {
            match *s {
                Step::Put(k, v) => {
                    engine.put(&key(k), &[v]).expect("put");
                    memory.put(&key(k), &[v]).expect("put");
                }
                Step::Buffered(k, v) => {
                    engine.put_buffered(&key(k), &[v]).expect("put");
                    memory.put_buffered(&key(k), &[v]).expect("put");
                }
                Step::Remove(k) => {
                    engine.remove(&key(k)).expect("remove");
                    memory.remove(&key(k)).expect("remove");
                }
                Step::Release => engine.release_buffered().expect("release"),
            }
        }
        prop_assert_eq!(all(&engine), all(&memory));
        for k in 0..64u8 {
            prop_assert_eq!(engine.get(&key(k)).expect("get"), memory.get(&key(k)).expect("get"));
        }
        let (a, b, include) = bounds;
        let (start, end) = (a.min(b), a.max(b));
        prop_assert_eq!(scan(&engine, start, end, include), scan(&memory, start, end, include));
    }
}
