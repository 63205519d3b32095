//! Buffered writes (`Engine::write_buffered` / `Engine::release_buffered`):
//! visible at once, handed to the OS together by one flush, never lost once
//! flushed, kept in sequence order with ordinary writes and across memtable
//! rotations, and never reported flushed after writing the buffer failed.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ringkv_storage::{CrashMode, Error, Options, SyncMode, WriteBatch};

fn periodic() -> Options {
    Options {
        sync: SyncMode::Periodic {
            interval_ms: 3_600_000,
        },
        background_threads: false,
        ..small_opts()
    }
}

#[test]
fn buffered_writes_are_visible_at_once_and_one_flush_writes_them_all() {
    let fs = fault_fs(1);
    let c = clock(0);
    let opts = Options {
        memtable_bytes_max: 1 << 20,
        ..periodic()
    };
    let e = open(&fs, opts, &c).unwrap();
    let before = e.stats().log_writes;
    for i in 0..100 {
        e.put_buffered(&key(i), &value(i, 0), None).unwrap();
        assert_eq!(get_value(&e, &key(i)), Some(value(i, 0)));
    }
    let s = e.stats();
    assert_eq!(s.log_writes, before, "nothing written before the flush");
    assert_eq!(s.buffered_writes, 100);
    e.release_buffered().unwrap();
    assert_eq!(e.stats().log_writes, before + 1, "one write for all 100");
    // Nothing left to write: a second flush makes no system call.
    e.release_buffered().unwrap();
    assert_eq!(e.stats().log_writes, before + 1);

    // A crash of the process keeps what was flushed and loses what was not.
    e.put_buffered(b"unflushed", b"x", None).unwrap();
    let fs = fs.crash(CrashMode::ProcessOnly);
    drop(e);
    let e = open(&fs, periodic(), &c).unwrap();
    for i in 0..100 {
        assert_eq!(get_value(&e, &key(i)), Some(value(i, 0)), "key {i}");
    }
    assert_eq!(get_value(&e, b"unflushed"), None);
}

#[test]
fn buffered_and_ordinary_writes_keep_their_order_across_rotations() {
    for seed in 0..4 {
        let fs = fault_fs(seed);
        let c = clock(0);
        let e = open(&fs, periodic(), &c).unwrap();
        // Many rounds over few keys, through many memtable rotations: the
        // newest value of each key must win after recovery, whichever path
        // wrote it.
        let mut newest = std::collections::BTreeMap::new();
        for round in 0..30u64 {
            for i in 0..40u64 {
                let (k, v) = (key(i), value(i, round));
                if (i + round + seed) % 3 == 0 {
                    e.put(&k, &v, None).unwrap();
                } else {
                    let mut b = WriteBatch::new();
                    b.put(&k, &v, None);
                    e.write_buffered(b).unwrap();
                }
                newest.insert(k, v);
            }
            if round % 7 == seed {
                e.release_buffered().unwrap();
            }
        }
        assert!(e.stats().flushes > 0, "seed {seed}: no rotation happened");
        e.release_buffered().unwrap();
        drop(e);
        let fs = fs.crash(CrashMode::ProcessOnly);
        let e = open(&fs, periodic(), &c).unwrap();
        for (k, v) in &newest {
            assert_eq!(get_value(&e, k).as_ref(), Some(v), "seed {seed}");
        }
    }
}

#[test]
fn close_and_sync_write_the_buffer() {
    let fs = fault_fs(2);
    let c = clock(0);
    let e = open(&fs, periodic(), &c).unwrap();
    e.put_buffered(b"a", b"1", None).unwrap();
    e.sync().unwrap();
    e.put_buffered(b"b", b"2", None).unwrap();
    e.close().unwrap();
    let fs = fs.crash(CrashMode::DropUnsynced);
    let e = open(&fs, periodic(), &c).unwrap();
    assert_eq!(get_value(&e, b"a"), Some(b"1".to_vec()));
    assert_eq!(get_value(&e, b"b"), Some(b"2".to_vec()));
}

#[test]
fn after_a_failed_buffer_write_no_flush_ever_succeeds() {
    let fs = fault_fs(3);
    let c = clock(0);
    let opts = Options {
        memtable_bytes_max: 1 << 20,
        ..periodic()
    };
    let e = open(&fs, opts, &c).unwrap();
    e.put_buffered(b"kept", b"1", None).unwrap();
    e.release_buffered().unwrap();
    e.put_buffered(b"lost", b"2", None).unwrap();
    fs.set_fail_writes(true);
    assert!(e.release_buffered().is_err());
    fs.set_fail_writes(false);
    // The write is visible but can never reach the log: no later flush may
    // report success, and writes are refused.
    assert!(matches!(e.release_buffered(), Err(Error::ReadOnly { .. })));
    assert!(matches!(e.release_buffered(), Err(Error::ReadOnly { .. })));
    assert!(e.put_buffered(b"more", b"3", None).is_err());
    assert!(e.put(b"more", b"3", None).is_err());
    drop(e);
    let fs = fs.crash(CrashMode::ProcessOnly);
    let e = open(&fs, periodic(), &c).unwrap();
    assert_eq!(get_value(&e, b"kept"), Some(b"1".to_vec()));
    assert_eq!(get_value(&e, b"lost"), None);
    // Reopened, the engine writes again.
    e.put_buffered(b"again", b"4", None).unwrap();
    e.release_buffered().unwrap();
}

