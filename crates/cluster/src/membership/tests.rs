use super::*;
use crate::net::message::Load;
use crate::ring::TOKENS_PER_NODE_MAX;
use ringkv_env::ManualClock;

pub(super) fn state(id: u64, tokens: Vec<u64>) -> NodeState {
    NodeState {
        id,
        generation: 1,
        heartbeat: 0,
        cluster_addr: format!("127.0.0.1:{id}"),
        resp_addr: String::new(),
        http_addr: String::new(),
        dc: "dc1".into(),
        rack: "r1".into(),
        weight: 1,
        tokens,
        status: NodeStatus::Normal,
        load: Load::default(),
        signature: None,
    }
}

/// A state with more tokens than any node may hold is refused before
/// it reaches the ring (whose rebuild it would make as large as it
/// likes) or PEERS; one at the bound is taken.
#[test]
fn states_with_too_many_tokens_are_refused() {
    let m = node_one_of_rf3();
    let saved = Arc::new(Mutex::new(0usize));
    let s = Arc::clone(&saved);
    m.set_on_ring_change(Box::new(move |_| *s.lock() += 1));
    for tokens in [20_000u64, 100_000] {
        let big = state(2, (0..tokens).map(|t| t * 7 + 1).collect());
        assert!(!m.merge(vec![big]), "{tokens} tokens taken");
        assert_eq!(m.state(2), None);
        assert_eq!(m.ring().len(), 1);
    }
    // More than its weight gives (64 a weight by default).
    let over = state(2, (0..65).map(|t| t * 7 + 1).collect());
    assert!(!m.merge(vec![over]), "65 tokens at weight 1 taken");
    assert_eq!(*saved.lock(), 0, "nothing refused was saved");
    let at_bound = (0..TOKENS_PER_NODE_MAX as u64).map(|t| t * 7 + 1).collect();
    let mut heaviest = state(2, at_bound);
    heaviest.weight = 64;
    assert!(m.merge(vec![heaviest]));
    assert_eq!(m.ring().len(), 2);
    assert_eq!(*saved.lock(), 1);
}

/// Node 1 (token 10) alone, replication factor 3, a clock standing at 0.
fn node_one_of_rf3() -> Membership {
    Membership::new(
        state(1, vec![10]),
        Replication::simple("dc1", 3),
        Arc::new(ManualClock::new(0)),
        MembershipConfig::default(),
    )
}

#[test]
fn phi_grows_with_silence_and_resets_on_heartbeat() {
    let mut d = PhiDetector::new(10, 100.0);
    let t = |ms: u64| Duration::from_millis(ms);
    for i in 0..10 {
        d.heartbeat(t(i * 100));
    }
    assert!(d.phi(t(950)) < 1.0);
    // 8 / log10(e) * 100 ms = ~1842 ms of silence convicts.
    assert!(d.phi(t(900 + 1_700)) < 8.0);
    assert!(d.phi(t(900 + 1_900)) >= 8.0);
    d.heartbeat(t(3_000));
    assert!(d.phi(t(3_000)) < 0.01);
}

#[test]
fn newer_states_win_and_peers_go_down_on_silence_and_up_on_heartbeat() {
    let clock = Arc::new(ManualClock::new(0));
    let config = MembershipConfig {
        gossip_interval_ms: 100,
        ..MembershipConfig::default()
    };
    let m = Membership::new(
        state(1, vec![10]),
        Replication::simple("dc1", 2),
        clock.clone(),
        config,
    );
    assert!(!m.is_alive(2), "unknown nodes are not alive");
    let mut s2 = state(2, vec![20]);
    assert!(m.merge(vec![s2.clone()]));
    assert!(m.is_alive(2));
    assert_eq!(m.ring().len(), 2);
    assert!(!m.merge(vec![s2.clone()]), "same version changes nothing");
    for _ in 0..5 {
        clock.advance(Duration::from_millis(100));
        s2.heartbeat += 1;
        m.merge(vec![s2.clone()]);
    }
    clock.advance(Duration::from_millis(3_000));
    assert!(!m.is_alive(2), "silent peer convicted");
    s2.heartbeat += 1;
    m.merge(vec![s2.clone()]);
    assert!(m.is_alive(2), "heartbeat revives");
    // An older state never replaces a newer one.
    let mut stale = s2.clone();
    stale.heartbeat = 0;
    stale.tokens = vec![99];
    assert!(!m.merge(vec![stale]));
    assert_eq!(m.state(2).map(|s| s.tokens), Some(vec![20]));
    // A restart (new generation) wins even with a low heartbeat.
    let mut reborn = state(2, vec![21]);
    reborn.generation = 2;
    assert!(m.merge(vec![reborn]));
    assert_eq!(m.ring().tokens_of(2), vec![21]);
}

