//! Digest gossip: positional and explicit digests, pulses and their bound,
//! the size of a digest at a thousand members, convergence of membership-only
//! nodes on the simulated network, and a peer of the version before.

use std::sync::Arc;
use std::time::Duration;

use ringkv_env::{ManualClock, Rng};

use super::gossip::{Gossip, LoadSource};
use super::tests::state;
use super::*;
use crate::net::message::{
    self, ErrorDetail, Load, Request, Response, StateRefresh, endpoint_hash,
};
use crate::net::sim::{SimNet, test_addr};
use crate::net::{BoxFut, Handler, Transport};

/// Node `id` with 16 tokens, gossiping every 100 ms.
fn member(id: u64, clock: &Arc<ManualClock>) -> Membership {
    let mut me = state(id, (0..16).map(|t| id * 1_000_000 + t * 1_000).collect());
    me.cluster_addr = test_addr(id);
    Membership::new(
        me,
        Replication::simple("dc1", 3),
        clock.clone(),
        MembershipConfig {
            gossip_interval_ms: 100,
            ..MembershipConfig::default()
        },
    )
}

/// Membership `a` and `b`, each knowing the other's state.
fn pair(clock: &Arc<ManualClock>) -> (Membership, Membership) {
    let (a, b) = (member(1, clock), member(2, clock));
    b.merge(a.states());
    a.merge(b.states());
    (a, b)
}

#[test]
fn the_same_members_read_by_position_and_pulses_feed_the_detector() {
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = pair(&clock);
    let version = a.state(1).expect("a").heartbeat;
    for _ in 0..3 {
        a.beat();
    }
    clock.advance(Duration::from_millis(3_000));
    assert!(!b.is_alive(1), "silent for 30 rounds: down");
    let digest = a.digest(false);
    assert!(matches!(digest.entries, DigestEntries::Positional(_)));
    let diff = b.take_digest(&digest).expect("the same members");
    assert_eq!(diff, DigestDiff::default(), "no state differs");
    assert_eq!(b.pulse_of(1), Some((1, version + 3)));
    assert!(b.is_alive(1), "a newer pulse is a heartbeat");
    assert_eq!(
        b.state(1).expect("a").heartbeat,
        version,
        "the state itself is unchanged"
    );
    // The same pulse again is no heartbeat (the silence is long against
    // the one 3 s interval the detector has seen).
    clock.advance(Duration::from_millis(120_000));
    b.take_digest(&a.digest(false));
    assert!(!b.is_alive(1));
    // Nor is a newer pulse, PULSE_AHEAD_MAX rounds after a's last state
    // arrived: only a state (a publication) brings a back.
    a.beat();
    b.take_digest(&a.digest(false));
    assert!(
        !b.is_alive(1),
        "pulses long after the last state are not believed"
    );
    a.tick();
    b.merge(a.states());
    assert!(b.is_alive(1));
}

#[test]
fn a_published_state_is_asked_for_and_sent() {
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = pair(&clock);
    a.set_load(Load {
        keys: 42,
        ..Load::default()
    });
    let diff = b.take_digest(&a.digest(false)).expect("same members");
    assert_eq!(diff.newer_there, vec![1], "b wants a's new state");
    assert!(diff.newer_here.is_empty());
    let diff = a.take_digest(&b.digest(false)).expect("same members");
    assert_eq!(diff.newer_here, vec![1], "a sends it");
    assert!(b.merge(a.states_of(&diff.newer_here)));
    assert_eq!(b.load_of(1).map(|l| l.keys), Some(42));
    assert_eq!(
        b.take_digest(&a.digest(false)).expect("same"),
        DigestDiff::default()
    );
}

