//! Signed node states: a state about a node is taken only signed by that
//! node, or (a removal) granted by an admin; a member's forgery is refused
//! and never saved.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ringkv_env::ManualClock;

use super::*;
use crate::net::certs;
use crate::net::message::{self, Load, Request};
use crate::net::message::{REMOVAL_STATUSES, RemovalGrant, removal_grant_bytes};
use crate::net::tls::{AdminCredential, NodeTls, TlsPaths};

struct Fixture {
    _dir: tempfile::TempDir,
    ca: certs::Pem,
    dir: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().to_path_buf();
        Self {
            _dir: dir,
            ca: certs::new_ca(30).expect("ca"),
            dir: path,
        }
    }

    fn tls(&self, ca: &certs::Pem, id: u64) -> Arc<NodeTls> {
        let pem = certs::issue_node(ca, id, 7, &[]).expect("issue");
        let folder = self.dir.join(format!("{id:x}-{:x}", rand::random::<u64>()));
        let paths: TlsPaths = certs::write_node_folder(&folder, &ca.cert, &pem).expect("write");
        Arc::new(NodeTls::load(paths).expect("load"))
    }

    /// Node `id` of weight 1 with one token, signing with a certificate of
    /// the fixture's CA.
    fn node(&self, id: u64, clock: &Arc<ManualClock>) -> Membership {
        let config = MembershipConfig {
            tokens_per_weight: 4,
            ..MembershipConfig::default()
        };
        let m = Membership::new(
            state(id),
            Replication::simple("dc1", 3),
            clock.clone(),
            config,
        );
        m.set_auth(StateAuth {
            tls: self.tls(&self.ca, id),
            required: true,
        });
        m
    }
}

fn state(id: u64) -> NodeState {
    super::tests::state(id, vec![id * 100])
}

/// `m`'s state of itself, as it gossips it.
fn own(m: &Membership) -> NodeState {
    m.state(m.self_id()).expect("own state")
}

/// `s` with `f` applied, signed by `signer` (a member, not node `s.id`).
fn forged(s: &NodeState, signer: &NodeTls, f: impl FnOnce(&mut NodeState)) -> NodeState {
    let mut s = s.clone();
    f(&mut s);
    s.signature = None;
    s.signature = Some(
        signer
            .sign(&s.signed_bytes().expect("bytes"))
            .expect("sign"),
    );
    s
}

#[test]
fn states_travel_signed_and_forgeries_by_members_or_strangers_are_refused() {
    let f = Fixture::new();
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = (f.node(1, &clock), f.node(2, &clock));
    let saved = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&saved);
    b.set_on_ring_change(Box::new(move |_| *counter.lock() += 1));

    // A's own state, signed by A, through the wire format and back.
    a.tick();
    let req = Request::Gossip { states: a.states() };
    let frame = message::encode_request(1, &req).expect("encode");
    let Request::Gossip { states } = message::decode_request_payload(frame).expect("decode") else {
        panic!("not gossip");
    };
    assert!(states[0].signature.is_some());
    assert!(b.merge(states), "a signed state is taken");
    assert_eq!(*saved.lock(), 1);
    let a_state = own(&a);

    // A member (node 3) forging A's state: tokens taken over, a LEFT, a
    // heartbeat far ahead.
    let member = f.tls(&f.ca, 3);
    let forgeries = [
        forged(&a_state, &member, |s| {
            s.heartbeat += 10;
            s.tokens = vec![7, 8, 9];
        }),
        forged(&a_state, &member, |s| {
            s.heartbeat += 10;
            s.status = NodeStatus::Left;
        }),
        forged(&a_state, &member, |s| s.heartbeat = u64::MAX),
    ];
    for bad in forgeries {
        assert!(
            !b.merge(vec![bad]),
            "a member's forgery about a live node taken"
        );
    }
    // A's own key but a field changed after signing.
    let mut tampered = a_state.clone();
    tampered.heartbeat += 10;
    tampered.tokens = vec![5];
    assert!(!b.merge(vec![tampered]), "a tampered state taken");
    // Unsigned.
    let mut unsigned = a_state.clone();
    unsigned.heartbeat += 10;
    unsigned.signature = None;
    assert!(!b.merge(vec![unsigned]), "an unsigned state taken");
    // Signed by a node of another CA.
    let stranger_ca = certs::new_ca(30).expect("ca");
    let stranger = f.tls(&stranger_ca, 1);
    let foreign = forged(&a_state, &stranger, |s| s.heartbeat += 10);
    assert!(!b.merge(vec![foreign]), "another CA's signature taken");
    // A state of a new node signed by someone else.
    let newcomer = forged(&state(9), &member, |_| {});
    assert!(
        !b.merge(vec![newcomer]),
        "a node introduced by another taken"
    );

    assert_eq!(b.state(1).expect("a").tokens, vec![100]);
    assert_eq!(b.status(1), Some(NodeStatus::Normal));
    assert_eq!(*saved.lock(), 1, "nothing refused was saved");

    // A's genuine next state is still taken.
    a.tick();
    assert!(b.merge(vec![own(&a)]));
}

