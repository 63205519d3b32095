//! Behaviour of the public API on a healthy engine: reads, writes, batches,
//! scans, snapshots, TTL, compaction filter, stats, limits and lifecycle.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringkv_storage::{CompactionFilter, Error, FilterDecision, Options, SyncMode, WriteBatch};

#[test]
fn handles_are_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<ringkv_storage::Engine>();
    send_sync::<ringkv_storage::Snapshot>();
    send::<ringkv_storage::ScanIter>();
    send_sync::<ringkv_storage::Error>();
}

#[test]
fn put_get_delete_round_trip_through_memtable_tables_and_reopen() {
    let fs = fault_fs(1);
    let c = clock(1_000);
    let e = open(&fs, small_opts(), &c).unwrap();
    assert_eq!(get_value(&e, b"missing"), None);
    for i in 0..2_000 {
        e.put(&key(i), &value(i, 0), None).unwrap();
    }
    for i in (0..2_000).step_by(3) {
        e.delete(&key(i)).unwrap();
    }
    let check = |e: &ringkv_storage::Engine| {
        for i in 0..2_000 {
            let want = (i % 3 != 0).then(|| value(i, 0));
            assert_eq!(get_value(e, &key(i)), want, "key {i}");
        }
    };
    check(&e);
    e.flush().unwrap();
    let s = e.stats();
    assert!(s.flushes > 0 && s.table_bytes > 0, "{s:?}");
    check(&e);
    e.compact().unwrap();
    check(&e);
    e.close().unwrap();
    assert!(matches!(e.get(b"x"), Err(Error::Closed)));
    assert!(matches!(e.put(b"x", b"y", None), Err(Error::Closed)));
    assert!(matches!(e.close(), Err(Error::Closed)));
    let e = open(&fs, small_opts(), &c).unwrap();
    check(&e);
}

#[test]
fn overwrites_in_different_levels_resolve_to_the_newest() {
    let fs = fault_fs(2);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    for round in 0..4 {
        for i in 0..500 {
            e.put(&key(i), &value(i, round), None).unwrap();
        }
        e.flush().unwrap();
        if round == 1 {
            e.compact().unwrap();
        }
    }
    for i in 0..500 {
        assert_eq!(get_value(&e, &key(i)), Some(value(i, 3)));
    }
    let all = scan_all(&e);
    assert_eq!(all.len(), 500);
    assert!(
        all.iter()
            .all(|(k, v)| v == &value(std::str::from_utf8(&k[3..]).unwrap().parse().unwrap(), 3))
    );
}

#[test]
fn batches_are_atomic_and_mixed() {
    let fs = fault_fs(3);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    e.put(b"a", b"old", None).unwrap();
    let mut b = WriteBatch::new();
    b.put(b"a", b"new", None)
        .delete(b"b")
        .put(b"c", b"3", Some(50))
        .put(b"a", b"newest", None);
    assert_eq!(b.len(), 4);
    e.write(b).unwrap();
    assert_eq!(get_value(&e, b"a"), Some(b"newest".to_vec()));
    assert_eq!(e.get(b"c").unwrap().unwrap().expires_at_ms, Some(50));
    e.write(WriteBatch::new()).unwrap();
}

#[test]
fn scans_respect_bounds_tombstones_and_every_layer() {
    let fs = fault_fs(4);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..3_000u64 {
        let k = key(i * 7 % 3_000);
        let v = value(i, 1);
        e.put(&k, &v, None).unwrap();
        model.insert(k, v);
        if i % 997 == 0 {
            e.flush().unwrap();
        }
        if i % 11 == 0 {
            let d = key(i * 13 % 3_000);
            e.delete(&d).unwrap();
            model.remove(&d);
        }
    }
    let got = scan_all(&e);
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(got, want);
    // Bounded ranges, both APIs.
    let (lo, hi) = (key(100), key(200));
    let got: Vec<Vec<u8>> = e
        .scan(lo.clone()..hi.clone())
        .unwrap()
        .map(|r| r.unwrap().0.to_vec())
        .collect();
    let want: Vec<Vec<u8>> = model
        .range(lo.clone()..hi.clone())
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(got, want);
    let got: Vec<Vec<u8>> = e
        .scan_bounds(Bound::Excluded(&lo), Bound::Included(&hi))
        .unwrap()
        .map(|r| r.unwrap().0.to_vec())
        .collect();
    let want: Vec<Vec<u8>> = model
        .range::<Vec<u8>, _>((Bound::Excluded(&lo), Bound::Included(&hi)))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(got, want);
    assert_eq!(e.scan(key(5_000)..).unwrap().count(), 0);
}

