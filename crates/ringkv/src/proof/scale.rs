//! `ringkv prove scale`: the scale simulation (`ringkv_proof::scale`), the
//! membership of clusters of hundreds to thousands of nodes, each size a
//! row of figures checked against the targets. Exits non-zero when a size
//! misses one.

use clap::Args;
use ringkv_proof::scale::{self, ScaleConfig, ScaleReport};

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Cluster sizes to simulate, one after another (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub nodes: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated seconds of steady state measured.
    #[arg(long, default_value_t = 60)]
    pub steady_secs: u64,
    /// Nodes joining at once in the join wave.
    #[arg(long, default_value_t = 40)]
    pub joins: usize,
    /// Nodes decommissioned at once.
    #[arg(long, default_value_t = 20)]
    pub decommissions: usize,
    /// Tokens a node (fewer make the simulation's memory smaller; the
    /// ring-build target is scaled with them).
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// Simulated seconds a data center stays cut off.
    #[arg(long, default_value_t = 30)]
    pub cut_secs: u64,
    /// A network without delays or losses.
    #[arg(long)]
    pub no_net_faults: bool,
}

/// Steady-state gossip, bytes a node sends and receives a second, at most
/// at 1,000 nodes (and four times that at 4,000).
pub const BYTES_PER_NODE_MAX_AT_1000: u64 = 64 * 1024;
/// Rounds for a token change to reach every node, at most.
pub const TOKEN_ROUNDS_MAX: u64 = 15;
/// Seconds for every live node to see a dead one down, at most.
pub const DETECT_SECS_MAX: u64 = 30;
/// Milliseconds of one ring build at 1,000 nodes, at most (scaled with
/// the token count elsewhere).
pub const RING_BUILD_MS_MAX_AT_1000: f64 = 200.0;

/// What `r` misses of the targets, scaled to its size (steps `a` skips
/// are not counted).
fn misses(r: &ScaleReport, a: &ScaleArgs) -> Vec<String> {
    let mut out = Vec::new();
    let scale = r.nodes as f64 / 1000.0;
    // 64 KB at 1,000 and 4x at 4,000: linear in N above 1,000, the 1,000
    // figure below.
    let bytes_max = (BYTES_PER_NODE_MAX_AT_1000 as f64 * scale.max(1.0)) as u64;
    if r.bytes_mean > bytes_max {
        out.push(format!("{} B/node/s over {bytes_max}", r.bytes_mean));
    }
    if r.token_rounds.is_none_or(|t| t > TOKEN_ROUNDS_MAX) {
        out.push(format!("token change in {:?} rounds", r.token_rounds));
    }
    if r.detect_secs.is_none_or(|s| s > DETECT_SECS_MAX) {
        out.push(format!("dead nodes seen down in {:?} s", r.detect_secs));
    }
    if r.false_suspicions > 0 {
        out.push(format!("{} false suspicions", r.false_suspicions));
    }
    let ring_max = RING_BUILD_MS_MAX_AT_1000 * scale.max(1.0) * (a.tokens as f64 / 64.0).max(1.0);
    if r.ring_build_ms > ring_max {
        out.push(format!(
            "ring build {:.1} ms over {ring_max:.0}",
            r.ring_build_ms
        ));
    }
    for (what, v, ran) in [
        ("start", r.start_secs, true),
        ("join wave", r.join_secs, a.joins > 0),
        ("decommission", r.leave_secs, a.decommissions > 0),
        ("heal", r.heal_secs, a.cut_secs > 0),
    ] {
        if ran && v.is_none() {
            out.push(format!("{what} did not finish"));
        }
    }
    out
}

pub fn run(a: ScaleArgs) -> anyhow::Result<()> {
    println!("{}", ScaleReport::HEADER);
    println!(
        "|{}",
        "---|".repeat(ScaleReport::HEADER.matches('|').count() - 1)
    );
    let mut failed = Vec::new();
    for &nodes in &a.nodes {
        let config = ScaleConfig {
            steady_secs: a.steady_secs,
            joins: a.joins,
            decommissions: a.decommissions,
            tokens: a.tokens,
            cut_secs: a.cut_secs,
            net_faults: !a.no_net_faults,
            ..ScaleConfig::new(nodes, a.seed)
        };
        let r = scale::run(&config).map_err(anyhow::Error::msg)?;
        println!("{}", r.row());
        let split: Vec<String> = r
            .bytes_by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "    bytes a message kind a node a second: {}; ring memo {} hits, {} builds",
            split.join(", "),
            r.ring_memo.0,
            r.ring_memo.1
        );
        let missed = misses(&r, &a);
        if !missed.is_empty() {
            println!("    MISSED: {}", missed.join("; "));
            failed.push(nodes);
        }
    }
    anyhow::ensure!(failed.is_empty(), "targets missed at {failed:?} nodes");
    Ok(())
}