/// An admin credential of the fixture's CA.
fn admin(f: &Fixture) -> AdminCredential {
    let pem = certs::issue_admin(&f.ca, 7).expect("issue");
    let dir = f.dir.join(format!("admin-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("admin.pem"), dir.join("admin.key"));
    std::fs::write(&cert, &pem.cert).expect("write");
    std::fs::write(&key, &pem.key).expect("write");
    AdminCredential::load(&cert, &key).expect("an admin credential")
}

/// `admin`'s grants for every status of node `s.id`'s removal, for
/// generation `generation`.
fn grants(admin: &AdminCredential, id: u64, generation: u64) -> Vec<RemovalGrant> {
    REMOVAL_STATUSES
        .into_iter()
        .map(|status| RemovalGrant {
            status,
            signature: admin
                .sign(&removal_grant_bytes(id, generation, status))
                .expect("sign"),
        })
        .collect()
}

#[test]
fn a_nodes_removal_is_taken_only_with_an_admins_grant() {
    let f = Fixture::new();
    let clock = Arc::new(ManualClock::new(0));
    let (x, y, z) = (f.node(1, &clock), f.node(2, &clock), f.node(3, &clock));
    x.tick();
    for m in [&y, &z] {
        assert!(m.merge(vec![own(&x)]));
    }
    assert!(z.merge(vec![own(&y)]));
    clock.advance(Duration::from_secs(120));
    let x_state = y.state(1).expect("x at y");

    // A member's own signature does not remove another node, dead or not.
    y.update_other(1, |s| s.status = NodeStatus::Leaving);
    assert!(
        !z.merge(vec![y.state(1).expect("x at y")]),
        "a removal signed by a member taken"
    );
    // A node refuses to start a removal without every grant.
    let admin = admin(&f);
    let mut some = grants(&admin, 1, x_state.generation);
    some.pop();
    let err = y.set_removal_grants(1, some).expect_err("a grant missing");
    assert!(err.contains("admin credential"), "{err}");
    // Grants for another life, or signed by a node, are refused.
    assert!(
        y.set_removal_grants(1, grants(&admin, 1, x_state.generation + 1))
            .is_err()
    );
    let node_key = f.tls(&f.ca, 2);
    let by_node: Vec<RemovalGrant> = REMOVAL_STATUSES
        .into_iter()
        .map(|status| RemovalGrant {
            status,
            signature: node_key
                .sign(&removal_grant_bytes(1, x_state.generation, status))
                .expect("sign"),
        })
        .collect();
    assert!(y.set_removal_grants(1, by_node).is_err());

    // With the admin's grants, each step of the removal is taken.
    y.set_removal_grants(1, grants(&admin, 1, x_state.generation))
        .expect("an admin's grants");
    for status in [
        NodeStatus::Leaving,
        NodeStatus::LeaveHandover,
        NodeStatus::Left,
    ] {
        y.update_other(1, |s| s.status = status);
        assert!(z.merge(vec![y.state(1).expect("x at y")]), "{status:?}");
        assert_eq!(z.status(1), Some(status));
    }
    // A grant carries a status only: used on a state that changes more (a
    // token grab), or for a status of another node, it is refused.
    let granted = y.state(1).expect("x at y");
    let mut grab = granted.clone();
    grab.heartbeat += 1;
    grab.tokens = vec![1, 2];
    assert!(!z.merge(vec![grab]), "a grant reused to take tokens");
    let mut other = z.state(2).expect("y at z");
    other.heartbeat += 1;
    other.status = NodeStatus::Left;
    other.signature = granted.signature.clone();
    assert!(!z.merge(vec![other]), "X's grant used on Y");
    // Replayed grants cannot turn the removal back, nor push the heartbeat
    // far ahead.
    let leaving = grants(&admin, 1, x_state.generation)
        .into_iter()
        .find(|g| g.status == NodeStatus::Leaving)
        .expect("grant");
    let mut back = granted.clone();
    back.heartbeat += 1;
    back.status = NodeStatus::Leaving;
    back.signature = Some(leaving.signature.clone());
    assert!(!z.merge(vec![back]), "LEFT turned back to LEAVING");
    let mut far = granted.clone();
    far.heartbeat = u64::MAX;
    assert!(!z.merge(vec![far]), "a replay at heartbeat u64::MAX");
    assert_eq!(z.status(1), Some(NodeStatus::Left));
}

#[test]
fn a_node_stops_for_a_granted_left_of_an_earlier_life_only() {
    let f = Fixture::new();
    let clock = Arc::new(ManualClock::new(0));
    let x = f.node(1, &clock);
    let member = f.tls(&f.ca, 2);
    let admin = admin(&f);
    // A member claims this very life of X has left: ignored; so is an
    // admin's LEFT of this life (X is alive: it would decommission).
    let now = forged(&own(&x), &member, |s| s.status = NodeStatus::Left);
    x.merge(vec![now]);
    let mut now = own(&x);
    now.status = NodeStatus::Left;
    now.signature = Some(
        admin
            .sign(&removal_grant_bytes(1, now.generation, NodeStatus::Left))
            .expect("sign"),
    );
    x.merge(vec![now]);
    assert!(
        !x.left_by_peers(),
        "a LEFT of this life stopped a live node"
    );
    // A LEFT of an earlier life (X was removed while down, then
    // restarted): a member's is ignored, an admin's is taken.
    let mut before = own(&x);
    before.generation = 0;
    let earlier = forged(&before, &member, |s| s.status = NodeStatus::Left);
    x.merge(vec![earlier]);
    assert!(!x.left_by_peers(), "a member's LEFT of an earlier life");
    before.status = NodeStatus::Left;
    before.signature = Some(
        admin
            .sign(&removal_grant_bytes(1, 0, NodeStatus::Left))
            .expect("sign"),
    );
    x.merge(vec![before]);
    assert!(x.left_by_peers());
}

#[test]
fn signatures_are_ignored_by_decoders_that_predate_them() {
    let f = Fixture::new();
    let clock = Arc::new(ManualClock::new(0));
    let a = f.node(1, &clock);
    let req = Request::Gossip { states: a.states() };
    let frame = message::encode_request(1, &req).expect("encode");
    // The decoder of earlier versions: postcard of the body, the rest
    // ignored.
    let old: Request = message::decode_body(&frame[message::HEADER_BYTES..]).expect("old decode");
    let Request::Gossip { states } = old else {
        panic!("not gossip")
    };
    assert_eq!(states[0].signature, None);
    assert_eq!(states[0].tokens, own(&a).tokens);
}

/// Nodes 1 and 2 of `f`, each holding the other's signed state.
fn signed_pair(f: &Fixture) -> (Membership, Membership) {
    let clock = Arc::new(ManualClock::new(0));
    let (a, b) = (f.node(1, &clock), f.node(2, &clock));
    a.tick();
    assert!(b.merge(vec![own(&a)]));
    assert!(a.merge(vec![own(&b)]));
    (a, b)
}

/// A publication travels as a refresh (no certificate, no endpoint) and is
/// checked as the whole state would be: a refresh with its load changed
/// on the way is refused and counts for nothing.
#[test]
fn signed_refreshes_are_rebuilt_and_checked() {
    let f = Fixture::new();
    let (a, b) = signed_pair(&f);
    a.set_load(Load {
        keys: 7,
        ..Load::default()
    });
    let diff = a.take_digest(&b.digest(false)).expect("same members");
    assert_eq!(diff.newer_here, vec![1]);
    let (whole, refreshes) = a.updates(&diff.newer_here, &diff.theirs);
    assert!(whole.is_empty(), "a refresh, not the whole state");
    let size = postcard::to_allocvec(&refreshes).expect("encode").len();
    let whole_size = message::encode_request(
        1,
        &Request::Gossip {
            states: vec![own(&a)],
        },
    )
    .expect("encode")
    .len();
    assert!(
        size * 4 < whole_size,
        "refresh {size} B, whole {whole_size} B"
    );

    let mut tampered = refreshes.clone();
    tampered[0].load.keys = 1_000_000;
    assert!(
        !b.take_refreshes(tampered),
        "a changed load breaks the signature"
    );
    assert_ne!(b.load_of(1).map(|l| l.keys), Some(1_000_000));

    assert!(b.take_refreshes(refreshes));
    assert_eq!(
        b.state(1),
        Some(own(&a)),
        "the same state, signature and all"
    );
}

/// A node that reloads its certificate sends its next state whole: a
/// refresh would be checked against the old certificate.
#[test]
fn a_new_certificate_goes_whole() {
    let f = Fixture::new();
    let (a, b) = signed_pair(&f);
    a.set_auth(StateAuth {
        tls: f.tls(&f.ca, 1),
        required: true,
    });
    a.tick();
    let diff = a.take_digest(&b.digest(false)).expect("same members");
    let (whole, refreshes) = a.updates(&diff.newer_here, &diff.theirs);
    assert!(refreshes.is_empty(), "{refreshes:?}");
    assert_eq!(whole.len(), 1);
    assert!(b.merge(whole));
    assert_eq!(b.state(1), Some(own(&a)));
}