#[test]
fn with_sync_always_a_buffered_write_is_an_ordinary_one() {
    let fs = fault_fs(4);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    let syncs = fs.sync_count();
    e.put_buffered(b"a", b"1", None).unwrap();
    assert!(fs.sync_count() > syncs, "fsynced before returning");
    assert_eq!(e.stats().buffered_writes, 0);
    let fs = fs.crash(CrashMode::DropUnsynced);
    drop(e);
    let e = open(&fs, small_opts(), &c).unwrap();
    assert_eq!(get_value(&e, b"a"), Some(b"1".to_vec()));
}

#[test]
fn a_full_buffer_is_written_without_waiting_for_a_flush() {
    let fs = fault_fs(5);
    let c = clock(0);
    let opts = Options {
        memtable_bytes_max: 8 << 20,
        group_commit_bytes_max: 4 << 10,
        ..periodic()
    };
    let e = open(&fs, opts.clone(), &c).unwrap();
    for i in 0..1_000 {
        e.put_buffered(&key(i), &value(i, 0), None).unwrap();
    }
    let s = e.stats();
    assert!(s.log_writes >= 10, "{} writes", s.log_writes);
    // What the full buffers carried survives a crash without any flush.
    let fs = fs.crash(CrashMode::ProcessOnly);
    drop(e);
    let e = open(&fs, opts, &c).unwrap();
    let present = (0..1_000)
        .filter(|&i| e.get(&key(i)).unwrap().is_some())
        .count();
    assert!(present >= 900, "{present} of 1000 survived");
}

mod model {
    //! Random mixes of ordinary and buffered writes, flushes and process
    //! crashes against a model: a crash must leave exactly the state after
    //! some prefix of the writes, and never less than what was flushed.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Step {
        Put { k: u8, v: u16 },
        BufferedPut { k: u8, v: u16 },
        BufferedDelete { k: u8 },
        FlushBuffered,
        Get { k: u8 },
        Flush,
        Crash,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            10 => (any::<u8>(), any::<u16>()).prop_map(|(k, v)| Step::Put { k, v }),
            30 => (any::<u8>(), any::<u16>()).prop_map(|(k, v)| Step::BufferedPut { k, v }),
            5 => any::<u8>().prop_map(|k| Step::BufferedDelete { k }),
            8 => Just(Step::FlushBuffered),
            10 => any::<u8>().prop_map(|k| Step::Get { k }),
            2 => Just(Step::Flush),
            4 => Just(Step::Crash),
        ]
    }

    type Model = BTreeMap<Vec<u8>, Vec<u8>>;

    fn kk(i: u8) -> Vec<u8> {
        format!("k{}", i % 64).into_bytes()
    }

    fn vv(x: u16) -> Vec<u8> {
        format!("v{x}-{}", "y".repeat(usize::from(x % 40))).into_bytes()
    }

    fn opts() -> Options {
        Options {
            memtable_bytes_max: 2 << 10,
            group_commit_bytes_max: 1 << 10,
            ..periodic()
        }
    }

    fn run(steps: Vec<Step>, seed: u64) {
        let mut fs = fault_fs(seed);
        let c = clock(0);
        let mut e = open(&fs, opts(), &c).unwrap();
        let mut model = Model::new();
        // The state every crash must keep at least, and the states after
        // each buffered write since.
        let mut durable = Model::new();
        let mut since: Vec<Model> = Vec::new();
        for (n, s) in steps.into_iter().enumerate() {
            match s {
                Step::Put { k, v } => {
                    e.put(&kk(k), &vv(v), None).unwrap();
                    model.insert(kk(k), vv(v));
                    durable = model.clone();
                    since.clear();
                }
                Step::BufferedPut { k, v } => {
                    e.put_buffered(&kk(k), &vv(v), None).unwrap();
                    model.insert(kk(k), vv(v));
                    since.push(model.clone());
                }
                Step::BufferedDelete { k } => {
                    let mut b = WriteBatch::new();
                    b.delete(&kk(k));
                    e.write_buffered(b).unwrap();
                    model.remove(&kk(k));
                    since.push(model.clone());
                }
                Step::FlushBuffered => {
                    e.release_buffered().unwrap();
                    durable = model.clone();
                    since.clear();
                }
                Step::Get { k } => {
                    assert_eq!(
                        get_value(&e, &kk(k)),
                        model.get(&kk(k)).cloned(),
                        "step {n}"
                    );
                }
                Step::Flush => {
                    e.flush().unwrap();
                    durable = model.clone();
                    since.clear();
                }
                Step::Crash => {
                    fs = fs.crash(CrashMode::ProcessOnly);
                    drop(e);
                    e = open(&fs, opts(), &c).unwrap();
                    let got: Model = scan_all(&e).into_iter().collect();
                    assert!(
                        got == durable || since.contains(&got),
                        "step {n}: recovered state is no prefix of the writes at or after the last flush"
                    );
                    model = got;
                    durable = model.clone();
                    since.clear();
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 1_000, ..ProptestConfig::default() })]

        #[test]
        fn a_crash_keeps_a_prefix_of_the_writes_and_everything_flushed(
            steps in proptest::collection::vec(step(), 1..300),
            seed: u64,
        ) {
            run(steps, seed);
        }
    }
}
