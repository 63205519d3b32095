//! [`Machine`]: one simulated host running the real node code.
//!
//! A machine has a disk (a [`FaultFs`] that survives its crashes the way a
//! real disk does: synced bytes stay, the rest is dropped or torn), a clock
//! with its own skew, and what a real node keeps in small fsynced files of
//! its data directory (tokens, known peers, the movement record), held in
//! memory here. Booting one wires a node as `ringkv server` does: the
//! engine and the hint store on the disk, membership restored from the
//! known peers, the transport on the simulated network, and the background
//! loops (gossip, hint replay, anti-entropy, cleanup).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use ringkv_cluster::membership::{Membership, MembershipConfig};
use ringkv_cluster::movement::{MoveConfig, MoveKind, MoveLog, MoveRecord};
use ringkv_cluster::net::message::{Load, NodeState, NodeStatus};
use ringkv_cluster::node::{Node, NodeConfig};
use ringkv_cluster::repair::anti_entropy::AntiEntropyConfig;
use ringkv_cluster::repair::hints::{EngineHints, HintConfig, HintStore};
use ringkv_cluster::ring::Replication;
use ringkv_cluster::store::EngineStore;
use ringkv_storage::{CrashMode, FaultFs, Options, SyncMode};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::clock::SimClock;
use super::net::SimNet;

/// The node type every machine runs.
pub type SimNode = Node<EngineStore>;

/// What a real node keeps in fsynced files beside its engine.
#[derive(Default)]
struct Durable {
    tokens: Mutex<Option<Vec<u64>>>,
    epoch: Mutex<u64>,
    peers: Mutex<Vec<NodeState>>,
    record: Mutex<Option<MoveRecord>>,
}

struct DurableLog(Arc<Durable>);

impl MoveLog for DurableLog {
    fn load(&self) -> std::io::Result<Option<MoveRecord>> {
        Ok(self.0.record.lock().clone())
    }
    fn save(&self, record: Option<&MoveRecord>) -> std::io::Result<()> {
        *self.0.record.lock() = record.cloned();
        Ok(())
    }
    fn save_tokens(&self, tokens: &[u64]) -> std::io::Result<()> {
        *self.0.tokens.lock() = Some(tokens.to_vec());
        Ok(())
    }
}

/// Settings shared by every machine of a run.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub node: NodeConfig,
    pub tokens_per_weight: usize,
    pub anti_entropy: AntiEntropyConfig,
    pub moves: MoveConfig,
    pub hints: HintConfig,
    /// Commit logs fsynced every `SYNC_INTERVAL` instead of on every write:
    /// a crash takes the writes of the last interval.
    pub periodic_sync: bool,
}

/// How often a machine with periodic sync fsyncs its commit logs.
const SYNC_INTERVAL: Duration = Duration::from_millis(100);

struct Running {
    node: SimNode,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Machine {
    pub id: u64,
    pub addr: String,
    pub clock: Arc<SimClock>,
    disk: FaultFs,
    durable: Arc<Durable>,
    running: Option<Running>,
    /// Bumped on every boot; the network knows only the current one.
    pub incarnation: u64,
    /// In the cluster: booted at least once and not left since.
    pub member: bool,
}

fn storage_options(periodic: bool) -> Options {
    Options {
        // Always: every acknowledged write is on disk, a crash may take only
        // what was never acknowledged. Periodic: the machine syncs on its
        // own schedule (`SYNC_INTERVAL`).
        sync: if periodic {
            SyncMode::Periodic {
                interval_ms: SYNC_INTERVAL.as_millis() as u64,
            }
        } else {
            SyncMode::Always
        },
        // Flushes and compactions run inline, on the simulation's thread,
        // and often: small memtables, tables and levels.
        background_threads: false,
        memtable_bytes_max: 32 << 10,
        table_target_bytes: 64 << 10,
        level_base_bytes: 256 << 10,
        block_bytes: 1024,
        block_cache_bytes: 256 << 10,
        ..Options::default()
    }
}

impl Machine {
    pub fn new(id: u64, disk_seed: u64, origin: tokio::time::Instant) -> Self {
        Self {
            id,
            addr: format!("sim-{id:x}:7000"),
            clock: Arc::new(SimClock::new(origin)),
            disk: FaultFs::new(disk_seed),
            durable: Arc::default(),
            running: None,
            incarnation: 0,
            member: false,
        }
    }

    pub fn node(&self) -> Option<&SimNode> {
        self.running.as_ref().map(|r| &r.node)
    }

    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    pub fn disk(&self) -> &FaultFs {
        &self.disk
    }