#[test]
fn a_publication_travels_as_a_refresh_and_an_endpoint_change_whole() {
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = pair(&clock);
    // A peer at version 0 (the state a node starts with) gets it whole.
    a.tick();
    let diff = a.take_digest(&b.digest(false)).expect("same members");
    let (whole, refreshes) = a.updates(&diff.newer_here, &diff.theirs);
    assert_eq!((whole.len(), refreshes.len()), (1, 0));
    assert!(b.merge(whole));
    // A publication (new load) goes as a refresh.
    a.set_load(Load {
        keys: 42,
        ..Load::default()
    });
    let diff = a.take_digest(&b.digest(false)).expect("same members");
    let (whole, refreshes) = a.updates(&diff.newer_here, &diff.theirs);
    assert!(whole.is_empty());
    assert_eq!(refreshes.len(), 1);
    assert!(b.take_refreshes(refreshes.clone()));
    assert_eq!(b.state(1), a.state(1), "rebuilt whole");
    assert!(!b.take_refreshes(refreshes), "the same refresh again");

    // A change of tokens (the endpoint) goes whole to a peer that has not
    // seen it.
    a.update_self(|s| s.tokens.push(999));
    let diff = a.take_digest(&b.digest(false)).expect("same members");
    let (whole, refreshes) = a.updates(&diff.newer_here, &diff.theirs);
    assert!(refreshes.is_empty());
    assert_eq!(whole, vec![a.state(1).expect("a")]);

    // A refresh that does not fit the state held here (another endpoint)
    // is not applied; the member shows version 0 in this node's digest
    // until it comes whole.
    let c = member(3, &clock);
    b.merge(c.states());
    a.merge(c.states());
    c.update_self(|s| s.tokens.push(7));
    a.merge(c.states());
    c.set_load(Load::default());
    let mut refresh = StateRefresh {
        id: 3,
        generation: 1,
        heartbeat: c.state(3).expect("c").heartbeat,
        load: Load::default(),
        endpoint: endpoint_hash(&c.state(3).expect("c")),
        signature: None,
    };
    assert!(
        !b.take_refreshes(vec![refresh.clone()]),
        "b holds c's old tokens"
    );
    a.merge(b.states());
    let diff = a.take_digest(&b.digest(false)).expect("same members");
    assert!(diff.newer_here.contains(&3), "{diff:?}");
    let (whole, refreshes) = a.updates(&[3], &diff.theirs);
    assert!(refreshes.is_empty());
    assert_eq!(whole, vec![a.state(3).expect("c")]);
    assert!(b.merge(whole));
    assert_eq!(b.state(3), a.state(3));
    let diff = a.take_digest(&b.digest(false)).expect("same members");
    assert!(!diff.newer_here.contains(&3), "{diff:?}");
    // An unknown member's refresh changes nothing.
    refresh.id = 99;
    assert!(!b.take_refreshes(vec![refresh]));
    assert_eq!(b.state(99), None);
}

#[test]
fn another_member_list_needs_the_explicit_form() {
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = pair(&clock);
    let c = member(3, &clock);
    a.merge(c.states());
    let d = member(4, &clock);
    b.merge(d.states());
    assert_eq!(b.take_digest(&a.digest(false)), None, "lists differ");
    let diff = b.take_digest(&a.digest(true)).expect("explicit");
    assert_eq!(diff.newer_there, vec![3], "b lacks 3");
    assert_eq!(diff.newer_here, vec![4], "a lacks 4");
    // A restart (a new generation) changes the list too; the newer life
    // is asked for.
    let mut reborn = state(2, (0..16).map(|t| 2_000_000 + t * 1_000).collect());
    reborn.cluster_addr = test_addr(2);
    reborn.generation = 2;
    let b2 = Membership::new(
        reborn,
        Replication::simple("dc1", 3),
        clock.clone(),
        MembershipConfig::default(),
    );
    assert_eq!(a.take_digest(&b2.digest(false)), None);
    let diff = a.take_digest(&b2.digest(true)).expect("explicit");
    assert_eq!(diff.newer_there, vec![2]);
    assert_eq!(diff.newer_here, vec![1, 3], "all a knows but 2");
}

