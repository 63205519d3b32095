//! Crash safety under simulated power loss (FaultFs): rounds of writes, a
//! crash at an arbitrary point (background flush and compaction may be
//! mid-way), reopen, verify.
//!
//! - `SyncMode::Always`: every acknowledged write is present, nothing else.
//! - `SyncMode::Periodic`: the recovered state is the state after some prefix
//!   of the writes that includes everything acknowledged before the last
//!   explicit `sync()` (torn tails dropped, no garbage, no holes).
//! - Concurrent writers crashed mid-stream: every acknowledged write present.
//!
//! Runs a few hundred crashes by default; `RINGKV_LONG=1` runs many more.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use ringkv_env::{Rng, SeededRng};
use ringkv_storage::{CrashMode, Engine, Options, SyncMode};

fn long() -> bool {
    std::env::var("RINGKV_LONG").is_ok_and(|v| v == "1")
}

fn crash_opts(sync: SyncMode) -> Options {
    Options {
        memtable_bytes_max: 2 << 10,
        block_bytes: 256,
        level_base_bytes: 4 << 10,
        level_size_multiplier: 2,
        table_target_bytes: 2 << 10,
        l0_compaction_trigger_files: 2,
        levels_max: 4,
        sync,
        ..small_opts()
    }
}

fn mode(rng: &mut SeededRng) -> CrashMode {
    match rng.below(3) {
        0 => CrashMode::DropUnsynced,
        1 => CrashMode::TornPrefix,
        _ => CrashMode::TornZeroFill,
    }
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn state(e: &Engine) -> Model {
    scan_all(e).into_iter().collect()
}

/// One chain: several rounds of write -> crash -> reopen -> verify.
fn chain(seed: u64, rounds: usize, sync: SyncMode) {
    chain_with(seed, rounds, crash_opts(sync));
}

fn chain_with(seed: u64, rounds: usize, opts: Options) {
    let sync = opts.sync;
    let mut rng = SeededRng::new(seed);
    let mut fs = fault_fs(seed);
    let c = clock(1_000);
    let mut e = open(&fs, opts.clone(), &c).unwrap();
    let mut model: Model = BTreeMap::new();
    for round in 0..rounds {
        // States after each write since the last durable point.
        let mut durable = model.clone();
        let mut history: Vec<Model> = vec![model.clone()];
        let ops = 20 + rng.below(120) as usize;
        for op in 0..ops {
            let k = format!("k{:03}", rng.below(200)).into_bytes();
            if rng.below(5) == 0 {
                e.delete(&k).unwrap();
                model.remove(&k);
            } else {
                let v = format!(
                    "s{seed}-r{round}-o{op}-{}",
                    "p".repeat(rng.below(40) as usize)
                )
                .into_bytes();
                e.put(&k, &v, None).unwrap();
                model.insert(k, v);
            }
            history.push(model.clone());
            match rng.below(40) {
                0 => e.flush().unwrap(),
                1 => e.compact().unwrap(),
                2 if sync != SyncMode::Always => {
                    e.sync().unwrap();
                    durable = model.clone();
                    history = vec![model.clone()];
                }
                _ => {}
            }
        }
        if sync == SyncMode::Always {
            durable = model.clone();
            history = vec![model.clone()];
        }
        let m = mode(&mut rng);
        fs = fs.crash(m);
        drop(e);
        e = open(&fs, opts.clone(), &c).unwrap_or_else(|err| {
            panic!("seed {seed} round {round} ({m:?}): reopen failed: {err}")
        });
        let got = state(&e);
        let matched = history.iter().rposition(|h| *h == got);
        let Some(k) = matched else {
            let missing: Vec<String> = durable
                .keys()
                .chain(got.keys())
                .filter(|k| got.get(*k) != durable.get(*k))
                .take(5)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            panic!(
                "seed {seed} round {round} ({m:?}, {sync:?}): recovered state is no prefix of the writes; \
                 first durable keys differing: {missing:?}"
            );
        };
        // Point reads agree with the scan.
        for (key, v) in &got {
            assert_eq!(
                get_value(&e, key).as_ref(),
                Some(v),
                "seed {seed} round {round}"
            );
        }
        model = history.swap_remove(k);
    }
}

#[test]
fn always_mode_loses_nothing_acknowledged_across_hundreds_of_crashes() {
    let chains = if long() { 2_000 } else { 120 };
    for seed in 0..chains {
        chain(seed, 8, SyncMode::Always);
    }
}

/// Flushes and compactions inline on the writing thread (what the
/// deterministic simulation runs): the same guarantees across crashes.
#[test]
fn inline_background_work_loses_nothing_acknowledged_across_crashes() {
    let chains = if long() { 1_000 } else { 60 };
    for seed in 5_000..5_000 + chains {
        chain_with(
            seed,
            8,
            Options {
                background_threads: false,
                ..crash_opts(SyncMode::Always)
            },
        );
    }
}

/// Inline, the same writes leave the same files, byte for byte: no other
/// thread decides when a flush or a compaction happens.
#[test]
fn inline_background_work_is_deterministic() {
    let files = |seed: u64| {
        let fs = fault_fs(seed);
        let c = clock(1_000);
        let opts = Options {
            background_threads: false,
            ..crash_opts(SyncMode::Always)
        };
        let e = open(&fs, opts, &c).unwrap();
        for i in 0..2_000u64 {
            e.put(&key(i % 700), &value(i, 1), None).unwrap();
        }
        let stats = e.stats();
        let fs: &dyn ringkv_storage::Fs = &fs;
        let mut names = fs.list(&dir()).unwrap();
        names.sort();
        let listing: Vec<(String, Vec<u8>)> = names
            .into_iter()
            .map(|n| {
                let bytes = fs.read_all(&dir().join(&n)).unwrap();
                (n, bytes)
            })
            .collect();
        (listing, stats.flushes, stats.compactions)
    };
    let (a, flushes, compactions) = files(1);
    let (b, _, _) = files(1);
    assert!(
        flushes > 1 && compactions > 0,
        "{flushes} flushes, {compactions} compactions"
    );
    assert!(
        a.iter().filter(|(n, _)| n.ends_with(".sst")).count() > 1,
        "{:?}",
        a.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert_eq!(a, b);
}

#[test]
fn periodic_mode_recovers_a_prefix_that_includes_every_synced_write() {
    let chains = if long() { 2_000 } else { 80 };
    for seed in 1_000..1_000 + chains {
        // A long interval: durability comes from explicit syncs and rotation.
        chain(
            seed,
            8,
            SyncMode::Periodic {
                interval_ms: 60_000,
            },
        );
    }
}

#[test]
fn concurrent_writers_crashed_mid_stream_keep_every_acknowledged_write() {
    let rounds = if long() { 500 } else { 40 };
    for seed in 0..rounds {
        let fs = fault_fs(seed);
        let c = clock(0);
        let opts = crash_opts(SyncMode::Always);
        let e = open(&fs, opts.clone(), &c).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let e = e.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let k = format!("t{t}-{i:06}").into_bytes();
                        match e.put(&k, &value(i, t), None) {
                            Ok(()) => acked.push((k, value(i, t))),
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(5 + seed % 20));
        let mut rng = SeededRng::new(seed);
        let after = fs.crash(mode(&mut rng));
        stop.store(true, Ordering::Relaxed);
        let acked: Vec<(Vec<u8>, Vec<u8>)> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        drop(e);
        let e = open(&after, opts, &c).unwrap();
        let got = state(&e);
        for (k, v) in &acked {
            assert_eq!(
                got.get(k),
                Some(v),
                "seed {seed}: acknowledged {} lost",
                String::from_utf8_lossy(k)
            );
        }
        // Nothing but written values: every key present has its one value.
        for (k, v) in &got {
            let s = String::from_utf8_lossy(k);
            let (t, i) = s[1..].split_once('-').unwrap();
            assert_eq!(
                v,
                &value(i.parse().unwrap(), t.parse().unwrap()),
                "garbage under {s}"
            );
        }
        assert!(
            !acked.is_empty(),
            "seed {seed}: no write was acknowledged before the crash"
        );
    }
}
