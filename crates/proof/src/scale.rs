//! The scale simulation: the membership of a large cluster (a thousand
//! nodes and more) in one thread, on the simulated network.
//!
//! # What runs for real
//! Each simulated node is its real [`Membership`] (states, signatures off,
//! validation, phi detectors, rings) and its real [`Gossip`] (rounds,
//! digests, refreshes, pushes), answering the gossip requests of its peers
//! over [`SimNet`] (every message through the codec, delays, rare losses,
//! every byte counted). Storage, coordination and anti-entropy are not
//! started: a membership-only node. Nodes whose views hold the same ring
//! share its computation through a [`RingMemo`]; each node's membership code
//! still runs in full. Joining nodes choose their tokens with the real
//! allocator ([`Ring::add_node`]) on their own view.
//!
//! # What a run does (simulated time; one gossip round a second)
//! 1. Starts `nodes` nodes spread over data centers and racks, each
//!    knowing every other's state (as after a restart from `PEERS`: the
//!    ring is whole, every peer down until heard from), with random tokens;
//!    runs until every node sees every other alive.
//! 2. Steady state for `steady_secs` (after two publications of every
//!    node): bytes sent and received per node per second, and false
//!    suspicions (a live node seen down), sampled.
//! 3. A token change of one node: rounds until every node holds it.
//! 4. A join wave: `joins` new nodes at once, each knowing one seed; each
//!    learns the cluster, picks its tokens, announces them (JOINING), and
//!    turns NORMAL; seconds until every node holds every new node NORMAL.
//! 5. Decommissions: `decommissions` nodes leave at once as a
//!    decommission takes them (LEAVING, LEAVE_HANDOVER five seconds later,
//!    LEFT five seconds after that, pushed to every peer, then stopped);
//!    seconds from LEFT until every live node holds each of them LEFT and
//!    out of its ring.
//! 6. A rack fails (its nodes stop): seconds until every live node sees
//!    each of them down, and false suspicions meanwhile.
//! 7. A data center is cut off for `cut_secs`, then healed: seconds until
//!    every node sees every live node alive again.
//!
//! The run is deterministic for a seed (one current-thread runtime with a
//! paused clock, as the cluster simulation); the wall-clock figures (the
//! run's length, one ring build) are this machine's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_cluster::membership::gossip::{Gossip, LoadSource};
use ringkv_cluster::membership::{
    Membership, MembershipConfig, PUBLISH_ROUNDS, ReceivedCounts, RingMemo,
};
use ringkv_cluster::net::message::{ErrorDetail, Load, NodeState, NodeStatus, Request, Response};
use ringkv_cluster::net::sim::{NetFaults, SimNet, test_addr};
use ringkv_cluster::net::{BoxFut, Handler};
use ringkv_cluster::ring::{Placement, Replication, Ring, RingNode};
use ringkv_env::{Rng, SeededRng};
use tokio::sync::watch;

use crate::sim::SimClock;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    pub nodes: usize,
    pub seed: u64,
    pub dcs: usize,
    pub racks_per_dc: usize,
    /// Replicas per data center.
    pub rf: usize,
    pub steady_secs: u64,
    /// Nodes joining at once in the join wave (0: no wave).
    pub joins: usize,
    /// Nodes decommissioned at once (0: none).
    pub decommissions: usize,
    /// Tokens a node (64 by default, as a node of weight 1; fewer make
    /// each state, and the simulation's memory, smaller).
    pub tokens: usize,
    /// How long the data center stays cut off (0: no cut).
    pub cut_secs: u64,
    /// Message loss, duplication and delays of the simulated network (off:
    /// next to no delay, nothing lost).
    pub net_faults: bool,
}

impl ScaleConfig {
    /// `nodes` nodes in 3 data centers of 10 racks, RF 3 each, a minute of
    /// steady state, a wave of 40 joins, 20 decommissions, a 30 s cut.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            dcs: 3,
            racks_per_dc: 10,
            rf: 3,
            steady_secs: 60,
            joins: 40,
            decommissions: 20,
            tokens: 64,
            cut_secs: 30,
            net_faults: true,
        }
    }
}

