//! Membership: who is in the cluster, what they own, and who is alive.
//!
//! Every node gossips about once per `gossip_interval_ms` with one random
//! peer, by digests (see [`gossip`]): each side learns the other's state
//! version and pulse of every member, and the states one side holds newer
//! travel whole; each keeps, per node, the state with the greater
//! `(generation, heartbeat)`. A node raises its pulse every round and
//! publishes its state (heartbeat set to the pulse) every
//! [`PUBLISH_ROUNDS`] rounds and on every change; a restart starts a new
//! generation that outranks its previous life. The ring is rebuilt, deterministically, from the states of
//! the nodes that own tokens, so every node that has heard the same states
//! computes the same ring.
//!
//! Failure detection is phi-accrual (Hayashibara et al., as in Cassandra): for
//! each peer we keep the intervals between pulse increases seen through
//! gossip (in digests or states), and `phi = elapsed / mean_interval *
//! log10(e)`; a peer is down while `phi >= phi_convict`. That is evidence, not a guess: a peer is marked down
//! only when its heartbeats stop arriving for many times their usual
//! interval, and up again as soon as a newer heartbeat is seen.

use crate::det::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

mod detector;
#[cfg(test)]
mod digest_tests;
pub mod gossip;
#[cfg(test)]
mod signed_tests;
mod validate;

use parking_lot::{Mutex, RwLock};

pub use detector::PhiDetector;
use ringkv_env::SharedClock;
pub use validate::{MEMBERS_MAX, WEIGHT_MAX, check_addr, check_state};

use crate::id::NodeId;
use crate::net::Peer;
use crate::net::message::{
    DigestEntries, DigestEntry, GossipDigest, NodeState, NodeStatus, REMOVAL_STATUSES,
    RemovalGrant, StateRefresh, StateSignature, endpoint_hash, members_hash, removal_grant_bytes,
    same_endpoint,
};
use crate::net::tls::{Signer, check_signature};
use crate::ring::{Placement, Replication, Ring, RingNode, Token};

/// Settings of gossip and failure detection.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub gossip_interval_ms: u64,
    /// phi at or above which a peer is considered down.
    pub phi_convict: f64,
    /// Heartbeat intervals remembered per peer.
    pub intervals_max: usize,
    pub tokens_per_weight: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            gossip_interval_ms: 1_000,
            phi_convict: 8.0,
            intervals_max: 100,
            tokens_per_weight: 64,
        }
    }
}

/// The nodes seen moving since the ring was last still, and whether this
/// node has seen a still ring since it started.
#[derive(Default)]
struct Episode {
    movers: HashSet<NodeId>,
    seen_still: bool,
}

/// The cluster as this node knows it.
pub struct Membership {
    self_id: NodeId,
    clock: SharedClock,
    config: MembershipConfig,
    states: RwLock<HashMap<NodeId, NodeState>>,
    detectors: Mutex<HashMap<NodeId, PhiDetector>>,
    /// Each peer's liveness when last logged (see
    /// [`Membership::note_liveness`]).
    liveness_seen: Mutex<HashMap<NodeId, bool>>,
    placement: RwLock<Arc<Placement>>,
    /// The ring once every JOINING node has joined and every LEAVING node
    /// has left; `None` while no node is moving.
    pending: RwLock<Option<Arc<Placement>>>,
    /// Reads consult the pending ring too (a hand-over, or several movers;
    /// see `rebuild_placement`).
    reads_use_pending: std::sync::atomic::AtomicBool,
    /// The movement episode as this node saw it.
    episode: Mutex<Episode>,
    /// Set once a peer's states have been merged.
    heard: std::sync::atomic::AtomicBool,
    /// Monotonic time of the last ring change.
    ring_changed_at: Mutex<Duration>,
    /// Set when a peer reports this node as LEFT (removed or
    /// decommissioned): its id may not serve again.
    left_by_peers: std::sync::atomic::AtomicBool,
    replication: Replication,
    /// Called with every known state whenever the ring or a node's
    /// endpoint (addresses, rack, data center) changes, so the node can
    /// keep them on disk (see [`Membership::restore`]).
    on_ring_change: RwLock<Option<RingChangeHook>>,
    /// Held by the one rebuild of the placement under way: rebuilds are
    /// published in the order they read the states, and the states
    /// themselves are not locked while a ring is worked out.
    rebuilding: Mutex<()>,
    /// How states are signed and checked; none without TLS.
    auth: RwLock<Option<StateAuth>>,
    /// Removal grants of nodes this node removes, by node: what it signs
    /// their states with as it changes their status.
    grants: Mutex<HashMap<NodeId, Vec<RemovalGrant>>>,
    /// This node's pulse: its heartbeat, raised every round; its state
    /// carries the pulse it was last published at.
    own_pulse: std::sync::atomic::AtomicU64,
    /// Per member, the version since which the endpoint held here (the
    /// state but heartbeat, load and signature) has been known: a peer at
    /// or after it can take a refresh. Every change of a member's endpoint
    /// replaces its entry.
    endpoint_since: Mutex<HashMap<NodeId, Endpoint>>,
    /// Members whose refresh could not be rebuilt here: shown at version 0
    /// in this node's digests until a whole state of them arrives.
    want_whole: Mutex<HashSet<NodeId>>,
    /// Rings shared with other nodes of one process (a simulation).
    ring_memo: RwLock<Option<Arc<RingMemo>>>,
}

/// What [`Membership`] knows of a member's endpoint: the version since
/// which it has held it, and its [`endpoint_hash`] once asked (every
/// refresh sent or taken needs it; it changes only with the endpoint,
/// which replaces the entry).
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    since: u64,
    hash: Option<u64>,
}

impl Endpoint {
    fn since(since: u64) -> Self {
        Self { since, hash: None }
    }

    /// The endpoint hash of `s`, the state held of its member, from the
    /// entry of `map` (computed once per endpoint).
    fn hash_of(map: &mut HashMap<NodeId, Endpoint>, s: &NodeState) -> u64 {
        match map.get_mut(&s.id) {
            Some(e) => *e.hash.get_or_insert_with(|| endpoint_hash(s)),
            None => endpoint_hash(s),
        }
    }
}

