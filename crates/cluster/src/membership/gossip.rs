//! Gossip: the rounds that spread node states, and the pushes that tell
//! every peer of a change at once.
//!
//! Every `gossip_interval_ms` a node bumps its heartbeat and does a
//! push-pull exchange of every state it knows with one random live peer
//! (sometimes a down one, so recoveries are seen; every tenth round a seed).
//! Every fifth round it first puts its load figures in its own state.

use std::sync::Arc;
use std::time::Duration;

use ringkv_env::{Rng, SeededRng};

use super::Membership;
use crate::id::NodeId;
use crate::net::message::{Load, NodeState, NodeStatus, Request, Response};
use crate::net::{Peer, Transport};

/// Gossip rounds between two load reports.
const LOAD_REPORT_ROUNDS: u64 = 5;
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
        if round.is_multiple_of(LOAD_REPORT_ROUNDS) {
            m.set_load((self.load)());
        }
        m.tick();
        m.note_liveness();
        let draw = SeededRng::new(self.self_id() ^ round).next_u64();
        let own_addr = m.state(m.self_id()).map(|me| me.cluster_addr);
        let target = match m.gossip_target(draw) {
            Some(p) if !round.is_multiple_of(10) || seeds.is_empty() => Some(p),
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
        let req = Request::Goodbye {
            generation: me.generation,
            heartbeat: me.heartbeat,
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

    /// One push-pull exchange with `peer`; true when it answered.
    pub async fn exchange(&self, peer: &Peer) -> bool {
        let m = &self.membership;
        let req = Request::Gossip { states: m.states() };
        let timeout = Duration::from_millis(m.config().gossip_interval_ms.max(500));
        match self
            .transport
            .call(peer, req, timeout)
            .await
            .map(Response::into_gossip)
        {
            Ok(Ok(states)) => {
                self.merge(states).await;
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

    /// A peer's side of an exchange: folds in its states and answers with
    /// this node's view.
    pub async fn answer(&self, states: Vec<NodeState>) -> Response {
        self.merge(states).await;
        Response::Gossip {
            states: self.membership.states(),
        }
    }

    /// Folds in states heard from a peer, off the executor: a state that
    /// changes the ring rebuilds the placement and saves `PEERS`, work that
    /// grows with the ring (see `bench ring`).
    async fn merge(&self, states: Vec<NodeState>) {
        let m = Arc::clone(&self.membership);
        if let Err(e) = crate::exec::blocking(move || m.merge(states)).await {
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