/// What a run measured. Times are simulated unless said otherwise; `None`
/// where a step did not finish within its bound.
#[derive(Debug, Clone, Default)]
pub struct ScaleReport {
    pub nodes: usize,
    /// Seconds until every node saw every other alive, from the start.
    pub start_secs: Option<u64>,
    /// Steady state: bytes sent plus received per node per second, mean,
    /// 99th percentile and greatest over nodes.
    pub bytes_mean: u64,
    pub bytes_p99: u64,
    pub bytes_max: u64,
    /// The mean split by kind of request (with its answer; counted once
    /// per message, where the per-node figures count sender and receiver).
    pub bytes_by_kind: Vec<(String, u64)>,
    /// Steady state, per node per second: whole states received, those
    /// that were no news, refreshes received, those that were no news.
    pub received: [f64; 4],
    /// Rounds until every node held one node's changed tokens.
    pub token_rounds: Option<u64>,
    /// Seconds until every node held every joining node NORMAL.
    pub join_secs: Option<u64>,
    /// Seconds from the decommissioned nodes' LEFT until every live node
    /// held each of them LEFT, outside its ring.
    pub leave_secs: Option<u64>,
    /// Nodes of the failed rack, and seconds until every live node saw each
    /// of them down.
    pub rack_nodes: usize,
    pub detect_secs: Option<u64>,
    /// Seconds, after a cut data center is healed, until every node saw
    /// every live node alive.
    pub heal_secs: Option<u64>,
    /// Times a live node saw another live node go down, from the steady
    /// state until the failed rack was seen down (every node looks every
    /// gossip round).
    pub false_suspicions: u64,
    /// Wall-clock milliseconds of one ring and placement build of the
    /// whole cluster (what every node does when the ring changes).
    pub ring_build_ms: f64,
    /// Wall-clock milliseconds of one update of that placement after one
    /// node joins (the lists the join cannot reach kept).
    pub ring_update_ms: f64,
    /// Ring builds the memo saved, and those it did.
    pub ring_memo: (u64, u64),
    /// Encoded bytes of the states one node holds.
    pub state_bytes_per_node: u64,
    /// The process's resident memory after the start, divided by the
    /// nodes (each node's states, detectors and gossip; rings shared by
    /// equal views counted once), and at its peak over the run (the join
    /// wave's views differ, each ring its own).
    pub memory_per_node: u64,
    pub memory_peak_per_node: u64,
    /// Wall-clock seconds of the whole run.
    pub wall_secs: f64,
}

impl ScaleReport {
    /// The header of [`ScaleReport::row`].
    pub const HEADER: &'static str = "| nodes | start s | bytes/node/s mean | p99 | max | token change rounds | join wave s | decommission s | rack down (nodes) s | DC heal s | false suspicions | ring build (update) ms | state KB/node | memory KB/node (peak) | wall s |";

    /// One table row (Markdown).
    pub fn row(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {:.1} ({:.1}) | {} | {} ({}) | {:.0} |",
            self.nodes,
            opt(self.start_secs),
            self.bytes_mean,
            self.bytes_p99,
            self.bytes_max,
            opt(self.token_rounds),
            opt(self.join_secs),
            opt(self.leave_secs),
            opt(self.detect_secs),
            self.rack_nodes,
            opt(self.heal_secs),
            self.false_suspicions,
            self.ring_build_ms,
            self.ring_update_ms,
            self.state_bytes_per_node / 1024,
            self.memory_per_node / 1024,
            self.memory_peak_per_node / 1024,
            self.wall_secs,
        )
    }
}

/// A membership-only node: its membership, its gossip, and the gossip
/// requests of its peers answered.
struct Member {
    membership: Arc<Membership>,
    gossip: Gossip,
    stop: watch::Sender<bool>,
}

impl Handler for Member {
    fn handle(&self, from: u64, req: Request) -> BoxFut<Response> {
        let gossip = self.gossip.clone();
        Box::pin(async move {
            match gossip.answer_request(from, req).await {
                Ok(answer) => answer,
                Err(Request::Goodbye { .. } | Request::Ping) => Response::Pong,
                Err(other) => Response::error(ErrorDetail::InvalidArgument(format!(
                    "a membership-only node does not answer {}",
                    other.kind_name()
                ))),
            }
        })
    }
}

