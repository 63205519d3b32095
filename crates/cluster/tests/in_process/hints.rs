//! Sloppy quorum: stand-ins, hints, their replay and their limits.

use super::*;

/// Kills the second and third replicas of `key`, lets the others notice,
/// and writes `v1` through the first at W=2 (sloppy): a stand-in takes a
/// hint for the second. Returns the replicas and that victim.
async fn hinted_write(c: &mut TestCluster, key: &str) -> (Vec<u64>, u64) {
    let replicas = c.replicas(key.as_bytes());
    let (coord, victim) = (replicas[0], replicas[1]);
    c.kill(victim);
    c.kill(replicas[2]);
    c.pass(3_000).await;
    c.node(coord)
        .put(b(key), b("v1"), w(Consistency::Count(2)))
        .await
        .expect("sloppy W=2 with two replicas down");
    (replicas, victim)
}

#[tokio::test(start_paused = true)]
async fn sloppy_quorum_hints_a_down_replica_and_replays_when_it_returns() {
    let mut c = cluster(5, 3);
    let key = "hinted";
    // Two of three replicas down: W=2 still succeeds, a stand-in holds a
    // hint for one of them and stands in for it.
    let (_, victim) = hinted_write(&mut c, key).await;
    let held = hints_held_for(&c, victim);
    assert_eq!(held, 1, "one hint held for the victim");
    assert_eq!(own_value(&c, victim, key), None);
    // The victim returns; replay delivers and deletes the hint.
    c.net.register(victim, c.node(victim).handler());
    c.down.retain(|&d| d != victim);
    c.pass(500).await;
    let mut delivered = 0;
    for n in &c.nodes {
        delivered += n.hints().replay_once().await;
    }
    assert_eq!(delivered, 1);
    assert_eq!(own_value(&c, victim, key), Some(b("v1")), "hint replayed");
    let left: usize = c
        .nodes
        .iter()
        .map(|n| {
            pending_hints(n)
                .iter()
                .filter(|(t, _, _)| *t == victim)
                .count()
        })
        .sum();
    assert_eq!(left, 0, "delivered hints are deleted");
}

#[tokio::test(start_paused = true)]
async fn strict_quorum_does_not_count_hints() {
    let mut c = cluster_with(5, 3, true);
    let key = "strict";
    let replicas = c.replicas(key.as_bytes());
    c.kill(replicas[1]);
    c.kill(replicas[2]);
    c.pass(3_000).await;
    let err = c
        .node(replicas[0])
        .put(b(key), b("v"), w(Consistency::Count(2)))
        .await
        .expect_err("strict W=2 with two replicas down");
    match err {
        KvError::Unavailable {
            required, answered, ..
        } => assert_eq!((required, answered), (2, 1)),
        other => panic!("wrong error {other:?}"),
    }
    // W=1 still works, and the missed replicas get hints anyway.
    c.node(replicas[0])
        .put(b(key), b("v"), w(Consistency::One))
        .await
        .expect("W=1");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let held: u64 = c
        .nodes
        .iter()
        .flat_map(pending_hints)
        .map(|(_, n, _)| n)
        .sum();
    assert!(held >= 2, "hints kept for both down replicas: {held}");
}

#[tokio::test(start_paused = true)]
async fn replicas_that_fail_before_detection_get_stand_ins() {
    let c = cluster(5, 3);
    let key = "undetected";
    let replicas = c.replicas(key.as_bytes());
    let coord = replicas[0];
    // Both other replicas become unreachable, but nobody has noticed yet:
    // the failure detector still holds them alive.
    c.net.partition(&[coord], &[replicas[1], replicas[2]]);
    assert!(c.node(coord).membership().is_alive(replicas[1]));
    c.node(coord)
        .put(b(key), b("v"), w(Consistency::Count(2)))
        .await
        .expect("W=2 met by a stand-in after the replicas time out");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held: u64 = c
        .nodes
        .iter()
        .filter(|n| !replicas.contains(&n.id()))
        .flat_map(pending_hints)
        .map(|(_, count, _)| count)
        .sum();
    assert!(held >= 1, "a stand-in holds a hint: {held}");
}

