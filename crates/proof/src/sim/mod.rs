//! The deterministic simulation: the real node code of a whole cluster in
//! one thread, driven by one seed.
//!
//! # How it is deterministic
//! - One current-thread tokio runtime with a paused clock runs every node,
//!   client and fault: tasks interleave in an order fixed by the code, and
//!   time jumps to the next timer only when every task waits. A simulated
//!   minute takes what the work in it takes, not a minute.
//! - Blocking work (storage scans, fsynced writes) runs inline
//!   ([`ringkv_cluster::exec::run_blocking_inline`]); `select!` in the node
//!   code is biased and its maps iterate in a fixed order.
//! - Every random choice (message delays, losses, duplicates, faults, the
//!   clients' operations, torn writes) comes from generators seeded from
//!   the run's seed. Node wall clocks are the paused clock plus a skew.
//! - Engines run on [`ringkv_storage::FaultFs`] with the commit log synced
//!   on every write, and their flushes and compactions run inline on the
//!   simulation's thread (`Options::background_threads` false); memtables
//!   are small, so tables, compactions and manifest rewrites happen, and
//!   crashes catch them.
//!
//! The same seed gives the same trace (a hash over every delivered message,
//! operation and fault, with its time), which the tests check.
//!
//! # What a run does
//! 1. Boots `nodes` machines; the first starts the cluster and the others
//!    join it one by one through the real join (token choice, streaming).
//! 2. For `workload_ms` of simulated time, clients run the register and set
//!    workloads against random nodes while the nemesis injects one fault at
//!    a time: crashes (power loss with unsynced bytes dropped or torn) and
//!    restarts, partitions, fsync failures (the node is restarted after),
//!    clock skew, bursts of message loss and duplication.
//! 3. Heals everything and waits until the cluster has converged: every
//!    node up and seen alive by all, no hint pending, and every replica of
//!    every key written holding the same record.
//! 4. Reads every key at ALL and runs the checkers ([`crate::checker`]).
//!
//! # Why not turmoil
//! turmoil simulates sockets, so the node would need its TCP transport made
//! generic over turmoil's streams, and each host runs in turmoil's own
//! runtime. ringkv's transport already sits behind a trait with an
//! in-memory twin, and tokio's paused clock gives simulated time, so our
//! own network (`SimNet`) costs less and is the transport-level
//! fault model the tests want (loss, delay, duplication, partitions). The
//! TCP framing is covered by the transport's own tests and the
//! process-level runs; the simulation still round-trips every message
//! through the real codec.

mod clock;
mod machine;
mod nemesis;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_cluster::api::{Consistency, Kv, KvError, ReadOptions, WriteOptions};
use ringkv_cluster::membership::MembershipConfig;
use ringkv_cluster::movement::MoveConfig;
use ringkv_cluster::net::message::NodeStatus;
use ringkv_cluster::node::NodeConfig;
use ringkv_cluster::repair::anti_entropy::AntiEntropyConfig;
use ringkv_cluster::repair::hints::HintConfig;
use ringkv_env::{Rng, SeededRng};
use ringkv_storage::CrashMode;

use crate::checker::{self, FinalRead, Verdict};
use crate::history::{
    self, Op, OpKind, Outcome, Seen, parse_register, register_key, register_value, set_key,
};
pub use clock::SimClock;
use machine::{Machine, MachineConfig, SimNode};
use ringkv_cluster::net::sim::{NetFaults, NetStats, SimNet, Trace};

/// A deliberate weakness, to show that the checkers catch what it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// One replica per key, and a crash replaces the disk: acknowledged
    /// writes are lost.
    SingleCopyLostDisks,
    /// Reads and writes at ONE with strict quorum checked: R + W <= N, so
    /// reads go stale.
    WeakQuorum,
    /// Merges from peers leave each node's record cache stale: a write
    /// read-modify-writes an old record and drops siblings it never saw.
    StaleRecordCache,
}