/// Bound on each step's wait, simulated seconds.
const STEP_SECS_MAX: u64 = 300;

struct Scale {
    config: ScaleConfig,
    net: Arc<SimNet>,
    clock: Arc<SimClock>,
    memo: Arc<RingMemo>,
    replication: Replication,
    rng: SeededRng,
    members: BTreeMap<u64, Arc<Member>>,
    /// Nodes stopped (a failed rack).
    stopped: Vec<u64>,
    seeds: Vec<String>,
}

/// Every simulated node's generation (a start time in ms, December 2025)
/// and heartbeat (about 23 days of rounds) at the start: the figures of a
/// cluster that has run a while, so digests carry numbers of their real
/// sizes (a run from 0 would measure one-byte varints).
const GENERATION_START: u64 = 1_765_000_000_000;
const HEARTBEAT_START: u64 = 2_000_000;

/// Runs the scale simulation. Builds its own runtime, so it must not be
/// called from inside one.
pub fn run(config: &ScaleConfig) -> Result<ScaleReport, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| format!("building the runtime: {e}"))?;
    ringkv_cluster::exec::run_blocking_inline(true);
    let started = Instant::now();
    // A thousand nodes log every peer they see go down: not wanted here.
    let report =
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::new(), || {
            rt.block_on(async { Scale::new(config.clone()).run().await })
        });
    drop(rt);
    ringkv_cluster::exec::run_blocking_inline(false);
    let mut report = report;
    report.wall_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

impl Scale {
    fn new(config: ScaleConfig) -> Self {
        let origin = tokio::time::Instant::now();
        let faults = if config.net_faults {
            NetFaults {
                dup_ppm: 0,
                ..NetFaults::default()
            }
        } else {
            NetFaults::none()
        };
        let replication = Replication {
            per_dc: (0..config.dcs.max(1))
                .map(|dc| (format!("dc{dc}"), config.rf))
                .collect(),
        };
        Self {
            net: SimNet::new(config.seed, origin, faults),
            clock: Arc::new(SimClock::new(origin)),
            memo: Arc::new(RingMemo::default()),
            replication,
            rng: SeededRng::new(config.seed ^ 0x5ca1e),
            members: BTreeMap::new(),
            stopped: Vec::new(),
            seeds: Vec::new(),
            config,
        }
    }

    /// The state of a new node `id`, the `i`th started.
    fn state(&self, id: u64, i: usize, tokens: Vec<u64>, status: NodeStatus) -> NodeState {
        let dcs = self.config.dcs.max(1);
        let racks = self.config.racks_per_dc.max(1);
        NodeState {
            id,
            generation: GENERATION_START,
            heartbeat: HEARTBEAT_START,
            cluster_addr: test_addr(id),
            resp_addr: String::new(),
            http_addr: String::new(),
            dc: format!("dc{}", i % dcs),
            rack: format!("r{}", (i / dcs) % racks),
            weight: 1,
            tokens,
            status,
            load: Load::default(),
            signature: None,
        }
    }

    fn membership_config(&self) -> MembershipConfig {
        MembershipConfig {
            tokens_per_weight: self.config.tokens.max(1),
            ..MembershipConfig::default()
        }
    }

