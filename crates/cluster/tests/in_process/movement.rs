//! Reads and writes while nodes join and leave, and cleanup.

use super::*;

/// While a join hands over, an answer from the joiner (which may have
/// missed something) must not stand in for an answer of the current ring: a
/// quorum read needs a quorum of the current replicas as well as of the
/// pending ones.
#[tokio::test(start_paused = true)]
async fn a_joiner_does_not_count_towards_the_current_rings_quorum() {
    use ringkv_cluster::net::message::NodeStatus;
    let c = strangers(4, 3, false, HintConfig::default());
    let (net, nodes) = (&c.net, &c.nodes);
    let (old, joiner) = nodes.split_at(3);
    let joiner = &joiner[0];
    // The three old nodes know each other only; the joiner knows them.
    for a in old {
        for b in old {
            a.membership().merge(b.membership().states());
        }
        joiner.membership().merge(a.membership().states());
    }
    // A key the joiner will replicate, taking the place of one old replica.
    let current = |k: &str| old[0].membership().preference_list(token_of(k.as_bytes()));
    // Streamed and handing over: reads consult both rings.
    joiner
        .membership()
        .update_self(|s| s.status = NodeStatus::JoinHandover);
    let pending = joiner
        .membership()
        .pending_ring()
        .expect("a pending ring while joining");
    let key = (0..1000)
        .map(|i| format!("key{i}"))
        .find(|k| {
            pending
                .preference_list(token_of(k.as_bytes()))
                .contains(&joiner.id())
        })
        .expect("the joiner gains some key");
    let prefs = current(&key);
    let kept: Vec<u64> = prefs
        .iter()
        .copied()
        .filter(|id| {
            pending
                .preference_list(token_of(key.as_bytes()))
                .contains(id)
        })
        .collect();
    let lost = prefs
        .iter()
        .copied()
        .find(|id| !kept.contains(id))
        .expect("one old replica loses the key");
    let (x1, x2) = (kept[0], kept[1]);
    // Before the join: a quorum write that x2 missed.
    let node = |id: u64| nodes.iter().find(|n| n.id() == id).expect("node");
    net.detach(x2);
    node(lost)
        .put(b(&key), b("acked"), w(Consistency::Quorum))
        .await
        .expect("quorum write with one replica away");
    net.register(x2, node(x2).handler());
    // The join becomes known; x2 reads while the other two old replicas
    // are away. Only x2 and the joiner answer: not a quorum of the current
    // ring, so the read must fail rather than return nothing.
    for n in old {
        n.membership().merge(joiner.membership().states());
    }
    assert!(old[0].membership().pending_ring_for_reads().is_some());
    net.detach(lost);
    net.detach(x1);
    let answer = node(x2).get(b(&key), at(Consistency::Quorum)).await;
    assert!(
        matches!(answer, Err(KvError::Unavailable { .. })),
        "a read met only by the joiner and a stale replica: {answer:?}"
    );
    // With the current replicas back, the acknowledged write is read.
    net.register(lost, node(lost).handler());
    net.register(x1, node(x1).handler());
    assert_eq!(
        read_one(node(x2), &key, Consistency::Quorum).await,
        Some(b("acked"))
    );
    // Read repair mends the stale replica of the current ring, but leaves
    // the joiner to its stream.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let has = |n: &Node<MemStore>| {
        ringkv_cluster::replica::resolved(&n.debug_local_record(key.as_bytes()), c.now_ms())
            .is_some()
    };
    assert!(has(node(x2)), "the stale current replica is repaired");
    assert!(!has(joiner), "the joiner is not repaired by reads");
}