/// What one run simulates.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes the cluster starts with.
    pub nodes: usize,
    /// Machines beyond those that the nemesis can add to the cluster (a
    /// join); a decommissioned node's machine becomes a spare again.
    pub spares: usize,
    /// Hinted writes do not count towards W; stale reads fail the run.
    pub strict: bool,
    /// Commit logs fsynced every 100 ms rather than on every write (the
    /// server's default): power loss takes the last interval's writes.
    pub periodic_sync: bool,
    pub clients: u32,
    pub keys_per_client: u32,
    /// Simulated time of the workload (faults stop 3 s before its end).
    pub workload_ms: u64,
    pub faults: bool,
    /// Longest simulated wait for convergence after healing.
    pub converge_ms_max: u64,
    pub plant: Option<Plant>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 5,
            spares: 1,
            strict: true,
            periodic_sync: false,
            clients: 4,
            keys_per_client: 2,
            workload_ms: 30_000,
            faults: true,
            converge_ms_max: 120_000,
            plant: None,
        }
    }
}

/// Faults a run injected, by kind.
pub type FaultCounts = BTreeMap<&'static str, u64>;

/// The outcome of one seed.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub seed: u64,
    pub strict: bool,
    pub periodic_sync: bool,
    pub trace: Trace,
    pub counts: history::Counts,
    pub register: Verdict,
    pub set: Verdict,
    pub faults: FaultCounts,
    pub net: NetStats,
    /// Simulated time from the end of healing to convergence.
    pub converge_ms: Option<u64>,
    /// Simulated time of the whole run.
    pub sim_ms: u64,
    /// Memtable flushes and compactions of the data engines still running
    /// at the end (counts restart with each boot).
    pub flushes: u64,
    pub compactions: u64,
    /// Records compaction rewrote without the version-vector entries of
    /// nodes that left.
    pub pruned: u64,
    /// Everything that fails the run.
    pub violations: Vec<String>,
    /// Every operation, in invocation order.
    pub history: Vec<Op>,
    /// Faults, boots and healing, with their simulated times.
    pub events: Vec<(Duration, String)>,
}

impl SimReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this run.
    pub fn reproduce(&self) -> String {
        format!(
            "ringkv prove sim --seed {} --mode {} --sync {}",
            self.seed,
            if self.strict { "strict" } else { "sloppy" },
            self.sync_name()
        )
    }

    fn sync_name(&self) -> &'static str {
        if self.periodic_sync {
            "periodic"
        } else {
            "always"
        }
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "seed={} mode={} sync={} ops={} ok={} unknown={} fail={} acknowledged={} lost={} stale={} \
             phantom={} late_writes={} faults=[{}] messages={} lost_msgs={} dup_msgs={} \
             flushes={} compactions={} pruned={} converge_ms={} sim_ms={} trace={:016x}/{}",
            self.seed,
            if self.strict { "strict" } else { "sloppy" },
            self.sync_name(),
            self.counts.ops,
            self.counts.ok,
            self.counts.unknown,
            self.counts.fail,
            self.counts.acknowledged,
            self.register.lost + self.set.lost,
            self.register.stale,
            self.register.phantom + self.set.phantom,
            self.register.late_writes,
            faults.join(","),
            self.net.delivered,
            self.net.lost,
            self.net.duplicated,
            self.flushes,
            self.compactions,
            self.pruned,
            self.converge_ms
                .map_or_else(|| "never".into(), |v| v.to_string()),
            self.sim_ms,
            self.trace.hash,
            self.trace.events,
        )
    }
}

/// Runs one seed to the end. Builds its own runtime, so it must not be
/// called from inside one.
pub fn run(seed: u64, config: &SimConfig) -> SimReport {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return SimReport::failed(seed, config, format!("building the runtime: {e}"));
        }
    };
    ringkv_cluster::exec::run_blocking_inline(true);
    // The simulation is built inside the runtime: its origin must be a
    // reading of the paused clock.
    let report = rt.block_on(async { Sim::new(seed, config.clone()).run().await });
    // Tasks left behind (and their engines) go with the runtime.
    drop(rt);
    ringkv_cluster::exec::run_blocking_inline(false);
    report
}

