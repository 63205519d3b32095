//! `ringkv bench`: measurements against peer systems, in one run on this
//! machine.
//!
//! `ringkv bench redis` starts Debian's `redis-server` twice (without
//! persistence, and with `appendonly yes` / `appendfsync everysec`, the
//! durability of ringkv's periodic sync) and a ringkv node (this binary, as
//! a child process, commit log on with periodic sync) side by side, runs the
//! same `redis-benchmark` against each, and prints ops/s, p99, each server's
//! CPU per operation (from `/proc`, which other load on the machine cannot
//! inflate) and the ringkv/Redis ratios against both. Each row is the median
//! of `--runs` runs, alternating the servers so all see the same machine
//! load. A run that does not finish in time is killed and reported (a
//! server that hangs), never waited for.
//!
//! `ringkv bench cluster` does the same with a three-node ringkv cluster
//! (N=3, R=W=2), a single Redis, and a three-node etcd cluster (Debian's
//! `etcd-server`, driven by [`etcd`]'s HTTP client at the same value size and
//! concurrency), and reports CPU time per operation of the server processes.
//!
//! `ringkv bench lifecycle` measures export, import and SCAN on a
//! three-node cluster of about 1 GB, and what they do to a client's p99.
//!
//! `ringkv bench ring` times the placement rebuild for rings of growing
//! size, in process.

mod cluster;
mod etcd;
mod lifecycle;
mod ring;
mod tls;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::ports::free_port;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// ringkv vs. Redis with redis-benchmark (SET and GET, with and without
    /// pipelining).
    Redis(RedisBenchArgs),
    /// A three-node ringkv cluster vs. one Redis and a three-node etcd.
    Cluster(cluster::ClusterBenchArgs),
    /// How long a node takes to rebuild its placement for rings of 100 to
    /// 10,000 nodes (in process; no peer).
    Ring(ring::RingBenchArgs),
    /// ringkv vs. Redis, plaintext and TLS (`redis-benchmark --tls`), with
    /// the same certificate: throughput and CPU per operation.
    Tls(RedisBenchArgs),
    /// Export, SCAN, FLUSHALL and import on a three-node cluster of about
    /// 1 GB, with a paced client load: MB/s, keys/s and its p99 against
    /// the same load before.
    Lifecycle(lifecycle::LifecycleBenchArgs),
}

#[derive(Debug, Args)]
pub struct RedisBenchArgs {
    /// Requests per redis-benchmark run (`-n`).
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: u64,
    /// Keyspace size (`-r`).
    #[arg(long, default_value_t = 1_000_000)]
    pub keyspace: u64,
    /// Value size in bytes (`-d`).
    #[arg(long, default_value_t = 100)]
    pub data_size: usize,
    /// Concurrent connections (`-c`).
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Pipeline depth of the pipelined rows (`-P`).
    #[arg(long, default_value_t = 16)]
    pub pipeline: usize,
    /// Runs per row; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Commit-log sync mode of the ringkv node.
    #[arg(long, default_value = "periodic")]
    pub sync: String,
    /// redis-benchmark threads (`--threads`); 0 leaves the default.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Request threads of the ringkv node (`--worker-threads`); 0 leaves
    /// the node's default.
    #[arg(long, default_value_t = 0)]
    pub node_threads: usize,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Redis(args) => redis(args),
        BenchCommand::Cluster(args) => cluster::run(args),
        BenchCommand::Ring(args) => ring::run(args),
        BenchCommand::Tls(args) => tls::run(args),
        BenchCommand::Lifecycle(args) => lifecycle::run(args),
    }
}

/// One redis-benchmark result row.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Row {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// Kills and reaps a child when dropped, so no server outlives the bench.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn wait_for_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < within {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port} after {within:?}")
}

pub(crate) fn which(tool: &str) -> anyhow::Result<()> {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        bail!("{tool} not found: apt-get install redis-server redis-tools");
    }
    Ok(())
}

pub(crate) fn start_redis(dir: &Path, port: u16) -> anyhow::Result<Guard> {
    start_redis_with(dir, port, &[])
}

/// [`start_redis`] with more `redis-server` options.
pub(crate) fn start_redis_with(dir: &Path, port: u16, extra: &[String]) -> anyhow::Result<Guard> {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        // Later options win: `extra` may turn the append-only file on.
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    let guard = Guard(child);
    wait_for_port(port, Duration::from_secs(10))?;
    Ok(guard)
}

fn start_ringkv(dir: &Path, port: u16, sync: &str, threads: usize) -> anyhow::Result<Guard> {
    start_ringkv_with(dir, port, sync, threads, &[])
}

