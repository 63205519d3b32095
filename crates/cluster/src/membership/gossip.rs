//! Gossip: the rounds that spread node states, and the pushes that tell
//! every peer of a change at once.
//!
//! Every `gossip_interval_ms` a node raises its pulse and does a push-pull
//! exchange with one random live peer (sometimes a down one, so recoveries
//! are seen; now and then a seed: with probability seeds / members, at most
//! one round in ten, so that in a large cluster the seeds carry no more than
//! any node). Every [`PUBLISH_ROUNDS`]th round, at a phase of its own (by
//! its id), it first publishes its state anew, with its load figures.
//!
//! An exchange is three messages (as Cassandra's SYN, ACK, ACK2; formats
//! in [`crate::net::message`]): the initiator's digest of every member, a
//! few bytes each; the peer's digest, with the states it holds newer; then
//! the states the peer's digest shows it lacks, with the ids the initiator
//! still wants, answered with those. Pulses travel in the digests and feed the failure
//! detectors; whole states travel only when a member publishes a new one.
//! In a steady cluster an exchange is two digests. A peer that answers a
//! digest with an error (a node of the version before, which cannot decode
//! one) is gossiped with the old way, every state whole, and tried with a
//! digest again after [`OLD_PEER_RETRY`] (or at once when it sends a
//! digest: it was upgraded). For [`OLD_PEER_MEMORY`] after an old peer
//! last showed itself (that error, or whole states it sent), a node
//! publishes its state every round, so that old nodes, which see
//! heartbeats only in states, see its heartbeat every round. Receiving
//! whole states never makes a node send whole states: an upgraded node
//! that a peer still took for old answers that peer's whole states and
//! sends it digests, which end the mistake.

use std::sync::Arc;
use std::time::Duration;

use ringkv_env::{Rng, SeededRng};

use parking_lot::Mutex;

use super::{GOSSIP_STATES_PER_MESSAGE_MAX, Membership, PUBLISH_ROUNDS, rotated};
use crate::det::HashMap;
use crate::id::NodeId;
use crate::net::message::{
    GossipDigest, Load, NodeState, NodeStatus, Request, Response, StateRefresh,
};
use crate::net::{Peer, Transport};

/// How long a peer that answered a digest with an error (a node of the
/// version before) is gossiped with the old way before a digest is tried
/// again (the cost of a try is one error answer).
pub const OLD_PEER_RETRY: Duration = Duration::from_secs(300);
/// How long after a peer of the version before last showed itself a node
/// publishes its state every round. Long: in a large cluster a node may go
/// many minutes without an exchange with the one old node left, and old
/// nodes must see its heartbeat every round meanwhile.
pub const OLD_PEER_MEMORY: Duration = Duration::from_secs(3_600);
/// A round goes to a seed with probability seeds / members, and at most
/// one in this many.
const SEED_ODDS_MIN: usize = 10;
/// Addresses of such peers remembered at most.
const OLD_PEERS_MAX: usize = 1_024;
/// Attempts to reach each peer when pushing a change.
const PUSH_ATTEMPTS: usize = 3;
/// How long a stopping node waits for its peers to take its goodbye.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_millis(500);

/// Measures this node's load for its gossiped state.
pub type LoadSource = Arc<dyn Fn() -> Load + Send + Sync>;

/// A node's gossip.
#[derive(Clone)]
pub struct Gossip {
    membership: Arc<Membership>,
    transport: Arc<dyn Transport>,
    load: LoadSource,
    /// Peers of the version before, by address: when each answered a
    /// digest with an error.
    old_peers: Arc<Mutex<HashMap<String, Duration>>>,
    /// When a peer of the version before last showed itself (an error
    /// answer to a digest, or whole states it sent).
    old_seen: Arc<Mutex<Option<Duration>>>,
}

impl Gossip {
    pub fn new(
        membership: Arc<Membership>,
        transport: Arc<dyn Transport>,
        load: LoadSource,
    ) -> Self {
        Self {
            membership,
            transport,
            load,
            old_peers: Arc::default(),
            old_seen: Arc::default(),
        }
    }

    /// True while `addr` is gossiped with whole states: it answered a
    /// digest with an error less than [`OLD_PEER_RETRY`] ago.
    fn speaks_old(&self, addr: &str) -> bool {
        let now = self.membership.monotonic();
        let mut old = self.old_peers.lock();
        old.retain(|_, since| now.saturating_sub(*since) < OLD_PEER_RETRY);
        old.contains_key(addr)
    }