#[test]
fn snapshots_see_a_fixed_point_in_time_across_flush_and_compaction() {
    let fs = fault_fs(5);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    for i in 0..1_000 {
        e.put(&key(i), &value(i, 0), None).unwrap();
    }
    let snap = e.snapshot();
    for i in 0..1_000 {
        if i % 2 == 0 {
            e.delete(&key(i)).unwrap();
        } else {
            e.put(&key(i), &value(i, 1), None).unwrap();
        }
    }
    e.put(b"zzz-new", b"v", None).unwrap();
    e.flush().unwrap();
    e.compact().unwrap();
    for i in 0..1_000 {
        assert_eq!(
            snap.get(&key(i)).unwrap().map(|x| x.value.to_vec()),
            Some(value(i, 0))
        );
    }
    assert_eq!(snap.get(b"zzz-new").unwrap(), None);
    let scanned: Vec<_> = snap.scan(..).map(|r| r.unwrap()).collect();
    assert_eq!(scanned.len(), 1_000);
    assert!(scanned.iter().all(|(k, v)| {
        let i: u64 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
        v.value.as_ref() == value(i, 0).as_slice()
    }));
    // The live engine sees the new state.
    assert_eq!(scan_all(&e).len(), 501);
}

#[test]
fn ttl_expiry_follows_the_clock_and_compaction_purges_expired_entries() {
    let fs = fault_fs(6);
    let c = clock(10_000);
    let e = open(&fs, small_opts(), &c).unwrap();
    e.put(b"old", b"v0", None).unwrap();
    e.flush().unwrap();
    e.compact().unwrap();
    // An expiring overwrite above an older version.
    e.put(b"old", b"v1", Some(10_500)).unwrap();
    e.put(b"keep", b"k", Some(20_000)).unwrap();
    e.put(b"forever", b"f", None).unwrap();
    assert_eq!(get_value(&e, b"old"), Some(b"v1".to_vec()));
    c.advance(Duration::from_millis(499));
    assert_eq!(get_value(&e, b"old"), Some(b"v1".to_vec()));
    c.advance(Duration::from_millis(1));
    // Expired: absent, and the older version must not resurface.
    assert_eq!(get_value(&e, b"old"), None);
    assert_eq!(
        scan_all(&e)
            .iter()
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>(),
        vec![b"forever".to_vec(), b"keep".to_vec()]
    );
    e.flush().unwrap();
    assert_eq!(get_value(&e, b"old"), None);
    e.compact().unwrap();
    assert_eq!(get_value(&e, b"old"), None);
    assert!(e.stats().expired_dropped >= 1);
    c.advance(Duration::from_secs(60));
    assert_eq!(get_value(&e, b"keep"), None);
    assert_eq!(get_value(&e, b"forever"), Some(b"f".to_vec()));
}