#[test]
fn a_pulse_beyond_the_bound_is_believed_only_up_to_it() {
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = pair(&clock);
    let version = a.state(1).expect("a").heartbeat;
    let mut digest = a.digest(false);
    // Node 1 is first in id order; a forger claims it far ahead.
    let claim = |digest: &mut GossipDigest, ahead: u64| {
        let DigestEntries::Positional(entries) = &mut digest.entries else {
            panic!("positional");
        };
        entries[0].1 = ahead;
    };
    claim(&mut digest, 1_000_000);
    b.take_digest(&digest).expect("same members");
    assert_eq!(b.pulse_of(1), Some((1, version + PULSE_AHEAD_MAX)));
    // Nothing past the bound counts as a heartbeat until node 1 publishes
    // a newer state: a dead node is seen down after all.
    clock.advance(Duration::from_millis(10_000));
    claim(&mut digest, 2_000_000);
    b.take_digest(&digest).expect("same members");
    assert!(!b.is_alive(1));
}

#[test]
fn malformed_digests_are_refused() {
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = pair(&clock);
    let mut short = a.digest(false);
    short.count += 1;
    assert_eq!(b.take_digest(&short), None, "count and entries disagree");
    let mut unordered = a.digest(true);
    let DigestEntries::Explicit(entries) = &mut unordered.entries else {
        panic!("explicit");
    };
    entries.reverse();
    assert_eq!(b.take_digest(&unordered), None, "ids out of order");
    let huge = GossipDigest {
        count: (KNOWN_MAX + 1) as u32,
        members: 0,
        entries: DigestEntries::Positional(vec![(0, 0); KNOWN_MAX + 1]),
    };
    assert_eq!(b.take_digest(&huge), None, "more than KNOWN_MAX");
}

/// Members that left are final: positional digests skip them (their hash
/// covers them), so a cluster's history does not grow its gossip; a node
/// that still holds one as a member reads the digest as another list and
/// learns the LEFT state through explicit digests; their number is
/// bounded apart from the members'.
#[test]
fn departed_members_are_not_listed_in_positional_digests() {
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = pair(&clock);
    let departed: Vec<NodeState> = (100..600u64)
        .map(|id| {
            let mut s = state(id, vec![id * 1_000]);
            s.cluster_addr = test_addr(id);
            s.status = NodeStatus::Left;
            s.heartbeat = 5;
            s
        })
        .collect();
    let c = member(3, &clock);
    for m in [&a, &b] {
        m.merge(departed.clone());
        m.merge(c.states());
    }
    let digest = a.digest(false);
    assert_eq!(digest.entries.len(), 3, "a, b and c; not the 500 departed");
    let bytes = postcard::to_allocvec(&digest).expect("encode").len();
    assert!(bytes < 64, "{bytes} bytes");
    assert_eq!(b.take_digest(&digest), Some(DigestDiff::default()));
    // c, one of the departed still a member to d: the lists differ (the
    // hash covers LEFT and not), and the explicit digest shows a's LEFT
    // state newer than d's.
    let d = member(4, &clock);
    let mut was = departed[0].clone();
    was.status = NodeStatus::Normal;
    was.heartbeat -= 1;
    d.merge(vec![was]);
    d.merge(a.states().into_iter().filter(|s| s.id != 100).collect());
    assert_eq!(d.status(100), Some(NodeStatus::Normal));
    assert_eq!(a.take_digest(&d.digest(false)), None, "another member list");
    let diff = a.take_digest(&d.digest(true)).expect("explicit");
    assert!(diff.newer_here.contains(&100), "{diff:?}");
    let (whole, _) = a.updates(&diff.newer_here, &diff.theirs);
    d.merge(whole);
    assert_eq!(d.status(100), Some(NodeStatus::Left));
    // Once each knows the other, their lists are the same again.
    a.merge(d.states());
    assert_eq!(a.take_digest(&d.digest(false)).map(|_| ()), Some(()));
    // Room: members and departed members each have their own bound.
    let mut left = state(9, vec![9]);
    left.status = NodeStatus::Left;
    let member_state = state(9, vec![9]);
    let full_of_departed = std::iter::repeat_n(&left, DEPARTED_MAX);
    assert!(validate::room_for(&left, full_of_departed.clone()).is_err());
    assert!(validate::room_for(&member_state, full_of_departed).is_ok());
    let full_of_members = std::iter::repeat_n(&member_state, MEMBERS_MAX);
    assert!(validate::room_for(&member_state, full_of_members.clone()).is_err());
    assert!(validate::room_for(&left, full_of_members).is_ok());
    let below = std::iter::repeat_n(&left, DEPARTED_MAX - 1);
    assert!(validate::room_for(&left, below).is_ok());
}