    /// Starts the node. `seeds` are the cluster addresses a new node learns
    /// the ring from (its own address alone starts a new cluster).
    pub async fn boot(
        &mut self,
        net: &Arc<SimNet>,
        config: &MachineConfig,
        seeds: &[String],
    ) -> Result<(), String> {
        if self.running.is_some() {
            return Ok(());
        }
        self.incarnation += 1;
        self.member = true;
        let clock: ringkv_env::SharedClock = self.clock.clone();
        let fs: Arc<dyn ringkv_storage::Fs> = Arc::new(self.disk.clone());
        let options = storage_options(config.periodic_sync);
        let engine = ringkv_storage::Engine::open_with(
            Path::new("/store"),
            options.clone(),
            fs.clone(),
            clock.clone(),
        )
        .map_err(|e| format!("opening storage: {e}"))?;
        let hint_engine =
            ringkv_storage::Engine::open_with(Path::new("/hints"), options, fs, clock.clone())
                .map_err(|e| format!("opening the hint engine: {e}"))?;
        let engines = [engine.clone(), hint_engine.clone()];
        let hints = HintStore::open(EngineHints::new(hint_engine), config.hints.clone())
            .map_err(|e| format!("opening hints: {e}"))?;
        let store = EngineStore::new(engine, clock.clone(), config.node.tombstone_grace_ms, true);

        let saved_tokens = self.durable.tokens.lock().clone();
        let saved_move = self.durable.record.lock().clone();
        let status = match (&saved_tokens, saved_move.as_ref().map(|r| r.kind)) {
            (None, _) | (_, Some(MoveKind::Join)) => NodeStatus::Joining,
            (_, Some(MoveKind::Leave)) => NodeStatus::Leaving,
            (_, Some(MoveKind::Left)) => return Err("this node has left the cluster".into()),
            (Some(_), None) => NodeStatus::Normal,
        };
        let me = NodeState {
            id: self.id,
            generation: clock.now_ms(),
            heartbeat: 0,
            cluster_addr: self.addr.clone(),
            resp_addr: String::new(),
            http_addr: String::new(),
            dc: "dc1".into(),
            rack: format!("rack{:x}", self.id % 3),
            weight: 1,
            tokens: saved_tokens.clone().unwrap_or_default(),
            status,
            load: Load::default(),
        };
        let membership = Arc::new(Membership::new(
            me,
            Replication::simple("dc1", config.node.replication_factor),
            clock.clone(),
            MembershipConfig {
                tokens_per_weight: config.tokens_per_weight,
                ..MembershipConfig::default()
            },
        ));
        let known = self.durable.peers.lock().clone();
        let mut contacts: Vec<String> = seeds.to_vec();
        contacts.extend(
            known
                .iter()
                .filter(|s| s.id != self.id && !seeds.contains(&s.cluster_addr))
                .map(|s| s.cluster_addr.clone()),
        );
        membership.restore(known);
        membership.set_on_ring_change(Box::new({
            let durable = Arc::clone(&self.durable);
            move |states| *durable.peers.lock() = states.to_vec()
        }));
        let transport = Arc::new(net.transport(self.id, self.incarnation));
        let node = Node::with_cluster(
            store,
            hints,
            clock,
            config.node.clone(),
            membership,
            transport,
        );
        let epoch = {
            let mut e = self.durable.epoch.lock();
            *e += 1;
            *e
        };
        node.set_epoch(epoch);
        net.attach(self.id, &self.addr, self.incarnation, node.handler());

        let tokens = match saved_tokens {
            Some(t) => t,
            None => {
                let t = node.choose_tokens(seeds, Duration::from_secs(30)).await?;
                *self.durable.tokens.lock() = Some(t.clone());
                t
            }
        };
        node.set_move_config(config.moves.clone());
        node.set_move_log(Arc::new(DurableLog(Arc::clone(&self.durable))));
        node.start(tokens, &contacts).await?;
        node.set_anti_entropy_config(config.anti_entropy.clone());

        let (shutdown, rx) = watch::channel(false);
        let stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut tasks = vec![
            tokio::spawn(node.clone().run_gossip(seeds.to_vec(), stop(rx.clone()))),
            tokio::spawn(node.clone().run_hint_replay(stop(rx.clone()))),
            tokio::spawn(node.clone().run_anti_entropy(stop(rx.clone()))),
            tokio::spawn(node.clone().run_cleanup(stop(rx.clone()))),
        ];
        if config.periodic_sync {
            // What the engine's log-sync thread does on a real node.
            let stopped = stop(rx);
            tasks.push(tokio::spawn(async move {
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        biased;
                        _ = &mut stopped => return,
                        _ = tokio::time::sleep(SYNC_INTERVAL) => {}
                    }
                    for e in &engines {
                        let _ = e.sync();
                    }
                }
            }));
        }
        self.running = Some(Running {
            node,
            shutdown,
            tasks,
        });
        Ok(())
    }

    /// Power loss: the node's tasks stop where they are, the network forgets
    /// it, and the disk keeps what `mode` lets survive.
    pub fn crash(&mut self, net: &SimNet, mode: CrashMode) {
        self.stop(net);
        self.disk = self.disk.crash(mode);
    }

    fn stop(&mut self, net: &SimNet) {
        net.detach(self.id);
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(true);
            for t in r.tasks {
                t.abort();
            }
        }
    }
}

impl Machine {
    /// Replaces the disk of the data with an empty one (the node keeps its
    /// identity and tokens).
    pub fn wipe_disk(&mut self) {
        self.disk = FaultFs::new(self.id);
    }

    /// True once this node's own view says it has left the ring.
    pub fn has_left(&self) -> bool {
        self.node().is_some_and(|n| {
            n.membership()
                .state(n.id())
                .is_some_and(|s| s.status == ringkv_cluster::net::message::NodeStatus::Left)
        })
    }

    /// The node has left the ring: it stops, and the machine is wiped to
    /// join again later as a new node `new_id`.
    pub fn retire(&mut self, net: &SimNet, new_id: u64, disk_seed: u64) {
        self.stop(net);
        self.id = new_id;
        self.addr = format!("sim-{new_id:x}:7000");
        self.disk = FaultFs::new(disk_seed);
        self.durable = Arc::default();
        self.clock.set_skew_ms(0);
        self.member = false;
    }
}
