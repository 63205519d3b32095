//! Damaged files: a flipped byte in an SSTable, the commit log or the manifest
//! is reported as `Error::Corruption` (naming the file, and for the log the
//! record's offset), and wrong data is never returned.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::*;
use ringkv_env::{Rng, SeededRng};
use ringkv_storage::{CrashMode, Engine, Error, FaultFs, Fs, Options};

fn files_ending(fs: &FaultFs, ext: &str) -> Vec<PathBuf> {
    fs.list(&dir())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(ext))
        .map(|n| dir().join(n))
        .collect()
}

/// An engine whose data sits in one compacted table; returns the fs.
fn one_table_fs(seed: u64) -> FaultFs {
    let fs = fault_fs(seed);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    for i in 0..400 {
        e.put(&key(i), &value(i, 7), None).unwrap();
    }
    e.compact().unwrap();
    e.close().unwrap();
    fs
}

#[test]
fn flipped_bytes_in_a_table_give_corruption_never_wrong_data() {
    let mut rng = SeededRng::new(42);
    let mut detected = 0;
    for trial in 0..60 {
        let fs = one_table_fs(trial);
        let tables = files_ending(&fs, ".sst");
        assert!(!tables.is_empty());
        let t = &tables[rng.below(tables.len() as u64) as usize];
        let len = fs.file_len(t).unwrap() as usize;
        let pos = rng.below(len as u64) as usize;
        fs.corrupt_byte(t, pos, 1 << rng.below(8)).unwrap();
        let c = clock(0);
        let e = match open(&fs, small_opts(), &c) {
            Ok(e) => e,
            Err(Error::Corruption { file, .. }) => {
                // Footer, index, filter or properties damaged: found at open.
                assert_eq!(&file, t);
                detected += 1;
                continue;
            }
            Err(other) => panic!("trial {trial}: unexpected open error {other}"),
        };
        let mut errors = 0;
        for i in 0..400 {
            match e.get(&key(i)) {
                Ok(v) => assert_eq!(
                    v.map(|x| x.value.to_vec()),
                    Some(value(i, 7)),
                    "trial {trial}: wrong data"
                ),
                Err(Error::Corruption { file, .. }) => {
                    assert_eq!(&file, t);
                    errors += 1;
                }
                Err(other) => panic!("trial {trial}: unexpected {other}"),
            }
        }
        let mut scan_ok = 0;
        for r in e.scan(..).unwrap() {
            match r {
                Ok((k, v)) => {
                    let i: u64 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
                    assert_eq!(
                        v.value.as_ref(),
                        value(i, 7).as_slice(),
                        "trial {trial}: wrong scan data"
                    );
                    scan_ok += 1;
                }
                Err(err) => {
                    assert!(err.is_corruption(), "{err}");
                    errors += 1;
                    break;
                }
            }
        }
        if errors > 0 {
            detected += 1;
        } else {
            assert_eq!(scan_ok, 400);
        }
    }
    // Every byte of a table is covered by a checksum: a flip is always found.
    assert_eq!(detected, 60);
}

fn log_fs(seed: u64) -> (FaultFs, PathBuf) {
    let fs = fault_fs(seed);
    let c = clock(0);
    let e = open(
        &fs,
        Options {
            memtable_bytes_max: 1 << 20,
            ..small_opts()
        },
        &c,
    )
    .unwrap();
    for i in 0..50 {
        e.put(&key(i), &value(i, 1), None).unwrap();
    }
    let after = fs.crash(CrashMode::DropUnsynced);
    drop(e);
    let logs = files_ending(&after, ".log");
    assert_eq!(logs.len(), 1);
    (after, logs[0].clone())
}

#[test]
fn a_flipped_byte_before_the_log_tail_fails_open_naming_file_and_offset() {
    let (fs, log) = log_fs(1);
    let len = fs.file_len(&log).unwrap() as usize;
    // Records are equal-ish in size; flip inside the 10th record's payload.
    let pos = len / 5;
    fs.corrupt_byte(&log, pos, 0x40).unwrap();
    let c = clock(0);
    match open(&fs, small_opts(), &c) {
        Err(Error::Corruption {
            file,
            offset,
            detail,
        }) => {
            assert_eq!(file, log);
            assert!(
                offset as usize <= pos && pos - (offset as usize) < 200,
                "offset {offset} vs flip at {pos}: {detail}"
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn salvage_skips_the_damaged_log_record_loudly_and_keeps_the_rest() {
    let (fs, log) = log_fs(2);
    let len = fs.file_len(&log).unwrap() as usize;
    fs.corrupt_byte(&log, len / 2, 0x01).unwrap();
    let c = clock(0);
    let e = open(
        &fs,
        Options {
            salvage: true,
            ..small_opts()
        },
        &c,
    )
    .unwrap();
    let present = (0..50)
        .filter(|&i| get_value(&e, &key(i)).is_some())
        .count();
    assert_eq!(present, 49, "exactly the damaged record is skipped");
    for i in 0..50 {
        if let Some(v) = get_value(&e, &key(i)) {
            assert_eq!(v, value(i, 1));
        }
    }
}

#[test]
fn damage_to_the_last_log_record_is_a_torn_tail() {
    let (fs, log) = log_fs(3);
    let len = fs.file_len(&log).unwrap() as usize;
    fs.truncate(&log, len - 3).unwrap();
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    assert_eq!(get_value(&e, &key(49)), None);
    for i in 0..49 {
        assert_eq!(get_value(&e, &key(i)), Some(value(i, 1)));
    }
}

#[test]
fn a_damaged_or_missing_manifest_or_table_fails_open() {
    let fs = one_table_fs(5);
    fs.corrupt_byte(&dir().join("MANIFEST"), 25, 0x08).unwrap();
    let c = clock(0);
    assert!(open(&fs, small_opts(), &c).unwrap_err().is_corruption());

    let fs = one_table_fs(6);
    let t = files_ending(&fs, ".sst").remove(0);
    fs.remove(&t).unwrap();
    match open(&fs, small_opts(), &c) {
        Err(Error::Corruption { file, .. }) => assert_eq!(file, t),
        other => panic!("expected corruption, got {other:?}"),
    }

    let fs = one_table_fs(7);
    let t = files_ending(&fs, ".sst").remove(0);
    let len = fs.file_len(&t).unwrap() as usize;
    fs.truncate(&t, len - 10).unwrap();
    assert!(open(&fs, small_opts(), &c).unwrap_err().is_corruption());

    let fs = one_table_fs(8);
    fs.remove(&dir().join("MANIFEST")).unwrap();
    assert!(open(&fs, small_opts(), &c).unwrap_err().is_corruption());
}

#[test]
fn a_flipped_byte_in_a_real_sstable_file_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), small_opts()).unwrap();
    for i in 0..400 {
        e.put(&key(i), &value(i, 3), None).unwrap();
    }
    e.compact().unwrap();
    e.close().unwrap();
    drop(e);
    let sst = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|d| d.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "sst"))
        .unwrap();
    let mut bytes = std::fs::read(&sst).unwrap();
    bytes[10] ^= 0xff; // inside the first data block
    std::fs::write(&sst, &bytes).unwrap();
    let e = Engine::open(tmp.path(), small_opts()).unwrap();
    let err = e.get(&key(0)).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains(".sst"), "{err}");
}
