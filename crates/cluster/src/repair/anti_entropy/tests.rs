use super::*;
use crate::api::{Consistency, Kv, ReadOptions, WriteOptions};
use crate::causality::SiblingSet;
use crate::causality::VersionVector;
use crate::net::message::{NodeState, Request, Response};
use crate::node::{Node, NodeConfig};
use crate::repair::merkle::DEPTH_MAX;
use crate::testing::{TestCluster, test_config};
use ringkv_env::{Clock, ManualClock};

const GRACE_MS: u64 = 1_000;

#[test]
fn a_pass_resumes_after_the_range_the_last_one_finished() {
    let r = |s: u64, e: u64| (TokenRange::new(s, e), ());
    let ring = vec![r(90, 10), r(10, 40), r(40, 70), r(70, 90)];
    let ends = |after| {
        let mut v = ring.clone();
        resume_order(&mut v, after);
        v.iter().map(|(x, _)| x.end).collect::<Vec<_>>()
    };
    assert_eq!(ends(None), vec![10, 40, 70, 90]);
    assert_eq!(ends(Some(40)), vec![70, 90, 10, 40]);
    // A token between ranges (the ring changed): the next range after it.
    assert_eq!(ends(Some(50)), vec![70, 90, 10, 40]);
    // Past the last range: from the first again.
    assert_eq!(ends(Some(95)), vec![10, 40, 70, 90]);
}

/// Settings of these tests: a short grace period, replicas that answer in
/// real time, and on-demand passes unthrottled.
fn ae_config(rf: usize) -> NodeConfig {
    NodeConfig {
        request_timeout_ms: 2_000,
        tombstone_grace_ms: GRACE_MS,
        anti_entropy: AntiEntropyConfig {
            repair_ranges_per_sec_max: 0,
            ..AntiEntropyConfig::default()
        },
        ..test_config(rf)
    }
}

fn cluster(n: usize, rf: usize) -> TestCluster {
    TestCluster::with_config(n, ae_config(rf))
}

