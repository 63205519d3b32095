//! Imports in batches: each replica gets its records together; a replica
//! that fails its batch gets hints; a record with a replica down goes
//! through stand-ins; the import stops at the first record refused or
//! short of its level, and every record before it is in.

use super::*;
use ringkv_cluster::ImportStopped;

/// Records of `n` keys `k0..`, written on a three-node cluster of its own
/// and exported from it.
async fn exported(n: usize) -> Vec<(Bytes, Bytes)> {
    let source = cluster(3, 3);
    for i in 0..n {
        source.nodes[i % 3]
            .put(
                b(&format!("k{i}")),
                b(&format!("v{i}")),
                w(Consistency::All),
            )
            .await
            .expect("write");
    }
    let (records, next) = source.nodes[0]
        .export_page(0, n + 1, at(Consistency::All))
        .await
        .expect("export");
    assert_eq!((records.len(), next), (n, 0));
    records
}

fn key_of(record: &(Bytes, Bytes)) -> String {
    String::from_utf8_lossy(&record.0).into_owned()
}

/// Checks that the cluster holds one hint for `target` per record it is a
/// replica of (some), and returns their number.
fn one_hint_per_record_of(c: &TestCluster, records: &[(Bytes, Bytes)], target: u64) -> u64 {
    let of_target = records
        .iter()
        .filter(|r| c.replicas(&r.0).contains(&target))
        .count() as u64;
    assert!(of_target > 0, "some records for {target}");
    assert_eq!(
        hints_held_for(c, target),
        of_target,
        "a hint per record of {target}"
    );
    of_target
}

#[tokio::test(start_paused = true)]
async fn a_batch_reaches_every_replica_of_every_key() {
    let records = exported(40).await;
    let c = cluster(5, 3);
    c.nodes[1]
        .import_records(records.clone(), w(Consistency::All))
        .await
        .expect("import");
    for record in &records {
        let key = key_of(record);
        let want = format!("v{}", &key[1..]);
        for id in c.replicas(key.as_bytes()) {
            assert_eq!(own_value(&c, id, &key), Some(b(&want)), "{key} on {id}");
        }
    }
    // Nothing for the nodes that are no replica, and no hints.
    let stored: usize = (0..5).map(|i| c.dump(i).len()).sum();
    assert_eq!(stored, 40 * 3);
    assert_eq!(c.nodes.iter().flat_map(pending_hints).count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_refused_record_stops_the_batch_after_the_ones_before_it() {
    let mut records = exported(10).await;
    let c = cluster(3, 3);
    let too_long = Bytes::from(vec![b'x'; test_config(3).key_bytes_max + 1]);
    records[4].0 = too_long;
    let stopped = c.nodes[0]
        .import_records(records.clone(), w(Consistency::All))
        .await
        .expect_err("a key too long");
    assert_eq!(stopped.merged, 4);
    assert!(
        matches!(stopped.error, KvError::KeyTooLarge { .. }),
        "{stopped:?}"
    );
    for (i, record) in records.iter().enumerate() {
        if i == 4 {
            continue;
        }
        let key = key_of(record);
        let got = read_one(&c.nodes[2], &key, Consistency::All).await;
        assert_eq!(got.is_some(), i < 4, "{key}");
    }
    // A record that does not decode stops it the same way.
    let mut records = exported(6).await;
    records[2].1 = b("not a record");
    let stopped = c.nodes[1]
        .import_records(records, w(Consistency::All))
        .await
        .expect_err("a corrupt record");
    assert!(
        matches!(
            &stopped,
            ImportStopped {
                merged: 2,
                error: KvError::InvalidArgument(_)
            }
        ),
        "{stopped:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_fails_its_batch_gets_hints() {
    let records = exported(30).await;
    let c = cluster(5, 3);
    let (coord, cut) = (c.nodes[0].id(), c.nodes[1].id());
    // Unreachable from the coordinator, still alive to its detector.
    c.net.partition(&[coord], &[cut]);
    let first_on_cut = records
        .iter()
        .position(|r| c.replicas(&r.0).contains(&cut))
        .expect("some key on the cut node");
    let stopped = c
        .node(coord)
        .import_records(records.clone(), w(Consistency::All))
        .await
        .expect_err("ALL misses the cut replica");
    assert_eq!(stopped.merged, first_on_cut, "{stopped:?}");
    assert!(
        matches!(stopped.error, KvError::Unavailable { .. }),
        "{stopped:?}"
    );
    // The cut node's records of the failed batch wait as hints.
    let on_cut = one_hint_per_record_of(&c, &records, cut);
    // At QUORUM the batch is in, and hints are held again.
    c.node(coord)
        .import_records(records.clone(), w(Consistency::Quorum))
        .await
        .expect("import at quorum");
    assert_eq!(hints_held_for(&c, cut), 2 * on_cut);
    c.net.heal();
    let delivered = c.node(coord).hints().replay_once().await;
    assert_eq!(delivered, 2 * on_cut);
    for record in &records {
        let key = key_of(record);
        for id in c.replicas(key.as_bytes()) {
            assert!(own_value(&c, id, &key).is_some(), "{key} on {id}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn records_with_a_replica_down_go_through_stand_ins() {
    let records = exported(30).await;
    let mut c = cluster(5, 3);
    let down = c.nodes[4].id();
    c.kill(down);
    c.pass(3_000).await;
    assert!(!c.nodes[0].membership().is_alive(down));
    c.nodes[0]
        .import_records(records.clone(), w(Consistency::Quorum))
        .await
        .expect("import with a replica down");
    one_hint_per_record_of(&c, &records, down);
    for record in &records {
        let key = key_of(record);
        assert!(
            read_one(&c.nodes[0], &key, Consistency::Quorum)
                .await
                .is_some(),
            "{key}"
        );
    }
}
