//! One place that assembles a node, for the binary, the simulation and the
//! in-process test clusters alike.
//!
//! [`NodeBuilder::build`] reads the node's files (its id, a new epoch, its
//! tokens, its movement record, the peers it knew), works out its status at
//! start, restores membership, and builds every service; the node is not in
//! the ring yet. The caller attaches [`Node::handler`] to its network, then
//! [`Node::start`] takes the node's place in the ring (picking tokens when
//! it has none, joining or resuming a movement) and starts the background
//! loops: gossip, hint replay, anti-entropy, cleanup.
//!
//! Rules that hold for every node, wherever it runs, live here: every start
//! is a new epoch, durable before the node writes anything; a node that has
//! left refuses to start; a restarted node restores the peers it knew (as
//! down until heard from), so it never serves from a ring of itself alone;
//! every ring change is kept in `PEERS`; `movement.settle_ms` is at least
//! the request timeout (a write started under the old ring must end before
//! data moves).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ringkv_env::SharedClock;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Node, NodeConfig, Services};
use crate::causality::purge::prune_departed;
use crate::coord::stats::OpStats;
use crate::coord::{CoordConfig, Coordinator};
use crate::id::{NodeId, display};
use crate::membership::Membership;
use crate::membership::gossip::{Gossip, LoadSource};
use crate::movement::{MovementError, Movements};
use crate::net::message::{Load, NodeState, NodeStatus};
use crate::net::{SimNet, Transport};
use crate::node::census::Census;
use crate::node_files::NodeFiles;
use crate::repair::anti_entropy::AntiEntropy;
use crate::repair::hints::{HintStore, Hints};
use crate::replica::LocalReplica;
use crate::ring::{Replication, Ring, RingNode, Token};
use crate::rpc::Rpc;
use crate::store::{LocalStore, Pruner};

/// Where a node stands in the cluster: its data center, rack and weight,
/// and the addresses it answers on (the cluster's, for its peers; RESP and
/// HTTP, for `status` and clients).
#[derive(Debug, Clone)]
pub struct NodePlace {
    pub dc: String,
    pub rack: String,
    pub weight: u32,
    pub cluster_addr: String,
    pub resp_addr: String,
    pub http_addr: String,
}

impl Default for NodePlace {
    fn default() -> Self {
        Self {
            dc: "dc1".into(),
            rack: "rack1".into(),
            weight: 1,
            cluster_addr: String::new(),
            resp_addr: String::new(),
            http_addr: String::new(),
        }
    }
}

/// Why a node could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{what} in {}: {source}", dir.display())]
    Files {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("node {} has left the cluster; wipe {} to join again as a new node", display(*id), dir.display())]
    Left { id: NodeId, dir: PathBuf },
    #[error("the data directory {} belongs to node {}, not {}", dir.display(), display(*found), display(*given))]
    OtherNode {
        given: NodeId,
        found: NodeId,
        dir: PathBuf,
    },
    #[error("joining the cluster: {0}")]
    Join(#[from] MovementError),
}

/// Builds a node from its parts.
pub struct NodeBuilder<S> {
    config: NodeConfig,
    place: NodePlace,
    replication: Option<Replication>,
    clock: SharedClock,
    store: S,
    hints: HintStore,
    files: NodeFiles,
    transport: Arc<dyn Transport>,
    id: Option<NodeId>,
    auth: Option<crate::membership::StateAuth>,
}

impl<S: LocalStore> NodeBuilder<S> {
    /// A node storing its data in `store` and its hints in `hints`, its own
    /// files in `files`, reaching its peers through `transport`.
    pub fn new(
        config: NodeConfig,
        clock: SharedClock,
        store: S,
        hints: HintStore,
        files: NodeFiles,
        transport: Arc<dyn Transport>,
    ) -> Self {
        Self {
            config,
            place: NodePlace::default(),
            replication: None,
            clock,
            store,
            hints,
            files,
            transport,
            id: None,
            auth: None,
        }
    }

    /// Its data center, rack, weight and addresses.
    pub fn place(mut self, place: NodePlace) -> Self {
        self.place = place;
        self
    }

    /// Replicas per data center (default: the replication factor in the
    /// node's own data center).
    pub fn replication(mut self, replication: Replication) -> Self {
        self.replication = Some(replication);
        self
    }

