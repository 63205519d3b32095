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
//!
//! The schedule (which fault, which nodes, how long) comes from the seed; the
//! processes' own timing does not, so a seed replays the same schedule, not
//! the same interleaving.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ringkv_env::{Rng, SeededRng};

use super::history::RunClock;
use super::procs::{NodeProc, get_json, post_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Fault {
    Kill,
    Pause,
    Partition,
    Skew,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Skew => "skew",
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

/// The nodes of a run, with their ids.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub ids: Vec<u64>,
}

impl Cluster {
    pub fn cluster_addrs_except(&self, i: usize) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.ports.cluster)
            .collect()
    }

    /// Brings every node back: resumes paused ones, restarts killed ones,
    /// and heals partitions and skew on all.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_paused() {
                self.nodes[i].resume()?;
            }
            if !self.nodes[i].is_running() {
                let seeds = self.cluster_addrs_except(i);
                self.nodes[i].start(&seeds)?;
            }
        }
        for n in &self.nodes {
            post_json(n.ports.http, "/v1/debug/heal", &serde_json::json!({}))?;
        }
        Ok(())
    }

    /// True when every node sees every node alive and holds no hints.
    pub fn converged(&self) -> bool {
        let want = self.nodes.len();
        self.nodes.iter().all(|n| {
            let Ok(v) = get_json(n.ports.http, "/v1/cluster") else {
                return false;
            };
            let alive = v["nodes"]
                .as_array()
                .map_or(0, |ns| ns.iter().filter(|x| x["alive"] == true).count());
            let hints_empty = v["hints"]["pending"]
                .as_array()
                .is_some_and(|h| h.iter().all(|x| x["count"].as_u64().is_none_or(|c| c == 0)));
            alive == want && hints_empty
        })
    }

    /// Waits (bounded by `within`) until [`Cluster::converged`]; the time
    /// from `since` (the last heal) until then.
    pub fn wait_converged(&self, since: Instant, within: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.converged() {
                return Ok(since.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("the cluster did not converge within {within:?} (nodes alive to all, no hints)")
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
    let n = cluster.nodes.len();
    if faults.is_empty() || n == 0 {
        return Ok((events, Instant::now()));
    }
    loop {
        let gap = Duration::from_millis(1_000 + rng.below(2_000));
        let hold = Duration::from_millis(2_000 + rng.below(3_000));
        if Instant::now() + gap + hold >= until {
            break;
        }
        std::thread::sleep(gap);
        let fault = faults[rng.below(faults.len() as u64) as usize];
        let start_us = clock.now_us();
        let detail = match fault {
            Fault::Kill => {
                let i = rng.below(n as u64) as usize;
                cluster.nodes[i].kill9();
                std::thread::sleep(hold);
                let seeds = cluster.cluster_addrs_except(i);
                cluster.nodes[i]
                    .start(&seeds)
                    .with_context(|| format!("restarting node {i} after kill -9"))?;
                format!("kill -9 node {i}, restarted after {hold:?}")
            }
            Fault::Pause => {
                let i = rng.below(n as u64) as usize;
                cluster.nodes[i].pause()?;
                std::thread::sleep(hold);
                cluster.nodes[i].resume()?;
                format!("SIGSTOP node {i} for {hold:?}")
            }
            Fault::Partition => {
                let mut order: Vec<usize> = (0..n).collect();
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
                for node in &cluster.nodes {
                    post_json(node.ports.http, "/v1/debug/heal", &serde_json::json!({}))?;
                }
                format!("partition {minority:?} | {majority:?} for {hold:?}")
            }
            Fault::Skew => {
                let count = 1 + rng.below(3.min(n as u64)) as usize;
                let mut skewed = Vec::new();
                for _ in 0..count {
                    let i = rng.below(n as u64) as usize;
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
                for node in &cluster.nodes {
                    post_json(
                        node.ports.http,
                        "/v1/debug/skew",
                        &serde_json::json!({ "offset_ms": 0 }),
                    )?;
                }
                format!("clock skew {} for {hold:?}", skewed.join(", "))
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
