//! Truncation of the whole cluster: every node must be up; nothing written
//! before the point comes back through a replica that missed it, a merge
//! (hints, read repair, streams), anti-entropy or a read; an import after
//! it brings its keys back.

use super::*;
use ringkv_cluster::causality::SiblingSet;
use ringkv_cluster::net::message::{Request, Response};

/// Waits (in simulated time) until `check` holds, for at most 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

async fn write_keys(c: &TestCluster, n: usize, level: Consistency) {
    for i in 0..n {
        c.nodes[i % c.nodes.len()]
            .put(b(&format!("k{i}")), b("old"), w(level))
            .await
            .expect("write");
    }
}

/// Nodes 0 and 1 record a truncation point, node 2 misses it. Returns the
/// point and node 2's record of `k1`, as it would send it.
async fn truncate_all_but_the_third(c: &TestCluster) -> (u64, Bytes) {
    let old_record = Bytes::from(c.nodes[2].debug_local_record(b"k1").encode());
    let point = c.nodes[0].replica().clock_now();
    for node in &c.nodes[..2] {
        node.truncate_locally(point).await.expect("truncate");
    }
    (point, old_record)
}

/// `node` merges `record` of `key` as sent by `from`, and says it did.
async fn merge_from(node: &Node<MemStore>, from: u64, key: &str, record: Bytes) {
    let answer = node
        .handler()
        .handle(
            from,
            Request::Merge {
                key: b(key),
                record,
            },
        )
        .await;
    assert!(matches!(answer, Response::Merged), "{answer:?}");
}

#[tokio::test(start_paused = true)]
async fn a_truncation_empties_every_node_and_later_writes_stay() {
    let c = cluster(3, 3);
    write_keys(&c, 60, Consistency::All).await;
    // Each node counts, and gossips its count with its next publication
    // (every PUBLISH_ROUNDS rounds of 100 ms).
    for node in &c.nodes {
        node.cluster_keys().await.expect("count");
    }
    c.pass(2_000).await;
    assert_eq!(c.nodes[0].cluster_keys().await.expect("count").keys, 60);
    let epochs: Vec<u64> = c.nodes.iter().map(|n| n.replica().epoch()).collect();
    let done = c.nodes[1].truncate().await.expect("truncate");
    // Every node started two epochs, durably: at the prepare and at the
    // point (a counter's entries never span the truncation).
    for (node, before) in c.nodes.iter().zip(&epochs) {
        assert_eq!(node.replica().epoch(), before + 2);
        assert_eq!(node.files().epoch().expect("file"), before + 2);
    }
    // DBSIZE falls at once on every node, before any gossip.
    for node in &c.nodes {
        assert_eq!(node.cluster_keys().await.expect("count").keys, 0);
    }
    assert_eq!(done.nodes.len(), 3);
    for node in &c.nodes {
        assert_eq!(
            node.replica().truncated_at(),
            done.at,
            "recorded everywhere"
        );
        assert_eq!(
            node.files().truncated_at().expect("file"),
            done.at,
            "durably"
        );
    }
    for i in 0..60 {
        let key = format!("k{i}");
        assert_eq!(
            read_one(&c.nodes[i % 3], &key, Consistency::All).await,
            None
        );
    }
    let page = c.nodes[0]
        .scan(0, 1_000, at(Consistency::One))
        .await
        .expect("scan");
    assert!(
        page.keys.is_empty(),
        "a scan finds nothing: {:?}",
        page.keys
    );
    // The space goes: every store ends empty.
    for i in 0..3 {
        eventually("the stores are purged", || c.dump(i).is_empty()).await;
    }
    // Writes after the point are kept, whichever node coordinates them.
    for i in 0..3 {
        c.nodes[i]
            .put(b(&format!("new{i}")), b("v"), w(Consistency::All))
            .await
            .expect("write after");
    }
    for i in 0..3 {
        let key = format!("new{i}");
        assert_eq!(
            read_one(&c.nodes[(i + 1) % 3], &key, Consistency::All).await,
            Some(b("v"))
        );
    }
    // A second truncation with the same data gone is harmless.
    let again = c.nodes[2].truncate().await.expect("again");
    assert!(again.at > done.at);
    assert_eq!(read_one(&c.nodes[0], "new0", Consistency::All).await, None);
}

