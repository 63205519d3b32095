//! The nemesis: faults injected into a cluster of node processes on a seeded
//! schedule, one at a time, each held for a while and then healed.
//!
//! - `kill`: SIGKILL one node, then restart it on the same data directory
//!   and ports (it rejoins with the tokens it kept).
//! - `pause`: SIGSTOP one node (its sockets stay open, it answers nothing),
//!   then SIGCONT.
//! - `partition`: split the nodes into a minority and a majority that
//!   neither call nor answer each other (the fault-injecting transport,
//!   through `POST /v1/debug/partition` on every node), then heal.
//! - `skew`: shift the wall clocks of one to three nodes by up to ±30 s
//!   (`POST /v1/debug/skew`), then set them back.
//! - `join`: start a spare node, which joins the ring (choosing tokens,
//!   streaming its ranges) while the load and later faults go on.
//! - `decommission`: `POST /v1/decommission` to a node when the cluster has
//!   all its nodes and nothing moves; the node streams its ranges away and
//!   stops by itself once it has left. Its directory is then wiped and it
//!   is a spare again (a node that left joins again only as a new node).
//!   Other faults leave a leaving node alone.
//!
//! The schedule (which fault, which nodes, how long) comes from the seed; the
//! processes' own timing does not, so a seed replays the same schedule, not
//! the same interleaving.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ringkv_env::{Rng, SeededRng};

use super::history::RunClock;
use super::procs::NodeProc;
use crate::http_client::{get_json, post_json, request};

/// The id a running node reports in `/v1/status`.
pub fn node_id(node: &NodeProc) -> anyhow::Result<u64> {
    let status = get_json(node.ports.http, "/v1/status")?;
    status["node_id"]
        .as_str()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .with_context(|| format!("{}: no node id in /v1/status", node.name))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Fault {
    Kill,
    Pause,
    Partition,
    Skew,
    Join,
    Decommission,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Skew => "skew",
            Fault::Join => "join",
            Fault::Decommission => "decommission",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct FaultEvent {
    pub fault: Fault,
    pub detail: String,
    pub start_us: u64,
    pub end_us: u64,
}

/// The nodes of a run, with their ids: the members of the ring and the
/// spares the `join` fault starts.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub ids: Vec<u64>,
    /// In the ring: started, and not left since.
    pub members: Vec<bool>,
    /// The node decommissioning, until it has stopped.
    pub leaving: Option<usize>,
    /// Members the run started with.
    pub size: usize,
}

impl Cluster {
    /// Members' cluster addresses, but `i`'s.
    pub fn cluster_addrs_except(&self, i: usize) -> Vec<SocketAddr> {
        (0..self.nodes.len())
            .filter(|&j| j != i && self.members[j] && self.nodes[j].is_running())
            .map(|j| self.nodes[j].ports.cluster)
            .collect()
    }

    /// Members running, the leaving one aside: what faults may hit.
    pub fn targets(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.members[i] && self.nodes[i].is_running() && self.leaving != Some(i))
            .collect()
    }

    /// Members running (the final reads go to them).
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.members[i] && self.nodes[i].is_running())
            .collect()
    }

    /// A leaving node that has stopped has left: its machine becomes a
    /// spare with an empty directory.
    pub fn reap(&mut self) -> anyhow::Result<()> {
        if let Some(i) = self.leaving
            && self.nodes[i].exited()
        {
            self.members[i] = false;
            self.leaving = None;
            let dir = self.nodes[i].data_dir.clone();
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("wiping {} after it left", dir.display()))?;
        }
        Ok(())
    }

    /// Brings every member back: resumes paused ones, restarts killed ones,
    /// and heals partitions and skew on all.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.reap()?;
        for i in 0..self.nodes.len() {
            if !self.members[i] {
                continue;
            }
            if self.nodes[i].is_paused() {
                self.nodes[i].resume()?;
            }
            if !self.nodes[i].is_running() && self.leaving != Some(i) {
                let seeds = self.cluster_addrs_except(i);
                self.nodes[i].start(&seeds)?;
            }
        }
        for i in self.targets() {
            post_json(
                self.nodes[i].ports.http,
                "/v1/debug/heal",
                &serde_json::json!({}),
            )?;
        }
        Ok(())
    }

    /// True when every member sees every member alive and NORMAL (no move
    /// under way), and holds no hints.
    pub fn converged(&mut self) -> bool {
        self.divergence().is_none()
    }

    /// Why the cluster has not converged, or `None`.
    pub fn divergence(&mut self) -> Option<String> {
        if let Err(e) = self.reap() {
            return Some(e.to_string());
        }
        let want = self.members.iter().filter(|m| **m).count();
        let running = self.running();
        if running.len() != want {
            return Some(format!("{} of {want} members running", running.len()));
        }
        for i in running {
            let v = match get_json(self.nodes[i].ports.http, "/v1/cluster") {
                Ok(v) => v,
                Err(e) => return Some(format!("node {i}: {e}")),
            };
            let in_ring: Vec<&serde_json::Value> = v["nodes"]
                .as_array()
                .map(|ns| ns.iter().filter(|x| x["status"] != "LEFT").collect())
                .unwrap_or_default();
            if in_ring.len() != want {
                return Some(format!("node {i} sees {} nodes in the ring", in_ring.len()));
            }
            if let Some(x) = in_ring
                .iter()
                .find(|x| x["alive"] != true || x["status"] != "NORMAL")
            {
                return Some(format!(
                    "node {i} sees {} {} alive={}",
                    x["id"], x["status"], x["alive"]
                ));
            }
            let held = v["hints"]["pending"].as_array().and_then(|h| {
                h.iter()
                    .find(|x| x["count"].as_u64().is_some_and(|c| c > 0))
                    .cloned()
            });
            if let Some(h) = held {
                return Some(format!("node {i} holds hints {h}"));
            }
        }
        None
    }

    /// Waits (bounded by `within`) until [`Cluster::converged`]; the time
    /// from `since` (the last heal) until then.
    pub fn wait_converged(&mut self, since: Instant, within: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut why = String::new();
        while start.elapsed() < within {
            match self.divergence() {
                None => return Ok(since.elapsed()),
                Some(w) => why = w,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "the cluster did not converge within {within:?} (members alive and NORMAL to all, \
             no hints): {why}"
        )
    }
}

