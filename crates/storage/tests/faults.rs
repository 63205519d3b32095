//! Out of space, failed fsync and failed writes (FaultFs): clear errors, the
//! engine turns read-only (reads keep working), nothing acknowledged is lost,
//! and a reopen recovers.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ringkv_storage::{CrashMode, Error, Options, SyncMode};

#[test]
fn running_out_of_space_is_a_clear_sticky_error_and_reopen_recovers() {
    for seed in 0..8 {
        let fs = fault_fs(seed);
        let c = clock(0);
        fs.set_space_bytes_max(Some(60_000 + seed * 7_000));
        let e = open(&fs, small_opts(), &c).unwrap();
        let mut acked = Vec::new();
        let mut first_err = None;
        for i in 0..100_000 {
            match e.put(&key(i), &value(i, 0), None) {
                Ok(()) => acked.push(i),
                Err(err) => {
                    first_err = Some(err);
                    break;
                }
            }
        }
        let err = first_err.expect("never ran out of space");
        assert!(err.is_out_of_space(), "seed {seed}: {err}");
        // Sticky: later writes fail, reads still work.
        assert!(matches!(
            e.put(b"more", b"x", None),
            Err(Error::ReadOnly { .. })
        ));
        for &i in &acked {
            assert_eq!(
                get_value(&e, &key(i)),
                Some(value(i, 0)),
                "seed {seed}: key {i}"
            );
        }
        drop(e);
        // Free space and crash (power loss on top): everything acknowledged is back.
        fs.set_space_bytes_max(None);
        let fs = fs.crash(CrashMode::DropUnsynced);
        let e = open(&fs, small_opts(), &c).unwrap();
        for &i in &acked {
            assert_eq!(
                get_value(&e, &key(i)),
                Some(value(i, 0)),
                "seed {seed}: key {i} after reopen"
            );
        }
        e.put(b"after", b"ok", None).unwrap();
        assert_eq!(get_value(&e, b"after"), Some(b"ok".to_vec()));
    }
}

#[test]
fn a_failed_log_fsync_is_never_retried_and_nothing_acknowledged_is_lost() {
    for budget in [3u64, 10, 25, 60] {
        let fs = fault_fs(budget);
        let c = clock(0);
        let e = open(&fs, small_opts(), &c).unwrap();
        fs.fail_sync_after(budget);
        let mut acked = Vec::new();
        let mut err = None;
        for i in 0..10_000 {
            match e.put(&key(i), &value(i, 1), None) {
                Ok(()) => acked.push(i),
                Err(x) => {
                    err = Some(x);
                    break;
                }
            }
        }
        let err = err.expect("fsync never failed");
        assert!(
            matches!(err, Error::Io { .. } | Error::ReadOnly { .. }),
            "{err}"
        );
        // Let a flush that was already running fail on its own fsync.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let attempts = fs.sync_attempts();
        let again = e.put(b"x", b"y", None).unwrap_err();
        assert!(matches!(again, Error::ReadOnly { .. }), "{again}");
        assert!(again.to_string().contains("fsync"), "{again}");
        assert!(matches!(e.flush(), Err(Error::ReadOnly { .. })));
        assert!(matches!(e.sync(), Err(Error::ReadOnly { .. })));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            fs.sync_attempts(),
            attempts,
            "the engine tried to fsync again after a failure"
        );
        for &i in &acked {
            assert_eq!(get_value(&e, &key(i)), Some(value(i, 1)));
        }
        drop(e);
        let fs = fs.crash(CrashMode::TornZeroFill);
        let e = open(&fs, small_opts(), &c).unwrap();
        for &i in &acked {
            assert_eq!(
                get_value(&e, &key(i)),
                Some(value(i, 1)),
                "budget {budget}: key {i}"
            );
        }
    }
}

/// A failed fsync leaves the outcome of what it covered unknown: the
/// manifest renamed into place before its directory fsync failed may be the
/// one a restart reads. The tables it lists must still be there when only
/// the process dies (the kernel keeps every byte written), whichever fsync
/// failed: a flush or compaction whose manifest write failed keeps its
/// tables, and the next open removes what the manifest does not list.
#[test]
fn after_any_failed_fsync_a_process_crash_reopens_with_every_table_the_manifest_lists() {
    // Log writes are not synced one by one, so the fsyncs that fail are
    // those of flushes and compactions: tables, manifests, directories.
    let opts = || Options {
        sync: SyncMode::Periodic {
            interval_ms: 3_600_000,
        },
        ..small_opts()
    };
    for budget in 0..60u64 {
        let fs = fault_fs(budget);
        let c = clock(0);
        let e = open(&fs, opts(), &c).unwrap();
        fs.fail_sync_after(budget);
        let mut acked = Vec::new();
        for i in 0..4_000 {
            match e.put(&key(i), &value(i, 2), None) {
                Ok(()) => acked.push(i),
                Err(_) => break,
            }
        }
        // Let a flush or compaction already running meet the failure.
        std::thread::sleep(std::time::Duration::from_millis(30));
        drop(e);
        let fs = fs.crash(CrashMode::ProcessOnly);
        let e = open(&fs, opts(), &c)
            .unwrap_or_else(|err| panic!("budget {budget}: reopen failed: {err}"));
        for &i in &acked {
            assert_eq!(
                get_value(&e, &key(i)),
                Some(value(i, 2)),
                "budget {budget}: key {i}"
            );
        }
    }
}

#[test]
fn a_failed_periodic_fsync_turns_the_engine_read_only() {
    let fs = fault_fs(77);
    let c = clock(0);
    let opts = Options {
        sync: SyncMode::Periodic { interval_ms: 2 },
        ..small_opts()
    };
    let e = open(&fs, opts, &c).unwrap();
    e.put(b"a", b"1", None).unwrap();
    e.sync().unwrap();
    fs.set_fail_sync(true);
    let mut failed = false;
    for i in 0..2_000 {
        if e.put(&key(i), b"v", None).is_err() {
            failed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(
        failed,
        "writes kept succeeding after the background fsync failed"
    );
    assert!(matches!(
        e.put(b"b", b"2", None),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(e.sync(), Err(Error::ReadOnly { .. })));
    assert_eq!(get_value(&e, b"a"), Some(b"1".to_vec()));
}

#[test]
fn a_failed_log_write_is_reported_and_sticky() {
    let fs = fault_fs(5);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    e.put(b"before", b"1", None).unwrap();
    fs.set_fail_writes(true);
    let err = e.put(b"during", b"2", None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    fs.set_fail_writes(false);
    assert!(matches!(
        e.put(b"after", b"3", None),
        Err(Error::ReadOnly { .. })
    ));
    assert_eq!(get_value(&e, b"before"), Some(b"1".to_vec()));
    assert_eq!(get_value(&e, b"during"), None);
    drop(e);
    let e = open(&fs, small_opts(), &c).unwrap();
    assert_eq!(get_value(&e, b"before"), Some(b"1".to_vec()));
    e.put(b"after", b"3", None).unwrap();
}
