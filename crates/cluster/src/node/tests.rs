//! Multi-node behaviour of the coordinator, in one process over the
//! in-memory transport: quorum reads and writes, failures, siblings, read
//! repair.

use std::time::Duration;

use bytes::Bytes;

use super::{Node, NodeConfig};
use crate::api::{Consistency, Kv, KvError, ReadOptions, WriteOptions};
use crate::repair::hints::HintConfig;
use crate::ring::token_of;
use crate::store::MemStore;
use crate::testing::{TestCluster, test_config};

fn cluster(n: usize, rf: usize) -> TestCluster {
    TestCluster::new(n, rf)
}

fn cluster_with(n: usize, rf: usize, strict_quorum: bool) -> TestCluster {
    cluster_full(n, rf, strict_quorum, HintConfig::default())
}

fn config(rf: usize, strict_quorum: bool, hints: HintConfig) -> NodeConfig {
    NodeConfig {
        strict_quorum,
        hints,
        ..test_config(rf)
    }
}

fn cluster_full(n: usize, rf: usize, strict_quorum: bool, hints: HintConfig) -> TestCluster {
    TestCluster::with_config(n, config(rf, strict_quorum, hints))
}

/// `n` nodes that know only themselves.
fn strangers(n: usize, rf: usize, strict_quorum: bool, hints: HintConfig) -> TestCluster {
    TestCluster::strangers(n, config(rf, strict_quorum, hints))
}

/// The hints every node holds, as (target, count, bytes).
fn pending_hints(node: &Node<MemStore>) -> Vec<(u64, u64, u64)> {
    node.hints()
        .pending()
        .into_iter()
        .map(|h| (h.target, h.count, h.bytes))
        .collect()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn at(level: Consistency) -> ReadOptions {
    ReadOptions {
        consistency: Some(level),
    }
}

fn w(level: Consistency) -> WriteOptions {
    WriteOptions {
        consistency: Some(level),
        ..WriteOptions::default()
    }
}

async fn read_one(node: &Node<MemStore>, key: &str, level: Consistency) -> Option<Bytes> {
    node.get(b(key), at(level))
        .await
        .expect("read")
        .resolved()
        .map(|s| s.value.clone())
}

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
    match err {
        KvError::Unavailable {
            required, answered, ..
        } => assert_eq!((required, answered), (3, 2)),
        other => panic!("wrong error {other:?}"),
    }
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
    let before = crate::replica::resolved(
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
    let own = crate::replica::resolved(
        &c.node(victim).debug_local_record(key.as_bytes()),
        c.now_ms(),
    );
    assert_eq!(own.map(|s| s.value), Some(b("fresh")), "replica repaired");
}

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
        let own =
            crate::replica::resolved(&c.node(id).debug_local_record(key.as_bytes()), c.now_ms());
        assert_eq!(own.map(|s| s.value), Some(b("via-forward")));
    }
    assert_eq!(
        crate::replica::resolved(&c.nodes[0].debug_local_record(key.as_bytes()), c.now_ms()),
        None,
        "the outsider stores nothing"
    );
}

fn own_value(c: &TestCluster, id: u64, key: &str) -> Option<Bytes> {
    crate::replica::resolved(&c.node(id).debug_local_record(key.as_bytes()), c.now_ms())
        .map(|s| s.value)
}

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
    let held: u64 = c
        .nodes
        .iter()
        .flat_map(pending_hints)
        .filter(|(t, _, _)| *t == victim)
        .map(|(_, count, _)| count)
        .sum();
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

/// While a join hands over, an answer from the joiner (which may have
/// missed something) must not stand in for an answer of the current ring: a
/// quorum read needs a quorum of the current replicas as well as of the
/// pending ones.
#[tokio::test(start_paused = true)]
async fn a_joiner_does_not_count_towards_the_current_rings_quorum() {
    use crate::net::message::NodeStatus;
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
        crate::replica::resolved(&n.debug_local_record(key.as_bytes()), c.now_ms()).is_some()
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
    use crate::net::message::NodeStatus;
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
    use crate::causality::{SiblingSet, VersionVector};
    let c = TestCluster::with_config(
        3,
        NodeConfig {
            movement: crate::movement::MoveConfig {
                cleanup_delay_ms: 1_000,
                ..crate::movement::MoveConfig::default()
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
        a.replica().merge_now(b(&key), set).await.expect("merge");
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
    use crate::net::message::NodeStatus;
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
    use crate::net::message::NodeStatus;
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

/// A forwarded write is applied at most once: a copy of its message that
/// arrives later (a duplicate, a replay after the sender gave up) is refused
/// and versions nothing, so it cannot supersede the writes acknowledged
/// since.
#[tokio::test]
async fn a_copy_of_a_forwarded_write_is_not_applied_again() {
    use crate::net::message::{ForwardedWrite, Request, Response, WriteOp};
    let c = cluster(3, 3);
    let (x, y) = (&c.nodes[0], &c.nodes[1]);
    let once = |seq: u64| Request::CoordinateOnce {
        generation: 1,
        seq,
        write: ForwardedWrite {
            key: b("k"),
            op: WriteOp::Put {
                value: b("first"),
                expiry: crate::api::Expiry::Never,
            },
            consistency: Some(Consistency::All),
            context: None,
            condition: crate::api::Condition::Always,
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

/// Hints held for a node that has since left the ring go to the key's
/// current replicas and are deleted: they never wait for a node that will
/// not come back (which would also keep the cluster from ever converging).
#[tokio::test(start_paused = true)]
async fn hints_for_a_node_that_left_go_to_the_current_replicas() {
    use crate::net::message::NodeStatus;
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
    crate::store::LocalStore::remove(a.store(), b"k").expect("remove");
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
