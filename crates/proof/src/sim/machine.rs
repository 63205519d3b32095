//! [`Machine`]: one simulated host running the real node code.
//!
//! A machine has a disk (a [`FaultFs`] that survives its crashes the way a
//! real disk does: synced bytes stay, the rest is dropped or torn) and a
//! clock with its own skew. Everything a node writes goes to that disk: its
//! engines and its own files (id, epoch, tokens, known peers, the movement
//! record), so a crash while one of them is written is simulated too.
//! Booting one assembles the node with the same [`NodeBuilder`] and
//! [`NodeStorage`] as `ringkv server` does; only the transport (on the
//! simulated network) and the log syncs (run here, as no engine thread
//! runs in a simulation) are the machine's own.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ringkv_cluster::net::message::NodeStatus;
use ringkv_cluster::node::{Node, NodeBuilder, NodeConfig, NodePlace, NodeStorage};
use ringkv_cluster::node_files::NodeFiles;
use ringkv_cluster::ring::Replication;
use ringkv_cluster::store::EngineStore;
use ringkv_storage::{CrashMode, FaultFs, Options, SyncMode};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::clock::SimClock;
use ringkv_cluster::net::SimNet;

/// The node type every machine runs.
pub type SimNode = Node<EngineStore>;

/// Settings shared by every machine of a run.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// Every service's settings, as a real node takes them from its config.
    pub node: NodeConfig,
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
    /// The machine's disk: its engines and its node files.
    disk: FaultFs,
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
        let storage = NodeStorage::open(
            fs.clone(),
            Path::new("/"),
            storage_options(config.periodic_sync),
            clock.clone(),
            config.node.tombstone_grace_ms,
            config.node.hints.clone(),
            true,
        )
        .map_err(|e| e.to_string())?;
        let engines = storage.engines();
        let place = NodePlace {
            rack: format!("rack{:x}", self.id % 3),
            cluster_addr: self.addr.clone(),
            ..NodePlace::default()
        };
        let transport = Arc::new(net.transport(self.id, self.incarnation));
        let node = NodeBuilder::new(
            config.node.clone(),
            clock,
            storage.store,
            storage.hints,
            NodeFiles::new(fs, "/"),
            transport,
        )
        .id(self.id)
        .place(place)
        .replication(Replication::simple("dc1", config.node.replication_factor))
        .build()
        .map_err(|e| e.to_string())?;
        net.attach(self.id, &self.addr, self.incarnation, node.handler());
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = node
            .start(seeds, rx.clone())
            .await
            .map_err(|e| e.to_string())?;
        if config.periodic_sync {
            // What the engine's log-sync thread does on a real node.
            let mut stopped = rx;
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        biased;
                        _ = stopped.wait_for(|s| *s) => return,
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
        let old = std::mem::replace(&mut self.disk, FaultFs::new(self.id));
        // The node's own files live on; only its engines' data is lost.
        let (from, to) = (
            NodeFiles::new(Arc::new(old), "/"),
            NodeFiles::new(Arc::new(self.disk.clone()), "/"),
        );
        copy_node_files(&from, &to);
    }

    /// True once this node's own view says it has left the ring.
    pub fn has_left(&self) -> bool {
        self.node().is_some_and(|n| {
            n.membership()
                .state(n.id())
                .is_some_and(|s| s.status == NodeStatus::Left)
        })
    }

    /// The node has left the ring: it stops, and the machine is wiped to
    /// join again later as a new node `new_id`.
    pub fn retire(&mut self, net: &SimNet, new_id: u64, disk_seed: u64) {
        self.stop(net);
        self.id = new_id;
        self.addr = format!("sim-{new_id:x}:7000");
        self.disk = FaultFs::new(disk_seed);
        self.clock.set_skew_ms(0);
        self.member = false;
    }
}

/// Copies a node's identity, epoch, tokens, peers and movement record from
/// one disk to another (a disk swapped under a node that keeps its place).
fn copy_node_files(from: &NodeFiles, to: &NodeFiles) {
    let copied = (|| -> std::io::Result<()> {
        if let Some(id) = from.node_id()? {
            to.save_node_id(id)?;
        }
        // The epoch is only ever bumped: carry the count over.
        let epoch = from.bump_epoch()?;
        for _ in 0..epoch {
            to.bump_epoch()?;
        }
        if let Some(tokens) = from.tokens()? {
            to.save_tokens(&tokens)?;
        }
        to.save_peers(&from.peers()?)?;
        to.save_move_record(from.move_record()?.as_ref())
    })();
    if let Err(e) = copied {
        tracing::warn!(error = %e, "copying node files to a new disk failed");
    }
}