    /// True while a peer of the version before showed itself less than
    /// [`OLD_PEER_MEMORY`] ago.
    fn knows_old_peers(&self) -> bool {
        let now = self.membership.monotonic();
        self.old_seen
            .lock()
            .is_some_and(|at| now.saturating_sub(at) < OLD_PEER_MEMORY)
    }

    /// A peer of the version before showed itself (whole states it sent).
    fn saw_old(&self) {
        *self.old_seen.lock() = Some(self.membership.monotonic());
    }

    /// `addr` answered a digest with an error: gossiped with whole states
    /// for [`OLD_PEER_RETRY`].
    fn remember_old(&self, addr: &str) {
        self.saw_old();
        let mut old = self.old_peers.lock();
        if old.len() < OLD_PEERS_MAX || old.contains_key(addr) {
            old.insert(addr.to_string(), self.membership.monotonic());
        }
    }

    fn self_id(&self) -> NodeId {
        self.membership.self_id()
    }

    /// Gossips until `shutdown` resolves: one round per
    /// `gossip_interval_ms` with a random peer, and with a seed whenever no
    /// peer is known alive (and now and then anyway, to heal partitions of
    /// the membership view).
    pub async fn run(self, seeds: Vec<String>, shutdown: impl std::future::Future<Output = ()>) {
        let interval = Duration::from_millis(self.membership.config().gossip_interval_ms);
        let mut round: u64 = 0;
        crate::exec::every(interval, shutdown, || {
            round += 1;
            self.round(&seeds, round)
        })
        .await;
    }

    /// One gossip round. Public so tests and simulations can drive it.
    pub async fn round(&self, seeds: &[String], round: u64) {
        let m = &self.membership;
        // Each node at its own phase of the interval (by its id): nodes
        // started together do not all publish in one round.
        if round
            .wrapping_add(self.self_id())
            .is_multiple_of(PUBLISH_ROUNDS)
        {
            m.set_load((self.load)());
        } else if self.knows_old_peers() {
            m.tick();
        } else {
            m.beat();
        }
        m.note_liveness();
        let draw = SeededRng::new(self.self_id() ^ round).next_u64();
        let own_addr = m.state(m.self_id()).map(|me| me.cluster_addr);
        // A seed now and then, to heal a split view: with probability
        // seeds / members (at most one round in ten), so that in a large
        // cluster the seeds are not every node's peer.
        let members = m.member_count().max(SEED_ODDS_MIN) as u64;
        let odds = (seeds.len() as u64).min(members / SEED_ODDS_MIN as u64);
        let seed_round = !seeds.is_empty() && (draw >> 40) % members < odds;
        let target = match m.gossip_target(draw) {
            Some(p) if !seed_round => Some(p),
            other => seeds
                .get((draw as usize) % seeds.len().max(1))
                .map(|addr| Peer {
                    id: 0,
                    addr: addr.clone(),
                })
                .filter(|p| own_addr.as_ref() != Some(&p.addr))
                .or(other),
        };
        let Some(peer) = target else {
            return;
        };
        self.exchange(&peer).await;
    }