/// Placements already worked out, shared by the nodes of one process that
/// see the same states (the scale simulation runs a thousand nodes whose
/// views mostly agree): keyed by an xxh3-128 of the nodes a ring holds
/// (id, data center, rack, weight, tokens) and the replication. Only the
/// [`RING_MEMO_MAX`] latest are kept.
#[derive(Default)]
pub struct RingMemo {
    entries: Mutex<std::collections::VecDeque<(u128, Arc<Placement>)>>,
    hits: std::sync::atomic::AtomicU64,
    builds: std::sync::atomic::AtomicU64,
}

/// Placements a [`RingMemo`] keeps.
pub const RING_MEMO_MAX: usize = 16;

impl RingMemo {
    /// `(hits, builds)` so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(std::sync::atomic::Ordering::Relaxed),
            self.builds.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// Gossip rounds between two publications of a node's state (with its
/// load and a fresh signature): between them only its pulse advances, and
/// travels in digests.
pub const PUBLISH_ROUNDS: u64 = 10;
/// How far past a member's state known here a pulse heard in a digest is
/// believed, in rounds; and for how many rounds after the member's last
/// state arrived: a digest's pulses are not signed, so a peer could keep a
/// dead member looking alive with them; this bounds that to a few
/// publications' time (the member's own publications renew it).
pub const PULSE_AHEAD_MAX: u64 = 4 * PUBLISH_ROUNDS;
/// States in one gossip message at most (the rest follow in later
/// rounds).
pub const GOSSIP_STATES_PER_MESSAGE_MAX: usize = 256;

/// What a peer's digest showed (see [`Membership::take_digest`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestDiff {
    /// Members whose state here is newer than the peer's (or unknown to
    /// it): to send.
    pub newer_here: Vec<NodeId>,
    /// The peer's `(generation, version)` of those it knows.
    pub theirs: HashMap<NodeId, (u64, u64)>,
    /// Members whose state the peer holds newer (or that are unknown
    /// here): to ask for.
    pub newer_there: Vec<NodeId>,
}

/// How far a state carried by an admin's grant may move a node's
/// heartbeat past the one it replaces (the node running the removal adds 1
/// a step; a receiver may have missed a few).
const GRANT_HEARTBEAT_STEP_MAX: u64 = 1_000;
/// How far past the heartbeat known here a goodbye may name the sender's
/// last (gossip rounds in flight when it stopped).
const GOODBYE_HEARTBEAT_AHEAD_MAX: u64 = 10;

/// Checks that `sig` is an admin's grant for node `id`, life
/// `generation`, to `status`.
fn check_grant(
    auth: &StateAuth,
    sig: &crate::net::message::StateSignature,
    id: NodeId,
    generation: u64,
    status: NodeStatus,
) -> Result<(), String> {
    if auth.tls.signer(sig).map_err(|e| e.to_string())? != Signer::Admin {
        return Err("a removal grant must be signed by an admin certificate".into());
    }
    check_signature(sig, &removal_grant_bytes(id, generation, status))
        .map_err(|e| format!("removal grant: {e}"))
}

/// `ids` from position `start` (modulo their count) round to the one
/// before: a list cut to a bound starts somewhere else each round, so no
/// member waits for ever behind the lower ids.
pub fn rotated<T>(ids: &[T], start: usize) -> impl Iterator<Item = &T> {
    let at = if ids.is_empty() { 0 } else { start % ids.len() };
    ids[at..].iter().chain(&ids[..at])
}

/// How a node signs its own state and checks others' (see
/// [`Membership::set_auth`]).
#[derive(Clone)]
pub struct StateAuth {
    pub tls: Arc<crate::net::tls::NodeTls>,
    /// Refuse unsigned states (mutual TLS); otherwise only badly signed
    /// ones (the optional mode of a move from plaintext).
    pub required: bool,
}

/// What [`Membership::set_on_ring_change`] takes.
pub type RingChangeHook = Box<dyn Fn(&[NodeState]) + Send + Sync>;

impl Membership {
    /// Starts from this node's own state.
    pub fn new(
        me: NodeState,
        replication: Replication,
        clock: SharedClock,
        config: MembershipConfig,
    ) -> Self {
        let self_id = me.id;
        let own_pulse = std::sync::atomic::AtomicU64::new(me.heartbeat);
        let endpoint_since = Mutex::new(
            [(self_id, Endpoint::since(me.heartbeat))]
                .into_iter()
                .collect(),
        );
        let m = Self {
            own_pulse,
            endpoint_since,
            want_whole: Mutex::new(HashSet::default()),
            ring_memo: RwLock::new(None),
            self_id,
            clock: clock.clone(),
            placement: RwLock::new(Arc::new(Placement::new(
                Ring::new(config.tokens_per_weight),
                replication.clone(),
            ))),
            pending: RwLock::new(None),
            reads_use_pending: std::sync::atomic::AtomicBool::new(false),
            episode: Mutex::new(Episode::default()),
            heard: std::sync::atomic::AtomicBool::new(false),
            ring_changed_at: Mutex::new(clock.monotonic()),
            left_by_peers: std::sync::atomic::AtomicBool::new(false),
            config,
            states: RwLock::new([(self_id, me)].into_iter().collect()),
            detectors: Mutex::new(HashMap::default()),
            liveness_seen: Mutex::new(HashMap::default()),
            replication,
            on_ring_change: RwLock::new(None),
            rebuilding: Mutex::new(()),
            auth: RwLock::new(None),
            grants: Mutex::new(HashMap::default()),
        };
        m.rebuild_ring();
        m
    }

    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// Monotonic time now, by this node's clock.
    pub fn monotonic(&self) -> Duration {
        self.clock.monotonic()
    }

    pub fn replication(&self) -> &Replication {
        &self.replication
    }

    /// The current ring with its preference lists.
    pub fn current_ring(&self) -> Arc<Placement> {
        Arc::clone(&self.placement.read())
    }

    /// The ring after the movements in progress (joins and leaves), when
    /// there are any: writes go to its replicas too, and reads ask them.
    pub fn pending_ring(&self) -> Option<Arc<Placement>> {
        self.pending.read().clone()
    }