fn cluster_of<S: LocalStore>(
    n: usize,
    rf: usize,
    make: Box<dyn Fn(NodeId) -> S>,
) -> TestCluster<S> {
    let c = TestCluster::with_stores(n, ae_config(rf), make);
    c.introduce();
    c
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn w(level: Consistency) -> WriteOptions {
    WriteOptions {
        consistency: Some(level),
        ..WriteOptions::default()
    }
}

/// Stores a record written by `actor` on one node only.
async fn seed<S: LocalStore>(node: &Node<S>, key: &[u8], value: &[u8], actor: u64, hlc: u64) {
    let mut set = SiblingSet::default();
    set.update(
        &VersionVector::new(),
        actor,
        hlc,
        Some(Bytes::copy_from_slice(value)),
        None,
    );
    node.replica()
        .merge_now(Bytes::copy_from_slice(key), set.into())
        .await
        .expect("merge");
}

fn data_bytes(dump: &[(Vec<u8>, Bytes)]) -> u64 {
    dump.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
}

/// Seeds `keys` identical keys on both nodes, then `differ` keys that
/// differ (a third only on the first node, a third only on the second,
/// a third concurrent on both); syncs once from the first node and
/// checks that both hold the same records. Returns (bytes moved, bytes
/// of data).
async fn diverge_and_sync<S: LocalStore>(
    c: TestCluster<S>,
    keys: usize,
    differ: usize,
) -> (u64, u64) {
    let (a, bn) = (&c.nodes[0], &c.nodes[1]);
    let hlc = c.clock.now_ms() << 16;
    for i in 0..keys {
        let k = format!("key{i:06}");
        let v = format!("value-{i}-{}", "x".repeat(40));
        seed(a, k.as_bytes(), v.as_bytes(), 1, hlc).await;
        seed(bn, k.as_bytes(), v.as_bytes(), 1, hlc).await;
    }
    let mut differing_bytes = 0u64;
    for i in 0..differ {
        let k = format!("diff{i:04}");
        let v = format!("changed-{i}-{}", "y".repeat(40));
        match i % 3 {
            0 => seed(a, k.as_bytes(), v.as_bytes(), a.id(), hlc + 1).await,
            1 => seed(bn, k.as_bytes(), v.as_bytes(), bn.id(), hlc + 1).await,
            _ => {
                seed(a, k.as_bytes(), v.as_bytes(), a.id(), hlc + 1).await;
                seed(bn, k.as_bytes(), b"other", bn.id(), hlc + 2).await;
            }
        }
        differing_bytes += (k.len() + v.len()) as u64;
    }
    assert_ne!(c.dump(0), c.dump(1));
    let before = a.anti_entropy().status();
    let status = a
        .anti_entropy()
        .repair_once()
        .await
        .expect("no pass running");
    assert_eq!(status.sync_failures, 0);
    assert_eq!(status.ranges_done, status.ranges_total);
    assert_eq!(status.ranges_in_sync, status.ranges_replicated);
    let moved =
        status.bytes_sent + status.bytes_received - before.bytes_sent - before.bytes_received;
    let dump = c.dump(0);
    assert_eq!(dump, c.dump(1), "one pass makes both replicas equal");
    assert_eq!(dump.len(), keys + differ);
    assert_eq!(status.keys_repaired, differ as u64);
    // Concurrent writes became siblings, on both sides.
    if differ >= 3 {
        let both = a.debug_local_record(b"diff0002");
        assert_eq!(both.siblings.len(), 2);
    }
    // A second pass finds every root equal.
    let again = a.anti_entropy().repair_once().await.expect("pass");
    assert_eq!(again.keys_repaired, status.keys_repaired);
    println!(
        "anti-entropy: {keys} keys, {differ} differing ({differing_bytes} bytes of keys and values): \
         {moved} bytes moved for {} bytes of data",
        data_bytes(&dump)
    );
    (moved, data_bytes(&dump))
}

#[tokio::test]
async fn replicas_differing_in_a_few_keys_converge_after_one_sync() {
    let (moved, data) = diverge_and_sync(cluster(2, 2), 1_000, 6).await;
    // 32 ranges at about 100 bytes for in-sync roots, plus a few hundred
    // bytes of tree nodes, digests and records per differing key.
    assert!(moved < 32 * 150 + 6 * 1_500, "moved {moved} bytes");
    assert!(moved * 10 < data, "moved {moved} of {data}");
}

#[tokio::test]
async fn twenty_differing_keys_in_twenty_thousand_move_little() {
    let (moved, data) = diverge_and_sync(cluster(2, 2), 20_000, 20).await;
    assert!(
        moved * 50 < data,
        "moved {moved} bytes for {data} bytes of data"
    );
}

/// The figure: two replicas over the LSM engine differing in 100
/// of 1,000,000 keys. Slow (it writes 2,000,000 records, about 25 s):
/// run with `cargo test -p ringkv-cluster --lib million -- --ignored
/// --nocapture`. Measured: 78,756 bytes moved for 93.9 MB of data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn a_hundred_differing_keys_in_a_million_over_the_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let clock: SharedClock = Arc::new(ManualClock::new(1_700_000_000_000));
    let c = cluster_of(
        2,
        2,
        Box::new(move |id| {
            let engine = ringkv_storage::Engine::open(
                &root.join(id.to_string()),
                ringkv_storage::Options::default(),
            )
            .expect("open");
            crate::store::EngineStore::new(engine, clock.clone(), GRACE_MS, false)
        }),
    );
    let started = std::time::Instant::now();
    let (moved, data) = diverge_and_sync(c, 1_000_000, 100).await;
    println!("million-key sync took {:?} in all", started.elapsed());
    assert!(moved * 100 < data, "moved {moved} of {data}");
}