#[tokio::test(start_paused = true)]
async fn a_truncation_needs_every_node_up_and_names_the_one_down() {
    let mut c = cluster(3, 3);
    write_keys(&c, 20, Consistency::All).await;
    let down = c.nodes[2].id();
    c.kill(down);
    c.pass(20_000).await;
    let err = c.nodes[0].truncate().await.expect_err("a node is down");
    let text = err.to_string();
    assert!(
        matches!(err, KvError::Unavailable { .. })
            && text.contains(&ringkv_cluster::id::display(down))
            && text.contains("nothing was truncated"),
        "{text}"
    );
    for node in &c.nodes[..2] {
        assert_eq!(node.replica().truncated_at(), 0, "nothing recorded");
    }
    assert_eq!(
        read_one(&c.nodes[0], "k3", Consistency::Quorum).await,
        Some(b("old"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_missed_the_truncation_brings_nothing_back() {
    let c = cluster(3, 3);
    write_keys(&c, 40, Consistency::All).await;
    let (a, b_, stale) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let (point, old_record) = truncate_all_but_the_third(&c).await;
    assert_eq!(stale.replica().truncated_at(), 0);
    // A read through a node that knows the point hides the stale answer.
    for i in 0..40 {
        let key = format!("k{i}");
        assert_eq!(read_one(a, &key, Consistency::All).await, None, "{key}");
    }
    // Its record merged into a (a hint replayed, a read repair, a stream
    // or anti-entropy push all merge so) changes nothing visible.
    // (Sent as from b, which knows the point: a record from the stale node
    // itself would have the point sent back to it at once, see below.)
    merge_from(a, b_.id(), "k1", old_record.clone()).await;
    assert!(a.debug_local_record(b"k1").siblings.is_empty());
    // Anti-entropy run by the stale node brings nothing back either.
    stale.anti_entropy().repair_once().await;
    for i in 0..40 {
        let key = format!("k{i}");
        assert_eq!(own_value(&c, a.id(), &key), None, "{key} on a");
        assert_eq!(own_value(&c, b_.id(), &key), None, "{key} on b");
    }
    // The stale node learns the point from the others' spreading.
    for _ in 0..50 {
        a.spread_truncation().await;
        b_.spread_truncation().await;
        if stale.replica().truncated_at() == point {
            break;
        }
    }
    assert_eq!(
        stale.replica().truncated_at(),
        point,
        "learned by spreading"
    );
    assert_eq!(stale.files().truncated_at().expect("file"), point);
    assert_eq!(read_one(stale, "k1", Consistency::One).await, None);
    eventually("the stale node purges", || c.dump(2).is_empty()).await;
    // A write coordinated by it afterwards is above the point.
    stale
        .put(b("k1"), b("new"), w(Consistency::All))
        .await
        .expect("write");
    assert_eq!(read_one(a, "k1", Consistency::All).await, Some(b("new")));
}

#[tokio::test(start_paused = true)]
async fn an_import_after_a_truncation_brings_its_keys_back() {
    let c = cluster(3, 3);
    write_keys(&c, 10, Consistency::All).await;
    // Two siblings under k0 (concurrent writes without a context).
    let ctx = c.nodes[0]
        .get(b("k0"), at(Consistency::All))
        .await
        .expect("read")
        .context;
    for (node, v) in [(0, "x"), (1, "y")] {
        let opts = WriteOptions {
            context: Some(ctx.clone()),
            ..w(Consistency::All)
        };
        c.nodes[node]
            .put(b("k0"), b(v), opts)
            .await
            .expect("sibling");
    }
    let (records, next) = c.nodes[2]
        .export_page(0, 100, at(Consistency::All))
        .await
        .expect("export");
    assert_eq!((records.len(), next), (10, 0));
    c.nodes[0].truncate().await.expect("truncate");
    assert_eq!(read_one(&c.nodes[1], "k5", Consistency::All).await, None);
    c.nodes[1]
        .import_records(records.clone(), w(Consistency::All))
        .await
        .expect("import");
    // Imported twice, one record at a time: the replicas agree all the same.
    for record in records {
        c.nodes[2]
            .import_records(vec![record], w(Consistency::All))
            .await
            .expect("import again");
    }
    assert_eq!(
        read_one(&c.nodes[2], "k5", Consistency::All).await,
        Some(b("old"))
    );
    let k0 = c.nodes[0]
        .get(b("k0"), at(Consistency::All))
        .await
        .expect("read");
    let mut values: Vec<Bytes> = k0.siblings.iter().map(|s| s.value.clone()).collect();
    values.sort();
    assert_eq!(values, vec![b("x"), b("y")], "both siblings came back");
    let records: Vec<_> = c
        .nodes
        .iter()
        .map(|n| n.debug_local_record(b"k0"))
        .collect();
    assert!(
        records.windows(2).all(|w| w[0] == w[1]),
        "replicas hold the same record"
    );
}

#[tokio::test(start_paused = true)]
async fn hints_held_when_a_partition_heals_bring_nothing_back() {
    let c = cluster(5, 3);
    let key = "hinted";
    let replicas = c.replicas(key.as_bytes());
    let (coord, victim) = (replicas[0], replicas[1]);
    let others: Vec<u64> = c
        .nodes
        .iter()
        .map(|n| n.id())
        .filter(|&id| id != victim)
        .collect();
    // The victim is cut off long enough to be seen down; writes to it are
    // hinted, and the old value stays on the replicas that answered.
    c.net.partition(&[victim], &others);
    c.pass(3_000).await;
    for v in ["old1", "old2"] {
        c.node(coord)
            .put(b(key), b(v), w(Consistency::Quorum))
            .await
            .expect("write with one replica cut off");
    }
    let held = hints_held_for(&c, victim);
    assert!(held >= 1, "hints held for the victim");
    // The partition heals; before any hint is replayed, the cluster is
    // truncated.
    c.net.heal();
    c.pass(3_000).await;
    let done = c.nodes[0].truncate().await.expect("every node up again");
    let old_stored = |i: usize| {
        c.dump(i).into_iter().any(|(_, bytes)| {
            let set = SiblingSet::decode(&bytes).expect("decodes");
            set.siblings.iter().any(|s| s.hlc <= done.at)
        })
    };
    for i in 0..c.nodes.len() {
        eventually("the old versions are purged", || !old_stored(i)).await;
    }
    // The hints are replayed: nothing comes back anywhere.
    let mut delivered = 0;
    for n in &c.nodes {
        delivered += n.hints().replay_once().await;
    }
    assert!(delivered >= 1, "the held hints were replayed");
    // Nothing older than the point was stored by the replay (the raw
    // stores, not reads that hide it).
    for i in 0..c.nodes.len() {
        assert!(!old_stored(i), "node {i} stored an old version");
    }
    for n in &c.nodes {
        assert_eq!(own_value(&c, n.id(), key), None, "on {}", n.id());
    }
    for n in &c.nodes {
        assert_eq!(read_one(n, key, Consistency::All).await, None);
    }
    for n in &c.nodes {
        n.anti_entropy().repair_once().await;
    }
    for n in &c.nodes {
        assert_eq!(own_value(&c, n.id(), key), None, "after anti-entropy");
    }
    for i in 0..c.nodes.len() {
        assert!(!old_stored(i), "node {i} stored an old version");
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_that_sends_old_records_is_told_the_point_at_once() {
    let c = cluster(3, 3);
    write_keys(&c, 10, Consistency::All).await;
    let (a, stale) = (&c.nodes[0], &c.nodes[2]);
    let (point, old_record) = truncate_all_but_the_third(&c).await;
    // The stale node sends an old record (a write stamped before the
    // point, a hint, a repair): a answers, and sends it the point.
    merge_from(a, stale.id(), "k1", old_record).await;
    eventually("the sender learns the point", || {
        stale.replica().truncated_at() == point
    })
    .await;
    assert_eq!(stale.files().truncated_at().expect("file"), point);
}

#[tokio::test(start_paused = true)]
async fn a_node_that_streams_old_records_is_told_the_point_at_once() {
    let c = cluster(3, 3);
    write_keys(&c, 10, Consistency::All).await;
    let (a, stale) = (&c.nodes[0], &c.nodes[2]);
    let (point, old_record) = truncate_all_but_the_third(&c).await;
    // The stale node streams (or imports through) an old record: a takes
    // the batch, and sends it the point.
    let entries = vec![(b("k1"), old_record)];
    let crc = ringkv_cluster::net::message::stream_crc(&entries);
    let answer = a
        .handler()
        .handle(stale.id(), Request::StreamPush { entries, crc })
        .await;
    assert!(matches!(answer, Response::Merged), "{answer:?}");
    eventually("the sender learns the point", || {
        stale.replica().truncated_at() == point
    })
    .await;
}
