//! `ringkv prove`: the guarantees of the brief shown on real processes, not
//! claimed. See `docs/PROOF.md` for how to run the long versions and what
//! each run checks.
//!
//! # Layout
//! - [`procs`]: node processes (start, SIGKILL, SIGSTOP/SIGCONT, restart on
//!   the same data directory and ports), a small HTTP client, scratch
//!   directories. Every child is killed and reaped on drop.
//! - `history` and `checker` (from `ringkv-proof`, shared with the
//!   simulation): operations with invoke/ok/fail/unknown outcomes, and what
//!   a history plus the final reads must satisfy.
//! - [`workload`]: the clients (generators) of the set and register
//!   workloads.
//! - [`nemesis`]: the seeded fault schedule (kill, pause, partition, skew)
//!   and healing.
//! - [`jepsen`]: `ringkv prove jepsen`, which puts these together.
//! - [`crashloop`]: `ringkv prove crashloop`, a single node killed with
//!   SIGKILL over and over.
//! - [`sim`]: `ringkv prove sim`, the deterministic simulation of
//!   `ringkv-proof` replayed for one seed or swept over many.
//! - [`scale`]: `ringkv prove scale`, the scale simulation of the
//!   membership of large clusters, checked against the targets.
//!
//! The harness talks to nodes only through their public interfaces (RESP,
//! HTTP) and the opt-in `/v1/debug/*` routes (`[debug] fault_injection`).

mod crashloop;
mod jepsen;
mod nemesis;
mod procs;
mod scale;
mod sim;
mod workload;

use clap::{Args, Parser, Subcommand};
// The history and its checkers are shared with the simulation.
use ringkv_proof::{checker, history};

#[derive(Debug, Subcommand)]
pub enum ProveCommand {
    /// A Jepsen-style run: a cluster of node processes, concurrent clients
    /// recording a history, faults (kill -9, pause, partition, clock skew),
    /// heal, then the checkers. Exits non-zero on a violation.
    Jepsen(jepsen::JepsenArgs),
    /// One node with the commit log fsynced on every write, killed with
    /// SIGKILL at random moments and restarted; every acknowledged write
    /// must survive. Exits non-zero on a loss.
    Crashloop(crashloop::CrashloopArgs),
    /// The deterministic simulation: a whole cluster in one thread under a
    /// seeded network, clock and disk. Replays one seed or sweeps many.
    /// Exits non-zero when a seed fails.
    Sim(sim::SimArgs),
    /// The scale simulation: the membership (gossip, failure detection,
    /// rings, token allocation) of clusters of hundreds to thousands of
    /// nodes, with gossip bytes, convergence, detection and ring build
    /// figures. Exits non-zero when a size misses a target.
    Scale(scale::ScaleArgs),
    /// The long versions of every proof, one after another: a sweep of
    /// simulation seeds, four Jepsen-style runs (strict and sloppy, register
    /// and set, every fault) and a crash loop. Prints each one's figures and
    /// a verdict per proof; exits non-zero when any failed.
    All(AllArgs),
}

#[derive(Debug, Args)]
pub struct AllArgs {
    /// Simulation seeds to sweep.
    #[arg(long, default_value_t = 10_000)]
    pub sim_seeds: u64,
    /// Length of each Jepsen-style run.
    #[arg(long, default_value_t = 60)]
    pub jepsen_secs: u64,
    #[arg(long, default_value_t = 20)]
    pub crashloop_rounds: u32,
    /// Seed of the Jepsen-style runs and the crash loop.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Parses the arguments of one proof as its own command line would.
fn args_of<A: Args>(line: &[String]) -> anyhow::Result<A> {
    #[derive(Parser)]
    struct Line<A: Args> {
        #[command(flatten)]
        args: A,
    }
    let argv = std::iter::once("ringkv-prove".to_string()).chain(line.iter().cloned());
    Ok(Line::<A>::try_parse_from(argv)?.args)
}

fn run_all(a: AllArgs) -> anyhow::Result<()> {
    let mut verdicts: Vec<(String, Result<(), String>)> = Vec::new();
    let sim_args = sim::SimArgs {
        seed: None,
        seeds: Some(a.sim_seeds),
        first: 1,
        mode: None,
        sync: None,
        nodes: 5,
        workload_ms: 30_000,
        threads: 2,
        no_faults: false,
        history: false,
    };
    println!("== prove sim --seeds {}", a.sim_seeds);
    verdicts.push((
        format!("sim, {} seeds", a.sim_seeds),
        sim::run(sim_args).map_err(|e| e.to_string()),
    ));
    for (mode, workload) in [
        ("strict", "register"),
        ("sloppy", "register"),
        ("strict", "set"),
        ("sloppy", "set"),
    ] {
        let line: Vec<String> = [
            "--nodes",
            "5",
            "--duration-secs",
            &a.jepsen_secs.to_string(),
            "--mode",
            mode,
            "--workload",
            workload,
            "--seed",
            &a.seed.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        println!("== prove jepsen {}", line.join(" "));
        let result = args_of::<jepsen::JepsenArgs>(&line).and_then(jepsen::run);
        verdicts.push((
            format!("jepsen {mode} {workload}, {} s", a.jepsen_secs),
            result.map_err(|e| e.to_string()),
        ));
    }
    let line: Vec<String> = [
        "--rounds".to_string(),
        a.crashloop_rounds.to_string(),
        "--seed".to_string(),
        a.seed.to_string(),
    ]
    .to_vec();
    println!("== prove crashloop {}", line.join(" "));
    let result = args_of::<crashloop::CrashloopArgs>(&line).and_then(crashloop::run);
    verdicts.push((
        format!("crashloop, {} rounds", a.crashloop_rounds),
        result.map_err(|e| e.to_string()),
    ));
    println!("== verdicts");
    let mut failed = 0;
    for (name, v) in &verdicts {
        match v {
            Ok(()) => println!("PASS  {name}"),
            Err(e) => {
                failed += 1;
                println!("FAIL  {name}: {e}");
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {} proofs failed", verdicts.len());
    Ok(())
}

pub fn run(cmd: ProveCommand) -> anyhow::Result<()> {
    match cmd {
        ProveCommand::Jepsen(args) => jepsen::run(args),
        ProveCommand::Crashloop(args) => crashloop::run(args),
        ProveCommand::Sim(args) => sim::run(args),
        ProveCommand::Scale(args) => scale::run(args),
        ProveCommand::All(args) => run_all(args),
    }
}