    /// The node's id, when something other than its data directory decides
    /// it (a simulation); the directory must hold the same one, or none.
    /// Signs this node's gossiped state and checks others' with the
    /// node's certificate (see [`crate::membership::Membership::set_auth`]).
    pub fn state_auth(mut self, auth: crate::membership::StateAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    pub fn id(mut self, id: NodeId) -> Self {
        self.id = Some(id);
        self
    }

    /// Reads the node's files and builds its services (see the module
    /// docs); the node is not in the ring yet.
    pub fn build(self) -> Result<Node<S>, BuildError> {
        let dir = self.files.dir().to_path_buf();
        let files_err = |what: &'static str| {
            let dir = dir.clone();
            move |source: io::Error| BuildError::Files { what, dir, source }
        };
        let id = match self.id {
            None => self
                .files
                .load_or_create_id()
                .map_err(files_err("reading the node id"))?,
            Some(given) => {
                match self
                    .files
                    .node_id()
                    .map_err(files_err("reading the node id"))?
                {
                    Some(found) if found != given => {
                        return Err(BuildError::OtherNode { given, found, dir });
                    }
                    Some(_) => {}
                    None => self
                        .files
                        .save_node_id(given)
                        .map_err(files_err("saving the node id"))?,
                }
                given
            }
        };
        // Every start is a new epoch: dot counters start above its floor.
        let epoch = self
            .files
            .bump_epoch()
            .map_err(files_err("bumping the epoch"))?;
        let tokens = self.files.tokens().map_err(files_err("reading tokens"))?;
        let record = self
            .files
            .move_record()
            .map_err(files_err("reading the movement record"))?;
        // A node that was joining or leaving says so from its first gossip.
        let status = match (&tokens, &record) {
            (_, Some(r)) if r.left => return Err(BuildError::Left { id, dir }),
            (None, _) => NodeStatus::Joining,
            (_, Some(r)) if r.kind == crate::api::MovementKind::Join => NodeStatus::Joining,
            (_, Some(_)) => NodeStatus::Leaving,
            (Some(_), None) => NodeStatus::Normal,
        };
        let known = self
            .files
            .peers()
            .map_err(files_err("reading known peers"))?;
        let truncated_at = self
            .files
            .truncated_at()
            .map_err(files_err("reading the truncation point"))?;
        let me = self.own_state(id, tokens.unwrap_or_default(), status);
        let node = self.assemble(me, epoch);
        // What a truncation hid stays hidden across restarts.
        node.replica().set_truncated_at(truncated_at);
        // The peers known before a restart shape the ring at once (as down
        // until heard from): a restarted node never serves from a ring of
        // itself alone. Every ring change is kept for the next start.
        let membership = node.membership();
        membership.restore(known);
        let files = node.inner.files.clone();
        membership.set_on_ring_change(Box::new(move |states| {
            if let Err(e) = files.save_peers(states) {
                tracing::warn!(error = %e, "saving known peers failed");
            }
        }));
        Ok(node)
    }

    fn own_state(&self, id: NodeId, tokens: Vec<Token>, status: NodeStatus) -> NodeState {
        NodeState {
            id,
            generation: self.clock.now_ms(),
            heartbeat: 0,
            cluster_addr: self.place.cluster_addr.clone(),
            resp_addr: self.place.resp_addr.clone(),
            http_addr: self.place.http_addr.clone(),
            dc: self.place.dc.clone(),
            rack: self.place.rack.clone(),
            weight: self.place.weight,
            tokens,
            status,
            load: Load::default(),
            signature: None,
        }
    }