#[tokio::test(start_paused = true)]
async fn no_hints_for_a_node_silent_longer_than_hints_live() {
    let hints = HintConfig {
        age_ms_max: 2_000,
        ..HintConfig::default()
    };
    let mut c = cluster_full(5, 3, false, hints);
    let key = "window";
    let replicas = c.replicas(key.as_bytes());
    c.kill(replicas[2]);
    c.pass(1_000).await;
    c.node(replicas[0])
        .put(b(key), b("v1"), w(Consistency::Quorum))
        .await
        .expect("write");
    let held = |c: &TestCluster| -> u64 {
        c.nodes
            .iter()
            .flat_map(pending_hints)
            .filter(|(t, _, _)| *t == replicas[2])
            .map(|(_, n, _)| n)
            .sum()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(held(&c), 1, "within the window: a hint");
    c.pass(3_000).await;
    c.node(replicas[0])
        .put(b(key), b("v2"), w(Consistency::Quorum))
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(held(&c), 1, "past the window: no new hint");
}

/// Hints held for a node that has since left the ring go to the key's
/// current replicas and are deleted: they never wait for a node that will
/// not come back (which would also keep the cluster from ever converging).
#[tokio::test(start_paused = true)]
async fn hints_for_a_node_that_left_go_to_the_current_replicas() {
    use ringkv_cluster::net::message::NodeStatus;
    let mut c = cluster(5, 3);
    let key = "hinted";
    let (replicas, victim) = hinted_write(&mut c, key).await;
    let holder = c
        .nodes
        .iter()
        .find(|n| pending_hints(n).iter().any(|(t, _, _)| *t == victim))
        .map(Node::id)
        .expect("a stand-in holds a hint for the victim");
    // The victim is removed from the ring for good; the other replica is
    // back.
    c.net.register(replicas[2], c.node(replicas[2]).handler());
    c.down.retain(|&d| d != replicas[2]);
    for n in &c.nodes {
        n.membership()
            .update_other(victim, |s| s.status = NodeStatus::Left);
    }
    c.pass(500).await;
    let now_replicas = c.replicas(key.as_bytes());
    assert!(!now_replicas.contains(&victim));
    assert_eq!(c.node(holder).hints().replay_once().await, 1);
    assert!(
        pending_hints(c.node(holder)).is_empty(),
        "the hint is handed over and deleted"
    );
    for r in now_replicas {
        assert_eq!(own_value(&c, r, key), Some(b("v1")), "replica {r:x}");
    }
}

/// Sloppy quorum on the minority side of a partition: a node that reaches
/// no replica of a key coordinates the write itself as a stand-in, leaving
/// hints for the replicas here and on another stand-in; they count towards
/// W, and once the replicas are back the hints bring them the write.
#[tokio::test(start_paused = true)]
async fn a_node_cut_off_from_every_replica_coordinates_as_a_stand_in() {
    let mut c = cluster(5, 3);
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| !c.replicas(k.as_bytes()).contains(&c.nodes[0].id()))
        .expect("a key node 0 does not replicate");
    let replicas = c.replicas(key.as_bytes());
    c.nodes[0]
        .put(b(&key), b("before"), w(Consistency::All))
        .await
        .expect("write before the partition");
    for &r in &replicas {
        c.kill(r);
    }
    c.pass(3_000).await;
    let a = c.nodes[0].clone();
    a.put(b(&key), b("minority"), w(Consistency::Quorum))
        .await
        .expect("stand-ins take the write");
    // A second write through the same stand-in gets a dot of its own (and
    // supersedes the first, as one coordinator's writes do).
    a.put(b(&key), b("minority2"), w(Consistency::Quorum))
        .await
        .expect("again");
    let held: u64 = c
        .nodes
        .iter()
        .flat_map(pending_hints)
        .map(|(_, count, _)| count)
        .sum();
    assert_eq!(held, 6, "a hint per replica and write");
    // Strict quorum refuses the same write: hints do not count.
    let strict = {
        let s = cluster_with(5, 3, true);
        let key2 = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| !s.replicas(k.as_bytes()).contains(&s.nodes[0].id()))
            .expect("key");
        let mut s = s;
        for r in s.replicas(key2.as_bytes()) {
            s.kill(r);
        }
        s.pass(3_000).await;
        s.nodes[0]
            .put(b(&key2), b("x"), w(Consistency::Quorum))
            .await
    };
    assert!(
        matches!(strict, Err(KvError::Unavailable { .. })),
        "{strict:?}"
    );
    // The replicas return; replaying the hints brings them both writes.
    for &r in &replicas {
        c.net.register(r, c.node(r).handler());
    }
    c.down.clear();
    c.pass(3_000).await;
    for n in &c.nodes {
        n.hints().replay_once().await;
    }
    for &r in &replicas {
        let set = c.node(r).debug_local_record(key.as_bytes());
        let mut values: Vec<Bytes> = set
            .siblings
            .iter()
            .filter_map(|s| s.value.clone())
            .collect();
        values.sort();
        // The stand-in saw nothing of the key: its write is a sibling of
        // what the replicas held, never a silent overwrite.
        assert_eq!(
            values,
            vec![b("before"), b("minority2")],
            "replica {r:x}: {values:?}"
        );
    }
    assert_eq!(
        read_one(&c.nodes[1], &key, Consistency::All).await,
        Some(b("minority2")),
        "last writer wins among the siblings"
    );
}