    /// Starts node `me` gossiping (after `offset`, so rounds spread over
    /// the second).
    fn start(&mut self, me: NodeState, known: Vec<NodeState>, offset: Duration) -> Arc<Member> {
        let id = me.id;
        let membership = Arc::new(Membership::new(
            me,
            self.replication.clone(),
            self.clock.clone(),
            self.membership_config(),
        ));
        membership.set_ring_memo(Arc::clone(&self.memo));
        membership.restore(known);
        let load: LoadSource = Arc::new(Load::default);
        let gossip = Gossip::new(
            Arc::clone(&membership),
            Arc::new(self.net.test_transport(id)),
            load,
        );
        let (stop, mut stopped) = watch::channel(false);
        let member = Arc::new(Member {
            membership,
            gossip: gossip.clone(),
            stop,
        });
        self.net.register(id, member.clone());
        let seeds = self.seeds.clone();
        tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            gossip.run(seeds, shutdown).await;
        });
        self.members.insert(id, Arc::clone(&member));
        member
    }

    fn live(&self) -> impl Iterator<Item = &Arc<Member>> {
        self.members
            .iter()
            .filter(|(id, _)| !self.stopped.contains(id))
            .map(|(_, m)| m)
    }

    /// How many times each live node saw each other node go down (pairs
    /// `(observer, peer)` seen down at least once).
    fn downs(&self) -> BTreeMap<(u64, u64), u64> {
        let mut out = BTreeMap::new();
        for m in self.live() {
            let by = m.membership.self_id();
            for (of, downs) in m.membership.downs_seen() {
                out.insert((by, of), u64::from(downs));
            }
        }
        out
    }

    /// The states and refreshes every live node received by gossip, summed.
    fn received(&self) -> ReceivedCounts {
        self.live().fold(ReceivedCounts::default(), |sum, m| {
            let r = m.membership.gossip_received();
            ReceivedCounts {
                states: sum.states + r.states,
                states_stale: sum.states_stale + r.states_stale,
                refreshes: sum.refreshes + r.refreshes,
                refreshes_stale: sum.refreshes_stale + r.refreshes_stale,
            }
        })
    }

    /// (observer, live node) pairs where the observer sees the node down.
    fn suspicions(&self) -> u64 {
        let live: Vec<u64> = self.live().map(|m| m.membership.self_id()).collect();
        self.live()
            .map(|m| {
                live.iter()
                    .filter(|&&id| !m.membership.is_alive(id))
                    .count() as u64
            })
            .sum()
    }

    /// Waits (in steps of `step` simulated seconds) until `done`; the
    /// seconds it took, or `None` after [`STEP_SECS_MAX`].
    async fn until(&self, step: u64, done: impl Fn(&Self) -> bool) -> Option<u64> {
        let mut waited = 0;
        while !done(self) {
            if waited >= STEP_SECS_MAX {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(step)).await;
            waited += step;
        }
        Some(waited)
    }

    /// Seconds between two samples of an O(N^2) check.
    fn sample_secs(&self) -> u64 {
        (self.members.len() as u64 / 500).max(1)
    }

    async fn run(mut self) -> ScaleReport {
        let n = self.config.nodes.max(2);
        let mut report = ScaleReport {
            nodes: n,
            ..ScaleReport::default()
        };
        // 1. The cluster, every node knowing every state.
        reset_peak_rss();
        let baseline = rss("VmRSS:");
        let ids: Vec<u64> = (0..n).map(|_| self.rng.next_u64() | 1).collect();
        let states: Vec<NodeState> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let tokens = (0..self.config.tokens)
                    .map(|_| self.rng.next_u64())
                    .collect();
                self.state(id, i, tokens, NodeStatus::Normal)
            })
            .collect();
        self.seeds = ids.iter().take(3).map(|&id| test_addr(id)).collect();
        (report.ring_build_ms, report.ring_update_ms) =
            ring_build_ms(&states, &self.replication, self.config.tokens);
        for (i, s) in states.iter().enumerate() {
            let offset = Duration::from_millis(self.rng.next_u64() % 1_000);
            let known: Vec<NodeState> = states.iter().filter(|o| o.id != s.id).cloned().collect();
            self.start(s.clone(), known, offset);
            if i == 0 {
                report.state_bytes_per_node =
                    states.iter().map(|s| postcard_len(s) as u64).sum::<u64>();
            }
        }
        let step = self.sample_secs();
        report.start_secs = self.until(step, |s| s.suspicions() == 0).await;
        report.memory_per_node = rss("VmRSS:").saturating_sub(baseline) / n as u64;

        // 2. Steady state, after every node has published twice (the
        // first publication after a start goes whole). From here on, a
        // live node seen going down by another is a false suspicion.
        tokio::time::sleep(Duration::from_secs(2 * PUBLISH_ROUNDS)).await;
        let downs_before = self.downs();
        let before = self.net.bytes();
        let kinds_before = self.net.bytes_by_kind();
        let received_before = self.received();
        tokio::time::sleep(Duration::from_secs(self.config.steady_secs)).await;
        let after = self.net.bytes();
        let kinds_after = self.net.bytes_by_kind();
        let received_after = self.received();
        let per_node_sec = |after: u64, before: u64| {
            after.saturating_sub(before) as f64 / self.config.steady_secs.max(1) as f64 / n as f64
        };
        report.received = [
            per_node_sec(received_after.states, received_before.states),
            per_node_sec(received_after.states_stale, received_before.states_stale),
            per_node_sec(received_after.refreshes, received_before.refreshes),
            per_node_sec(
                received_after.refreshes_stale,
                received_before.refreshes_stale,
            ),
        ];
        report.bytes_by_kind = kinds_after
            .iter()
            .map(|(k, v)| {
                let before = kinds_before.get(k).copied().unwrap_or(0);
                (
                    k.to_string(),
                    (v - before) / self.config.steady_secs.max(1) / n as u64,
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        let mut rates: Vec<u64> = ids
            .iter()
            .map(|id| {
                let bytes =
                    after.get(id).copied().unwrap_or(0) - before.get(id).copied().unwrap_or(0);
                bytes / self.config.steady_secs.max(1)
            })
            .collect();
        rates.sort_unstable();
        report.bytes_mean = rates.iter().sum::<u64>() / rates.len().max(1) as u64;
        report.bytes_p99 = rates[(rates.len() - 1) * 99 / 100];
        report.bytes_max = rates.last().copied().unwrap_or(0);

        // 3. One node moves one of its tokens.
        let mover = ids[n / 2];
        let moved = {
            let m = &self.members[&mover].membership;
            m.update_self(|s| s.tokens[0] = s.tokens[0].wrapping_add(1));
            m.state(mover).map(|s| s.tokens).unwrap_or_default()
        };
        report.token_rounds = self
            .until(1, |s| {
                s.live().all(|m| {
                    m.membership
                        .state(mover)
                        .is_some_and(|st| st.tokens == moved)
                })
            })
            .await;

        // 4. A join wave.
        if self.config.joins > 0 {
            report.join_secs = self.join_wave(n).await;
        }

        // 5. Decommissions (none of the rack that fails next).
        let in_rack = |s: &&NodeState| s.dc == "dc0" && s.rack == "r0";
        if let Some(every) = n.checked_div(self.config.decommissions) {
            let leavers: Vec<u64> = states
                .iter()
                .filter(|s| !in_rack(s) && s.id != mover)
                .step_by(every.max(1))
                .take(self.config.decommissions)
                .map(|s| s.id)
                .collect();
            report.leave_secs = self.decommission(&leavers).await;
        }

        // 6. A rack fails.
        let rack: Vec<u64> = states.iter().filter(in_rack).map(|s| s.id).collect();
        report.rack_nodes = rack.len();
        for id in &rack {
            if let Some(m) = self.members.get(id) {
                let _ = m.stop.send(true);
            }
            self.net.detach(*id);
            self.stopped.push(*id);
        }
        report.detect_secs = self
            .until(1, |s| {
                s.live()
                    .all(|m| rack.iter().all(|&id| !m.membership.is_alive(id)))
            })
            .await;
        // Every time a node still live was seen going down, by a node
        // still live, since the steady state began (a cut data center's
        // nodes are seen down for a reason: counted before the cut).
        let live: BTreeSet<u64> = self.live().map(|m| m.membership.self_id()).collect();
        report.false_suspicions = (self.downs().into_iter())
            .filter(|((by, of), _)| live.contains(by) && live.contains(of))
            .map(|(pair, downs)| {
                downs.saturating_sub(downs_before.get(&pair).copied().unwrap_or(0))
            })
            .sum();

        // 7. A data center cut off, then healed.
        if self.config.cut_secs > 0 && self.config.dcs > 1 {
            let (cut, rest): (Vec<u64>, Vec<u64>) =
                self.live().map(|m| m.membership.self_id()).partition(|id| {
                    self.members[id]
                        .membership
                        .dc_of(*id)
                        .is_some_and(|dc| dc == "dc1")
                });
            self.net.partition(&cut, &rest);
            tokio::time::sleep(Duration::from_secs(self.config.cut_secs)).await;
            self.net.heal();
            report.heal_secs = self.until(1, |s| s.suspicions() == 0).await;
        }
        report.ring_memo = self.memo.counts();
        report.memory_peak_per_node = peak_rss().saturating_sub(baseline) / n as u64;
        for m in self.members.values() {
            let _ = m.stop.send(true);
        }
        report
    }

    /// Decommissions `leavers` at once, as the movement drive takes a node
    /// out: LEAVING, LEAVE_HANDOVER five seconds later, LEFT five seconds
    /// after that, pushed to every peer, then stopped. The seconds from
    /// LEFT until every live node holds each of them LEFT, outside its
    /// ring.
    async fn decommission(&mut self, leavers: &[u64]) -> Option<u64> {
        for status in [NodeStatus::Leaving, NodeStatus::LeaveHandover] {
            for id in leavers {
                self.members[id]
                    .membership
                    .update_self(|s| s.status = status);
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let mut pushes = Vec::new();
        for id in leavers {
            let member = Arc::clone(&self.members[id]);
            member
                .membership
                .update_self(|s| s.status = NodeStatus::Left);
            pushes.push(tokio::spawn(async move {
                member.gossip.push_to_all(&[]).await;
                let _ = member.stop.send(true);
            }));
        }
        self.stopped.extend_from_slice(leavers);
        let secs = self
            .until(1, |s| {
                s.live().all(|m| {
                    let ring = m.membership.current_ring();
                    leavers.iter().all(|&id| {
                        m.membership.status(id) == Some(NodeStatus::Left)
                            && ring.ring().node(id).is_none()
                    })
                })
            })
            .await;
        for push in pushes {
            let _ = push.await;
        }
        for id in leavers {
            self.net.detach(*id);
        }
        secs
    }

    /// `joins` nodes join at once through one seed each: each learns the
    /// cluster, picks its tokens on its view with the real allocator,
    /// announces them JOINING, and turns NORMAL five seconds later. The
    /// seconds until every node holds every joiner NORMAL.
    async fn join_wave(&mut self, n: usize) -> Option<u64> {
        let joiners: Vec<(u64, usize)> = (0..self.config.joins)
            .map(|j| (self.rng.next_u64() | 1, n + j))
            .collect();
        for &(id, i) in &joiners {
            let me = self.state(id, i, Vec::new(), NodeStatus::Joining);
            let offset = Duration::from_millis(self.rng.next_u64() % 1_000);
            self.start(me, Vec::new(), offset);
        }
        let everyone = self.members.len();
        let mut pending: Vec<(u64, usize)> = joiners.clone();
        let mut normal_at: BTreeMap<u64, u64> = BTreeMap::new();
        let mut secs = 0;
        loop {
            if secs >= STEP_SECS_MAX {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            secs += 1;
            // Joiners that know the whole cluster pick their tokens.
            let mut still = Vec::new();
            for (id, i) in pending {
                let m = &self.members[&id].membership;
                if m.states().len() < everyone {
                    still.push((id, i));
                    continue;
                }
                let mut ring: Ring = m.ring();
                let me = m.state(id);
                let node = RingNode {
                    id,
                    dc: me.as_ref().map(|s| s.dc.clone()).unwrap_or_default(),
                    rack: me.map(|s| s.rack).unwrap_or_default(),
                    weight: 1,
                };
                let rf = self.config.rf;
                let tokens = ring.add_node(node, rf).unwrap_or_default();
                m.update_self(|s| s.tokens = tokens);
                normal_at.insert(id, secs + 5);
            }
            pending = still;
            for (&id, &at) in &normal_at {
                if at == secs {
                    self.members[&id]
                        .membership
                        .update_self(|s| s.status = NodeStatus::Normal);
                }
            }
            let all_normal = pending.is_empty()
                && self.live().all(|m| {
                    joiners
                        .iter()
                        .all(|&(id, _)| m.membership.status(id) == Some(NodeStatus::Normal))
                });
            if all_normal {
                return Some(secs);
            }
        }
    }
}

/// A figure of this process's `/proc/self/status` in bytes (`VmRSS:`
/// resident now, `VmHWM:` its peak); 0 where there is none.
fn rss(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            let kb: u64 = line[field.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// The process's peak resident memory since [`reset_peak_rss`].
fn peak_rss() -> u64 {
    rss("VmHWM:")
}

/// Resets the peak of resident memory to what is resident now (Linux's
/// `clear_refs` 5; where it cannot, the peak stays the process's).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The encoded size of a state.
fn postcard_len(s: &NodeState) -> usize {
    ringkv_cluster::net::message::encode(
        ringkv_cluster::net::message::Kind::Request,
        0,
        &Request::Gossip {
            states: vec![s.clone()],
        },
    )
    .map_or(0, |b| b.len())
}

/// Wall-clock milliseconds of one build of the ring and placement of
/// `states`, and of one update of that placement after a node joins
/// (`Placement::updated`; medians of three).
fn ring_build_ms(states: &[NodeState], replication: &Replication, tokens: usize) -> (f64, f64) {
    // As a node builds its ring from the states it holds (ascending ids,
    // each inserted with its tokens): part of what is timed.
    let build_ring = || {
        let mut ring = Ring::new(tokens);
        let mut sorted: Vec<&NodeState> = states.iter().collect();
        sorted.sort_unstable_by_key(|s| s.id);
        for s in sorted {
            let node = RingNode {
                id: s.id,
                dc: s.dc.clone(),
                rack: s.rack.clone(),
                weight: s.weight,
            };
            let _ = ring.insert_with_tokens(node, &s.tokens);
        }
        ring
    };
    let ring = build_ring();
    let median = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let timed = |f: &dyn Fn() -> Placement| {
        let started = Instant::now();
        std::hint::black_box(f());
        started.elapsed().as_secs_f64() * 1_000.0
    };
    let build = median(
        (0..3)
            .map(|_| timed(&|| Placement::new(build_ring(), replication.clone())))
            .collect(),
    );
    let base = Placement::new(ring.clone(), replication.clone());
    let mut joined = ring.clone();
    let newcomer = states.first().map(|s| RingNode {
        id: 0,
        dc: s.dc.clone(),
        rack: s.rack.clone(),
        weight: 1,
    });
    if let Some(node) = newcomer {
        let rf = replication.in_dc(&node.dc);
        let _ = joined.add_node(node, rf);
    }
    let update = median(
        (0..3)
            .map(|_| timed(&|| Placement::updated(&base, joined.clone(), replication.clone())))
            .collect(),
    );
    (build, update)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small cluster through every step, with the targets scaled: it
    /// starts, stays quiet, spreads a token change in a few rounds, takes
    /// a join wave, sees a failed rack down, and heals a cut.
    #[test]
    fn a_small_cluster_goes_through_every_step() {
        let config = ScaleConfig {
            steady_secs: 30,
            joins: 5,
            decommissions: 3,
            cut_secs: 20,
            ..ScaleConfig::new(60, 1)
        };
        let r = run(&config).expect("run");
        eprintln!(
            "{}\n{}\n{:?}",
            ScaleReport::HEADER,
            r.row(),
            r.bytes_by_kind
        );
        assert!(r.start_secs.is_some(), "{r:?}");
        assert!(r.token_rounds.is_some_and(|t| t <= 10), "{r:?}");
        assert!(r.join_secs.is_some_and(|s| s <= 60), "{r:?}");
        assert!(r.leave_secs.is_some_and(|s| s <= 10), "{r:?}");
        assert!(
            r.rack_nodes >= 1 && r.detect_secs.is_some_and(|s| s <= 30),
            "{r:?}"
        );
        assert!(r.heal_secs.is_some_and(|s| s <= 20), "{r:?}");
        assert_eq!(r.false_suspicions, 0, "{r:?}");
        assert!(r.bytes_mean > 0 && r.bytes_mean < 16_000, "{r:?}");
        assert!(r.memory_per_node > 0, "{r:?}");
        let (hits, builds) = r.ring_memo;
        assert!(hits > builds, "{r:?}");
    }
}
