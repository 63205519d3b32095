//! Quorum reads and writes, failures, siblings and read repair.

use super::*;

#[tokio::test(start_paused = true)]
async fn quorum_write_is_read_from_any_node() {
    let c = cluster(3, 3);
    for i in 0..50 {
        let key = format!("k{i}");
        let coord = &c.nodes[i % 3];
        coord
            .put(b(&key), b(&format!("v{i}")), w(Consistency::Count(2)))
            .await
            .expect("write at W=2");
        let reader = &c.nodes[(i + 1) % 3];
        assert_eq!(
            read_one(reader, &key, Consistency::Count(2)).await,
            Some(b(&format!("v{i}")))
        );
    }
    // Every replica holds every key eventually (background replication).
    tokio::time::sleep(Duration::from_millis(10)).await;
    for n in &c.nodes {
        assert_eq!(read_one(n, "k7", Consistency::All).await, Some(b("v7")));
    }
}

#[tokio::test(start_paused = true)]
async fn one_node_down_quorum_works_all_fails() {
    let mut c = cluster(3, 3);
    c.nodes[0]
        .put(b("before"), b("1"), w(Consistency::All))
        .await
        .expect("write at ALL");
    let victim = c.nodes[2].id();
    c.kill(victim);
    c.pass(3_000).await;
    let alive = &c.nodes[0];
    assert!(!alive.membership().is_alive(victim), "down on evidence");
    alive
        .put(b("k"), b("v"), w(Consistency::Quorum))
        .await
        .expect("QUORUM write with one down");
    assert_eq!(
        read_one(&c.nodes[1], "k", Consistency::Quorum).await,
        Some(b("v"))
    );
    assert_eq!(
        read_one(&c.nodes[1], "before", Consistency::One).await,
        Some(b("1"))
    );
    let err = alive
        .put(b("k"), b("v2"), w(Consistency::All))
        .await
        .expect_err("ALL must fail");
    // Sent and applied on the two live replicas: the error says so.
    match &err {
        KvError::Incomplete {
            required,
            acked,
            hinted,
            missing,
            ..
        } => {
            assert_eq!((*required, acked.len(), hinted.len()), (3, 2, 0));
            assert_eq!(&**missing, &[victim], "the down replica");
            assert!(!acked.contains(&victim));
        }
        other => panic!("wrong error {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.starts_with("outcome unknown: 3 acknowledgements required, 2 received; applied on ")
            && text.contains(&format!(
                "; missing on {}",
                ringkv_cluster::id::display(victim)
            ))
            && text.contains("the write is not undone: it reaches the others through hints"),
        "{text}"
    );
    assert_eq!(
        read_one(&c.nodes[1], "k", Consistency::Quorum).await,
        Some(b("v2")),
        "the incomplete write is visible, as the error warned"
    );
    let err = alive
        .get(b("k"), at(Consistency::All))
        .await
        .expect_err("ALL read must fail");
    assert!(
        err.to_string().starts_with("3 required, 2 answered"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_comes_back_up_on_its_own() {
    let mut c = cluster(3, 3);
    let victim = c.nodes[1].id();
    c.kill(victim);
    c.pass(3_000).await;
    assert!(!c.nodes[0].membership().is_alive(victim));
    // It returns: re-registered, and gossips again.
    c.net.register(victim, c.node(victim).handler());
    c.down.clear();
    c.pass(500).await;
    assert!(
        c.nodes[0].membership().is_alive(victim),
        "up again on evidence"
    );
    c.nodes[0]
        .put(b("x"), b("y"), w(Consistency::All))
        .await
        .expect("ALL works again");
}

#[tokio::test(start_paused = true)]
async fn concurrent_writes_become_siblings_and_context_resolves() {
    let c = cluster(3, 3);
    let key = "cart";
    c.nodes[0]
        .put(b(key), b("base"), w(Consistency::All))
        .await
        .expect("base");
    let seen = c.nodes[0]
        .get(b(key), at(Consistency::All))
        .await
        .expect("read");
    // Two clients write with the same context through different
    // coordinators.
    for (i, v) in ["apple", "pear"].iter().enumerate() {
        let opts = WriteOptions {
            context: Some(seen.context.clone()),
            consistency: Some(Consistency::All),
            ..WriteOptions::default()
        };
        c.nodes[i + 1].put(b(key), b(v), opts).await.expect("write");
    }
    let both = c.nodes[0]
        .get(b(key), at(Consistency::All))
        .await
        .expect("read");
    let mut values: Vec<_> = both.siblings.iter().map(|s| s.value.clone()).collect();
    values.sort();
    assert_eq!(values, vec![b("apple"), b("pear")], "both kept as siblings");
    let opts = WriteOptions {
        context: Some(both.context.clone()),
        consistency: Some(Consistency::All),
        ..WriteOptions::default()
    };
    c.nodes[2]
        .put(b(key), b("apple+pear"), opts)
        .await
        .expect("resolve");
    for n in &c.nodes {
        let r = n.get(b(key), at(Consistency::All)).await.expect("read");
        assert_eq!(r.siblings.len(), 1);
        assert_eq!(r.siblings[0].value, b("apple+pear"));
    }
}

#[tokio::test(start_paused = true)]
async fn read_repair_fixes_a_replica_that_missed_writes() {
    let mut c = cluster(3, 3);
    let key = "repair-me";
    let replicas = c.replicas(key.as_bytes());
    let victim = replicas[2];
    c.kill(victim);
    c.pass(3_000).await;
    c.node(replicas[0])
        .put(b(key), b("fresh"), w(Consistency::Quorum))
        .await
        .expect("write while down");
    // The victim returns with a stale (empty) copy.
    c.net.register(victim, c.node(victim).handler());
    c.down.clear();
    c.pass(500).await;
    let before = ringkv_cluster::replica::resolved(
        &c.node(victim).debug_local_record(key.as_bytes()),
        c.now_ms(),
    );
    assert_eq!(before, None, "the victim missed the write");
    // A read at ALL sees the difference and repairs in the background.
    let coord = c.node(replicas[0]);
    assert_eq!(
        read_one(coord, key, Consistency::All).await,
        Some(b("fresh"))
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Ask the victim's own copy directly: it now holds the write.
    let own = ringkv_cluster::replica::resolved(
        &c.node(victim).debug_local_record(key.as_bytes()),
        c.now_ms(),
    );
    assert_eq!(own.map(|s| s.value), Some(b("fresh")), "replica repaired");
}

/// A record with data types held by one replica travels to the others by
/// read repair (a string read of a counter is its value).
#[tokio::test(start_paused = true)]
async fn a_record_with_data_types_travels_by_read_repair() {
    use ringkv_cluster::causality::types::{EntryId, Record};
    let c = cluster(3, 3);
    let key = "counted";
    let replicas = c.replicas(key.as_bytes());
    let mut record = Record::default();
    let hlc = c.now_ms() << 16;
    (record.counter.state)
        .increment(EntryId { actor: 7, epoch: 1 }, 5, hlc, 100)
        .expect("in range");
    record.counter.hlc = hlc;
    c.node(replicas[0])
        .replica()
        .merge(key.as_bytes(), &record)
        .expect("merge");
    let coord = c.node(replicas[1]);
    assert_eq!(read_one(coord, key, Consistency::All).await, Some(b("5")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    for &id in &replicas {
        let held = c
            .node(id)
            .replica()
            .read_record(key.as_bytes())
            .expect("read");
        assert_eq!(
            held.counter.state.value(),
            5,
            "replica {id:x} holds the counter"
        );
    }
}