/// Views of the ring differ for a moment while a node joins: a forwarder
/// that has not yet heard the join completed may pick an old replica that
/// no longer holds the key. That replica declines, and the next one (here
/// the joiner, since the first replica is away) coordinates: the write
/// succeeds.
#[tokio::test(start_paused = true)]
async fn a_forwarded_write_declined_by_a_former_replica_goes_to_the_next() {
    use ringkv_cluster::net::message::NodeStatus;
    let c = cluster(5, 2);
    let (x, j) = (&c.nodes[0], &c.nodes[4]);
    // x hears that j is joining; everyone else already hears it is NORMAL.
    j.membership()
        .update_self(|s| s.status = NodeStatus::Joining);
    x.membership().merge(j.membership().states());
    j.membership()
        .update_self(|s| s.status = NodeStatus::Normal);
    for n in &c.nodes[1..4] {
        n.membership().merge(j.membership().states());
    }
    let before = x.membership().current_ring();
    let after = x.membership().pending_ring().expect("x sees a join");
    let key = (0..5000)
        .map(|i| format!("key{i}"))
        .find(|k| {
            let t = token_of(k.as_bytes());
            let (old, new) = (before.preference_list(t), after.preference_list(t));
            !old.contains(&x.id()) && !new.contains(&x.id()) && !new.contains(&old[1])
        })
        .expect("a key whose second replica x will lose");
    let first = before.preference_list(token_of(key.as_bytes()))[0];
    c.net.detach(first);
    x.put(b(&key), b("moved"), w(Consistency::Quorum))
        .await
        .expect("the next replica coordinates");
    c.net.register(first, c.node(first).handler());
    assert_eq!(
        read_one(&c.nodes[1], &key, Consistency::Quorum).await,
        Some(b("moved"))
    );
}

/// A node drops the records of ranges it does not replicate once the ring
/// has been still for the delay, and looks again now and then: a late
/// write (a replayed hint, a read repair from a node with an older view)
/// that lands there later goes too.
#[tokio::test(start_paused = true)]
async fn cleanup_drops_foreign_records_and_looks_again_later() {
    use ringkv_cluster::causality::{SiblingSet, VersionVector};
    let c = TestCluster::with_config(
        3,
        NodeConfig {
            movement: ringkv_cluster::movement::MoveConfig {
                cleanup_delay_ms: 1_000,
                ..ringkv_cluster::movement::MoveConfig::default()
            },
            ..test_config(1)
        },
    );
    let a = &c.nodes[0];
    let foreign: Vec<String> = (0..1000)
        .map(|i| format!("key{i}"))
        .filter(|k| !c.replicas(k.as_bytes()).contains(&a.id()))
        .take(6)
        .collect();
    let own = (0..1000)
        .map(|i| format!("key{i}"))
        .find(|k| c.replicas(k.as_bytes()).contains(&a.id()))
        .expect("a key of a's");
    let plant = |key: String| async move {
        let mut set = SiblingSet::default();
        set.update(&VersionVector::new(), 1, 1 << 16, Some(b("stray")), None);
        a.replica()
            .merge_now(b(&key), set.into())
            .await
            .expect("merge");
    };
    for k in foreign[..5].iter().chain([&own]) {
        plant(k.clone()).await;
    }
    // The ring has not been still long enough yet.
    assert_eq!(a.movements().cleanup_once().await.expect("cleanup"), 0);
    c.clock.advance(Duration::from_millis(1_100));
    assert_eq!(a.movements().cleanup_once().await.expect("cleanup"), 5);
    assert_eq!(own_value(&c, a.id(), &own), Some(b("stray")), "own kept");
    // A late stray: not looked for at once (the ring has not changed) ...
    plant(foreign[5].clone()).await;
    assert_eq!(a.movements().cleanup_once().await.expect("cleanup"), 0);
    // ... but on the next recheck.
    c.clock.advance(Duration::from_secs(601));
    assert_eq!(a.movements().cleanup_once().await.expect("cleanup"), 1);
    assert_eq!(own_value(&c, a.id(), &foreign[5]), None);
}

