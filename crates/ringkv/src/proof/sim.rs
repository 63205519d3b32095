//! `ringkv prove sim`: the deterministic simulation (`ringkv_proof::sim`),
//! one seed replayed or many swept. Exits non-zero when any seed fails.

use clap::{Args, ValueEnum};
use ringkv_proof::sim::{self, SimConfig, SimReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Hinted writes do not count towards W; a stale read fails the run.
    Strict,
    /// Sloppy quorum; stale reads are reported, losses fail the run.
    Sloppy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sync {
    /// fsync on every write.
    Always,
    /// fsync every 100 ms (the server's default).
    Periodic,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Replay this seed (and print its fault timeline).
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Sweep this many seeds, from `--first`; even seeds run strict, odd
    /// seeds sloppy; seeds 2 and 3 modulo 4 sync periodically.
    #[arg(long)]
    pub seeds: Option<u64>,
    #[arg(long, default_value_t = 1)]
    pub first: u64,
    /// Mode of a replayed seed (default: the one a sweep gives it).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Commit-log sync of a replayed seed (default: the one a sweep gives
    /// it).
    #[arg(long, value_enum)]
    pub sync: Option<Sync>,
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Simulated milliseconds of client load and faults per seed.
    #[arg(long, default_value_t = 30_000)]
    pub workload_ms: u64,
    /// Threads of a sweep (each runs one seed at a time).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Run without the nemesis (message delays and rare losses remain).
    #[arg(long)]
    pub no_faults: bool,
    /// Print every operation of a replayed seed.
    #[arg(long)]
    pub history: bool,
}

fn print_failure(r: &SimReport) {
    println!("FAIL {}", r.summary());
    for v in &r.violations {
        println!("  violation: {v}");
    }
    println!("  reproduce: {}", r.reproduce());
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 3, "--nodes must be at least 3");
    let base = SimConfig {
        nodes: args.nodes,
        workload_ms: args.workload_ms,
        faults: !args.no_faults,
        ..SimConfig::default()
    };
    if let Some(seed) = args.seed {
        // A replay can show the nodes' own logs (`RUST_LOG=ringkv_cluster=debug`).
        crate::server::init_logging("off");
        let mut config = sim::config_for(seed, &base);
        if let Some(mode) = args.mode {
            config.strict = mode == Mode::Strict;
        }
        if let Some(sync) = args.sync {
            config.periodic_sync = sync == Sync::Periodic;
        }
        let report = sim::run(seed, &config);
        for (at, event) in &report.events {
            println!("{:>9.3}s  {event}", at.as_secs_f64());
        }
        if args.history {
            for op in &report.history {
                println!(
                    "{:>9.3}s..{:.3}s  client {} {:?} {:?} {:?} {}",
                    op.invoke_us as f64 / 1e6,
                    op.complete_us as f64 / 1e6,
                    op.client,
                    op.kind,
                    op.outcome,
                    op.seen,
                    op.error.as_deref().unwrap_or("")
                );
            }
        }
        println!("figures: {}", report.summary());
        if !report.passed() {
            print_failure(&report);
            anyhow::bail!("seed {seed} failed");
        }
        println!("verdict: PASS");
        return Ok(());
    }
    let count = args.seeds.unwrap_or(100);
    let started = std::time::Instant::now();
    let reports = sim::sweep(args.first, count, args.threads, &base, &|r| {
        if !r.passed() {
            print_failure(r);
        }
    });
    let failed: Vec<u64> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.seed)
        .collect();
    let sum = |f: &dyn Fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    let converge_max = reports
        .iter()
        .filter_map(|r| r.converge_ms.map(|ms| (ms, r.seed)))
        .max();
    let mut converge: Vec<u64> = reports.iter().filter_map(|r| r.converge_ms).collect();
    converge.sort_unstable();
    let converge_p99 = converge
        .get(converge.len().saturating_sub(1) * 99 / 100)
        .copied();
    let mut faults = std::collections::BTreeMap::new();
    for r in &reports {
        for (k, v) in &r.faults {
            *faults.entry(*k).or_insert(0u64) += v;
        }
    }
    let faults: Vec<String> = faults.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "figures: seeds={} failed={} ops={} acknowledged={} unknown={} lost={} stale_strict={} \
         stale_sloppy={} faults=[{}] messages={} flushes={} compactions={} pruned={} \
         converge_ms_p99={} converge_ms_max={} sim_s={} wall_s={:.1}",
        reports.len(),
        failed.len(),
        sum(&|r| r.counts.ops),
        sum(&|r| r.counts.acknowledged),
        sum(&|r| r.counts.unknown),
        sum(&|r| r.register.lost + r.set.lost),
        sum(&|r| if r.strict { r.register.stale } else { 0 }),
        sum(&|r| if r.strict { 0 } else { r.register.stale }),
        faults.join(","),
        sum(&|r| r.net.delivered),
        sum(&|r| r.flushes),
        sum(&|r| r.compactions),
        sum(&|r| r.pruned),
        converge_p99.map_or_else(|| "never".into(), |v| v.to_string()),
        converge_max.map_or_else(|| "never".into(), |(ms, seed)| format!("{ms}(seed {seed})")),
        sum(&|r| r.sim_ms) / 1000,
        started.elapsed().as_secs_f64(),
    );
    if failed.is_empty() {
        println!("verdict: PASS");
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} seeds failed: {failed:?}",
            failed.len(),
            reports.len()
        )
    }
}