/// The digest of a thousand members, with heartbeats of a node up for
/// weeks, against the whole states the exchange of the version before sent.
#[test]
fn a_digest_of_a_thousand_members_is_a_few_kilobytes() {
    let clock = Arc::new(ManualClock::new(0));
    let a = member(1, &clock);
    let states: Vec<NodeState> = (2..=1_000u64)
        .map(|id| {
            let mut s = state(
                id,
                (0..64)
                    .map(|t| ringkv_env::SeededRng::new(id * 64 + t).next_u64())
                    .collect(),
            );
            s.generation = 1_700_000_000_000 + id;
            s.heartbeat = 2_000_000;
            s
        })
        .collect();
    a.merge(states);
    for _ in 0..7 {
        a.beat();
    }
    let digest = message::encode_request(
        1,
        &Request::GossipDigest {
            digest: a.digest(false),
        },
    )
    .expect("encode")
    .len();
    let explicit = message::encode_request(
        1,
        &Request::GossipDigest {
            digest: a.digest(true),
        },
    )
    .expect("encode")
    .len();
    let whole = message::encode_request(1, &Request::Gossip { states: a.states() })
        .expect("encode")
        .len();
    eprintln!("1,000 members: positional {digest} B, explicit {explicit} B, whole {whole} B");
    assert!(digest <= 5 * 1_000 + 64, "positional digest {digest} B");
    assert!(explicit <= 25 * 1_000, "explicit digest {explicit} B");
    assert!(whole > 100 * digest, "whole states {whole} B");
}

/// A membership-only node on the simulated network: its membership, its
/// gossip, and (when `old`) the behaviour of a node of the version before:
/// digests answered with the error its decoder gives, whole states sent
/// and a new state published every round.
struct Lone {
    membership: Arc<Membership>,
    gossip: Gossip,
    /// Of the version before (until upgraded in place).
    old: std::sync::atomic::AtomicBool,
}