/// While a joiner streams, reads ask the current ring only (every write
/// reaches a quorum of it); writes reach both rings.
#[tokio::test(start_paused = true)]
async fn reads_ask_the_pending_ring_only_while_a_join_hands_over() {
    use ringkv_cluster::net::message::NodeStatus;
    let c = cluster(4, 3);
    let j = &c.nodes[3];
    j.membership()
        .update_self(|s| s.status = NodeStatus::Joining);
    for n in &c.nodes[..3] {
        n.membership().merge(j.membership().states());
    }
    let m = c.nodes[0].membership();
    let pending = m.pending_ring().expect("a pending ring");
    assert!(
        m.pending_ring_for_reads().is_none(),
        "streaming: current ring only"
    );
    let key = (0..1000)
        .map(|i| format!("key{i}"))
        .find(|k| {
            pending
                .preference_list(token_of(k.as_bytes()))
                .contains(&j.id())
        })
        .expect("a key the joiner gains");
    // The joiner is away: a write still needs it (or a stand-in) in the
    // pending ring, but a read does not ask it.
    c.net.detach(j.id());
    c.nodes[0]
        .put(b(&key), b("v"), w(Consistency::Quorum))
        .await
        .expect("a quorum of each ring without the joiner");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        read_one(&c.nodes[0], &key, Consistency::All).await,
        Some(b("v"))
    );
    // Handing over: now a read at ALL needs the joiner too.
    j.membership()
        .update_self(|s| s.status = NodeStatus::JoinHandover);
    for n in &c.nodes[..3] {
        n.membership().merge(j.membership().states());
    }
    assert!(m.pending_ring_for_reads().is_some());
    let answer = c.nodes[0].get(b(&key), at(Consistency::All)).await;
    assert!(
        matches!(answer, Err(KvError::Unavailable { .. })),
        "ALL in the pending ring includes the unreachable joiner: {answer:?}"
    );
}

/// Reads ask both rings for a whole episode in which more than one node
/// moved (once one is done the current ring is an intermediate one no write
/// had to reach a quorum of), and again only the current ring once the
/// ring has been still.
#[tokio::test(start_paused = true)]
async fn reads_ask_both_rings_while_several_nodes_move() {
    use ringkv_cluster::net::message::NodeStatus;
    let c = cluster(5, 3);
    let m = c.nodes[0].membership();
    let set = |i: usize, status: NodeStatus| {
        c.nodes[i].membership().update_self(|s| s.status = status);
        m.merge(c.nodes[i].membership().states());
    };
    set(3, NodeStatus::Joining);
    assert!(m.pending_ring_for_reads().is_none(), "one mover, streaming");
    set(4, NodeStatus::Leaving);
    assert!(m.pending_ring_for_reads().is_some(), "two movers");
    set(3, NodeStatus::Normal);
    assert!(
        m.pending_ring_for_reads().is_some(),
        "one mover left, but the episode had two"
    );
    set(4, NodeStatus::Normal);
    assert!(m.pending_ring().is_none());
    set(4, NodeStatus::Leaving);
    assert!(
        m.pending_ring_for_reads().is_none(),
        "a new episode, one mover"
    );
}

/// A node joining a ring records the join before it keeps its tokens: at
/// every point where its first start can stop, a restart joins again
/// (streaming) rather than taking tokens it holds no data for as NORMAL.
#[tokio::test(start_paused = true)]
async fn a_joiner_stopped_anywhere_in_its_first_start_joins_on_restart() {
    use ringkv_cluster::net::message::NodeStatus;
    use ringkv_storage::{CrashMode, FaultFs};
    let c = cluster(3, 3);
    let seeds = vec![c.states[0].cluster_addr.clone()];
    let mut joiner = c.states[0].clone();
    joiner.id = 2000;
    joiner.cluster_addr = "node2000".into();
    joiner.rack = "r9".into();
    joiner.tokens.clear();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut stopped = 0;
    for syncs in 0..64 {
        let disk = FaultFs::new(syncs);
        disk.fail_sync_after(syncs);
        let first = match c.start_on(joiner.clone(), disk.clone()) {
            Ok(node) => node.start(&seeds, stop.clone()).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if first.is_ok() {
            break;
        }
        stopped += 1;
        let node = c
            .start_on(joiner.clone(), disk.crash(CrashMode::DropUnsynced))
            .expect("restart");
        node.start(&seeds, stop.clone())
            .await
            .expect("a restart takes its place");
        let me = node.membership().state(joiner.id).expect("own state");
        assert!(!me.tokens.is_empty(), "stopped after {syncs} syncs");
        assert_ne!(
            me.status,
            NodeStatus::Normal,
            "stopped after {syncs} syncs: tokens taken without their data"
        );
    }
    assert!(stopped >= 2, "only {stopped} points where a start can stop");
}