    /// Builds every service of a node whose own state is `me`.
    fn assemble(self, me: NodeState, epoch: u64) -> Node<S> {
        let mut config = self.config;
        // A write started under the old ring must end before data moves.
        config.movement.settle_ms = config.movement.settle_ms.max(config.request_timeout_ms);
        let replication = self
            .replication
            .unwrap_or_else(|| Replication::simple(&me.dc, config.replication_factor));
        let id = me.id;
        let me_generation = me.generation;
        let clock = self.clock;
        let membership = Arc::new(Membership::new(
            me,
            replication,
            clock.clone(),
            config.membership.clone(),
        ));
        if let Some(auth) = self.auth {
            membership.set_auth(auth);
        }
        let mut replica = LocalReplica::new(id, self.store, clock.clone(), config.siblings_max)
            .with_record_cache(config.record_cache_bytes)
            .with_type_limits(crate::replica::TypeLimits {
                record_bytes_max: config.value_bytes_max,
                ..config.type_limits
            });
        if config.plant_stale_record_cache {
            replica = replica.with_stale_cache_plant();
        }
        // Before anything else can write: the cache starts equal to the
        // store (a failed fill leaves it partial and incomplete: reads
        // that miss ask the store).
        if let Err(e) = replica.warm_cache() {
            tracing::warn!(error = %e, "record cache not filled from the store");
        }
        let replica = Arc::new(replica);
        replica.set_epoch(epoch);
        let rpc = Rpc::new(
            Arc::clone(&self.transport),
            Arc::clone(&membership),
            Duration::from_millis(config.request_timeout_ms),
        );
        let hint_store = Arc::new(self.hints);
        let stats = Arc::new(OpStats::default());
        let coord = Coordinator::new(
            Arc::clone(&replica),
            Arc::clone(&membership),
            rpc.clone(),
            Arc::clone(&hint_store),
            CoordConfig {
                key_bytes_max: config.key_bytes_max,
                value_bytes_max: config.value_bytes_max,
                default_read: config.default_read,
                default_write: config.default_write,
                strict_quorum: config.strict_quorum,
            },
            Arc::clone(&stats),
        );
        let census = Census::default();
        let gossip = Gossip::new(
            Arc::clone(&membership),
            Arc::clone(&self.transport),
            load_source(&replica, stats, census.clone()),
        );
        let hints = Hints::new(
            hint_store,
            Arc::clone(&membership),
            rpc.clone(),
            Arc::clone(&replica),
            Duration::from_millis(config.hint_replay_interval_ms),
        );
        let anti_entropy = AntiEntropy::new(
            Arc::clone(&replica),
            Arc::clone(&membership),
            rpc.clone(),
            config.tombstone_grace_ms,
        );
        anti_entropy.set_config(config.anti_entropy.clone());
        install_tombstone_rule(
            &replica,
            &membership,
            &anti_entropy,
            config.tombstone_grace_ms,
        );
        let movements = Movements::new(
            Arc::clone(&replica),
            Arc::clone(&membership),
            rpc,
            gossip.clone(),
            Arc::clone(&hints),
            Arc::new(self.files.clone()),
            config.movement.clone(),
        );
        let started_ms = clock.now_ms();
        Node {
            inner: Arc::new(Services {
                replica,
                membership,
                coord,
                gossip,
                hints,
                anti_entropy,
                movements,
                census,
                slow_log: Arc::new(crate::slowlog::SlowLog::new(config.slowlog)),
                history: crate::node::history::LoadHistory::default(),
                config,
                files: self.files,
                truncating: tokio::sync::Mutex::new(()),
                truncation_told: Default::default(),
                // This node answers for itself at once: a node alone
                // takes data types from its start.
                formats: {
                    let formats = crate::formats::RecordFormats::default();
                    formats.note(id, me_generation, crate::formats::RECORD_FORMAT_NEWEST);
                    formats
                },
                started_ms,
            }),
        }
    }
}

/// What a node gossips of its load: the coordinator's operations per second
/// and p99, and its store's size.
fn load_source<S: LocalStore>(
    replica: &Arc<LocalReplica<S>>,
    stats: Arc<OpStats>,
    census: Census,
) -> LoadSource {
    let replica = Arc::clone(replica);
    Arc::new(move || {
        let now_ms = replica.clock().monotonic().as_millis() as u64;
        let (ops_per_sec, p99_us) = stats.since_last_report(now_ms);
        let store = replica.store();
        Load {
            ops_per_sec,
            p99_us,
            disk_bytes: store
                .stats()
                .iter()
                .find(|f| f.name == "disk_bytes")
                .map_or(0, |f| f.value as u64),
            keys: census.last().map_or(0, |c| c.live),
        }
    })
}

/// Compaction purges a dead record only once its range is synced with every
/// replica past it, and version vectors drop the entries of nodes that left
/// under the same rule (see [`crate::causality::purge`]).
fn install_tombstone_rule<S: LocalStore>(
    replica: &LocalReplica<S>,
    membership: &Arc<Membership>,
    anti_entropy: &AntiEntropy<S>,
    grace_ms: u64,
) {
    let ledger = Arc::clone(anti_entropy.ledger());
    replica
        .store()
        .set_synced_at(Arc::new(move |token| ledger.synced_at(token)));
    let pruner: Pruner = {
        let ledger = Arc::clone(anti_entropy.ledger());
        let membership = Arc::clone(membership);
        let clock = replica.clock().clone();
        Arc::new(move |token, set| {
            prune_departed(
                set,
                clock.now_ms(),
                grace_ms,
                |id| membership.status(id) == Some(NodeStatus::Left),
                || ledger.synced_at(token),
            )
        })
    };
    replica.store().set_pruner(Arc::clone(&pruner));
    replica.set_pruner(pruner);
}