impl Lone {
    fn is_old(&self) -> bool {
        self.old.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Handler for Lone {
    fn handle(&self, from: NodeId, req: Request) -> BoxFut<Response> {
        let gossip = self.gossip.clone();
        let old = self.is_old();
        Box::pin(async move {
            if old
                && matches!(
                    req,
                    Request::GossipDigest { .. } | Request::GossipStates { .. }
                )
            {
                return Response::error(ErrorDetail::InvalidArgument(
                    "body does not decode: Found an enum discriminant that was not in the valid \
                     range"
                        .into(),
                ));
            }
            gossip
                .answer_request(from, req)
                .await
                .unwrap_or_else(|other| {
                    Response::error(ErrorDetail::InvalidArgument(format!(
                        "unexpected {}",
                        other.kind_name()
                    )))
                })
        })
    }
}

struct Cluster {
    net: Arc<SimNet>,
    clock: Arc<ManualClock>,
    nodes: Vec<Arc<Lone>>,
    round: u64,
}

impl Cluster {
    /// `n` nodes, the first `old` of the version before, each knowing
    /// node 1 as its seed.
    fn new(n: u64, old: u64) -> Self {
        let net = SimNet::quiet(7);
        let clock = Arc::new(ManualClock::new(0));
        let load: LoadSource = Arc::new(Load::default);
        let nodes = (1..=n)
            .map(|id| {
                let membership = Arc::new(member(id, &clock));
                let transport = Arc::new(net.test_transport(id));
                let gossip = Gossip::new(Arc::clone(&membership), transport, Arc::clone(&load));
                let node = Arc::new(Lone {
                    membership,
                    gossip,
                    old: (id <= old).into(),
                });
                net.register(id, node.clone());
                node
            })
            .collect();
        Self {
            net,
            clock,
            nodes,
            round: 0,
        }
    }

    /// One round of every node (old ones the old way), then 100 ms.
    async fn round(&mut self) {
        self.round += 1;
        let seeds = vec![test_addr(1)];
        for node in &self.nodes {
            if node.is_old() {
                let m = &node.membership;
                m.tick();
                let draw = ringkv_env::SeededRng::new(m.self_id() ^ self.round).next_u64();
                let peer = m.gossip_target(draw).unwrap_or(crate::net::Peer {
                    id: 1,
                    addr: test_addr(1),
                });
                let answer = self
                    .net
                    .test_transport(m.self_id())
                    .call(
                        &peer,
                        Request::Gossip { states: m.states() },
                        Duration::from_secs(1),
                    )
                    .await;
                if let Ok(Response::Gossip { states }) = answer {
                    m.merge(states);
                }
            } else {
                node.gossip.round(&seeds, self.round).await;
            }
        }
        self.clock.advance(Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
    }

    /// True when every node knows every other one, alive, at a state
    /// version at most two publications behind its own.
    fn converged(&self) -> bool {
        let n = self.nodes.len();
        self.nodes.iter().all(|a| {
            let m = &a.membership;
            m.states().len() == n
                && self.nodes.iter().all(|b| {
                    let id = b.membership.self_id();
                    let own = b.membership.version_of(id).map_or(0, |v| v.1);
                    m.is_alive(id)
                        && m.version_of(id)
                            .is_some_and(|v| v.1 + 2 * PUBLISH_ROUNDS >= own)
                })
        })
    }

    /// Rounds until converged, then the bytes a node sent and received a
    /// round over `rounds` more rounds (which must keep it converged).
    async fn steady(&mut self, rounds: u64) -> (u64, u64) {
        let mut converge = 0;
        while !self.converged() {
            self.round().await;
            converge += 1;
            assert!(converge < 300, "not converged after {converge} rounds");
        }
        let before: u64 = self.net.bytes().values().sum();
        for _ in 0..rounds {
            self.round().await;
            assert!(self.converged(), "a node looks down, or its state lags");
        }
        let after: u64 = self.net.bytes().values().sum();
        (
            converge,
            (after - before) / self.nodes.len() as u64 / rounds,
        )
    }
}

#[tokio::test(start_paused = true)]
async fn membership_only_nodes_converge_by_digests_with_a_fraction_of_the_traffic() {
    let mut whole = Cluster::new(20, 20);
    let (_, whole_bytes) = whole.steady(100).await;
    let mut c = Cluster::new(20, 0);
    let (rounds, digest_bytes) = c.steady(100).await;
    eprintln!(
        "20 nodes: converged in {rounds} rounds; a node's bytes a round: {digest_bytes} by \
         digests, {whole_bytes} by whole states"
    );
    assert!(
        digest_bytes * 10 < whole_bytes,
        "{digest_bytes} B by digests, {whole_bytes} B by whole states"
    );
    // A node that stops is seen down by every other within a few seconds.
    c.net.detach(20);
    c.nodes.pop();
    let mut rounds = 0;
    while c.nodes.iter().any(|n| n.membership.is_alive(20)) {
        c.round().await;
        rounds += 1;
        assert!(rounds < 100, "node 20 still alive somewhere after {rounds}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_of_the_version_before_is_gossiped_with_whole_states() {
    let mut c = Cluster::new(4, 2);
    c.steady(100).await;
    // The new nodes publish every round while they know an old peer, so
    // the old ones, which see heartbeats only in states, see theirs.
    let new = Arc::clone(&c.nodes[3].membership);
    let v = new.version_of(4).expect("own").1;
    c.round().await;
    assert_eq!(new.version_of(4).expect("own").1, v + 1);
}

/// The old nodes are upgraded in place (same addresses): the peers that
/// took them for old try digests again, and once no old node is left the
/// whole cluster gossips by digests, at the traffic of a cluster that never
/// had an old node (no node keeps the others sending whole states).
#[tokio::test(start_paused = true)]
async fn nodes_upgraded_in_place_are_gossiped_with_by_digests_again() {
    let mut fresh = Cluster::new(6, 0);
    let (_, digest_bytes) = fresh.steady(50).await;
    let mut c = Cluster::new(6, 3);
    let (_, mixed_bytes) = c.steady(50).await;
    for node in &c.nodes {
        node.old.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    // Rounds enough for every node to send every other a digest: none
    // sends whole states any more (they still publish every round, having
    // seen old nodes within OLD_PEER_MEMORY).
    for _ in 0..200 {
        c.round().await;
    }
    let (_, digests_bytes) = c.steady(50).await;
    // OLD_PEER_MEMORY later (no round between: every node's detectors see
    // the others down until heard again): the traffic of a cluster that
    // never had an old node.
    c.clock.advance(super::gossip::OLD_PEER_MEMORY);
    tokio::time::advance(super::gossip::OLD_PEER_MEMORY).await;
    let (_, upgraded_bytes) = c.steady(50).await;
    eprintln!(
        "6 nodes, a node's bytes a round: {mixed_bytes} with 3 old, {digests_bytes} after the \
         upgrade, {upgraded_bytes} an hour later, {digest_bytes} never mixed"
    );
    assert!(
        digests_bytes * 2 < mixed_bytes,
        "{digests_bytes} B a round after the upgrade ({mixed_bytes} mixed)"
    );
    assert!(
        upgraded_bytes < digest_bytes * 3 / 2,
        "{upgraded_bytes} B a round an hour after the upgrade ({digest_bytes} never mixed)"
    );
    // No node publishes every round any more: over two publication
    // intervals its own state changes about twice, not every round.
    let own = |n: &Lone| {
        n.membership
            .version_of(n.membership.self_id())
            .expect("own")
            .1
    };
    let mut changes = vec![0; c.nodes.len()];
    let mut last: Vec<u64> = c.nodes.iter().map(|n| own(n)).collect();
    for _ in 0..2 * PUBLISH_ROUNDS {
        c.round().await;
        for (i, n) in c.nodes.iter().enumerate() {
            let v = own(n);
            changes[i] += usize::from(v != last[i]);
            last[i] = v;
        }
    }
    assert!(
        changes.iter().all(|&k| k <= 3),
        "publications in 20 rounds: {changes:?}"
    );
}

/// The ACK lists no wants: what its sender lacks, the initiator reads from
/// the digest it carries, and sends it in the ACK2.
#[tokio::test(start_paused = true)]
async fn the_answer_to_a_digest_lists_no_wants_and_its_digest_shows_them() {
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = pair(&clock);
    let b = Arc::new(b);
    let net = SimNet::quiet(3);
    let load: LoadSource = Arc::new(Load::default);
    let gossip = Gossip::new(Arc::clone(&b), Arc::new(net.test_transport(2)), load);
    a.set_load(Load {
        keys: 7,
        ..Load::default()
    });
    let Response::GossipDelta { digest, want, .. } = gossip.answer_digest(a.digest(false)).await
    else {
        panic!("a digest is answered by a delta");
    };
    assert!(want.is_empty(), "no wants: {want:?}");
    let diff = a.take_digest(&digest).expect("same members");
    assert_eq!(diff.newer_here, vec![1], "a reads that b lacks its state");
    let (states, refreshes) = a.updates(&diff.newer_here, &diff.theirs);
    assert_eq!(states.len() + refreshes.len(), 1, "sent in the ACK2");
    let _ = gossip.answer_states(states, refreshes, Vec::new()).await;
    assert_eq!(b.load_of(1).map(|l| l.keys), Some(7));
}

/// Nodes started together publish at phases of their own: over ten
/// rounds each publishes once, and no round carries most of them.
#[tokio::test(start_paused = true)]
async fn nodes_publish_at_phases_of_their_own() {
    let mut c = Cluster::new(20, 0);
    let _ = c.steady(50).await;
    let own = |n: &Lone| {
        n.membership
            .version_of(n.membership.self_id())
            .expect("own")
            .1
    };
    let mut last: Vec<u64> = c.nodes.iter().map(|n| own(n)).collect();
    let mut per_node = vec![0; c.nodes.len()];
    let mut per_round = Vec::new();
    for _ in 0..PUBLISH_ROUNDS {
        c.round().await;
        let mut published = 0;
        for (i, n) in c.nodes.iter().enumerate() {
            let v = own(n);
            if v != last[i] {
                per_node[i] += 1;
                published += 1;
            }
            last[i] = v;
        }
        per_round.push(published);
    }
    assert!(per_node.iter().all(|&k| k == 1), "{per_node:?}");
    assert!(per_round.iter().all(|&k| k <= 8), "{per_round:?}");
}

/// A peer of the version before the ACK dropped its wants still lists
/// them: the initiator sends the states named, even where the digest
/// alone shows nothing to send.
#[tokio::test(start_paused = true)]
async fn wants_in_an_answer_are_still_sent() {
    struct Wanting {
        initiator: Arc<Membership>,
        asked: parking_lot::Mutex<Vec<Request>>,
    }
    impl Handler for Wanting {
        fn handle(&self, _from: NodeId, req: Request) -> BoxFut<Response> {
            let answer = match &req {
                // Its digest equals the initiator's: only the want asks.
                Request::GossipDigest { .. } => Response::GossipDelta {
                    digest: self.initiator.digest(false),
                    states: Vec::new(),
                    refreshes: Vec::new(),
                    want: vec![1],
                },
                _ => Response::GossipUpdates {
                    states: Vec::new(),
                    refreshes: Vec::new(),
                },
            };
            self.asked.lock().push(req);
            Box::pin(async move { answer })
        }
    }
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = pair(&clock);
    let a = Arc::new(a);
    let net = SimNet::quiet(5);
    let peer = Arc::new(Wanting {
        initiator: Arc::clone(&a),
        asked: parking_lot::Mutex::default(),
    });
    net.register(2, peer.clone());
    // The initiator is a host of the network too (its answers unused).
    net.register(
        1,
        Arc::new(Wanting {
            initiator: Arc::clone(&a),
            asked: parking_lot::Mutex::default(),
        }),
    );
    let load: LoadSource = Arc::new(Load::default);
    let gossip = Gossip::new(Arc::clone(&a), Arc::new(net.test_transport(1)), load);
    let to = b.peer(2).expect("b's address");
    let answered = gossip.exchange(&to).await;
    assert!(answered, "answered: {:?}", peer.asked.lock());
    let asked = peer.asked.lock();
    let sent: Vec<NodeId> = asked
        .iter()
        .filter_map(|r| match r {
            Request::GossipStates {
                states, refreshes, ..
            } => Some(
                states
                    .iter()
                    .map(|s| s.id)
                    .chain(refreshes.iter().map(|r| r.id))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(sent, vec![1], "{asked:?}");
}