    /// Tells every live peer that this node stops (see
    /// [`Request::Goodbye`]), waiting at most [`GOODBYE_TIMEOUT`]. Called
    /// once gossip rounds have stopped, so no newer heartbeat follows.
    pub async fn say_goodbye(&self) {
        let m = &self.membership;
        let Some(me) = m.state(m.self_id()) else {
            return;
        };
        let Some((generation, heartbeat)) = m.pulse_of(me.id) else {
            return;
        };
        let req = Request::Goodbye {
            generation,
            heartbeat,
        };
        let calls = m
            .states()
            .into_iter()
            .filter(|s| s.id != me.id && m.is_alive(s.id))
            .filter_map(|s| m.peer(s.id))
            .map(|peer| {
                let req = req.clone();
                let transport = Arc::clone(&self.transport);
                async move { transport.call(&peer, req, GOODBYE_TIMEOUT).await }
            });
        let told = futures::future::join_all(calls).await;
        // A node of the version before answers an error: not told.
        let ok = told
            .iter()
            .filter(|r| matches!(r, Ok(Response::Pong)))
            .count();
        tracing::info!(peers = ok, "told peers this node stops");
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.membership.config().gossip_interval_ms.max(500))
    }

    /// One push-pull exchange with `peer`, by digests (or whole states with
    /// a peer of the version before); true when it answered.
    pub async fn exchange(&self, peer: &Peer) -> bool {
        if self.speaks_old(&peer.addr) {
            return self.exchange_whole(peer).await;
        }
        let m = &self.membership;
        let syn = Request::GossipDigest {
            digest: m.digest(false),
        };
        let (digest, states, refreshes, want) =
            match self.transport.call(peer, syn, self.timeout()).await {
                Ok(Response::GossipDelta {
                    digest,
                    states,
                    refreshes,
                    want,
                }) => (digest, states, refreshes, want),
                // A departed node is answered whole states (see the handler).
                Ok(Response::Gossip { states }) => {
                    self.merge(states, Vec::new()).await;
                    return true;
                }
                Ok(Response::Error { code, message, .. }) if code == "invalid_argument" => {
                    tracing::info!(
                        peer = %peer.addr,
                        %message,
                        "peer does not take gossip digests (an older version): gossiping whole \
                         states with it"
                    );
                    self.remember_old(&peer.addr);
                    return self.exchange_whole(peer).await;
                }
                Ok(other) => {
                    tracing::debug!(answer = other.kind_name(), "unexpected gossip answer");
                    return false;
                }
                Err(e) => {
                    tracing::debug!(peer = %peer.addr, error = %e, "gossip failed");
                    return false;
                }
            };
        metrics::counter!("ringkv_gossip_exchanges_total", "way" => "digest").increment(1);
        self.merge(states, refreshes).await;
        // Read after the states it came with are in: what differs still.
        let Some(diff) = m.take_digest(&digest) else {
            return true;
        };
        if diff.newer_here.is_empty() && diff.newer_there.is_empty() && want.is_empty() {
            return true;
        }
        // What the peer holds older, and what it asked for: as refreshes
        // where its digest shows it can rebuild them.
        let mut send = diff.newer_here.clone();
        send.extend(want);
        send.sort_unstable();
        send.dedup();
        let (states, refreshes) = m.updates(&send, &diff.theirs);
        let req = Request::GossipStates {
            states,
            refreshes,
            want: m.held(&bounded(diff.newer_there, m.rotation())),
        };
        match self.transport.call(peer, req, self.timeout()).await {
            Ok(Response::GossipUpdates { states, refreshes }) => {
                self.merge(states, refreshes).await;
                true
            }
            Ok(other) => {
                tracing::debug!(answer = other.kind_name(), "unexpected gossip answer");
                false
            }
            Err(e) => {
                tracing::debug!(peer = %peer.addr, error = %e, "gossip failed");
                false
            }
        }
    }

    /// Answers a gossip request of peer `from` (`Gossip`, `GossipDigest`,
    /// `GossipStates`); gives any other request back.
    /// `from` (when known) sending a digest is of this version: it is sent
    /// digests again. Whole states may come from a node of this version
    /// that takes this one for old: they make this node publish every
    /// round for a while, never send whole states.
    pub async fn answer_request(&self, from: NodeId, req: Request) -> Result<Response, Request> {
        Ok(match req {
            Request::Gossip { states } => {
                self.saw_old();
                self.answer(states).await
            }
            Request::GossipDigest { digest } => {
                if let Some(p) = self.membership.peer(from) {
                    self.old_peers.lock().remove(&p.addr);
                }
                self.answer_digest(digest).await
            }
            Request::GossipStates {
                states,
                refreshes,
                want,
            } => self.answer_states(states, refreshes, want).await,
            other => return Err(other),
        })
    }

    /// A peer's digest (SYN): answered with this node's digest and the
    /// states it holds newer (as refreshes where it can); or,
    /// when the digest names another member list, with this node's explicit
    /// digest alone.
    pub async fn answer_digest(&self, digest: GossipDigest) -> Response {
        let m = &self.membership;
        match m.take_digest(&digest) {
            // No wants: the initiator reads what this node lacks from the
            // digest it is sent (nodes of the version before sent the
            // members the initiator held newer; still taken).
            Some(diff) => {
                let (states, refreshes) = m.updates(&diff.newer_here, &diff.theirs);
                Response::GossipDelta {
                    digest: m.digest(false),
                    states,
                    refreshes,
                    want: Vec::new(),
                }
            }
            None => Response::GossipDelta {
                digest: m.digest(true),
                states: Vec::new(),
                refreshes: Vec::new(),
                want: Vec::new(),
            },
        }
    }

    /// A peer's states, refreshes and wants (ACK2): folds the states in,
    /// answers the states wanted (as refreshes where the versions the peer
    /// holds allow).
    pub async fn answer_states(
        &self,
        states: Vec<NodeState>,
        refreshes: Vec<StateRefresh>,
        want: Vec<(NodeId, u64, u64)>,
    ) -> Response {
        self.merge(states, refreshes).await;
        let mut want = want;
        want.truncate(GOSSIP_STATES_PER_MESSAGE_MAX);
        let ids: Vec<NodeId> = want.iter().map(|&(id, _, _)| id).collect();
        let theirs = want
            .into_iter()
            .filter(|&(_, generation, _)| generation > 0)
            .map(|(id, generation, version)| (id, (generation, version)))
            .collect();
        let (states, refreshes) = self.membership.updates(&ids, &theirs);
        Response::GossipUpdates { states, refreshes }
    }

    /// One exchange of whole states with `peer` (a node of the version
    /// before); true when it answered.
    async fn exchange_whole(&self, peer: &Peer) -> bool {
        let m = &self.membership;
        let req = Request::Gossip { states: m.states() };
        let timeout = self.timeout();
        match self
            .transport
            .call(peer, req, timeout)
            .await
            .map(Response::into_gossip)
        {
            Ok(Ok(states)) => {
                metrics::counter!("ringkv_gossip_exchanges_total", "way" => "whole").increment(1);
                self.merge(states, Vec::new()).await;
                true
            }
            Ok(Err(other)) => {
                tracing::debug!(answer = other.kind_name(), "unexpected gossip answer");
                false
            }
            Err(e) => {
                tracing::debug!(peer = %peer.addr, error = %e, "gossip failed");
                false
            }
        }
    }

    /// A peer's side of an exchange of whole states (`Request::Gossip`, as
    /// nodes of the version before send): folds in its states and answers
    /// with this node's view.
    pub async fn answer(&self, states: Vec<NodeState>) -> Response {
        self.merge(states, Vec::new()).await;
        Response::Gossip {
            states: self.membership.states(),
        }
    }

    /// Folds in states heard from a peer, off the executor: a state that
    /// changes the ring rebuilds the placement and saves `PEERS`, work that
    /// grows with the ring (see `bench ring`).
    async fn merge(&self, states: Vec<NodeState>, refreshes: Vec<StateRefresh>) {
        if states.is_empty() && refreshes.is_empty() {
            return;
        }
        let m = Arc::clone(&self.membership);
        let merged = crate::exec::blocking(move || {
            m.note_states_received(&states);
            m.merge(states);
            m.take_refreshes(refreshes)
        });
        if let Err(e) = merged.await {
            tracing::warn!(error = %e, "merging gossiped states failed");
        }
    }

    /// Exchanges with every address in `addrs` but this node's own, one
    /// after the other.
    pub async fn exchange_with_each(&self, addrs: &[String]) {
        let m = &self.membership;
        let own = m
            .state(m.self_id())
            .map(|s| s.cluster_addr)
            .unwrap_or_default();
        for addr in addrs.iter().filter(|a| **a != own) {
            let peer = Peer {
                id: 0,
                addr: addr.clone(),
            };
            self.exchange(&peer).await;
        }
    }

    /// Sends this node's view to every known peer and to `contacts` (a few
    /// attempts each), so they learn a status change now rather than by
    /// gossip. Returns the addresses that could not be reached.
    pub async fn push_to_all(&self, contacts: &[String]) -> Vec<String> {
        let m = &self.membership;
        let me = self.self_id();
        let own = m.state(me).map(|s| s.cluster_addr).unwrap_or_default();
        let mut addrs: Vec<String> = m
            .states()
            .into_iter()
            .filter(|s| s.id != me && s.status != NodeStatus::Left)
            .map(|s| s.cluster_addr)
            .chain(contacts.iter().cloned())
            .filter(|a| !a.is_empty() && *a != own)
            .collect();
        addrs.sort();
        addrs.dedup();
        let pushes = addrs.into_iter().map(|addr| async move {
            let peer = Peer {
                id: 0,
                addr: addr.clone(),
            };
            for _ in 0..PUSH_ATTEMPTS {
                if self.exchange(&peer).await {
                    return None;
                }
            }
            Some(addr)
        });
        futures::future::join_all(pushes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// [`GOSSIP_STATES_PER_MESSAGE_MAX`] of `ids`, from `start` on (see
/// [`rotated`]): what one message may ask for.
fn bounded(ids: Vec<NodeId>, start: usize) -> Vec<NodeId> {
    if ids.len() <= GOSSIP_STATES_PER_MESSAGE_MAX {
        return ids;
    }
    rotated(&ids, start)
        .take(GOSSIP_STATES_PER_MESSAGE_MAX)
        .copied()
        .collect()
}