/// Each round's look at its peers counts every time one goes from up to
/// down (what the scale simulation counts false suspicions by): a peer
/// down twice is counted twice, one never seen up is not counted.
#[test]
fn every_fall_of_a_peer_is_counted() {
    let clock = Arc::new(ManualClock::new(0));
    let m = Membership::new(
        state(1, vec![10]),
        Replication::simple("dc1", 2),
        clock.clone(),
        MembershipConfig {
            gossip_interval_ms: 100,
            ..MembershipConfig::default()
        },
    );
    let mut s2 = state(2, vec![20]);
    m.merge(vec![s2.clone()]);
    m.note_liveness();
    assert_eq!(m.downs_seen(), vec![]);
    for fall in 1..=2 {
        for _ in 0..5 {
            clock.advance(Duration::from_millis(100));
            s2.heartbeat += 1;
            m.merge(vec![s2.clone()]);
            m.note_liveness();
        }
        // Long enough a silence whatever the rate learnt.
        clock.advance(Duration::from_secs(600));
        assert!(!m.is_alive(2), "fall {fall}: phi {}", m.phi(2));
        m.note_liveness();
        m.note_liveness();
        assert_eq!(m.downs_seen(), vec![(2, fall)], "down once more, seen once");
        s2.heartbeat += 1;
        m.merge(vec![s2.clone()]);
        m.note_liveness();
        assert!(m.is_alive(2));
    }
}

/// A peer restarted on other ports is kept on disk with its new
/// address (a restart of this node must find it), a new load is not.
#[test]
fn an_address_change_is_saved_and_a_load_change_is_not() {
    let m = node_one_of_rf3();
    let saved = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&saved);
    m.set_on_ring_change(Box::new(move |states| {
        s.lock().push(
            states
                .iter()
                .map(|s| s.cluster_addr.clone())
                .collect::<Vec<_>>(),
        )
    }));
    let mut s2 = state(2, vec![20]);
    assert!(m.merge(vec![s2.clone()]));
    assert_eq!(saved.lock().len(), 1);
    s2.heartbeat += 1;
    s2.load.keys = 10;
    assert!(m.merge(vec![s2.clone()]));
    assert_eq!(saved.lock().len(), 1, "a load change is not saved");
    s2.heartbeat += 1;
    s2.cluster_addr = "127.0.0.1:9".into();
    assert!(m.merge(vec![s2]));
    let saved = saved.lock();
    assert_eq!(saved.len(), 2);
    assert!(saved[1].contains(&"127.0.0.1:9".to_string()), "{saved:?}");
}

#[test]
fn restored_peers_shape_the_ring_but_are_down_until_heard() {
    let m = node_one_of_rf3();
    let seen = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&seen);
    m.set_on_ring_change(Box::new(move |states| *counter.lock() = states.len()));
    m.restore(vec![state(2, vec![20]), state(3, vec![30])]);
    assert_eq!(m.ring().len(), 3, "the ring holds the restored peers");
    assert_eq!(*seen.lock(), 3, "the hook saw the change");
    assert_eq!(m.preference_list(15), vec![2, 3, 1]);
    assert!(
        !m.is_alive(2) && !m.is_alive(3),
        "not alive until heard from"
    );
    let mut s2 = state(2, vec![20]);
    s2.heartbeat = 1;
    m.merge(vec![s2]);
    assert!(m.is_alive(2));
    assert!(!m.is_alive(3));
}

#[test]
fn same_states_give_the_same_ring_everywhere() {
    let clock = Arc::new(ManualClock::new(0));
    let a = Membership::new(
        state(1, vec![5, 50]),
        Replication::simple("dc1", 2),
        clock.clone(),
        MembershipConfig::default(),
    );
    let b = Membership::new(
        state(2, vec![5, 70]),
        Replication::simple("dc1", 2),
        clock,
        MembershipConfig::default(),
    );
    a.merge(b.states());
    b.merge(a.states());
    assert_eq!(a.ring(), b.ring());
    // The contested token 5 goes to the lower id.
    assert_eq!(a.ring().tokens().find(|&(t, _)| t == 5), Some((5, 1)));
}
