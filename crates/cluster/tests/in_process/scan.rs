//! Scans of the whole keyspace: pages, levels, merges across replicas.

use std::collections::BTreeMap;

use super::*;
use ringkv_cluster::api::ScanPage;
use ringkv_cluster::store::LocalStore;

/// Every key of a whole scan from `node`, with how many times each came.
async fn scan_all(
    node: &Node<MemStore>,
    count: usize,
    level: Consistency,
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let mut cursor = 0;
    for _ in 0..10_000 {
        let ScanPage { keys, next } = node.scan(cursor, count, at(level)).await.expect("scan");
        assert!(keys.len() <= count, "{} keys for COUNT {count}", keys.len());
        for k in keys {
            *seen
                .entry(String::from_utf8_lossy(&k.key).into_owned())
                .or_default() += 1;
        }
        if next == 0 {
            return seen;
        }
        assert!(next > cursor, "the cursor moves forward");
        cursor = next;
    }
    panic!("the scan never ended");
}

#[tokio::test(start_paused = true)]
async fn a_scan_returns_every_live_key_once_page_by_page() {
    let c = cluster(5, 3);
    for i in 0..300 {
        c.nodes[i % 5]
            .put(b(&format!("k{i}")), b("v"), w(Consistency::Quorum))
            .await
            .expect("write");
    }
    for i in 0..20 {
        c.nodes[i % 5]
            .delete(b(&format!("k{i}")), w(Consistency::Quorum))
            .await
            .expect("delete");
    }
    // An expired key is not live either.
    let expiring = WriteOptions {
        expiry: ringkv_cluster::Expiry::At(c.now_ms() + 1_000),
        ..w(Consistency::Quorum)
    };
    c.nodes[0]
        .put(b("short-lived"), b("v"), expiring)
        .await
        .expect("write with TTL");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let want: Vec<String> = (20..300).map(|i| format!("k{i}")).collect();
    for (count, level) in [
        (17, Consistency::Quorum),
        (1, Consistency::One),
        (1000, Consistency::All),
    ] {
        let seen = scan_all(&c.nodes[count % 5], count, level).await;
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(dups.is_empty(), "returned twice: {dups:?}");
        let mut got: Vec<String> = seen.into_keys().filter(|k| k != "short-lived").collect();
        got.sort();
        let mut want = want.clone();
        want.sort();
        assert_eq!(got, want, "COUNT {count} at {level:?}");
    }
    c.pass(1_100).await;
    let seen = scan_all(&c.nodes[1], 50, Consistency::Quorum).await;
    assert!(!seen.contains_key("short-lived"), "expired");
}

#[tokio::test(start_paused = true)]
async fn a_scan_merges_replicas_so_a_stale_one_does_not_bring_a_deleted_key_back() {
    let c = cluster(3, 3);
    c.nodes[0]
        .put(b("gone"), b("v"), w(Consistency::All))
        .await
        .expect("write");
    let stale = c.nodes[2].store().get(b"gone").expect("get").expect("held");
    c.nodes[0]
        .delete(b("gone"), w(Consistency::All))
        .await
        .expect("delete");
    // Node 2 rolls back to the live record (as a replica that missed the
    // delete would hold it).
    c.nodes[2].store().put(b"gone", &stale).expect("plant");
    let one = scan_all(&c.nodes[2], 10, Consistency::One).await;
    assert!(one.contains_key("gone"), "ONE reads node 2's own copy");
    let all = scan_all(&c.nodes[2], 10, Consistency::All).await;
    assert!(!all.contains_key("gone"), "ALL merges the tombstone in");
}

#[tokio::test(start_paused = true)]
async fn a_scan_goes_on_with_a_replica_down_at_quorum_and_fails_at_all() {
    let mut c = cluster(3, 3);
    for i in 0..40 {
        c.nodes[0]
            .put(b(&format!("k{i}")), b("v"), w(Consistency::All))
            .await
            .expect("write");
    }
    let victim = c.nodes[2].id();
    c.kill(victim);
    c.pass(3_000).await;
    let seen = scan_all(&c.nodes[0], 7, Consistency::Quorum).await;
    assert_eq!(seen.len(), 40);
    let err = c.nodes[0]
        .scan(0, 10, at(Consistency::All))
        .await
        .expect_err("ALL with a replica down");
    assert!(matches!(err, KvError::Unavailable { .. }), "{err:?}");
    // DBSIZE: the down node counts with its last census.
    let keys = c.nodes[0].cluster_keys().await.expect("count");
    assert_eq!((keys.replicas, keys.nodes), (3, 3));
    assert!(!keys.exact);
}
