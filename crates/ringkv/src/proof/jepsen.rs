//! `ringkv prove jepsen`: a cluster of real node processes on loopback,
//! concurrent clients recording a history, a nemesis injecting faults, then
//! heal, convergence, final reads at ALL and the checkers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::checker::{self, FinalRead, Verdict};
use super::history::{self, Op, OpKind, RunClock, Seen};
use super::nemesis::{self, Cluster, Fault, FaultEvent};
use super::procs::{NodeProc, WorkDir, connect_redis};
use super::workload::{self, ClientSpec, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Sloppy quorum: hints held by stand-ins count towards W.
    Sloppy,
    /// Strict quorum: only real replicas count (R + W > N).
    Strict,
}

#[derive(Debug, Clone, Args)]
pub struct JepsenArgs {
    /// Nodes in the cluster (replication factor 3, QUORUM reads and writes).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// How long the clients run (faults stop 3 s before the end).
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    #[arg(long, value_enum, default_value_t = Mode::Strict)]
    pub mode: Mode,
    #[arg(long, value_enum, default_value_t = Workload::Register)]
    pub workload: Workload,
    /// Seed of the operation and fault schedule (default: from the time).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Comma-separated faults (kill, pause, partition, skew, join,
    /// decommission); `none` for a fault-free run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,partition,skew,join,decommission"
    )]
    pub faults: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    pub clients: u32,
    /// Register workload: keys each client writes.
    #[arg(long, default_value_t = 4)]
    pub keys_per_client: u32,
    /// Pause between two operations of one client, in ms.
    #[arg(long, default_value_t = 10)]
    pub pace_ms: u64,
    /// How long healing may take before the run fails.
    #[arg(long, default_value_t = 120)]
    pub converge_timeout_secs: u64,
    /// Working directory (kept); by default a temporary one, removed on
    /// success and kept on failure.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Most operations one client records.
const CLIENT_OPS_MAX: usize = 1_000_000;
/// Request timeout of the clients.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Set workload: never-invoked elements probed per client (must be absent).
const PROBES_PER_CLIENT: u64 = 3;
/// Attempts of one final-read batch before the run fails.
const FINAL_READ_ATTEMPTS_MAX: usize = 20;

