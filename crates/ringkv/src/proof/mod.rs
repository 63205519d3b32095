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
//!
//! The harness talks to nodes only through their public interfaces (RESP,
//! HTTP) and the opt-in `/v1/debug/*` routes (`[debug] fault_injection`).

mod crashloop;
mod jepsen;
mod nemesis;
mod procs;
mod sim;
mod workload;

use clap::Subcommand;
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
}

pub fn run(cmd: ProveCommand) -> anyhow::Result<()> {
    match cmd {
        ProveCommand::Jepsen(args) => jepsen::run(args),
        ProveCommand::Crashloop(args) => crashloop::run(args),
        ProveCommand::Sim(args) => sim::run(args),
    }
}