    /// The pending ring when reads must consult it too: while a movement
    /// hands over (see [`NodeStatus::JoinHandover`]), while more than one
    /// node has moved since the ring was last still, or before this node has
    /// seen a still ring at all. Otherwise every write still reaches a
    /// quorum of the current ring, so reads need only that one.
    pub fn pending_ring_for_reads(&self) -> Option<Arc<Placement>> {
        if self
            .reads_use_pending
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.pending_ring()
        } else {
            None
        }
    }

    /// The ring after the movements in progress, or the current one.
    pub fn ring_after_moves(&self) -> Arc<Placement> {
        self.pending_ring().unwrap_or_else(|| self.current_ring())
    }

    /// How long the ring has been as it is now.
    pub fn ring_still_for(&self) -> Duration {
        self.clock
            .monotonic()
            .saturating_sub(*self.ring_changed_at.lock())
    }

    /// True once a peer has reported this node as LEFT.
    pub fn left_by_peers(&self) -> bool {
        self.left_by_peers
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes the state of another node on its behalf (removing a dead
    /// node): the change outranks the state it was made from by one
    /// heartbeat. False when the node is unknown.
    pub fn update_other(&self, id: NodeId, f: impl FnOnce(&mut NodeState)) -> bool {
        {
            let mut states = self.states.write();
            let Some(s) = states.get_mut(&id) else {
                return false;
            };
            f(s);
            s.heartbeat = s.heartbeat.saturating_add(1);
            self.endpoint_since
                .lock()
                .insert(id, Endpoint::since(s.heartbeat));
            // An admin's grant for this status, else this node's own
            // signature (which peers take only without TLS).
            let grant = self.grants.lock().get(&id).and_then(|grants| {
                grants
                    .iter()
                    .find(|g| g.status == s.status)
                    .map(|g| g.signature.clone())
            });
            match grant {
                Some(sig) => s.signature = Some(sig),
                None => self.sign(s),
            }
        }
        self.rebuild_ring();
        true
    }

    /// Whether states must be signed (mutual TLS): a removal then needs an
    /// admin's grants.
    pub fn auth_required(&self) -> bool {
        self.auth.read().as_ref().is_some_and(|a| a.required)
    }

    /// Takes the grants with which this node will change node `id`'s
    /// status during its removal: each must be an admin's signature over
    /// that node's current generation and its status, and every status of
    /// [`REMOVAL_STATUSES`] must have one. Without TLS there is nothing to
    /// check and grants are not needed.
    pub fn set_removal_grants(&self, id: NodeId, grants: Vec<RemovalGrant>) -> Result<(), String> {
        let Some(auth) = self.auth.read().clone() else {
            return Ok(());
        };
        let generation = self
            .state(id)
            .map(|s| s.generation)
            .ok_or_else(|| format!("no node {}", crate::id::display(id)))?;
        for status in REMOVAL_STATUSES {
            let Some(g) = grants.iter().find(|g| g.status == status) else {
                return Err(format!(
                    "no admin grant for status {status:?}: removing a node needs an admin \
                     credential (ringkv remove --admin-cert ... --admin-key ...; see SECURITY.md)"
                ));
            };
            check_grant(&auth, &g.signature, id, generation, status)?;
        }
        self.grants.lock().insert(id, grants);
        Ok(())
    }

    /// The current ring.
    pub fn ring(&self) -> Ring {
        self.placement.read().ring().clone()
    }

    /// Every known state.
    pub fn states(&self) -> Vec<NodeState> {
        let mut v: Vec<NodeState> = self.states.read().values().cloned().collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Members known (this node included).
    pub fn member_count(&self) -> usize {
        self.states.read().len()
    }

    pub fn state(&self, id: NodeId) -> Option<NodeState> {
        self.states.read().get(&id).cloned()
    }

    /// The gossip version `(generation, heartbeat)` of node `id`'s state as
    /// known here (no copy of its whole state).
    pub fn version_of(&self, id: NodeId) -> Option<(u64, u64)> {
        self.states
            .read()
            .get(&id)
            .map(|s| (s.generation, s.heartbeat))
    }

    /// The load node `id` last gossiped (no copy of its whole state).
    pub fn load_of(&self, id: NodeId) -> Option<crate::net::message::Load> {
        self.states.read().get(&id).map(|s| s.load)
    }

    /// From now on, this node signs its own state with `auth`'s key, and
    /// takes a state about a node only signed by it (see `merge`).
    pub fn set_auth(&self, auth: StateAuth) {
        *self.auth.write() = Some(auth);
        if let Some(me) = self.states.write().get_mut(&self.self_id) {
            self.publish(me);
        }
    }

    /// Signs a state this node vouches for (its own, or one it changes on
    /// a removed node's behalf).
    fn sign(&self, s: &mut NodeState) {
        let Some(auth) = self.auth.read().clone() else {
            return;
        };
        s.signature = None;
        match s
            .signed_bytes()
            .map_err(|e| e.to_string())
            .and_then(|bytes| auth.tls.sign(&bytes).map_err(|e| e.to_string()))
        {
            Ok(sig) => s.signature = Some(sig),
            Err(e) => tracing::error!(error = %e, "cannot sign a node state; peers will refuse it"),
        }
    }

    /// Whether `s` may replace `old` (this node's current state of the
    /// same node), as far as signatures go: signed by the node itself, or
    /// (removal) granted by an admin, changing nothing but the status (to
    /// one of a removal's), heartbeat and load.
    fn check_signature(&self, s: &NodeState, old: Option<&NodeState>) -> Result<(), String> {
        let Some(auth) = self.auth.read().clone() else {
            return Ok(());
        };
        let Some(sig) = &s.signature else {
            return if auth.required {
                Err("unsigned".into())
            } else {
                Ok(())
            };
        };
        match auth.tls.signer(sig).map_err(|e| e.to_string())? {
            Signer::Node(signer) if signer == s.id => {
                let bytes = s.signed_bytes().map_err(|e| e.to_string())?;
                check_signature(sig, &bytes).map_err(|e| e.to_string())
            }
            Signer::Node(signer) => Err(format!(
                "signed by node {}, not by the node itself (only an admin's grant may change \
                 another node's status)",
                crate::id::display(signer)
            )),
            Signer::Admin => {
                // A grant moves the removal forward (a receiver may have
                // missed steps), or back to NORMAL on cancel, by a bounded
                // heartbeat step: replayed, it cannot turn a removal back
                // or push a node's heartbeat out of reach. A removal of an
                // earlier life of this node comes whole (`old` is `s`).
                let rank = |st: NodeStatus| match st {
                    NodeStatus::Normal => 0,
                    NodeStatus::Leaving => 1,
                    NodeStatus::LeaveHandover => 2,
                    _ => 3,
                };
                let moves = old.is_some_and(|o| {
                    o == s
                        || (s.heartbeat > o.heartbeat
                            && s.heartbeat - o.heartbeat <= GRANT_HEARTBEAT_STEP_MAX
                            && (rank(s.status) > rank(o.status)
                                || (s.status == NodeStatus::Normal
                                    && matches!(
                                        o.status,
                                        NodeStatus::Leaving | NodeStatus::LeaveHandover
                                    ))))
                });
                if !moves {
                    return Err(
                        "an admin grant moves a removal forward (or cancels it) one step at a time"
                            .into(),
                    );
                }
                let same_but_status = old.is_some_and(|o| {
                    let mut o = o.clone();
                    o.status = s.status;
                    o.heartbeat = s.heartbeat;
                    o.load = s.load;
                    o.signature = s.signature.clone();
                    o == *s
                });
                if !REMOVAL_STATUSES.contains(&s.status) || !same_but_status {
                    return Err(
                        "an admin grant changes only a node's status, to one of a removal's".into(),
                    );
                }
                check_grant(&auth, sig, s.id, s.generation, s.status)
            }
        }
    }

    /// The states of `incoming` whose signatures let them replace what this
    /// node holds (see `check_signature`); the others are refused and
    /// counted. Signatures are checked with no lock held.
    fn authenticated(&self, incoming: Vec<NodeState>) -> Vec<NodeState> {
        if self.auth.read().is_none() {
            return incoming;
        }
        let mut checks = Vec::with_capacity(incoming.len());
        {
            let states = self.states.read();
            let mine = states.get(&self.self_id).map_or(0, |me| me.generation);
            for s in incoming {
                if s.id == self.self_id {
                    // Only a LEFT of ours matters (see `merge`): by us, or
                    // a removal of an earlier life (made while we were
                    // down, before this start).
                    let check = s.status == NodeStatus::Left;
                    let earlier = s.generation < mine;
                    checks.push((s, None, earlier, check));
                    continue;
                }
                let old = states.get(&s.id).cloned();
                let check = old.as_ref().is_none_or(|o| s.freshness() > o.freshness());
                checks.push((s, old, false, check));
            }
        }
        let mut passed = Vec::with_capacity(checks.len());
        for (s, old, earlier, check) in checks {
            if !check {
                passed.push(s);
                continue;
            }
            // A LEFT of ours granted by an admin is taken only for an
            // earlier life (a removal made while we were down), and
            // changes it whole.
            let old = match (s.id == self.self_id, earlier) {
                (true, true) => Some(s.clone()),
                (true, false) => None,
                (false, _) => old,
            };
            match self.check_signature(&s, old.as_ref()) {
                Ok(()) => passed.push(s),
                Err(why) => {
                    metrics::counter!("ringkv_gossip_states_refused_total").increment(1);
                    tracing::warn!(
                        node = %crate::id::display(s.id),
                        %why,
                        "refused a node state"
                    );
                }
            }
        }
        passed
    }

    /// The status of node `id`, if known (no copy of its state).
    pub fn status(&self, id: NodeId) -> Option<NodeStatus> {
        self.states.read().get(&id).map(|s| s.status)
    }

    /// Changes this node's own state (tokens, status, load) and bumps its
    /// heartbeat so the change spreads.
    pub fn update_self(&self, f: impl FnOnce(&mut NodeState)) {
        {
            let mut states = self.states.write();
            if let Some(me) = states.get_mut(&self.self_id) {
                f(me);
                self.publish(me);
                self.endpoint_since
                    .lock()
                    .insert(self.self_id, Endpoint::since(me.heartbeat));
            }
        }
        self.rebuild_ring();
    }

    /// Raises this node's pulse and puts it in its state, signed anew: a
    /// new version of the state, which gossip spreads whole.
    fn publish(&self, me: &mut NodeState) {
        let pulse = self
            .own_pulse
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        me.heartbeat = pulse.max(me.heartbeat.saturating_add(1));
        self.own_pulse
            .fetch_max(me.heartbeat, std::sync::atomic::Ordering::Relaxed);
        let cert = me.signature.as_ref().map(|sig| sig.cert.clone());
        self.sign(me);
        // A new certificate (a reload) is a new endpoint: refreshes would
        // be checked against the old one.
        if me.signature.as_ref().map(|sig| &sig.cert) != cert.as_ref() {
            self.endpoint_since
                .lock()
                .insert(self.self_id, Endpoint::since(me.heartbeat));
        }
    }

    /// Replaces this node's load figures and publishes its state.
    pub fn set_load(&self, load: crate::net::message::Load) {
        if let Some(me) = self.states.write().get_mut(&self.self_id) {
            me.load = load;
            self.publish(me);
        }
    }

    /// Publishes this node's state with a new pulse (see
    /// [`PUBLISH_ROUNDS`]).
    pub fn tick(&self) {
        if let Some(me) = self.states.write().get_mut(&self.self_id) {
            self.publish(me);
        }
    }

    /// One gossip round's own bump between publications: the pulse alone,
    /// which digests carry.
    pub fn beat(&self) {
        self.own_pulse
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The newest `(generation, pulse)` of node `id` known here: its
    /// state's, or a later pulse heard in a digest.
    pub fn pulse_of(&self, id: NodeId) -> Option<(u64, u64)> {
        let states = self.states.read();
        let s = states.get(&id)?;
        Some(self.pulse_in(s, &self.detectors.lock()))
    }

    /// `s`'s `(generation, pulse)` with the detectors' pulses.
    fn pulse_in(&self, s: &NodeState, detectors: &HashMap<NodeId, PhiDetector>) -> (u64, u64) {
        if s.id == self.self_id {
            let own = self.own_pulse.load(std::sync::atomic::Ordering::Relaxed);
            return (s.generation, own.max(s.heartbeat));
        }
        let seen = detectors.get(&s.id).map_or((0, 0), PhiDetector::seen);
        if seen.0 == s.generation {
            (s.generation, seen.1.max(s.heartbeat))
        } else {
            s.freshness()
        }
    }

    /// This node's digest of every member it knows (see "Digest gossip"
    /// in [`crate::net::message`]): positional, or explicit.
    pub fn digest(&self, explicit: bool) -> GossipDigest {
        let states = self.states.read();
        let detectors = self.detectors.lock();
        let mut members: Vec<&NodeState> = states.values().collect();
        members.sort_unstable_by_key(|s| s.id);
        let hash = members_hash(members.iter().map(|s| (s.id, s.generation)));
        // A member whose refresh could not be rebuilt here shows version 0
        // (and no pulse): peers send its state whole.
        let want_whole = self.want_whole.lock();
        let pulses = members.iter().map(|s| {
            if want_whole.contains(&s.id) {
                (*s, 0, 0)
            } else {
                (*s, s.heartbeat, self.pulse_in(s, &detectors).1)
            }
        });
        let entries = if explicit {
            DigestEntries::Explicit(
                pulses
                    .map(|(s, version, pulse)| DigestEntry {
                        id: s.id,
                        generation: s.generation,
                        version,
                        ahead: pulse - version,
                    })
                    .collect(),
            )
        } else {
            DigestEntries::Positional(
                pulses
                    .map(|(_, version, pulse)| (version, pulse - version))
                    .collect(),
            )
        };
        GossipDigest {
            count: members.len() as u32,
            members: hash,
            entries,
        }
    }

    /// Reads a peer's digest: takes the pulses it carries (each at most
    /// [`PULSE_AHEAD_MAX`] past the member's state known here) and says
    /// which states differ. `None` when the digest is positional and names
    /// another member list than this node's (or is malformed): the peer
    /// must send it explicit.
    pub fn take_digest(&self, digest: &GossipDigest) -> Option<DigestDiff> {
        if digest.entries.len() > MEMBERS_MAX || digest.count as usize != digest.entries.len() {
            metrics::counter!("ringkv_gossip_states_refused_total").increment(1);
            tracing::warn!(
                entries = digest.entries.len(),
                count = digest.count,
                "refused a gossip digest: too many entries, or not as many as it says"
            );
            return None;
        }
        let now = self.clock.monotonic();
        let pulse_trust = Duration::from_millis(
            self.config
                .gossip_interval_ms
                .saturating_mul(PULSE_AHEAD_MAX),
        );
        let mut diff = DigestDiff::default();
        let states = self.states.read();
        let mut detectors = self.detectors.lock();
        let mut mine: Vec<&NodeState> = states.values().collect();
        mine.sort_unstable_by_key(|s| s.id);
        // (their entry, my state) pairs of the members both know.
        let mut pairs: Vec<(DigestEntry, &NodeState)> = Vec::with_capacity(mine.len());
        match &digest.entries {
            DigestEntries::Positional(entries) => {
                if entries.len() != mine.len()
                    || digest.members != members_hash(mine.iter().map(|s| (s.id, s.generation)))
                {
                    return None;
                }
                for (&(version, ahead), s) in entries.iter().zip(&mine) {
                    let entry = DigestEntry {
                        id: s.id,
                        generation: s.generation,
                        version,
                        ahead,
                    };
                    pairs.push((entry, *s));
                }
            }
            DigestEntries::Explicit(entries) => {
                if entries.windows(2).any(|w| w[0].id >= w[1].id) {
                    tracing::warn!("refused a gossip digest: ids out of order");
                    return None;
                }
                let (mut i, mut j) = (0, 0);
                while i < entries.len() || j < mine.len() {
                    match (entries.get(i), mine.get(j)) {
                        (Some(e), Some(s)) if e.id == s.id => {
                            pairs.push((*e, *s));
                            i += 1;
                            j += 1;
                        }
                        (Some(e), s) if s.is_none_or(|s| e.id < s.id) => {
                            diff.newer_there.push(e.id);
                            i += 1;
                        }
                        (_, Some(s)) => {
                            diff.newer_here.push(s.id);
                            j += 1;
                        }
                        (_, None) => break,
                    }
                }
            }
        }
        for (e, s) in pairs {
            let theirs = (e.generation, e.version);
            let here = s.freshness();
            if theirs > here {
                diff.newer_there.push(s.id);
            } else if theirs < here {
                diff.newer_here.push(s.id);
                diff.theirs.insert(s.id, theirs);
            }
            // A pulse is news of the member itself, for the detector:
            // only of the life known here, and not of a node that left.
            if s.id == self.self_id || e.generation != s.generation || s.status == NodeStatus::Left
            {
                continue;
            }
            let pulse = e
                .version
                .saturating_add(e.ahead)
                .min(s.heartbeat.saturating_add(PULSE_AHEAD_MAX));
            detectors
                .entry(s.id)
                .or_insert_with(|| {
                    PhiDetector::new(
                        self.config.intervals_max,
                        self.config.gossip_interval_ms as f64,
                    )
                })
                .observe_pulse((s.generation, pulse), now, pulse_trust);
        }
        diff.newer_here.sort_unstable();
        diff.newer_there.sort_unstable();
        diff.newer_there.dedup();
        Some(diff)
    }

    /// What to send a peer of `ids` (newer here than the peer's versions
    /// `theirs`): a refresh where the peer holds the member's current
    /// endpoint and the member signed its state itself, the whole state
    /// otherwise; at most [`GOSSIP_STATES_PER_MESSAGE_MAX`] in all.
    pub fn updates(
        &self,
        ids: &[NodeId],
        theirs: &HashMap<NodeId, (u64, u64)>,
    ) -> (Vec<NodeState>, Vec<StateRefresh>) {
        let states = self.states.read();
        let mut since = self.endpoint_since.lock();
        let mut whole = Vec::new();
        let mut refreshes = Vec::new();
        for id in rotated(ids, self.rotation()).take(GOSSIP_STATES_PER_MESSAGE_MAX) {
            let Some(s) = states.get(id) else {
                continue;
            };
            let by_itself = s.signature.as_ref().is_none_or(|sig| {
                crate::net::tls::cert_node_id(&sig.cert).is_ok_and(|signer| signer == s.id)
            });
            let refreshable = by_itself
                && theirs.get(id).is_some_and(|&(generation, version)| {
                    generation == s.generation
                        && version > 0
                        && since.get(id).is_some_and(|e| version >= e.since)
                });
            if refreshable {
                refreshes.push(StateRefresh {
                    id: s.id,
                    generation: s.generation,
                    heartbeat: s.heartbeat,
                    load: s.load,
                    endpoint: Endpoint::hash_of(&mut since, s),
                    signature: s
                        .signature
                        .as_ref()
                        .map(|sig| (sig.scheme, sig.sig.clone())),
                });
            } else {
                whole.push(s.clone());
            }
        }
        (whole, refreshes)
    }

    /// Folds in a peer's refreshes: each rebuilt from the state held here
    /// (same generation, same endpoint, the certificate of its signature)
    /// and merged as any state; those that cannot be rebuilt are shown at
    /// version 0 in this node's digests, so peers send them whole. True
    /// when anything changed.
    pub fn take_refreshes(&self, refreshes: Vec<StateRefresh>) -> bool {
        let mut rebuilt = Vec::with_capacity(refreshes.len());
        {
            let states = self.states.read();
            let mut want = self.want_whole.lock();
            let mut since = self.endpoint_since.lock();
            for r in refreshes.into_iter().take(GOSSIP_STATES_PER_MESSAGE_MAX) {
                if r.id == self.self_id {
                    continue;
                }
                // An unknown member comes whole with the explicit digest its
                // new member list brings.
                let Some(old) = states.get(&r.id) else {
                    continue;
                };
                if (r.generation, r.heartbeat) <= old.freshness() || old.status == NodeStatus::Left
                {
                    continue;
                }
                if r.generation != old.generation
                    || Endpoint::hash_of(&mut since, old) != r.endpoint
                {
                    want.insert(r.id);
                    continue;
                }
                let signature = match (r.signature, &old.signature) {
                    (None, _) => None,
                    (Some((scheme, sig)), Some(held))
                        if crate::net::tls::cert_node_id(&held.cert)
                            .is_ok_and(|signer| signer == r.id) =>
                    {
                        Some(StateSignature {
                            cert: held.cert.clone(),
                            scheme,
                            sig,
                        })
                    }
                    (Some(_), _) => {
                        want.insert(r.id);
                        continue;
                    }
                };
                rebuilt.push(NodeState {
                    heartbeat: r.heartbeat,
                    load: r.load,
                    signature,
                    ..old.clone()
                });
            }
        }
        if rebuilt.is_empty() {
            return false;
        }
        let versions: Vec<(NodeId, u64)> = rebuilt.iter().map(|s| (s.id, s.heartbeat)).collect();
        let changed = self.merge(rebuilt);
        // A rebuilt state refused (its signature does not check against
        // the state held: an endpoint that changed meanwhile) is asked for
        // whole.
        let states = self.states.read();
        let mut want = self.want_whole.lock();
        for (id, heartbeat) in versions {
            if states.get(&id).is_some_and(|s| s.heartbeat < heartbeat) {
                want.insert(id);
            }
        }
        changed
    }

    /// `(id, generation, version)` of each of `ids` as held here, as this
    /// node's digest shows them (`(id, 0, 0)` for one unknown).
    pub fn held(&self, ids: &[NodeId]) -> Vec<(NodeId, u64, u64)> {
        let states = self.states.read();
        let want_whole = self.want_whole.lock();
        ids.iter()
            .map(|&id| match states.get(&id) {
                Some(s) if !want_whole.contains(&id) => (id, s.generation, s.heartbeat),
                Some(s) => (id, s.generation, 0),
                None => (id, 0, 0),
            })
            .collect()
    }

    /// Where this round's bounded lists start (see [`rotated`]): a bound's
    /// worth further each round (the pulse moves one a round), so a list
    /// cut to the bound is sent whole over consecutive rounds, and members
    /// refused again and again at its front hold back no others.
    pub fn rotation(&self) -> usize {
        let pulse = self.own_pulse.load(std::sync::atomic::Ordering::Relaxed) as usize;
        pulse.wrapping_mul(GOSSIP_STATES_PER_MESSAGE_MAX)
    }

    /// The states of `ids` known here, at most
    /// [`GOSSIP_STATES_PER_MESSAGE_MAX`].
    pub fn states_of(&self, ids: &[NodeId]) -> Vec<NodeState> {
        let states = self.states.read();
        ids.iter()
            .filter_map(|id| states.get(id).cloned())
            .take(GOSSIP_STATES_PER_MESSAGE_MAX)
            .collect()
    }

    /// Folds in states heard from a peer; returns true if anything changed.
    pub fn merge(&self, incoming: Vec<NodeState>) -> bool {
        if incoming.iter().any(|s| s.id != self.self_id) {
            self.heard.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let incoming = self.authenticated(incoming);
        let now = self.clock.monotonic();
        let mut changed = false;
        let mut ring_changed = false;
        // An address, rack or data center changed (a restart on other
        // ports): kept on disk too, so a restart finds its peers.
        let mut endpoint_changed = false;
        {
            let mut states = self.states.write();
            let mut detectors = self.detectors.lock();
            for s in incoming {
                if s.id == self.self_id {
                    // Nobody knows us better than we do; a peer holding a
                    // newer generation of us than ours would mean a clock
                    // jump: keep ours, gossip will override theirs. Unless
                    // the cluster removed us: that is final.
                    if s.status == NodeStatus::Left {
                        self.left_by_peers
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    continue;
                }
                // Refused before it costs a ring rebuild or reaches PEERS.
                let refused = check_state(&s, self.config.tokens_per_weight)
                    .err()
                    .or_else(|| {
                        (!states.contains_key(&s.id) && states.len() >= MEMBERS_MAX)
                            .then(|| format!("more than {MEMBERS_MAX} members"))
                    });
                if let Some(why) = refused {
                    metrics::counter!("ringkv_gossip_states_refused_total").increment(1);
                    tracing::warn!(
                        node = %crate::id::display(s.id),
                        %why,
                        "refused a node state"
                    );
                    continue;
                }
                let newer = match states.get(&s.id) {
                    None => true,
                    // LEFT is final for a node id: a removed node that comes
                    // back (a new generation) is not let in again.
                    Some(old) if old.status == NodeStatus::Left => false,
                    Some(old) => s.freshness() > old.freshness(),
                };
                if !newer {
                    // The state held, whole: no longer wanted so.
                    if states.get(&s.id) == Some(&s) {
                        self.want_whole.lock().remove(&s.id);
                    }
                    continue;
                }
                let old = states.get(&s.id);
                if old.is_none_or(|o| o.tokens != s.tokens || o.status != s.status) {
                    ring_changed = true;
                }
                match old {
                    // The endpoint known since the state it replaces, at
                    // least.
                    Some(o) if same_endpoint(o, &s) => {
                        self.endpoint_since
                            .lock()
                            .entry(s.id)
                            .or_insert(Endpoint::since(o.heartbeat));
                    }
                    _ => {
                        self.endpoint_since
                            .lock()
                            .insert(s.id, Endpoint::since(s.heartbeat));
                        endpoint_changed = true;
                    }
                }
                let detector = detectors.entry(s.id).or_insert_with(|| {
                    PhiDetector::new(
                        self.config.intervals_max,
                        self.config.gossip_interval_ms as f64,
                    )
                });
                // A change another node made on a dead node's behalf (a
                // removal) is no sign of life.
                let by_itself = s.signature.as_ref().is_none_or(|sig| {
                    crate::net::tls::cert_node_id(&sig.cert).is_ok_and(|signer| signer == s.id)
                });
                if by_itself {
                    detector.observe_state(s.freshness(), now);
                }
                if let Some(old) = old
                    && old.status != s.status
                {
                    tracing::info!(
                        node = %crate::id::display(s.id),
                        from = ?old.status,
                        to = ?s.status,
                        "node status changed"
                    );
                } else if old.is_none() {
                    tracing::info!(
                        node = %crate::id::display(s.id),
                        status = ?s.status,
                        addr = %s.cluster_addr,
                        "node joined the view"
                    );
                }
                self.want_whole.lock().remove(&s.id);
                states.insert(s.id, s);
                changed = true;
            }
        }
        if ring_changed {
            self.rebuild_ring();
        } else if endpoint_changed {
            self.tell_hook();
        }
        changed
    }

    /// Installs the hook told of every change of the ring or of a node's
    /// endpoint.
    pub fn set_on_ring_change(&self, hook: RingChangeHook) {
        *self.on_ring_change.write() = Some(hook);
    }

    /// Puts back the states of peers known before a restart. They shape the
    /// ring at once, but count as down until they are heard from again: a
    /// restarted node never believes it is alone and never serves from a
    /// ring that lacks its peers (which would let it answer a quorum by
    /// itself). Newer states from gossip replace them as usual.
    pub fn restore(&self, saved: Vec<NodeState>) {
        {
            let mut states = self.states.write();
            for s in saved {
                if s.id == self.self_id || states.contains_key(&s.id) {
                    continue;
                }
                if let Err(why) = check_state(&s, self.config.tokens_per_weight) {
                    tracing::warn!(node = %crate::id::display(s.id), %why, "dropped a saved node state");
                    continue;
                }
                self.endpoint_since
                    .lock()
                    .insert(s.id, Endpoint::since(s.heartbeat));
                states.insert(s.id, s);
            }
        }
        self.rebuild_ring();
    }

    fn rebuild_ring(&self) {
        self.rebuild_placement();
        self.tell_hook();
    }

    /// Gives the hook of [`Membership::set_on_ring_change`] every state.
    fn tell_hook(&self) {
        if let Some(hook) = self.on_ring_change.read().as_ref() {
            hook(&self.states());
        }
    }

    fn rebuild_placement(&self) {
        let _one = self.rebuilding.lock();
        let states = self.states.read().clone();
        // The rings before this change: each new one keeps what the change
        // did not reach (`Placement::updated`).
        let was = self.placement.read().clone();
        let was_pending = self
            .pending
            .read()
            .clone()
            .unwrap_or_else(|| Arc::clone(&was));
        let current =
            self.placement_of(&states, &was, |s| s == NodeStatus::Normal || s.is_leaving());
        let moving = |s: &NodeState| {
            s.status.is_leaving() || (s.status.is_joining() && !s.tokens.is_empty())
        };
        let pending = states.values().any(moving).then(|| {
            self.placement_of(&states, &was_pending, |s| {
                s == NodeStatus::Normal || s.is_joining()
            })
        });
        // Reads ask both rings during a hand-over, and for a whole episode
        // of movement (from a pending ring appearing to none left) in which
        // more than one node moved: once one of them is done, the current
        // ring is an intermediate one that writes were never required to
        // reach a quorum of. A node that has not seen a still ring since it
        // started does not know the episode's history: both rings too.
        let handover = {
            let mut episode = self.episode.lock();
            if pending.is_none() {
                episode.movers.clear();
                // Only a ring heard from peers counts: not the one this
                // node starts with or restores from disk.
                if self.heard.load(std::sync::atomic::Ordering::Relaxed) {
                    episode.seen_still = true;
                }
                false
            } else {
                episode
                    .movers
                    .extend(states.values().filter(|s| moving(s)).map(|s| s.id));
                !episode.seen_still
                    || episode.movers.len() > 1
                    || states.values().any(|s| moving(s) && s.status.is_handover())
            }
        };
        *self.placement.write() = current;
        *self.pending.write() = pending;
        self.reads_use_pending
            .store(handover, std::sync::atomic::Ordering::Relaxed);
        *self.ring_changed_at.lock() = self.clock.monotonic();
    }

    /// Shares rings with the other nodes that hold `memo` (see
    /// [`RingMemo`]; every one must have this node's replication).
    pub fn set_ring_memo(&self, memo: Arc<RingMemo>) {
        *self.ring_memo.write() = Some(memo);
    }

    /// The placement of the nodes whose status passes `include`: from the
    /// memo when one is set and holds it, else updated from `base`.
    fn placement_of(
        &self,
        states: &HashMap<NodeId, NodeState>,
        base: &Placement,
        include: impl Fn(NodeStatus) -> bool + Copy,
    ) -> Arc<Placement> {
        let build = || {
            Arc::new(Placement::updated(
                base,
                self.ring_of(states, include),
                self.replication.clone(),
            ))
        };
        let Some(memo) = self.ring_memo.read().clone() else {
            return build();
        };
        let mut ids: Vec<NodeId> = states.keys().copied().collect();
        ids.sort_unstable();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (dc, n) in &self.replication.per_dc {
            h.update(dc.as_bytes());
            h.update(&[0]);
            h.update(&(*n as u64).to_le_bytes());
        }
        for id in ids {
            let s = &states[&id];
            if !include(s.status) || s.tokens.is_empty() {
                continue;
            }
            h.update(&id.to_le_bytes());
            h.update(s.dc.as_bytes());
            h.update(&[0]);
            h.update(s.rack.as_bytes());
            h.update(&[0]);
            h.update(&s.weight.to_le_bytes());
            h.update(&(s.tokens.len() as u64).to_le_bytes());
            for t in &s.tokens {
                h.update(&t.to_le_bytes());
            }
        }
        let key = h.digest128();
        if let Some((_, p)) = memo.entries.lock().iter().find(|(k, _)| *k == key) {
            memo.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Arc::clone(p);
        }
        let placement = build();
        memo.builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut entries = memo.entries.lock();
        if entries.len() >= RING_MEMO_MAX {
            entries.pop_front();
        }
        entries.push_back((key, Arc::clone(&placement)));
        placement
    }

    /// The ring of the nodes whose status passes `include`.
    fn ring_of(
        &self,
        states: &HashMap<NodeId, NodeState>,
        include: impl Fn(NodeStatus) -> bool,
    ) -> Ring {
        let mut ids: Vec<NodeId> = states.keys().copied().collect();
        ids.sort_unstable();
        let mut ring = Ring::new(self.config.tokens_per_weight);
        for id in ids {
            let s = &states[&id];
            if !include(s.status) || s.tokens.is_empty() {
                continue;
            }
            let node = RingNode {
                id,
                dc: s.dc.clone(),
                rack: s.rack.clone(),
                weight: s.weight.max(1),
            };
            // Lower ids insert first and keep a contested token: every node
            // builds the same ring from the same states.
            let _ = ring.insert_with_tokens(node, &s.tokens);
        }
        ring
    }

    /// True when `id` is believed alive (this node always is).
    pub fn is_alive(&self, id: NodeId) -> bool {
        if id == self.self_id {
            return true;
        }
        let now = self.clock.monotonic();
        self.detectors
            .lock()
            .get(&id)
            .is_some_and(|d| d.phi(now) < self.config.phi_convict)
    }

    /// `from` announced it stops with its state at `(generation,
    /// heartbeat)`: it is down from now until a newer state of it arrives.
    /// A stale announcement (of an earlier generation) changes nothing.
    pub fn peer_stopped(&self, from: NodeId, generation: u64, heartbeat: u64) {
        let Some((gen_known, hb_known)) = self.pulse_of(from) else {
            return;
        };
        if from == self.self_id || generation != gen_known {
            return;
        }
        // A goodbye names the sender's last heartbeat, at most a few rounds
        // past the one known here: a forged one cannot keep it down for
        // longer than those rounds.
        let last = heartbeat.clamp(
            hb_known,
            hb_known.saturating_add(GOODBYE_HEARTBEAT_AHEAD_MAX),
        );
        if let Some(d) = self.detectors.lock().get_mut(&from) {
            d.stopped((generation, last));
        }
        self.note_liveness();
    }

    /// Logs each peer seen going down (with its phi and how long it has
    /// been silent) or coming back up since the last call. Called every
    /// gossip round.
    pub fn note_liveness(&self) {
        let ids: Vec<NodeId> = self
            .states
            .read()
            .values()
            .filter(|s| s.id != self.self_id && s.status != NodeStatus::Left)
            .map(|s| s.id)
            .collect();
        let mut seen = self.liveness_seen.lock();
        for id in ids {
            let alive = self.is_alive(id);
            let before = seen.insert(id, alive);
            match (before, alive) {
                (Some(true), false) => tracing::warn!(
                    peer = %crate::id::display(id),
                    phi = format_args!("{:.1}", self.phi(id)),
                    silent_ms = self.silent_for(id).map_or(0, |d| d.as_millis() as u64),
                    "peer down"
                ),
                (Some(false), true) => tracing::info!(
                    peer = %crate::id::display(id),
                    phi = format_args!("{:.1}", self.phi(id)),
                    "peer up"
                ),
                _ => {}
            }
        }
    }

    /// How long since a heartbeat of `id` was last seen (`None`: never
    /// heard from since this node started).
    pub fn silent_for(&self, id: NodeId) -> Option<Duration> {
        let now = self.clock.monotonic();
        self.detectors
            .lock()
            .get(&id)
            .and_then(PhiDetector::last_heartbeat)
            .map(|last| now.saturating_sub(last))
    }

    /// The current phi of a peer (for status output).
    pub fn phi(&self, id: NodeId) -> f64 {
        if id == self.self_id {
            return 0.0;
        }
        let now = self.clock.monotonic();
        self.detectors
            .lock()
            .get(&id)
            .map_or(f64::INFINITY, |d| d.phi(now))
    }

    /// How to reach a node.
    pub fn peer(&self, id: NodeId) -> Option<Peer> {
        self.states.read().get(&id).map(|s| Peer {
            id,
            addr: s.cluster_addr.clone(),
        })
    }

    pub fn dc_of(&self, id: NodeId) -> Option<String> {
        self.states.read().get(&id).map(|s| s.dc.clone())
    }

    /// The preference list of a token.
    pub fn preference_list(&self, token: Token) -> Vec<NodeId> {
        self.placement.read().preference_list(token).to_vec()
    }

    /// A random peer to gossip with: mostly live ones, sometimes a down one
    /// (so a recovered node is noticed).
    pub fn gossip_target(&self, draw: u64) -> Option<Peer> {
        let states = self.states.read();
        let mut live = Vec::new();
        let mut down = Vec::new();
        let mut ids: Vec<NodeId> = states
            .keys()
            .copied()
            .filter(|&id| id != self.self_id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            if states[&id].status == NodeStatus::Left {
                continue;
            }
            if self.is_alive(id) {
                live.push(id);
            } else {
                down.push(id);
            }
        }
        let pick_down = !down.is_empty() && (live.is_empty() || draw.is_multiple_of(4));
        let pool = if pick_down { &down } else { &live };
        if pool.is_empty() {
            return None;
        }
        let id = pool[(draw / 4) as usize % pool.len()];
        states.get(&id).map(|s| Peer {
            id,
            addr: s.cluster_addr.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
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
}
