//! Forwarded writes, applied once; dots never reused.

use super::*;

#[tokio::test(start_paused = true)]
async fn writes_through_a_non_replica_are_forwarded() {
    let c = cluster(4, 2);
    // Find a key whose preference list leaves out node 0.
    let outsider = c.nodes[0].id();
    let key = (0..1000)
        .map(|i| format!("key{i}"))
        .find(|k| !c.replicas(k.as_bytes()).contains(&outsider))
        .expect("some key avoids node 0");
    c.nodes[0]
        .put(b(&key), b("via-forward"), w(Consistency::Quorum))
        .await
        .expect("forwarded write");
    for id in c.replicas(key.as_bytes()) {
        let own = ringkv_cluster::replica::resolved(
            &c.node(id).debug_local_record(key.as_bytes()),
            c.now_ms(),
        );
        assert_eq!(own.map(|s| s.value), Some(b("via-forward")));
    }
    assert_eq!(
        ringkv_cluster::replica::resolved(
            &c.nodes[0].debug_local_record(key.as_bytes()),
            c.now_ms()
        ),
        None,
        "the outsider stores nothing"
    );
}

/// A forwarded write is applied at most once: a copy of its message that
/// arrives later (a duplicate, a replay after the sender gave up) is refused
/// and versions nothing, so it cannot supersede the writes acknowledged
/// since.
#[tokio::test]
async fn a_copy_of_a_forwarded_write_is_not_applied_again() {
    use ringkv_cluster::net::message::{ForwardedWrite, Request, Response, WriteOp};
    let c = cluster(3, 3);
    let (x, y) = (&c.nodes[0], &c.nodes[1]);
    let once = |seq: u64| Request::CoordinateOnce {
        generation: 1,
        seq,
        write: ForwardedWrite {
            key: b("k"),
            op: WriteOp::Put {
                value: b("first"),
                expiry: ringkv_cluster::api::Expiry::Never,
            },
            consistency: Some(Consistency::All),
            context: None,
            condition: ringkv_cluster::api::Condition::Always,
            return_previous: false,
        },
    };
    let first = x.handler().handle(y.id(), once(7)).await;
    assert!(matches!(first, Response::Coordinated(_)), "{first:?}");
    x.put(b("k"), b("second"), w(Consistency::All))
        .await
        .expect("write");
    let copy = x.handler().handle(y.id(), once(7)).await;
    assert!(
        matches!(&copy, Response::Error { code, .. } if code == "duplicate"),
        "the copy is refused: {copy:?}"
    );
    assert_eq!(read_one(x, "k", Consistency::All).await, Some(b("second")));
    // The same sequence number from another sender, or a new one from the
    // same sender, is another write.
    let other = x.handler().handle(c.nodes[2].id(), once(7)).await;
    assert!(matches!(other, Response::Coordinated(_)), "{other:?}");
    assert_eq!(read_one(x, "k", Consistency::All).await, Some(b("first")));
}

/// A node that lost its own latest write of a key (power loss before the
/// periodic fsync) starts a new epoch: its next write of the key gets a dot
/// its peers have never seen, so they keep it instead of taking it for the
/// write they already hold.
#[tokio::test]
async fn after_losing_its_own_write_a_node_never_reuses_its_dot() {
    let c = cluster(3, 3);
    let a = &c.nodes[0];
    a.put(b("k"), b("v1"), w(Consistency::All))
        .await
        .expect("write");
    // a's disk loses the record; the others keep it.
    ringkv_cluster::store::LocalStore::remove(a.store(), b"k").expect("remove");
    // A restart: a new epoch.
    a.replica().set_epoch(2);
    a.put(b("k"), b("v2"), w(Consistency::All))
        .await
        .expect("write after the loss");
    for n in &c.nodes {
        let set = n.debug_local_record(b"k");
        let values: Vec<Bytes> = set
            .siblings
            .iter()
            .filter_map(|s| s.value.clone())
            .collect();
        assert!(
            values.contains(&b("v2")),
            "{:x} kept the new write: {values:?}",
            n.id()
        );
    }
}
