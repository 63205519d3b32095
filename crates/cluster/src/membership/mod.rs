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
mod digests;
pub mod gossip;
mod rings;
#[cfg(test)]
mod signed_tests;
mod signing;
mod validate;

use parking_lot::{Mutex, RwLock};

pub use detector::PhiDetector;
pub use digests::DigestDiff;
use ringkv_env::SharedClock;
pub use rings::{RING_MEMO_MAX, RingMemo};
pub use validate::{DEPARTED_MAX, KNOWN_MAX, MEMBERS_MAX, WEIGHT_MAX, check_addr, check_state};

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
    liveness_seen: Mutex<HashMap<NodeId, Liveness>>,
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
    /// States and refreshes received by gossip, and those that were no
    /// news (see [`Membership::gossip_received`]).
    received: GossipReceived,
}

/// Counts of the states and refreshes a node received by gossip: how many,
/// and how many it already held as new or newer (sent in vain).
#[derive(Debug, Default)]
struct GossipReceived {
    states: std::sync::atomic::AtomicU64,
    states_stale: std::sync::atomic::AtomicU64,
    refreshes: std::sync::atomic::AtomicU64,
    refreshes_stale: std::sync::atomic::AtomicU64,
}

/// What [`Membership::gossip_received`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceivedCounts {
    pub states: u64,
    pub states_stale: u64,
    pub refreshes: u64,
    pub refreshes_stale: u64,
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

/// Gossip rounds between two publications of a node's state (with its
/// load and a fresh signature): between them only its pulse advances, and
/// travels in digests. Each node publishes at its own phase of the
/// interval (by its id), so nodes started together do not all publish in
/// one round.
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

/// What [`Membership::note_liveness`] last saw of a peer, and how many
/// times it saw it go down.
#[derive(Debug, Clone, Copy, Default)]
struct Liveness {
    alive: bool,
    downs: u32,
}

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
            received: GossipReceived::default(),
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
                        (!states.contains_key(&s.id))
                            .then(|| validate::room_for(&s, states.values()).err())
                            .flatten()
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
                if let Err(why) = validate::room_for(&s, states.values()) {
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
            let before = seen.get(&id).map(|l| l.alive);
            let noted = seen.entry(id).or_default();
            noted.alive = alive;
            match (before, alive) {
                (Some(true), false) => {
                    noted.downs = noted.downs.saturating_add(1);
                    tracing::warn!(
                    peer = %crate::id::display(id),
                    phi = format_args!("{:.1}", self.phi(id)),
                    silent_ms = self.silent_for(id).map_or(0, |d| d.as_millis() as u64),
                    "peer down"
                    )
                }
                (Some(false), true) => tracing::info!(
                    peer = %crate::id::display(id),
                    phi = format_args!("{:.1}", self.phi(id)),
                    "peer up"
                ),
                _ => {}
            }
        }
    }

    /// The peers this node has seen go from up to down, and how many times
    /// (each gossip round's [`Membership::note_liveness`] looks): what the
    /// scale simulation counts false suspicions by, every round rather
    /// than at its samples.
    pub fn downs_seen(&self) -> Vec<(NodeId, u32)> {
        (self.liveness_seen.lock().iter())
            .filter(|(_, l)| l.downs > 0)
            .map(|(&id, l)| (id, l.downs))
            .collect()
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
mod tests;