/// [`start_ringkv`] with more flags.
pub(crate) fn start_ringkv_with(
    dir: &Path,
    port: u16,
    sync: &str,
    threads: usize,
    extra: &[&str],
) -> anyhow::Result<Guard> {
    let exe = std::env::current_exe().context("locating the ringkv binary")?;
    let http = free_port()?;
    let cluster = free_port()?;
    crate::cert::provision(&dir.with_extension("ca"), dir)?;
    let mut cmd = Command::new(exe);
    cmd.arg("server");
    if threads > 0 {
        cmd.args(["--worker-threads", &threads.to_string()]);
    }
    let child = cmd
        .args(["--cluster-addr", &format!("127.0.0.1:{cluster}")])
        .arg("--data-dir")
        .arg(dir)
        .args(["--resp-addr", &format!("127.0.0.1:{port}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--sync", sync, "--log", "warn"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the ringkv node")?;
    let guard = Guard(child);
    wait_for_port(port, Duration::from_secs(30))?;
    Ok(guard)
}

pub(crate) fn run_benchmark(
    port: u16,
    test: &str,
    args: &RedisBenchArgs,
    pipeline: usize,
) -> anyhow::Result<Row> {
    run_benchmark_tls(port, test, args, pipeline, None)
}

/// [`run_benchmark`], over TLS trusting the CA file `cacert` when given.
pub(crate) fn run_benchmark_tls(
    port: u16,
    test: &str,
    args: &RedisBenchArgs,
    pipeline: usize,
    cacert: Option<&Path>,
) -> anyhow::Result<Row> {
    let mut cmd = Command::new("redis-benchmark");
    if let Some(ca) = cacert {
        cmd.arg("--tls").arg("--cacert").arg(ca);
    }
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", test, "-n", &args.requests.to_string()])
        .args(["-r", &args.keyspace.to_string()])
        .args(["-d", &args.data_size.to_string()])
        .args(["-c", &args.clients.to_string()])
        .args(["-P", &pipeline.to_string()])
        .args(["--csv", "-q"]);
    if args.threads > 0 {
        cmd.args(["--threads", &args.threads.to_string()]);
    }
    // Bounded: a server that hangs is reported, not waited for.
    let within = benchmark_time_limit(args.requests);
    let out = output_within(&mut cmd, within)
        .with_context(|| format!("redis-benchmark -t {test} against port {port}"))?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_csv(&String::from_utf8_lossy(&out.stdout), test)
}

/// How long one redis-benchmark run may take: a generous 5,000 requests a
/// second, and at least two minutes.
pub(crate) fn benchmark_time_limit(requests: u64) -> Duration {
    Duration::from_secs((requests / 5_000).max(120))
}

/// Runs `cmd` to completion like [`Command::output`], but kills it and
/// fails when it runs longer than `within` (a peer that hangs).
pub(crate) fn output_within(
    cmd: &mut Command,
    within: Duration,
) -> anyhow::Result<std::process::Output> {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer within {within:?}: the server hangs (killed the client)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Parses `redis-benchmark --csv`: a header line naming the columns, then
/// one line per test.
fn parse_csv(text: &str, test: &str) -> anyhow::Result<Row> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .context("empty redis-benchmark output")?
        .split(',')
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("redis-benchmark output has no {name} column"))
    };
    let (rps, p50, p99) = (col("rps")?, col("p50_latency_ms")?, col("p99_latency_ms")?);
    for line in lines {
        let fields: Vec<&str> = line.split(',').map(|s| s.trim_matches('"')).collect();
        if fields.first().is_some_and(|t| t.eq_ignore_ascii_case(test)) {
            let num = |i: usize| -> anyhow::Result<f64> {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .with_context(|| format!("bad number in {line:?}"))
            };
            return Ok(Row {
                rps: num(rps)?,
                p50_ms: num(p50)?,
                p99_ms: num(p99)?,
            });
        }
    }
    bail!("redis-benchmark printed no {test} row")
}

pub(crate) fn median(mut rows: Vec<Row>) -> Row {
    let mid = rows.len() / 2;
    let pick = |rows: &mut Vec<Row>, key: fn(&Row) -> f64| {
        rows.sort_by(|a, b| key(a).total_cmp(&key(b)));
        key(&rows[mid])
    };
    Row {
        rps: pick(&mut rows, |r| r.rps),
        p50_ms: pick(&mut rows, |r| r.p50_ms),
        p99_ms: pick(&mut rows, |r| r.p99_ms),
    }
}

/// Redis with the durability ringkv's periodic sync gives: every write
/// handed to the OS before its reply, the file synced every second.
const REDIS_AOF: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "everysec"];