struct DropPrefix(&'static [u8]);

impl CompactionFilter for DropPrefix {
    fn decide(&self, key: &[u8], _value: &[u8], _expires: Option<u64>) -> FilterDecision {
        if key.starts_with(self.0) {
            FilterDecision::Remove
        } else {
            FilterDecision::Keep
        }
    }
}

#[test]
fn compaction_filter_removals_never_resurrect_older_versions() {
    let fs = fault_fs(7);
    let c = clock(0);
    let opts = Options {
        l0_compaction_trigger_files: 100, // only manual compaction
        l0_slowdown_files: 100,
        l0_stop_files: 100,
        ..small_opts()
    };
    let e = open(&fs, opts, &c).unwrap();
    // Old versions, pushed to the bottom.
    for i in 0..300 {
        e.put(format!("t{i:04}").as_bytes(), b"old-live-value", None)
            .unwrap();
    }
    e.flush().unwrap();
    e.compact().unwrap();
    // Newer "cluster tombstones" (values the filter removes) in L0.
    for i in 0..300 {
        e.put(format!("t{i:04}").as_bytes(), b"tomb", None).unwrap();
    }
    e.flush().unwrap();
    e.set_compaction_filter(Arc::new(DropPrefix(b"t")));
    // Compacting L0 into a level above the older data must leave engine
    // tombstones, never the old value.
    e.compact().unwrap();
    for i in 0..300 {
        let v = get_value(&e, format!("t{i:04}").as_bytes());
        assert!(v.is_none(), "t{i:04} resurfaced as {v:?}");
    }
    let s = e.stats();
    assert!(s.filter_removed >= 300, "{s:?}");
    assert_eq!(scan_all(&e).len(), 0);
    assert!(s.live_keys_estimate <= 300, "{s:?}");
}

/// Rewrites values that start with `long:` to what follows.
struct Shorten;

impl CompactionFilter for Shorten {
    fn decide(&self, _key: &[u8], value: &[u8], _expires: Option<u64>) -> FilterDecision {
        match value.strip_prefix(b"long:") {
            Some(rest) => FilterDecision::Replace(bytes::Bytes::copy_from_slice(rest)),
            None => FilterDecision::Keep,
        }
    }
}

#[test]
fn a_compaction_filter_may_rewrite_values_in_place() {
    let fs = fault_fs(8);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    for i in 0..200 {
        e.put(
            format!("r{i:04}").as_bytes(),
            format!("long:v{i}").as_bytes(),
            None,
        )
        .unwrap();
    }
    e.put(b"ttl", b"long:t", Some(5_000)).unwrap();
    e.flush().unwrap();
    e.set_compaction_filter(Arc::new(Shorten));
    e.compact().unwrap();
    for i in 0..200 {
        assert_eq!(
            get_value(&e, format!("r{i:04}").as_bytes()),
            Some(format!("v{i}").into_bytes())
        );
    }
    // The expiry stays with the rewritten value.
    assert_eq!(
        e.get(b"ttl").unwrap().map(|x| x.expires_at_ms),
        Some(Some(5_000))
    );
    assert!(e.stats().filter_replaced >= 201, "{:?}", e.stats());
    // A newer write is never overwritten by a rewrite of an older one.
    e.put(b"r0000", b"long:newer", None).unwrap();
    e.flush().unwrap();
    e.compact().unwrap();
    assert_eq!(get_value(&e, b"r0000"), Some(b"newer".to_vec()));
}

#[test]
fn tombstones_are_dropped_at_the_bottom_and_space_is_reclaimed() {
    let fs = fault_fs(8);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    for i in 0..3_000 {
        e.put(&key(i), &value(i, 0), None).unwrap();
    }
    e.compact().unwrap();
    let full = e.stats().table_bytes;
    for i in 0..3_000 {
        e.delete(&key(i)).unwrap();
    }
    e.compact().unwrap();
    let s = e.stats();
    assert!(s.table_bytes < full / 10, "{} vs {full}", s.table_bytes);
    assert!(s.tombstones_dropped >= 3_000, "{s:?}");
    assert_eq!(scan_all(&e).len(), 0);
}

#[test]
fn approximate_size_and_stats_are_plausible() {
    let fs = fault_fs(9);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    for i in 0..5_000 {
        // Incompressible values, so sizes follow the data.
        let v: Vec<u8> = (0..100u64)
            .map(|j| ((i * 100 + j).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        e.put(&key(i), &v, None).unwrap();
    }
    e.compact().unwrap();
    let all = e.approximate_size(b"", b"\xff");
    let half = e.approximate_size(&key(0), &key(2_500));
    assert!(all > 100_000, "{all}");
    assert!(half > all / 3 && half < all * 2 / 3, "{half} of {all}");
    assert_eq!(e.approximate_size(b"z", b"a"), 0);
    for i in 0..5_000 {
        assert!(e.get(&key(i)).unwrap().is_some());
    }
    let s = e.stats();
    assert!(s.block_cache_hits + s.block_cache_misses >= 5_000);
    assert!(s.block_reads > 0 && s.block_reads <= s.block_cache_misses);
    assert!(s.write_amplification > 1.0, "{s:?}");
    assert!(s.space_amplification >= 1.0, "{s:?}");
    assert!(s.live_keys_estimate >= 5_000);
    assert_eq!(s.files_per_level.len(), 7);
    assert!(s.files_per_level[1..].iter().sum::<usize>() > 0);
    assert!(s.table_memory_bytes > 0);
    assert!(s.disk_bytes >= s.table_bytes);
}

#[test]
fn invalid_input_is_rejected_with_clear_errors() {
    let fs = fault_fs(10);
    let c = clock(0);
    let opts = Options {
        key_bytes_max: 16,
        value_bytes_max: 32,
        ..small_opts()
    };
    let e = open(&fs, opts, &c).unwrap();
    assert!(matches!(
        e.put(&[b'k'; 17], b"v", None),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        e.put(b"k", &[b'v'; 33], None),
        Err(Error::InvalidArgument(_))
    ));
    e.put(&[b'k'; 16], &[b'v'; 32], None).unwrap();
    let bad = Options {
        l0_stop_files: 1,
        ..Options::default()
    };
    assert!(matches!(
        open(&fault_fs(11), bad, &c),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_second_engine_cannot_open_a_locked_directory() {
    let fs = fault_fs(12);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    assert!(open(&fs, small_opts(), &c).is_err());
    drop(e);
    open(&fs, small_opts(), &c).unwrap();
}

#[test]
fn concurrent_writers_share_group_commits_and_all_land() {
    let fs = fault_fs(13);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..400 {
                    e.put(&key(t * 10_000 + i), &value(i, t), None).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..8 {
        for i in 0..400 {
            assert_eq!(get_value(&e, &key(t * 10_000 + i)), Some(value(i, t)));
        }
    }
    let s = e.stats();
    assert!(s.write_groups <= 3_200);
    assert!(s.log_syncs <= s.write_groups + 1);
}

#[test]
fn real_file_system_round_trip_with_periodic_sync_and_zstd() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        sync: SyncMode::Periodic { interval_ms: 5 },
        compression: ringkv_storage::Compression::Zstd,
        ..small_opts()
    };
    let e = open_real(tmp.path(), opts.clone());
    for i in 0..3_000 {
        e.put(&key(i), &value(i, 0), None).unwrap();
    }
    e.sync().unwrap();
    e.compact().unwrap();
    drop(e);
    let e = open_real(tmp.path(), opts);
    for i in 0..3_000 {
        assert_eq!(get_value(&e, &key(i)), Some(value(i, 0)));
    }
    // Logs of flushed memtables are gone; only the live segment remains.
    let logs = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|d| {
            d.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert_eq!(logs, 1);
}

#[test]
fn write_stalls_are_bounded_and_counted() {
    let fs = fault_fs(14);
    let c = clock(0);
    // A tiny memtable and one immutable slot: writers must wait for flushes.
    let opts = Options {
        memtable_bytes_max: 4 << 10,
        immutable_memtables_max: 1,
        ..small_opts()
    };
    let e = open(&fs, opts, &c).unwrap();
    for i in 0..5_000 {
        e.put(&key(i), &value(i, 0), None).unwrap();
    }
    let s = e.stats();
    assert!(s.flushes > 10, "{s:?}");
    assert!(s.immutable_memtables <= 1);
    for i in 0..5_000 {
        assert_eq!(get_value(&e, &key(i)), Some(value(i, 0)));
    }
}

#[test]
fn a_write_that_cannot_get_room_fails_within_the_stall_bound() {
    let fs = fault_fs(15);
    let c = clock(0);
    // Compaction throttled to a trickle, so L0 reaches its stop limit.
    let opts = Options {
        memtable_bytes_max: 2 << 10,
        l0_compaction_trigger_files: 1,
        l0_slowdown_files: 2,
        l0_stop_files: 3,
        compaction_write_bytes_per_sec_max: 1,
        write_stall_ms_max: 200,
        ..small_opts()
    };
    let e = open(&fs, opts, &c).unwrap();
    let started = std::time::Instant::now();
    let mut stalled = None;
    for i in 0..5_000 {
        match e.put(&key(i), &value(i, 0), None) {
            Ok(()) => {}
            Err(Error::WriteStall { waited_ms }) => {
                stalled = Some((i, waited_ms));
                break;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    let (i, waited_ms) = stalled.expect("writes never stalled");
    assert!((200..2_000).contains(&waited_ms), "waited {waited_ms} ms");
    assert!(started.elapsed() < Duration::from_secs(10));
    let s = e.stats();
    assert!(
        s.write_stalls >= 1 && s.write_stall_total_us >= 200_000,
        "{s:?}"
    );
    // Reads still work and every acknowledged write is there.
    for j in 0..i {
        assert_eq!(get_value(&e, &key(j)), Some(value(j, 0)), "key {j}");
    }
    let t = std::time::Instant::now();
    e.close().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "close waited for the throttled compaction"
    );
}
