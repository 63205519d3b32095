//! `ringkv bench ring`: how long a node takes to rebuild its placement (the
//! ring from every node's tokens, then every vnode's preference list) when
//! a state that changes the ring arrives, for rings of growing size. The
//! work should grow as `T log T` in the number of tokens `T`: ten times the
//! nodes, about ten times the time. Beside it, the update membership does
//! instead (`Placement::updated`): the ring after one more node joins,
//! from the placement before, walking again only the vnodes the join
//! reaches.

use std::time::{Duration, Instant};

use clap::Args;
use ringkv_cluster::ring::{Placement, Replication, Ring, RingNode};

#[derive(Debug, Args)]
pub struct RingBenchArgs {
    /// Ring sizes to measure, in nodes.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1_000, 10_000])]
    pub nodes: Vec<usize>,
    /// Tokens per node.
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// Racks the nodes are spread over.
    #[arg(long, default_value_t = 3)]
    pub racks: usize,
    /// Replication factor.
    #[arg(long, default_value_t = 3)]
    pub rf: usize,
    /// Rebuilds per size; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// A seeded xorshift: every run places the same tokens.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Every node's tokens, as gossip would hand them over.
fn states(nodes: usize, tokens: usize, racks: usize) -> Vec<(RingNode, Vec<u64>)> {
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15);
    (0..nodes)
        .map(|i| {
            let node = RingNode {
                id: i as u64 + 1,
                dc: "dc1".into(),
                rack: format!("r{}", i % racks.max(1)),
                weight: 1,
            };
            (node, (0..tokens).map(|_| draw.next()).collect())
        })
        .collect()
}

/// The ring of `states`.
fn ring_of(states: &[(RingNode, Vec<u64>)], tokens: usize) -> Ring {
    let mut ring = Ring::new(tokens);
    for (node, tokens) in states {
        let _ = ring.insert_with_tokens(node.clone(), tokens);
    }
    ring
}

/// One rebuild, as membership does it: the ring, then the placement.
fn rebuild(states: &[(RingNode, Vec<u64>)], tokens: usize, rf: usize) -> (Duration, usize) {
    let started = Instant::now();
    let ring = ring_of(states, tokens);
    let (placement, steps) = Placement::counted(ring, Replication::simple("dc1", rf));
    let took = started.elapsed();
    drop(placement);
    (took, steps)
}

/// One update after a join, as membership does it: the ring with the
/// newcomer (its tokens as gossip hands them over), then the placement
/// from the one before.
fn update(
    base: &Placement,
    joined: &[(RingNode, Vec<u64>)],
    tokens: usize,
    rf: usize,
) -> (Duration, usize) {
    let started = Instant::now();
    let ring = ring_of(joined, tokens);
    let (placement, steps) = Placement::updated_counted(base, ring, Replication::simple("dc1", rf));
    let took = started.elapsed();
    drop(placement);
    (took, steps)
}

/// `states` and one more node with random tokens, as the others have.
fn with_newcomer(states: &[(RingNode, Vec<u64>)], tokens: usize) -> Vec<(RingNode, Vec<u64>)> {
    let newcomer = RingNode {
        id: u64::MAX,
        dc: "dc1".into(),
        rack: "r0".into(),
        weight: 1,
    };
    let mut draw = Draw(0x2545_f491_4f6c_dd1d);
    let mut joined = states.to_vec();
    joined.push((newcomer, (0..tokens).map(|_| draw.next()).collect()));
    joined
}

pub fn run(args: RingBenchArgs) -> anyhow::Result<()> {
    println!(
        "ring rebuild: {} tokens a node, {} racks, N={}, median of {} runs",
        args.tokens, args.racks, args.rf, args.runs
    );
    println!(
        "{:>8} {:>10} {:>12} {:>14} {:>16} {:>18} {:>14}",
        "nodes",
        "tokens",
        "rebuild ms",
        "walk steps",
        "ns per token",
        "join update ms",
        "walk steps"
    );
    for &n in &args.nodes {
        let states = states(n, args.tokens, args.racks);
        let mut times = Vec::new();
        let mut steps = 0;
        for _ in 0..args.runs.max(1) {
            let (took, s) = rebuild(&states, args.tokens, args.rf);
            times.push(took);
            steps = s;
        }
        times.sort();
        let median = times[times.len() / 2];
        let base = Placement::new(
            ring_of(&states, args.tokens),
            Replication::simple("dc1", args.rf),
        );
        let joined = with_newcomer(&states, args.tokens);
        let mut updates = Vec::new();
        let mut update_steps = 0;
        for _ in 0..args.runs.max(1) {
            let (took, s) = update(&base, &joined, args.tokens, args.rf);
            updates.push(took);
            update_steps = s;
        }
        updates.sort();
        let total = n * args.tokens;
        println!(
            "{:>8} {:>10} {:>12.1} {:>14} {:>16.0} {:>18.1} {:>14}",
            n,
            total,
            median.as_secs_f64() * 1e3,
            steps,
            median.as_nanos() as f64 / total.max(1) as f64,
            updates[updates.len() / 2].as_secs_f64() * 1e3,
            update_steps
        );
    }
    Ok(())
}
