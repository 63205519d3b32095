//! Random sequences of put / delete / batch / get / scan / flush / compact /
//! reopen / crash / clock moves, checked step by step against a `BTreeMap`
//! model. Any divergence prints the shrunk sequence.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use ringkv_storage::{CrashMode, Engine, WriteBatch};

#[derive(Debug, Clone)]
enum Step {
    Put { k: u8, v: u16, ttl_ms: Option<u16> },
    Delete { k: u8 },
    Batch(Vec<(u8, Option<u16>)>),
    Get { k: u8 },
    Scan { lo: u8, hi: u8 },
    Flush,
    WaitIdle,
    Compact,
    Reopen,
    Crash,
    Advance { ms: u16 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        30 => (any::<u8>(), any::<u16>(), proptest::option::weighted(0.2, 1u16..2_000))
            .prop_map(|(k, v, ttl_ms)| Step::Put { k, v, ttl_ms }),
        10 => any::<u8>().prop_map(|k| Step::Delete { k }),
        5 => proptest::collection::vec((any::<u8>(), proptest::option::of(any::<u16>())), 1..8).prop_map(Step::Batch),
        20 => any::<u8>().prop_map(|k| Step::Get { k }),
        5 => (any::<u8>(), any::<u8>()).prop_map(|(lo, hi)| Step::Scan { lo, hi }),
        3 => Just(Step::Flush),
        4 => Just(Step::WaitIdle),
        2 => Just(Step::Compact),
        2 => Just(Step::Reopen),
        2 => Just(Step::Crash),
        3 => (0u16..1_500).prop_map(|ms| Step::Advance { ms }),
    ]
}

fn k(i: u8) -> Vec<u8> {
    // Keys that share prefixes and differ in length, to stress ordering.
    let mut key = format!("k{}", i % 97).into_bytes();
    if i >= 97 {
        key.push(i);
    }
    key
}

fn v(x: u16, len_hint: u8) -> Vec<u8> {
    let mut out = format!("v{x}-").into_bytes();
    out.extend(std::iter::repeat_n(
        b'a' + (x % 26) as u8,
        (x % 64) as usize + len_hint as usize,
    ));
    out
}

/// Tiny sizes so that random runs build several levels and background
/// compactions interleave with tombstones and TTLs.
fn opts() -> ringkv_storage::Options {
    ringkv_storage::Options {
        memtable_bytes_max: 1 << 10,
        block_bytes: 256,
        level_base_bytes: 1536,
        level_size_multiplier: 2,
        table_target_bytes: 1 << 10,
        compression: ringkv_storage::Compression::None,
        l0_compaction_trigger_files: 2,
        levels_max: 5,
        ..small_opts()
    }
}

type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn live(model: &Model, now: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    model
        .iter()
        .filter(|(_, (_, exp))| exp.is_none_or(|t| t > now))
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

fn run(steps: Vec<Step>, seed: u64) {
    let mut fs = fault_fs(seed);
    let c = clock(1_000_000);
    let mut e: Engine = open(&fs, opts(), &c).unwrap();
    let mut model: Model = BTreeMap::new();
    for (n, s) in steps.into_iter().enumerate() {
        let now = c.now_ms_for_test();
        match s {
            Step::Put {
                k: kk,
                v: vv,
                ttl_ms,
            } => {
                let exp = ttl_ms.map(|t| now + u64::from(t));
                e.put(&k(kk), &v(vv, kk), exp).unwrap();
                model.insert(k(kk), (v(vv, kk), exp));
            }
            Step::Delete { k: kk } => {
                e.delete(&k(kk)).unwrap();
                model.remove(&k(kk));
            }
            Step::Batch(ops) => {
                let mut b = WriteBatch::new();
                for (kk, val) in ops {
                    match val {
                        Some(vv) => {
                            b.put(&k(kk), &v(vv, 0), None);
                            model.insert(k(kk), (v(vv, 0), None));
                        }
                        None => {
                            b.delete(&k(kk));
                            model.remove(&k(kk));
                        }
                    }
                }
                e.write(b).unwrap();
            }
            Step::Get { k: kk } => {
                let want = model
                    .get(&k(kk))
                    .filter(|(_, exp)| exp.is_none_or(|t| t > now))
                    .map(|(v, _)| v.clone());
                assert_eq!(get_value(&e, &k(kk)), want, "step {n}: get {:?}", k(kk));
            }
            Step::Scan { lo, hi } => {
                let (lo, hi) = (k(lo.min(hi)), k(lo.max(hi)));
                let got: Vec<(Vec<u8>, Vec<u8>)> = e
                    .scan(lo.clone()..hi.clone())
                    .unwrap()
                    .map(|r| {
                        let (kk, vv) = r.unwrap();
                        (kk.to_vec(), vv.value.to_vec())
                    })
                    .collect();
                let want: Vec<_> = live(&model, now)
                    .into_iter()
                    .filter(|(kk, _)| kk >= &lo && kk < &hi)
                    .collect();
                assert_eq!(got, want, "step {n}: scan");
            }
            Step::Flush => e.flush().unwrap(),
            Step::WaitIdle => e.wait_idle().unwrap(),
            Step::Compact => e.compact().unwrap(),
            Step::Reopen => {
                e.close().unwrap();
                e = open(&fs, opts(), &c).unwrap();
            }
            Step::Crash => {
                // SyncMode::Always: every acknowledged write must survive.
                fs = fs.crash(CrashMode::TornZeroFill);
                drop(e);
                e = open(&fs, opts(), &c).unwrap();
            }
            Step::Advance { ms } => c.advance(Duration::from_millis(u64::from(ms))),
        }
    }
    let now = c.now_ms_for_test();
    assert_eq!(scan_all(&e), live(&model, now), "final scan");
}

trait NowForTest {
    fn now_ms_for_test(&self) -> u64;
}

impl NowForTest for std::sync::Arc<ringkv_env::ManualClock> {
    fn now_ms_for_test(&self) -> u64 {
        use ringkv_env::Clock;
        self.now_ms()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_a_btreemap_model(steps in proptest::collection::vec(step(), 1..400), seed: u64) {
        run(steps, seed);
    }
}

#[test]
fn regression_delete_then_flush_then_compact_then_reopen() {
    run(
        vec![
            Step::Put {
                k: 1,
                v: 1,
                ttl_ms: None,
            },
            Step::Flush,
            Step::Delete { k: 1 },
            Step::Flush,
            Step::Compact,
            Step::Crash,
            Step::Get { k: 1 },
            Step::Put {
                k: 1,
                v: 2,
                ttl_ms: Some(10),
            },
            Step::Advance { ms: 10 },
            Step::Get { k: 1 },
            Step::Reopen,
            Step::Get { k: 1 },
        ],
        0,
    );
}