impl<S: LocalStore> Node<S> {
    /// A node alone in its cluster, everything but `store` in memory: its
    /// ring holds itself, its peers are none (tests, examples).
    pub fn new(id: NodeId, store: S, clock: SharedClock, config: NodeConfig) -> Self {
        let place = NodePlace::default();
        let rf = config.replication_factor;
        let mut ring = Ring::new(config.membership.tokens_per_weight);
        let tokens = ring
            .add_node(
                RingNode {
                    id,
                    dc: place.dc.clone(),
                    rack: place.rack.clone(),
                    weight: place.weight,
                },
                rf,
            )
            .unwrap_or_default();
        let transport: Arc<dyn Transport> = Arc::new(SimNet::quiet(0).test_transport(id));
        let files = NodeFiles::new(Arc::new(ringkv_storage::FaultFs::new(id)), "/node");
        let hints = HintStore::in_memory(config.hints.clone());
        let builder = NodeBuilder::new(config, clock, store, hints, files, transport).place(place);
        let me = builder.own_state(id, tokens, NodeStatus::Normal);
        builder.assemble(me, 1)
    }

    /// Takes this node's place in the ring and starts its background loops
    /// (gossip with `seeds`, hint replay, anti-entropy, cleanup), which run
    /// until `shutdown` turns true. A node without tokens learns the ring
    /// from its seeds and picks them; a new node joins (streaming in the
    /// background), a node that was joining or leaving resumes. Returns once
    /// the node owns its tokens. The first handle returned is gossip's.
    pub async fn start(
        &self,
        seeds: &[String],
        shutdown: watch::Receiver<bool>,
    ) -> Result<Vec<JoinHandle<()>>, BuildError> {
        let s = &self.inner;
        let dir = s.files.dir().to_path_buf();
        let files_err = |what: &'static str| {
            let dir = dir.clone();
            move |source: io::Error| BuildError::Files { what, dir, source }
        };
        // A node that owns no tokens yet learns the ring from its seeds and
        // picks tokens; they are kept so a restart keeps its place.
        let tokens = match s.files.tokens().map_err(files_err("reading tokens"))? {
            Some(t) => t,
            None => {
                let wait = Duration::from_millis(s.config.join_timeout_ms);
                let t = s.movements.choose_tokens(seeds, wait).await?;
                s.files
                    .save_tokens(&t)
                    .map_err(files_err("saving tokens"))?;
                t
            }
        };
        // Tell the seeds, and the peers known from before a restart, at once.
        let mut contacts = seeds.to_vec();
        for state in s.membership.states() {
            if state.id != self.id()
                && !state.cluster_addr.is_empty()
                && !contacts.contains(&state.cluster_addr)
            {
                contacts.push(state.cluster_addr);
            }
        }
        s.movements.take_place(tokens, &contacts).await?;
        let stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        Ok(vec![
            tokio::spawn(s.gossip.clone().run(seeds.to_vec(), stop(shutdown.clone()))),
            tokio::spawn(Arc::clone(&s.hints).run(stop(shutdown.clone()))),
            tokio::spawn(Arc::clone(&s.anti_entropy).run(stop(shutdown.clone()))),
            tokio::spawn(Arc::clone(&s.movements).run_cleanup(stop(shutdown.clone()))),
            tokio::spawn(
                s.census
                    .clone()
                    .run(Arc::clone(&s.replica), stop(shutdown.clone())),
            ),
            tokio::spawn({
                let node = self.clone();
                let every = Duration::from_millis(s.config.membership.gossip_interval_ms.max(1));
                crate::exec::every(every, stop(shutdown.clone()), move || {
                    let node = node.clone();
                    async move { node.spread_truncation().await }
                })
            }),
            tokio::spawn({
                let node = self.clone();
                let every = Duration::from_millis(s.config.membership.gossip_interval_ms.max(1));
                crate::exec::every(every, stop(shutdown.clone()), move || {
                    let node = node.clone();
                    async move { node.ask_record_formats().await }
                })
            }),
            tokio::spawn({
                let node = self.clone();
                crate::exec::every(
                    crate::node::history::HISTORY_INTERVAL,
                    stop(shutdown),
                    move || {
                        let node = node.clone();
                        async move {
                            use crate::api::Kv;
                            node.inner.history.sample(&node.cluster(), node.now_ms());
                        }
                    },
                )
            }),
        ])
    }
}