/// Runs the schedule until `until`, then heals everything; the faults
/// injected and when the last heal was done.
pub fn run(
    cluster: &mut Cluster,
    faults: &[Fault],
    seed: u64,
    clock: RunClock,
    until: Instant,
) -> anyhow::Result<(Vec<FaultEvent>, Instant)> {
    let mut rng = SeededRng::new(seed ^ 0x004E_454D_4553_4953);
    let mut events = Vec::new();
    if faults.is_empty() || cluster.nodes.is_empty() {
        return Ok((events, Instant::now()));
    }
    loop {
        let gap = Duration::from_millis(1_000 + rng.below(2_000));
        let hold = Duration::from_millis(2_000 + rng.below(3_000));
        if Instant::now() + gap + hold >= until {
            break;
        }
        std::thread::sleep(gap);
        cluster.reap()?;
        let fault = faults[rng.below(faults.len() as u64) as usize];
        let targets = cluster.targets();
        let n = targets.len();
        if n == 0 {
            continue;
        }
        let start_us = clock.now_us();
        let detail = match fault {
            Fault::Kill => {
                let i = targets[rng.below(n as u64) as usize];
                cluster.nodes[i].kill9();
                std::thread::sleep(hold);
                let seeds = cluster.cluster_addrs_except(i);
                cluster.nodes[i]
                    .start(&seeds)
                    .with_context(|| format!("restarting node {i} after kill -9"))?;
                format!("kill -9 node {i}, restarted after {hold:?}")
            }
            Fault::Pause => {
                let i = targets[rng.below(n as u64) as usize];
                cluster.nodes[i].pause()?;
                std::thread::sleep(hold);
                cluster.nodes[i].resume()?;
                format!("SIGSTOP node {i} for {hold:?}")
            }
            Fault::Partition => {
                let mut order = targets.clone();
                for k in (1..n).rev() {
                    order.swap(k, rng.below(k as u64 + 1) as usize);
                }
                let minority: Vec<usize> = order[..n / 2].to_vec();
                let majority: Vec<usize> = order[n / 2..].to_vec();
                let ids = |side: &[usize]| -> Vec<String> {
                    side.iter()
                        .map(|&j| format!("{:016x}", cluster.ids[j]))
                        .collect()
                };
                for (side, other) in [(&minority, &majority), (&majority, &minority)] {
                    let body = serde_json::json!({ "nodes": ids(other) });
                    for &j in side.iter() {
                        post_json(cluster.nodes[j].ports.http, "/v1/debug/partition", &body)?;
                    }
                }
                std::thread::sleep(hold);
                for &i in &targets {
                    post_json(
                        cluster.nodes[i].ports.http,
                        "/v1/debug/heal",
                        &serde_json::json!({}),
                    )?;
                }
                format!("partition {minority:?} | {majority:?} for {hold:?}")
            }
            Fault::Skew => {
                let count = 1 + rng.below(3.min(n as u64)) as usize;
                let mut skewed = Vec::new();
                for _ in 0..count {
                    let i = targets[rng.below(n as u64) as usize];
                    let magnitude = 500 + rng.below(29_500) as i64;
                    let offset = if rng.below(2) == 0 {
                        magnitude
                    } else {
                        -magnitude
                    };
                    post_json(
                        cluster.nodes[i].ports.http,
                        "/v1/debug/skew",
                        &serde_json::json!({ "offset_ms": offset }),
                    )?;
                    skewed.push(format!("node {i} {offset:+}ms"));
                }
                std::thread::sleep(hold);
                for &i in &targets {
                    post_json(
                        cluster.nodes[i].ports.http,
                        "/v1/debug/skew",
                        &serde_json::json!({ "offset_ms": 0 }),
                    )?;
                }
                format!("clock skew {} for {hold:?}", skewed.join(", "))
            }
            Fault::Join => {
                let Some(i) = (0..cluster.nodes.len()).find(|&i| !cluster.members[i]) else {
                    continue;
                };
                let seeds = cluster.cluster_addrs_except(i);
                cluster.nodes[i]
                    .start(&seeds)
                    .with_context(|| format!("starting spare node {i} to join"))?;
                cluster.members[i] = true;
                cluster.ids[i] = node_id(&cluster.nodes[i])?;
                std::thread::sleep(hold);
                format!("node {i} ({:016x}) joins", cluster.ids[i])
            }
            Fault::Decommission => {
                let members = cluster.members.iter().filter(|m| **m).count();
                if cluster.leaving.is_some() || members < cluster.size || !cluster.converged() {
                    continue;
                }
                let i = targets[rng.below(n as u64) as usize];
                let (status, body) =
                    request(cluster.nodes[i].ports.http, "POST", "/v1/decommission", b"")?;
                if status != 202 {
                    bail!(
                        "decommission of node {i} refused: {status} {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                cluster.leaving = Some(i);
                std::thread::sleep(hold);
                format!("decommission node {i} ({:016x})", cluster.ids[i])
            }
        };
        events.push(FaultEvent {
            fault,
            detail,
            start_us,
            end_us: clock.now_us(),
        });
    }
    cluster.heal_all()?;
    Ok((events, Instant::now()))
}