impl SimReport {
    fn failed(seed: u64, config: &SimConfig, why: String) -> Self {
        let mut report = Self::empty(seed, config);
        report.violations.push(why);
        report
    }

    fn empty(seed: u64, config: &SimConfig) -> Self {
        Self {
            seed,
            strict: config.strict,
            periodic_sync: config.periodic_sync,
            trace: Trace::default(),
            counts: history::Counts::default(),
            register: Verdict::default(),
            set: Verdict::default(),
            faults: FaultCounts::new(),
            net: NetStats::default(),
            converge_ms: None,
            sim_ms: 0,
            flushes: 0,
            compactions: 0,
            pruned: 0,
            violations: Vec::new(),
            history: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// The nodes clients can reach right now: (node, incarnation) per machine.
type Directory = Arc<Mutex<Vec<Option<(SimNode, u64)>>>>;

struct Sim {
    seed: u64,
    config: SimConfig,
    rng: SeededRng,
    origin: tokio::time::Instant,
    net: Arc<SimNet>,
    machines: Vec<Machine>,
    machine_config: MachineConfig,
    directory: Directory,
    faults: FaultCounts,
    violations: Vec<String>,
}

impl Sim {
    fn new(seed: u64, config: SimConfig) -> Self {
        let mut rng = SeededRng::new(seed);
        let origin = tokio::time::Instant::now();
        let net = SimNet::new(rng.next_u64(), origin, NetFaults::default());
        let mut ids = BTreeSet::new();
        let machines = (0..config.nodes + config.spares)
            .map(|_| {
                // Ids drawn from the seed: each seed has its own ring.
                let mut id = rng.next_u64() | 1;
                while !ids.insert(id) {
                    id = rng.next_u64() | 1;
                }
                Machine::new(id, rng.next_u64(), origin)
            })
            .collect();
        let weak = config.plant == Some(Plant::WeakQuorum);
        let node = NodeConfig {
            replication_factor: if config.plant == Some(Plant::SingleCopyLostDisks) {
                1
            } else {
                3
            },
            default_read: if weak {
                Consistency::One
            } else {
                Consistency::Quorum
            },
            default_write: if weak {
                Consistency::One
            } else {
                Consistency::Quorum
            },
            strict_quorum: config.strict,
            request_timeout_ms: 1_000,
            // Short, so dead records are purged and the version-vector
            // entries of decommissioned nodes pruned within a run.
            tombstone_grace_ms: SIM_GRACE_MS,
            membership: MembershipConfig {
                tokens_per_weight: 8,
                ..MembershipConfig::default()
            },
            anti_entropy: AntiEntropyConfig {
                ranges_per_sec_max: 20,
                pass_pause_ms: 2_000,
                ..AntiEntropyConfig::default()
            },
            movement: MoveConfig {
                settle_ms: 1_000,
                cleanup_delay_ms: 10_000,
                ..MoveConfig::default()
            },
            hints: HintConfig::default(),
            plant_stale_record_cache: config.plant == Some(Plant::StaleRecordCache),
            ..NodeConfig::default()
        };
        let machine_config = MachineConfig {
            node,
            periodic_sync: config.periodic_sync,
        };
        let directory = Arc::new(Mutex::new(vec![None; config.nodes + config.spares]));
        Self {
            seed,
            config,
            rng,
            origin,
            net,
            machines,
            machine_config,
            directory,
            faults: FaultCounts::new(),
            violations: Vec::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn publish(&self, i: usize) {
        let m = &self.machines[i];
        self.directory.lock()[i] = m.node().map(|n| (n.clone(), m.incarnation));
    }

    /// Where machine `i` learns the ring: the other nodes up in the
    /// cluster (itself alone starts a new cluster).
    fn seeds(&self, i: usize) -> Vec<String> {
        let others: Vec<String> = self
            .up()
            .into_iter()
            .filter(|&j| j != i)
            .map(|j| self.machines[j].addr.clone())
            .collect();
        if others.is_empty() {
            vec![self.machines[i].addr.clone()]
        } else {
            others
        }
    }

    async fn boot(&mut self, i: usize) -> Result<(), String> {
        let seeds = self.seeds(i);
        let net = Arc::clone(&self.net);
        let config = self.machine_config.clone();
        let result = self.machines[i].boot(&net, &config, &seeds).await;
        self.publish(i);
        self.net.record(&format!("boot {i} {result:?}"));
        result.map_err(|e| format!("node {i} failed to boot: {e}"))
    }

    fn crash(&mut self, i: usize, mode: CrashMode) {
        self.net.record(&format!("crash {i} {mode:?}"));
        let net = Arc::clone(&self.net);
        self.machines[i].crash(&net, mode);
        if self.config.plant == Some(Plant::SingleCopyLostDisks) {
            // The disk is replaced: nothing on it survives.
            self.machines[i].wipe_disk();
        }
        self.publish(i);
    }

    /// Every node up sees machine `i` with `status`.
    fn all_see(&self, i: usize, status: NodeStatus) -> bool {
        let id = self.machines[i].id;
        self.machines
            .iter()
            .filter_map(Machine::node)
            .all(|n| n.membership().state(id).is_some_and(|s| s.status == status))
    }

    /// Machines of nodes in the cluster (up or down).
    fn members(&self) -> Vec<usize> {
        (0..self.machines.len())
            .filter(|&i| self.machines[i].member)
            .collect()
    }

    /// Nodes that have left the ring stop; their machines become spares
    /// with a new identity (a node that left joins again only as a new
    /// node).
    fn reap(&mut self) {
        for i in 0..self.machines.len() {
            if self.machines[i].has_left() {
                let new_id = self.rng.next_u64() | 1;
                let disk_seed = self.rng.next_u64();
                self.net.record(&format!("left {i}"));
                let net = Arc::clone(&self.net);
                self.machines[i].retire(&net, new_id, disk_seed);
                self.publish(i);
            }
        }
    }

    async fn bootstrap(&mut self) -> Result<(), String> {
        let quiet = NetFaults {
            loss_ppm: 0,
            dup_ppm: 0,
            slow_ppm: 0,
            ..NetFaults::default()
        };
        let noisy = self.net.faults();
        self.net.set_faults(quiet);
        for i in 0..self.config.nodes {
            self.boot(i).await?;
            let deadline = self.now_ms() + 120_000;
            while !self.all_see(i, NodeStatus::Normal) {
                if self.now_ms() > deadline {
                    return Err(format!("node {i} did not become NORMAL within 120 s"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.net.set_faults(noisy);
        Ok(())
    }

    async fn run(mut self) -> SimReport {
        let mut report = SimReport::empty(self.seed, &self.config);
        if let Err(e) = self.bootstrap().await {
            self.violations.push(e);
            return self.finish(report, Vec::new());
        }
        let workload_start = self.now_ms();
        let end_ms = workload_start + self.config.workload_ms;
        let clients: Vec<_> = (0..self.config.clients)
            .map(|c| {
                let client = Client {
                    id: c,
                    rng: SeededRng::new(self.rng.next_u64()),
                    keys_per_client: self.config.keys_per_client,
                    clients: self.config.clients,
                    directory: Arc::clone(&self.directory),
                    net: Arc::clone(&self.net),
                    origin: self.origin,
                    end_ms,
                };
                tokio::spawn(client.run())
            })
            .collect();
        if self.config.faults {
            self.nemesis(end_ms.saturating_sub(3_000)).await;
        }
        let mut ops = Vec::new();
        for c in clients {
            match c.await {
                Ok(mut o) => ops.append(&mut o),
                Err(e) => self.violations.push(format!("a client task failed: {e}")),
            }
        }
        ops.sort_by_key(|o| (o.invoke_us, o.client));
        self.heal().await;
        let healed = self.now_ms();
        report.converge_ms = self.converge(&ops).await.map(|t| t - healed);
        if report.converge_ms.is_none() {
            self.violations.push(format!(
                "not converged {} s after healing: {}",
                self.config.converge_ms_max / 1000,
                self.divergence(&ops).unwrap_or_default()
            ));
        }
        let (register, set) = self.final_reads(&ops).await;
        report.register = checker::check_register(&ops, &register);
        report.set = checker::check_set(&ops, &set);
        self.finish(report, ops)
    }

    fn finish(mut self, mut report: SimReport, ops: Vec<Op>) -> SimReport {
        report.counts = history::counts(&ops);
        for (name, v) in [("register", &report.register), ("set", &report.set)] {
            let stale = if self.config.strict { v.stale } else { 0 };
            if v.lost + v.phantom + stale > 0 {
                self.violations.push(format!(
                    "{name}: lost {} phantom {} stale {}: {}",
                    v.lost,
                    v.phantom,
                    v.stale,
                    v.examples.join("; ")
                ));
            }
        }
        report.faults = std::mem::take(&mut self.faults);
        report.net = self.net.stats();
        report.trace = self.net.trace();
        report.sim_ms = self.now_ms();
        for n in self.machines.iter().filter_map(Machine::node) {
            let stats = n.store().engine().stats();
            report.flushes += stats.flushes;
            report.compactions += stats.compactions;
            report.pruned += stats.filter_replaced;
        }
        report.violations = std::mem::take(&mut self.violations);
        report.events = self.net.log();
        report.history = ops;
        for m in &mut self.machines {
            m.crash(&self.net, CrashMode::DropUnsynced);
        }
        report
    }

    async fn heal(&mut self) {
        self.net.heal();
        self.net.set_faults(NetFaults::default());
        for m in &self.machines {
            m.clock.set_skew_ms(0);
        }
        for i in self.members() {
            if !self.machines[i].is_up()
                && let Err(e) = self.boot(i).await
            {
                self.violations.push(e);
            }
        }
        self.net.record("healed");
    }

    /// Keys the clients touched.
    fn keys(ops: &[Op]) -> BTreeSet<String> {
        ops.iter()
            .map(|o| match o.kind {
                OpKind::Write { key, .. } | OpKind::Read { key } => register_key(key),
                OpKind::Add { element } => set_key(element),
            })
            .collect()
    }

    /// Why the cluster has not converged, or `None` when it has.
    fn divergence(&self, ops: &[Op]) -> Option<String> {
        let members = self.members();
        let nodes: Vec<&SimNode> = members
            .iter()
            .filter_map(|&i| self.machines[i].node())
            .collect();
        if nodes.len() < members.len() || nodes.is_empty() {
            return Some("a node is down".into());
        }
        for n in &nodes {
            for &i in &members {
                let m = &self.machines[i];
                if !n.membership().is_alive(m.id) {
                    return Some(format!("{:x} sees {:x} down", n.id(), m.id));
                }
                let status = n.membership().state(m.id).map(|s| s.status);
                if status != Some(NodeStatus::Normal) {
                    return Some(format!("{:x} sees {:x} as {status:?}", n.id(), m.id));
                }
            }
            if let Some(h) = n.hints().pending().first() {
                return Some(format!(
                    "{:x} holds {} hints for {:x}",
                    n.id(),
                    h.count,
                    h.target
                ));
            }
        }
        let by_id: HashMap<u64, &SimNode> = nodes.iter().map(|n| (n.id(), *n)).collect();
        for key in Self::keys(ops) {
            let token = ringkv_cluster::ring::token_of(key.as_bytes());
            let replicas = nodes[0].membership().preference_list(token);
            let mut first = None;
            for r in replicas {
                let Some(n) = by_id.get(&r) else {
                    return Some(format!("replica {r:x} of {key} unknown"));
                };
                let record = n.debug_local_record(key.as_bytes());
                match &first {
                    None => first = Some(record),
                    Some(f) if *f != record => {
                        return Some(format!("replicas of {key} differ"));
                    }
                    Some(_) => {}
                }
            }
        }
        None
    }

    /// Waits for convergence; the simulated time it was reached.
    async fn converge(&mut self, ops: &[Op]) -> Option<u64> {
        let deadline = self.now_ms() + self.config.converge_ms_max;
        let mut last_reason = None;
        loop {
            self.reap();
            let Some(reason) = self.divergence(ops) else {
                self.net.record("converged");
                return Some(self.now_ms());
            };
            // Each new reason once, so a slow convergence says what held it.
            if last_reason.as_ref() != Some(&reason) {
                self.net.record(&format!("not converged: {reason}"));
                last_reason = Some(reason);
            }
            if self.now_ms() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn read_all(&mut self, key: &str) -> Option<Vec<Bytes>> {
        for _ in 0..5 {
            let first = self.up().into_iter().find(|&i| self.machines[i].member)?;
            let node = self.machines[first].node().cloned()?;
            let opts = ReadOptions {
                consistency: Some(Consistency::All),
            };
            match node.get(Bytes::from(key.to_string()), opts).await {
                Ok(r) => return Some(r.siblings.into_iter().map(|s| s.value).collect()),
                Err(e) => self.net.record(&format!("final read of {key}: {e}")),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.violations
            .push(format!("the final read of {key} at ALL failed 5 times"));
        None
    }

    async fn final_reads(
        &mut self,
        ops: &[Op],
    ) -> (HashMap<u32, Vec<Seen>>, HashMap<u64, FinalRead>) {
        let mut register = HashMap::new();
        for key in 0..self.config.clients * self.config.keys_per_client {
            if let Some(values) = self.read_all(&register_key(key)).await {
                register.insert(key, values.iter().map(|v| parse_register(v)).collect());
            }
        }
        let mut set = HashMap::new();
        let mut elements: BTreeSet<u64> = ops
            .iter()
            .filter_map(|o| match o.kind {
                OpKind::Add { element } => Some(element),
                _ => None,
            })
            .collect();
        // Probes never sent must be absent.
        for c in 0..u64::from(self.config.clients) {
            elements.insert(c << 32 | 0xffff_fff0);
        }
        for e in elements {
            if let Some(values) = self.read_all(&set_key(e)).await {
                set.insert(e, values.first().map(|v| v.to_vec()));
            }
        }
        (register, set)
    }
}

/// One client: invokes operations on random nodes until `end_ms`.
struct Client {
    id: u32,
    rng: SeededRng,
    keys_per_client: u32,
    clients: u32,
    directory: Directory,
    net: Arc<SimNet>,
    origin: tokio::time::Instant,
    end_ms: u64,
}

/// The tombstone grace period of the simulated nodes.
const SIM_GRACE_MS: u64 = 3_000;

/// How long a client waits for one answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    fn pick(&mut self) -> Option<(usize, SimNode, u64)> {
        let dir = self.directory.lock();
        let up: Vec<usize> = (0..dir.len()).filter(|&i| dir[i].is_some()).collect();
        if up.is_empty() {
            return None;
        }
        let i = up[(self.rng.next_u64() as usize) % up.len()];
        dir[i].clone().map(|(n, inc)| (i, n, inc))
    }

    fn same_incarnation(&self, i: usize, incarnation: u64) -> bool {
        self.directory.lock()[i]
            .as_ref()
            .is_some_and(|(_, inc)| *inc == incarnation)
    }

    async fn run(mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut counters = vec![0u64; self.keys_per_client as usize];
        let mut next_element = 0u64;
        while self.now_us() / 1000 < self.end_ms {
            let pace = Duration::from_millis(5 + self.rng.next_u64() % 45);
            tokio::time::sleep(pace).await;
            let Some((i, node, incarnation)) = self.pick() else {
                continue;
            };
            let draw = self.rng.next_u64() % 100;
            let (kind, key, value) = if draw < 45 {
                let j = (self.rng.next_u64() % u64::from(self.keys_per_client)) as usize;
                counters[j] += 1;
                let key = self.id * self.keys_per_client + j as u32;
                let kind = OpKind::Write {
                    key,
                    counter: counters[j],
                };
                (
                    kind,
                    register_key(key),
                    Some(register_value(counters[j], self.id)),
                )
            } else if draw < 90 {
                let key =
                    (self.rng.next_u64() % u64::from(self.keys_per_client * self.clients)) as u32;
                (OpKind::Read { key }, register_key(key), None)
            } else {
                let element = u64::from(self.id) << 32 | next_element;
                next_element += 1;
                let value = String::from_utf8_lossy(&checker::set_value(element)).into_owned();
                (OpKind::Add { element }, set_key(element), Some(value))
            };
            let invoke_us = self.now_us();
            let key = Bytes::from(key);
            let (outcome, seen, error) = match value {
                Some(v) => {
                    // A front end hands buffered writes to the OS before it
                    // answers; so does this client before it counts an answer.
                    let put = async {
                        let out = node
                            .put(key, Bytes::from(v), WriteOptions::default())
                            .await?;
                        node.release_writes()?;
                        Ok::<_, KvError>(out)
                    };
                    match tokio::time::timeout(CLIENT_TIMEOUT, put).await {
                        Ok(Ok(_)) if self.same_incarnation(i, incarnation) => {
                            (Outcome::Ok, Vec::new(), None)
                        }
                        Ok(Ok(_)) => (
                            Outcome::Unknown,
                            Vec::new(),
                            Some("coordinator crashed".into()),
                        ),
                        Ok(Err(
                            e @ (KvError::KeyTooLarge { .. }
                            | KvError::ValueTooLarge { .. }
                            | KvError::InvalidArgument(_)),
                        )) => (Outcome::Fail, Vec::new(), Some(e.to_string())),
                        Ok(Err(e)) => (Outcome::Unknown, Vec::new(), Some(e.to_string())),
                        Err(_) => (Outcome::Unknown, Vec::new(), Some("timed out".into())),
                    }
                }
                None => {
                    let get = async {
                        let out = node.get(key, ReadOptions::default()).await?;
                        node.release_writes()?;
                        Ok::<_, KvError>(out)
                    };
                    match tokio::time::timeout(CLIENT_TIMEOUT, get).await {
                        Ok(Ok(r)) if self.same_incarnation(i, incarnation) => {
                            let seen = r
                                .siblings
                                .iter()
                                .map(|s| parse_register(&s.value))
                                .collect();
                            (Outcome::Ok, seen, None)
                        }
                        Ok(Ok(_)) => (
                            Outcome::Fail,
                            Vec::new(),
                            Some("coordinator crashed".into()),
                        ),
                        Ok(Err(e)) => (Outcome::Fail, Vec::new(), Some(e.to_string())),
                        Err(_) => (Outcome::Fail, Vec::new(), Some("timed out".into())),
                    }
                }
            };
            let op = Op {
                client: self.id,
                kind,
                outcome,
                invoke_us,
                complete_us: self.now_us(),
                seen,
                error,
            };
            self.net.record(&format!(
                "op {} {:?} {:?} {:?}",
                op.client, op.kind, op.outcome, op.seen
            ));
            ops.push(op);
        }
        ops
    }
}

/// Runs `count` seeds from `first` on `threads` threads; calls `each` with
/// every report as it comes (in no fixed order across threads).
pub fn sweep(
    first: u64,
    count: u64,
    threads: usize,
    config: &SimConfig,
    each: &(dyn Fn(&SimReport) + Sync),
) -> Vec<SimReport> {
    let next = std::sync::atomic::AtomicU64::new(first);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if seed >= first + count {
                        return;
                    }
                    let report = run(seed, &config_for(seed, config));
                    each(&report);
                    out.lock().push(report);
                }
            });
        }
    });
    let mut reports = out.into_inner();
    reports.sort_by_key(|r| r.seed);
    reports
}

/// The modes of a seed in a sweep, so a sweep covers every combination:
/// even seeds strict, odd seeds sloppy; seeds 2 and 3 modulo 4 sync their
/// commit logs periodically, the others on every write.
pub fn config_for(seed: u64, base: &SimConfig) -> SimConfig {
    SimConfig {
        strict: seed.is_multiple_of(2),
        periodic_sync: seed % 4 >= 2,
        ..base.clone()
    }
}