fn redis(args: RedisBenchArgs) -> anyhow::Result<()> {
    which("redis-server")?;
    which("redis-benchmark")?;
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let tmp = std::env::temp_dir().join(format!("ringkv-bench-{}", std::process::id()));
    std::fs::create_dir_all(tmp.join("aof"))?;
    let redis_port = free_port()?;
    let aof_port = free_port()?;
    let ringkv_port = free_port()?;
    let redis = start_redis(&tmp, redis_port)?;
    let aof_args: Vec<String> = REDIS_AOF.iter().map(|s| s.to_string()).collect();
    let aof = start_redis_with(&tmp.join("aof"), aof_port, &aof_args)?;
    let ringkv = start_ringkv(
        &tmp.join("ringkv"),
        ringkv_port,
        &args.sync,
        args.node_threads,
    )?;
    let servers = [
        (redis_port, redis.0.id()),
        (aof_port, aof.0.id()),
        (ringkv_port, ringkv.0.id()),
    ];

    let rows = [
        ("SET", "set", 1),
        ("GET", "get", 1),
        ("SET", "set", args.pipeline),
        ("GET", "get", args.pipeline),
    ];
    println!(
        "redis-benchmark -n {} -r {} -d {} -c {} ; median of {} runs, the servers alternated ; \
         ringkv sync={} request threads={} ; redis+aof = appendonly yes, appendfsync everysec",
        args.requests,
        args.keyspace,
        args.data_size,
        args.clients,
        args.runs,
        args.sync,
        match args.node_threads {
            0 => "default".to_string(),
            n => n.to_string(),
        }
    );
    println!(
        "{:<4} {:>3} | {:>9} {:>7} {:>6} | {:>9} {:>7} {:>6} | {:>9} {:>7} {:>6} | {:>7} {:>7} {:>7} {:>7}",
        "test",
        "P",
        "redis/s",
        "p99 ms",
        "cpu us",
        "+aof/s",
        "p99 ms",
        "cpu us",
        "ringkv/s",
        "p99 ms",
        "cpu us",
        "x redis",
        "x +aof",
        "p99 x",
        "cpu x"
    );
    for (name, test, pipeline) in rows {
        // Runs alternate between the servers, so load on the machine that
        // comes and goes spreads over all three.
        let mut runs: [Vec<(Row, f64)>; 3] = Default::default();
        for _ in 0..args.runs {
            for (i, &(port, pid)) in servers.iter().enumerate() {
                let before = cpu_of(&[pid]);
                let row = run_benchmark(port, test, &args, pipeline)?;
                let cpu_us = (cpu_of(&[pid]) - before) * 1e6 / args.requests as f64;
                runs[i].push((row, cpu_us));
            }
        }
        let [r, a, k] = runs.map(|v| {
            let mut cpu: Vec<f64> = v.iter().map(|(_, c)| *c).collect();
            cpu.sort_by(f64::total_cmp);
            (
                median(v.into_iter().map(|(row, _)| row).collect()),
                cpu[cpu.len() / 2],
            )
        });
        println!(
            "{:<4} {:>3} | {:>9.0} {:>7.3} {:>6.2} | {:>9.0} {:>7.3} {:>6.2} | {:>9.0} {:>7.3} {:>6.2} | {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
            name,
            pipeline,
            r.0.rps,
            r.0.p99_ms,
            r.1,
            a.0.rps,
            a.0.p99_ms,
            a.1,
            k.0.rps,
            k.0.p99_ms,
            k.1,
            k.0.rps / r.0.rps,
            k.0.rps / a.0.rps,
            k.0.p99_ms / r.0.p99_ms.max(f64::EPSILON),
            k.1 / r.1.max(f64::EPSILON),
        );
    }
    drop(ringkv);
    drop(aof);
    drop(redis);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at ")".
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ")".
    let ticks: f64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?))
        .context("malformed stat times")?;
    Ok(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_seconds(p).ok()).sum()
}

pub(crate) struct Measured {
    pub(crate) row: Row,
    pub(crate) cpu_us_per_op: f64,
}

/// `runs` runs of `f` (each `requests` operations): the median row, and
/// the median CPU of `pids` per operation in microseconds.
pub(crate) fn measure(
    pids: &[u32],
    requests: u64,
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<Row>,
) -> anyhow::Result<Measured> {
    let mut rows = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..runs {
        let before = cpu_of(pids);
        rows.push(f()?);
        let used = cpu_of(pids) - before;
        cpu.push(used * 1e6 / requests as f64);
    }
    cpu.sort_by(f64::total_cmp);
    Ok(Measured {
        row: median(rows),
        cpu_us_per_op: cpu[cpu.len() / 2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_benchmark_csv() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"SET\",\"123456.79\",\"0.250\",\"0.080\",\"0.239\",\"0.367\",\"0.479\",\"1.655\"\n";
        let row = parse_csv(text, "set").expect("parse");
        assert!((row.rps - 123_456.79).abs() < 1e-6);
        assert!((row.p50_ms - 0.239).abs() < 1e-9);
        assert!((row.p99_ms - 0.479).abs() < 1e-9);
        assert!(parse_csv(text, "get").is_err());
    }

    #[test]
    fn median_is_per_column() {
        let rows = vec![
            Row {
                rps: 1.0,
                p50_ms: 9.0,
                p99_ms: 5.0,
            },
            Row {
                rps: 3.0,
                p50_ms: 1.0,
                p99_ms: 4.0,
            },
            Row {
                rps: 2.0,
                p50_ms: 5.0,
                p99_ms: 6.0,
            },
        ];
        let m = median(rows);
        assert_eq!((m.rps, m.p50_ms, m.p99_ms), (2.0, 5.0, 5.0));
    }
}