/// A peer's writes are held to a client's limits, and hints name members:
/// what a client could not store, a peer cannot either.
#[tokio::test(start_paused = true)]
async fn peer_writes_are_held_to_client_limits_and_hints_to_members() {
    use ringkv_cluster::net::message::{ErrorDetail, Request, Response};
    let c = cluster(3, 3);
    c.pass(2_000).await;
    let (me, peer) = (c.nodes[0].id(), c.nodes[1].id());
    c.node(me)
        .put(b("k"), b("v"), w(Consistency::One))
        .await
        .expect("put");
    let record = match c
        .node(me)
        .handler()
        .handle(peer, Request::Read { key: b("k") })
        .await
    {
        Response::Record(Some(r)) => r,
        other => panic!("{other:?}"),
    };
    let handler = c.node(me).handler();
    let refused = |r: &Response| {
        matches!(
            r,
            Response::Error {
                detail: Some(ErrorDetail::InvalidArgument(_)),
                ..
            }
        )
    };
    let long_key = Bytes::from(vec![b'k'; 2_000]);
    for req in [
        Request::Merge {
            key: long_key.clone(),
            record: record.clone(),
        },
        Request::Hint {
            target: peer,
            key: long_key.clone(),
            record: record.clone(),
        },
        Request::StreamPush {
            entries: vec![(long_key.clone(), record.clone())],
            crc: ringkv_cluster::net::message::stream_crc(&[(long_key.clone(), record.clone())]),
        },
        Request::Hint {
            target: 0xdead_beef,
            key: b("k"),
            record: record.clone(),
        },
    ] {
        let answer = handler.handle(peer, req.clone()).await;
        assert!(refused(&answer), "{req:?} → {answer:?}");
    }
    // A member's hint of a well-formed record is taken.
    let answer = handler
        .handle(
            peer,
            Request::Hint {
                target: c.nodes[2].id(),
                key: b("k"),
                record,
            },
        )
        .await;
    assert_eq!(answer, Response::Merged);
}

/// A node that has left the cluster is refused everything but gossip,
/// whose answer tells it it has left.
#[tokio::test(start_paused = true)]
async fn a_departed_node_is_refused_all_but_the_gossip_that_tells_it() {
    use ringkv_cluster::net::message::{NodeStatus, Request, Response};
    let c = cluster(3, 3);
    c.pass(2_000).await;
    let (me, gone) = (c.nodes[0].id(), c.nodes[1].id());
    let handler = c.node(me).handler();
    let read = Request::Read { key: b("k") };
    assert!(matches!(
        handler.handle(gone, read.clone()).await,
        Response::Record(_)
    ));
    c.node(me)
        .membership()
        .update_other(gone, |s| s.status = NodeStatus::Left);
    let answer = handler.handle(gone, read).await;
    assert!(
        matches!(&answer, Response::Error { message, .. } if message.contains("has left")),
        "{answer:?}"
    );
    let Response::Gossip { states } = handler
        .handle(gone, Request::Gossip { states: Vec::new() })
        .await
    else {
        panic!("gossip refused");
    };
    assert!(
        states
            .iter()
            .any(|s| s.id == gone && s.status == NodeStatus::Left)
    );
}