fn parse_faults(names: &[String]) -> anyhow::Result<Vec<Fault>> {
    let mut out = Vec::new();
    for name in names {
        let f = match name.trim() {
            "" | "none" => continue,
            "kill" => Fault::Kill,
            "pause" => Fault::Pause,
            "partition" => Fault::Partition,
            "skew" => Fault::Skew,
            "join" => Fault::Join,
            "decommission" => Fault::Decommission,
            other => bail!(
                "unknown fault {other:?} (kill, pause, partition, skew, join, decommission, none)"
            ),
        };
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(out)
}

fn node_config(mode: Mode) -> String {
    format!(
        "[cluster]\nreplication_factor = 3\nread = \"QUORUM\"\nwrite = \"QUORUM\"\n\
         strict_quorum = {}\ngossip_interval_ms = 200\nrequest_timeout_ms = 1000\n\
         [hints]\nreplay_interval_ms = 300\n\
         [storage]\nmemtable_bytes_max = 4194304\nblock_cache_bytes = 8388608\n\
         [debug]\nfault_injection = true\n",
        mode == Mode::Strict
    )
}

/// Starts the nodes one after another (each joins through the first) and
/// waits until all see each other; `spares` more are prepared, not started.
fn start_cluster(
    dir: &std::path::Path,
    n: usize,
    spares: usize,
    mode: Mode,
) -> anyhow::Result<Cluster> {
    let config = dir.join("ringkv.toml");
    std::fs::write(&config, node_config(mode)).context("writing the node config")?;
    let mut nodes = Vec::with_capacity(n + spares);
    let mut ids = Vec::with_capacity(n + spares);
    for i in 0..n + spares {
        let mut node = NodeProc::new(
            &format!("node {i}"),
            &dir.join(format!("n{i}")),
            &config,
            &[],
        )?;
        if i < n {
            let seeds: Vec<_> = nodes
                .first()
                .map(|f: &NodeProc| f.ports.cluster)
                .into_iter()
                .collect();
            node.start(&seeds)?;
            ids.push(nemesis::node_id(&node)?);
        } else {
            ids.push(0);
        }
        nodes.push(node);
    }
    let mut cluster = Cluster {
        nodes,
        ids,
        members: (0..n + spares).map(|i| i < n).collect(),
        leaving: None,
        size: n,
    };
    cluster
        .wait_converged(Instant::now(), Duration::from_secs(60))
        .context("waiting for the new cluster to see all its nodes")?;
    Ok(cluster)
}

/// Runs `f` on a fresh connection at consistency ALL, retrying (bounded) on
/// errors: after healing, a read may still meet a node that is catching up.
fn with_all<T>(
    cluster: &Cluster,
    mut f: impl FnMut(&mut redis::Connection) -> Result<T, String>,
) -> anyhow::Result<T> {
    let mut last = String::new();
    let running = cluster.running();
    if running.is_empty() {
        bail!("no node is running for the final reads");
    }
    for attempt in 0..FINAL_READ_ATTEMPTS_MAX {
        let node = &cluster.nodes[running[attempt % running.len()]];
        let result = connect_redis(node.ports.resp, OP_TIMEOUT)
            .map_err(|e| e.to_string())
            .and_then(|mut con| {
                redis::cmd("RINGKV.CONSISTENCY")
                    .arg("ALL")
                    .query::<()>(&mut con)
                    .map_err(|e| e.to_string())?;
                f(&mut con)
            });
        match result {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("final read failed {FINAL_READ_ATTEMPTS_MAX} times: {last}")
}

fn final_set_reads(
    cluster: &Cluster,
    ops: &[Op],
    clients: u32,
) -> anyhow::Result<HashMap<u64, FinalRead>> {
    let mut elements: Vec<u64> = ops
        .iter()
        .filter_map(|op| match op.kind {
            OpKind::Add { element } => Some(element),
            _ => None,
        })
        .collect();
    // Probes: the next elements each client would have added; never sent.
    for c in 0..clients {
        let next = elements
            .iter()
            .filter(|e| (*e >> 32) as u32 == c)
            .map(|e| (e & 0xFFFF_FFFF) + 1)
            .max()
            .unwrap_or(0);
        for k in 0..PROBES_PER_CLIENT {
            elements.push((u64::from(c) << 32) | (next + k));
        }
    }
    elements.sort_unstable();
    elements.dedup();
    let mut out = HashMap::with_capacity(elements.len());
    for chunk in elements.chunks(100) {
        let keys: Vec<String> = chunk.iter().map(|e| history::set_key(*e)).collect();
        let values: Vec<Option<Vec<u8>>> = with_all(cluster, |con| {
            redis::cmd("MGET")
                .arg(&keys)
                .query(con)
                .map_err(|e| e.to_string())
        })?;
        if values.len() != chunk.len() {
            bail!(
                "MGET answered {} values for {} keys",
                values.len(),
                chunk.len()
            );
        }
        out.extend(chunk.iter().copied().zip(values));
    }
    Ok(out)
}

fn final_register_reads(cluster: &Cluster, keys: u32) -> anyhow::Result<HashMap<u32, Vec<Seen>>> {
    let mut out = HashMap::new();
    for key in 0..keys {
        let seen = with_all(cluster, |con| workload::read_register(con, key))?;
        out.insert(key, seen);
    }
    Ok(out)
}

/// The figures of a run.
#[derive(Debug)]
pub struct Report {
    pub counts: history::Counts,
    pub verdict: Verdict,
    pub faults: Vec<FaultEvent>,
    pub convergence: Duration,
    pub connect_failures: u64,
    /// The most frequent errors clients saw, with their counts.
    pub errors: Vec<(String, u64)>,
}

/// Writes the history and the faults, in invoke order, to `history.txt`:
/// the evidence a failed run leaves for whoever investigates it.
fn write_history(dir: &std::path::Path, ops: &[Op], faults: &[FaultEvent]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut lines: Vec<(u64, String)> = Vec::with_capacity(ops.len() + faults.len() * 2);
    for op in ops {
        lines.push((
            op.invoke_us,
            format!(
                "{:>12} {:>12} client {:>3} {:?} {:?} seen={:?}{}",
                op.invoke_us,
                op.complete_us,
                op.client,
                op.kind,
                op.outcome,
                op.seen,
                op.error
                    .as_deref()
                    .map(|e| format!(" error={e}"))
                    .unwrap_or_default()
            ),
        ));
    }
    for f in faults {
        lines.push((
            f.start_us,
            format!("{:>12} nemesis start: {}", f.start_us, f.detail),
        ));
        lines.push((
            f.end_us,
            format!("{:>12} nemesis end: {}", f.end_us, f.fault.name()),
        ));
    }
    lines.sort_by_key(|(t, _)| *t);
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("history.txt"))?);
    for (_, line) in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// Most distinct errors listed in the report.
const ERRORS_LISTED_MAX: usize = 5;

fn top_errors(ops: &[Op]) -> Vec<(String, u64)> {
    let mut by_text: HashMap<String, u64> = HashMap::new();
    for op in ops {
        if let Some(e) = &op.error {
            // Errors differ only in node ids and counts; group by their start.
            let head: String = e.chars().take(48).collect();
            *by_text.entry(head).or_default() += 1;
        }
    }
    let mut list: Vec<(String, u64)> = by_text.into_iter().collect();
    list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(ERRORS_LISTED_MAX);
    list
}

pub fn run(args: JepsenArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let faults = parse_faults(&args.faults)?;
    if !(3..=16).contains(&args.nodes) {
        bail!("--nodes must be between 3 and 16");
    }
    if args.clients == 0 || args.clients > 256 || args.keys_per_client == 0 {
        bail!("--clients must be 1..=256 and --keys-per-client positive");
    }
    let fault_names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
    let faults_arg = if fault_names.is_empty() {
        "none".to_string()
    } else {
        fault_names.join(",")
    };
    let mode = match args.mode {
        Mode::Sloppy => "sloppy",
        Mode::Strict => "strict",
    };
    let workload_name = match args.workload {
        Workload::Set => "set",
        Workload::Register => "register",
    };
    let repro = format!(
        "ringkv prove jepsen --nodes {} --duration-secs {} --mode {mode} --workload {workload_name} --seed {seed} --faults {faults_arg} --clients {}",
        args.nodes, args.duration_secs, args.clients
    );
    println!("prove jepsen: {repro}");
    let mut dir = WorkDir::new(args.dir.as_deref(), "jepsen", seed)?;
    let result = run_in(&args, seed, &faults, &dir.path);
    match result {
        Ok(report) => {
            print_report(&args, &report);
            let violation = report.verdict.lost > 0
                || report.verdict.phantom > 0
                || (args.mode == Mode::Strict && report.verdict.stale > 0);
            if violation {
                dir.keep();
                println!(
                    "history (history.txt), node logs and data kept in {}",
                    dir.path.display()
                );
                println!("reproduce (same seed: same operation and fault schedule): {repro}");
                bail!("guarantee violated (see the examples above)");
            }
            println!("verdict: PASS");
            Ok(())
        }
        Err(e) => {
            dir.keep();
            println!("node logs and data kept in {}", dir.path.display());
            println!("reproduce: {repro}");
            Err(e)
        }
    }
}

fn run_in(
    args: &JepsenArgs,
    seed: u64,
    faults: &[Fault],
    dir: &std::path::Path,
) -> anyhow::Result<Report> {
    let spares = usize::from(faults.contains(&Fault::Join));
    let mut cluster = start_cluster(dir, args.nodes, spares, args.mode)?;
    println!("cluster of {} nodes up in {}", args.nodes, dir.display());
    let clock = RunClock::new();
    let until = Instant::now() + Duration::from_secs(args.duration_secs);
    let stop = Arc::new(AtomicBool::new(false));
    let resp: Vec<_> = cluster.nodes.iter().map(|n| n.ports.resp).collect();
    let mut handles = Vec::new();
    for id in 0..args.clients {
        let spec = ClientSpec {
            id,
            workload: args.workload,
            nodes: resp.clone(),
            seed,
            clock,
            until,
            keys_per_client: args.keys_per_client,
            clients: args.clients,
            pace: Duration::from_millis(args.pace_ms),
            op_timeout: OP_TIMEOUT,
            ops_max: CLIENT_OPS_MAX,
            stop: Arc::clone(&stop),
        };
        let handle = std::thread::Builder::new()
            .name(format!("client-{id}"))
            .spawn(move || workload::run_client(spec))
            .context("starting a client thread")?;
        handles.push(handle);
    }
    let faults_until = until.checked_sub(Duration::from_secs(3)).unwrap_or(until);
    let converge_within = Duration::from_secs(args.converge_timeout_secs);
    // Convergence is timed from the last heal while the clients keep going,
    // as an application would see it.
    let healed = nemesis::run(&mut cluster, faults, seed, clock, faults_until).and_then(
        |(events, healed_at)| {
            let took = cluster.wait_converged(healed_at, converge_within)?;
            Ok((events, took))
        },
    );
    if healed.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    let mut ops = Vec::new();
    let mut connect_failures = 0;
    for h in handles {
        match h.join() {
            Ok(r) => {
                ops.extend(r.ops);
                connect_failures += r.connect_failures;
            }
            Err(_) => bail!("a client thread panicked"),
        }
    }
    let (events, convergence) = healed?;
    // The last writes' hints must be handed over before the final reads.
    cluster.wait_converged(Instant::now(), converge_within)?;
    let verdict = match args.workload {
        Workload::Set => {
            let finals = final_set_reads(&cluster, &ops, args.clients)?;
            checker::check_set(&ops, &finals)
        }
        Workload::Register => {
            let finals = final_register_reads(&cluster, args.clients * args.keys_per_client)?;
            checker::check_register(&ops, &finals)
        }
    };
    // A clean stop, so the logs end with the nodes' own shutdown.
    for node in &mut cluster.nodes {
        let _ = node.terminate(Duration::from_secs(10));
    }
    write_history(dir, &ops, &events).context("writing history.txt")?;
    Ok(Report {
        counts: history::counts(&ops),
        verdict,
        faults: events,
        convergence,
        connect_failures,
        errors: top_errors(&ops),
    })
}

fn print_report(args: &JepsenArgs, r: &Report) {
    let c = &r.counts;
    let v = &r.verdict;
    let mut by_kind: Vec<(&str, usize)> = Vec::new();
    for f in &r.faults {
        match by_kind.iter_mut().find(|(k, _)| *k == f.fault.name()) {
            Some(entry) => entry.1 += 1,
            None => by_kind.push((f.fault.name(), 1)),
        }
    }
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("faults injected:");
    for f in &r.faults {
        println!(
            "  {:>8.3}s-{:>8.3}s  {}",
            f.start_us as f64 / 1e6,
            f.end_us as f64 / 1e6,
            f.detail
        );
    }
    println!(
        "operations      {} (ok {}, fail {}, unknown {})",
        c.ops, c.ok, c.fail, c.unknown
    );
    println!(
        "acknowledged    {} {}",
        c.acknowledged,
        match args.workload {
            Workload::Set => "adds",
            Workload::Register => "writes",
        }
    );
    if args.workload == Workload::Register {
        println!("reads ok        {}", c.reads_ok);
    }
    println!("lost            {}", v.lost);
    println!(
        "stale           {}{}",
        v.stale,
        if args.mode == Mode::Sloppy {
            " (allowed in sloppy mode)"
        } else {
            ""
        }
    );
    println!("phantom         {}", v.phantom);
    if args.workload == Workload::Register {
        println!(
            "late writes     {} (reads that saw a timed-out write land after a later acknowledged one)",
            v.late_writes
        );
    }
    if args.workload == Workload::Set {
        println!(
            "unknown adds    {} present, {} absent at the end",
            v.unknown_present, v.unknown_absent
        );
    }
    println!("faults          {} ({})", r.faults.len(), kinds.join(", "));
    println!(
        "convergence     {:.1} s from the last heal to every node alive to all, no hints held",
        r.convergence.as_secs_f64()
    );
    println!("connect errors  {}", r.connect_failures);
    for (text, n) in &r.errors {
        println!("  client error x{n}: {text}");
    }
    for e in &v.examples {
        println!("  violation: {e}");
    }
    println!(
        "figures: ops={} acknowledged={} lost={} stale={} phantom={} late_writes={} unknown={} faults={} convergence_ms={}",
        c.ops,
        c.acknowledged,
        v.lost,
        v.stale,
        v.phantom,
        v.late_writes,
        c.unknown,
        r.faults.len(),
        r.convergence.as_millis()
    );
}