#[tokio::test]
async fn a_wiped_replica_is_restored_by_the_background_loop() {
    let mut c = cluster(3, 3);
    for i in 0..600 {
        c.nodes[i % 3]
            .put(
                b(&format!("k{i}")),
                b(&format!("v{i}")),
                w(Consistency::All),
            )
            .await
            .expect("write at ALL");
    }
    c.nodes[1]
        .delete(b("k7"), w(Consistency::All))
        .await
        .expect("delete");
    let full = c.dump(0);
    assert_eq!(full.len(), 600);
    // Node 2 loses its disk and comes back empty.
    let state = c.states[2].clone();
    c.nodes[2] = c.start(NodeState {
        generation: 2,
        ..state
    });
    c.nodes[2].membership().merge(c.states.clone());
    assert!(c.dump(2).is_empty());
    let wiped = c.nodes[2].clone();
    wiped.anti_entropy().set_config(AntiEntropyConfig {
        ranges_per_sec_max: 1_000,
        pass_pause_ms: 10,
        ..AntiEntropyConfig::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Arc::clone(wiped.anti_entropy()).run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while wiped.anti_entropy().status().passes_completed < 1 {
        assert!(tokio::time::Instant::now() < deadline, "no pass completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    task.await.expect("loop ends");
    assert_eq!(c.dump(2), full, "every record restored, tombstone included");
    let status = wiped.anti_entropy().status();
    assert_eq!(status.keys_repaired, 600);
    assert_eq!(status.ranges_in_sync, status.ranges_replicated);
    assert!(status.bytes_received >= data_bytes(&full));
    println!(
        "wiped replica restored: {} keys, {} bytes received, {} sent, {} bytes of data",
        status.keys_repaired,
        status.bytes_received,
        status.bytes_sent,
        data_bytes(&full)
    );
}

#[tokio::test]
async fn a_delete_missed_while_down_past_the_grace_period_stays_deleted() {
    let mut c = cluster(3, 3);
    c.nodes[0]
        .put(b("gone"), b("old"), w(Consistency::All))
        .await
        .expect("write");
    c.kill(c.nodes[2].id());
    c.pass(3_000).await;
    c.nodes[0]
        .delete(b("gone"), w(Consistency::Quorum))
        .await
        .expect("delete at QUORUM with one down");
    // Well past the grace period; the live replicas sync with each
    // other, but not with the one that is down.
    c.pass(GRACE_MS * 3).await;
    for i in 0..2 {
        c.nodes[i].anti_entropy().repair_once().await.expect("pass");
        assert!(
            !c.nodes[i].anti_entropy().purge_allowed(b"gone"),
            "a replica has not synced past the delete"
        );
    }
    assert!(
        c.nodes[2]
            .debug_local_record(b"gone")
            .live(c.clock.now_ms())
            .count()
            == 1,
        "the returning replica still holds the old value"
    );
    c.revive(c.nodes[2].id());
    c.pass(1_000).await;
    let back = &c.nodes[2];
    back.anti_entropy().repair_once().await.expect("pass");
    assert!(back.debug_local_record(b"gone").is_dead(c.clock.now_ms()));
    for n in &c.nodes {
        let r = n
            .get(
                b("gone"),
                ReadOptions {
                    consistency: Some(Consistency::One),
                },
            )
            .await
            .expect("read");
        assert!(r.is_empty(), "still deleted on {}", n.id());
    }
    // Now every replica has synced past the delete: the node that
    // synced with both others may purge it.
    assert!(back.anti_entropy().purge_allowed(b"gone"));
}

#[tokio::test]
async fn dead_records_are_purgeable_only_after_every_replica_synced_past_them() {
    let c = cluster(3, 3);
    let a = &c.nodes[0];
    a.put(b("k"), b("v"), w(Consistency::All))
        .await
        .expect("write");
    // A sync before the delete does not count.
    for n in &c.nodes {
        n.anti_entropy().repair_once().await.expect("pass");
    }
    c.pass(200).await;
    a.delete(b("k"), w(Consistency::All)).await.expect("delete");
    c.pass(GRACE_MS * 2).await;
    for n in &c.nodes {
        assert!(n.debug_local_record(b"k").is_dead(c.clock.now_ms()));
        assert!(
            !n.anti_entropy().purge_allowed(b"k"),
            "synced before the delete only"
        );
    }
    // Node 0 syncs with both others: its copy may go; the others have
    // not synced with everyone yet.
    a.anti_entropy().repair_once().await.expect("pass");
    assert!(a.anti_entropy().purge_allowed(b"k"));
    assert!(!c.nodes[1].anti_entropy().purge_allowed(b"k"));
    c.nodes[1].anti_entropy().repair_once().await.expect("pass");
    assert!(c.nodes[1].anti_entropy().purge_allowed(b"k"));
    // A purgeable record is neither compared nor copied back.
    let range = a
        .anti_entropy()
        .replicated_ranges()
        .into_iter()
        .find(|(r, _)| r.contains(token_of(b"k")))
        .map(|(r, _)| r)
        .expect("range");
    let summary = a.anti_entropy().scan_summary(range).await.expect("scan");
    let mut keys = 0;
    for (s, e, inc) in range.scans() {
        a.store()
            .scan_tokens(s, e, inc, &mut |_, _| {
                keys += 1;
                true
            })
            .expect("scan");
    }
    assert_eq!(summary.keys() + 1, keys);
}

#[test]
fn the_engine_filter_purges_only_after_every_replica_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let engine =
        ringkv_storage::Engine::open(dir.path(), ringkv_storage::Options::default()).expect("open");
    let store = crate::store::EngineStore::new(engine, clock.clone(), GRACE_MS, false);
    let mut set = SiblingSet::default();
    let deleted_ms = clock.now_ms();
    set.update(&VersionVector::new(), 1, deleted_ms << 16, None, None);
    store.put(b"dead", &set.encode()).expect("put");
    let mut live = SiblingSet::default();
    live.update(
        &VersionVector::new(),
        1,
        deleted_ms << 16,
        Some(Bytes::from_static(b"v")),
        None,
    );
    store.put(b"live", &live.encode()).expect("put");
    clock.advance(Duration::from_millis(GRACE_MS * 2));
    let compact = || {
        store.engine().flush().expect("flush");
        store.engine().compact().expect("compact");
    };
    // No ledger yet: nothing is purged.
    compact();
    assert!(store.get(b"dead").expect("get").is_some());
    // Synced, but before the delete.
    store.set_synced_at(Arc::new(move |_| Some(deleted_ms - 1)));
    compact();
    assert!(store.get(b"dead").expect("get").is_some());
    // Synced with everyone after the delete.
    store.set_synced_at(Arc::new(move |_| Some(deleted_ms + 1)));
    compact();
    assert!(store.get(b"dead").expect("get").is_none());
    assert!(store.get(b"live").expect("get").is_some());
}

#[tokio::test]
async fn malformed_requests_are_refused() {
    let c = cluster(3, 1);
    let a = &c.nodes[0];
    let (mine, _) = a.anti_entropy().replicated_ranges()[0];
    let (start, end) = (mine.start, mine.end);
    let others = ranges_replicated_by(&a.membership().current_ring(), c.nodes[1].id());
    let (theirs, _) = others[0];
    let tree = |start, end| Request::MerkleNodes {
        start,
        end,
        depth: 1,
        level: 0,
        indexes: Vec::new(),
    };
    let bad = [
        // Not a range of this node's ring, or not one it replicates.
        tree(start, end.wrapping_add(1)),
        tree(start.wrapping_sub(1), end),
        tree(theirs.start, theirs.end),
        Request::MerkleNodes {
            start,
            end,
            depth: DEPTH_MAX + 1,
            level: 0,
            indexes: Vec::new(),
        },
        Request::MerkleNodes {
            start,
            end,
            depth: 1,
            level: 1,
            indexes: vec![0],
        },
        Request::MerkleNodes {
            start,
            end,
            depth: 2,
            level: 1,
            indexes: vec![16],
        },
        Request::MerkleNodes {
            start,
            end,
            depth: 2,
            level: 0,
            indexes: vec![0; NODE_INDEXES_MAX + 1],
        },
        Request::RangeDigests {
            ranges: vec![(0, 1); DIGEST_RANGES_MAX + 1],
        },
    ];
    for req in bad {
        let err = a.anti_entropy().answer(req.clone()).await;
        assert!(
            matches!(err, Err(KvError::InvalidArgument(_))),
            "{req:?}: {err:?}"
        );
    }
    // Its own range is answered.
    assert!(a.anti_entropy().answer(tree(start, end)).await.is_ok());
}

#[tokio::test]
async fn digest_pages_follow_each_other() {
    let c = cluster(1, 1);
    let a = &c.nodes[0];
    let hlc = c.clock.now_ms() << 16;
    for i in 0..(DIGESTS_MAX * 2 + 10) {
        seed(a, format!("p{i}").as_bytes(), b"v", 1, hlc).await;
    }
    let whole = TokenRange::new(5, 5);
    let first = a
        .anti_entropy()
        .answer(Request::RangeDigests {
            ranges: vec![(whole.start, whole.end), (1, 2)],
        })
        .await
        .expect("digests");
    let Response::RangeDigests { ranges } = first else {
        panic!("expected digests");
    };
    assert_eq!(ranges.len(), 1, "the budget ends the answer");
    assert!(!ranges[0].complete);
    assert_eq!(ranges[0].digests.len(), DIGESTS_MAX);
    // The initiator's side of paging, against a real peer.
    let c2 = cluster(2, 2);
    let (x, y) = (&c2.nodes[0], &c2.nodes[1]);
    for i in 0..(DIGESTS_MAX * 2 + 10) {
        seed(y, format!("p{i}").as_bytes(), b"v", 1, hlc).await;
    }
    let peer = x.membership().peer(y.id()).expect("peer");
    let mut report = SyncReport {
        range: whole,
        peer: y.id(),
        depth: 1,
        keys_local: 0,
        keys_peer: 0,
        in_sync: false,
        leaves_differing: 0,
        keys_differing: 0,
        keys_repaired: 0,
        bytes_sent: 0,
        bytes_received: 0,
    };
    let all = x
        .anti_entropy()
        .peer_digests(&peer, &[whole], &mut report)
        .await
        .expect("pages");
    assert_eq!(all.len(), DIGESTS_MAX * 2 + 10);
}

/// A replica that cannot be reached fails its ranges' syncs: each is
/// counted in the status, left out of the ranges in sync, and tried again
/// by the next pass, which succeeds once the replica is back.
#[tokio::test]
async fn syncs_with_an_unreachable_replica_fail_counted_and_are_retried() {
    let mut c = cluster(2, 2);
    c.introduce();
    let (a_id, b_id) = (c.nodes[0].id(), c.nodes[1].id());
    let hlc = c.clock.now_ms() << 16;
    seed(c.node(a_id), b"only-on-a", b"v", a_id, hlc).await;
    c.kill(b_id);
    let failed = c
        .node(a_id)
        .anti_entropy()
        .repair_once()
        .await
        .expect("no pass running");
    assert_eq!(failed.ranges_done, failed.ranges_total);
    assert!(
        failed.sync_failures >= failed.ranges_total as u64,
        "every range failed: {failed:?}"
    );
    assert!(
        failed.ranges_in_sync < failed.ranges_replicated,
        "{failed:?}"
    );

    c.revive(b_id);
    let healed = c
        .node(a_id)
        .anti_entropy()
        .repair_once()
        .await
        .expect("no pass running");
    assert_eq!(healed.sync_failures, failed.sync_failures, "no new failure");
    assert_eq!(healed.ranges_in_sync, healed.ranges_replicated);
    assert_eq!(c.dump(0), c.dump(1), "the retry repaired the replica");
}
