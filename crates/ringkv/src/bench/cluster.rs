//! `ringkv bench cluster`: a three-node ringkv cluster (N=3, R=W=2, mutual
//! TLS and signed states, the default) against a single Redis and a
//! three-node etcd cluster, in one run, with CPU time per operation of each
//! system's server processes; `--plaintext-too` adds a plaintext ringkv
//! cluster for the cost of TLS.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::etcd::{self, Op};
use super::{Guard, RedisBenchArgs, measure, run_benchmark, start_redis, wait_for_port, which};
use crate::ports::free_port;

#[derive(Debug, Args)]
pub struct ClusterBenchArgs {
    /// Requests per run.
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
    #[arg(long, default_value_t = 1_000_000)]
    pub keyspace: u64,
    #[arg(long, default_value_t = 100)]
    pub data_size: usize,
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Runs per row; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip etcd (when Debian's etcd-server is not installed).
    #[arg(long)]
    pub skip_etcd: bool,
    /// Also run a plaintext (`--insecure`) ringkv cluster, to measure what
    /// mutual TLS and signed states cost.
    #[arg(long)]
    pub plaintext_too: bool,
}

/// Three nodes with their data under `root`: mutual TLS (certificates from
/// a CA in `root/ca`), or plaintext when `insecure`. Returns the nodes and
/// the first node's RESP port.
pub(crate) fn start_ringkv_cluster(
    root: &Path,
    insecure: bool,
) -> anyhow::Result<(Vec<Guard>, u16)> {
    let (nodes, resp, _) = start_ringkv_cluster_with(root, insecure)?;
    Ok((nodes, resp))
}

/// [`start_ringkv_cluster`], also returning every node's HTTP address.
pub(crate) fn start_ringkv_cluster_with(
    root: &Path,
    insecure: bool,
) -> anyhow::Result<(Vec<Guard>, u16, Vec<String>)> {
    let exe = std::env::current_exe().context("locating the ringkv binary")?;
    let mut nodes = Vec::new();
    let mut seed: Option<String> = None;
    let mut first_resp = 0;
    let mut https = Vec::new();
    for i in 0..3 {
        let (resp, http, cluster) = (free_port()?, free_port()?, free_port()?);
        let dir = root.join(format!("node{i}"));
        let mut cmd = Command::new(&exe);
        cmd.arg("server");
        if insecure {
            cmd.arg("--insecure");
        } else {
            crate::cert::provision(&root.join("ca"), &dir)?;
        }
        cmd.arg("--data-dir")
            .arg(&dir)
            .args(["--resp-addr", &format!("127.0.0.1:{resp}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--cluster-addr", &format!("127.0.0.1:{cluster}")])
            .args(["--log", "warn"]);
        if let Some(s) = &seed {
            cmd.args(["--seeds", s]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a ringkv node")?;
        nodes.push(Guard(child));
        https.push(format!("127.0.0.1:{http}"));
        wait_for_port(resp, Duration::from_secs(60))?;
        if i == 0 {
            seed = Some(format!("127.0.0.1:{cluster}"));
            first_resp = resp;
        }
    }
    // Wait until a write at ALL succeeds: every replica is up and known.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut child = Command::new("redis-cli")
            .args(["-p", &first_resp.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        if let Some(stdin) = child.stdin.as_mut() {
            use std::io::Write;
            stdin.write_all(b"RINGKV.CONSISTENCY ALL\nSET bench:probe 1\n")?;
        }
        let out = child.wait_with_output()?;
        if String::from_utf8_lossy(&out.stdout).matches("OK").count() >= 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("ringkv cluster did not come up");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Give gossip a few rounds so every node knows every other.
    std::thread::sleep(Duration::from_secs(3));
    Ok((nodes, first_resp, https))
}

fn start_etcd(root: &Path) -> anyhow::Result<(Vec<Guard>, Vec<String>)> {
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut guards = Vec::new();
    let mut clients = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(root.join(format!("etcd{i}")))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (apt-get install etcd-server)")?;
        guards.push(Guard(child));
        clients.push(format!("127.0.0.1:{client}"));
    }
    for c in &clients {
        etcd::wait_ready(c, Duration::from_secs(60))?;
    }
    Ok((guards, clients))
}

pub fn run(args: ClusterBenchArgs) -> anyhow::Result<()> {
    which("redis-server")?;
    which("redis-benchmark")?;
    if args.runs == 0 || args.clients == 0 {
        bail!("--runs and --clients must be at least 1");
    }
    let root = std::env::temp_dir().join(format!("ringkv-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let rb = RedisBenchArgs {
        requests: args.requests,
        keyspace: args.keyspace,
        data_size: args.data_size,
        clients: args.clients,
        pipeline: 1,
        runs: args.runs,
        sync: "periodic".into(),
        threads: 0,
        node_threads: 0,
    };

    let redis_port = free_port()?;
    let redis = start_redis(&root, redis_port)?;
    let redis_pids = [redis.0.id()];
    let (nodes, resp) = start_ringkv_cluster(&root.join("tls"), false)?;
    let node_pids: Vec<u32> = nodes.iter().map(|g| g.0.id()).collect();
    let plain = if args.plaintext_too {
        Some(start_ringkv_cluster(&root.join("plain"), true)?)
    } else {
        None
    };
    let etcd = if args.skip_etcd {
        None
    } else {
        Some(start_etcd(&root)?)
    };

    println!(
        "requests {} keyspace {} value {} B clients {} ; median of {} runs",
        args.requests, args.keyspace, args.data_size, args.clients, args.runs
    );
    println!(
        "{:<28} {:<4} {:>10} {:>8} {:>8} {:>12}",
        "system", "op", "ops/s", "p50 ms", "p99 ms", "cpu us/op"
    );
    let mut results = Vec::new();
    for (op, test) in [("SET", "set"), ("GET", "get")] {
        let r = measure(&redis_pids, args.requests, args.runs, || {
            run_benchmark(redis_port, test, &rb, 1)
        })?;
        let k = measure(&node_pids, args.requests, args.runs, || {
            run_benchmark(resp, test, &rb, 1)
        })?;
        let p = match &plain {
            Some((guards, port)) => {
                let pids: Vec<u32> = guards.iter().map(|g| g.0.id()).collect();
                Some(measure(&pids, args.requests, args.runs, || {
                    run_benchmark(*port, test, &rb, 1)
                })?)
            }
            None => None,
        };
        let e = match &etcd {
            Some((guards, clients)) => {
                let pids: Vec<u32> = guards.iter().map(|g| g.0.id()).collect();
                let etcd_op = if op == "SET" { Op::Put } else { Op::Get };
                Some(measure(&pids, args.requests, args.runs, || {
                    etcd::run_load(
                        clients,
                        etcd_op,
                        args.requests,
                        args.clients,
                        args.keyspace,
                        args.data_size,
                    )
                })?)
            }
            None => None,
        };
        for (name, m) in [
            ("redis 1 node", Some(&r)),
            ("ringkv 3 nodes N=3 R=W=2", Some(&k)),
            ("ringkv 3 nodes plaintext", p.as_ref()),
            ("etcd 3 nodes", e.as_ref()),
        ] {
            if let Some(m) = m {
                println!(
                    "{:<28} {:<4} {:>10.0} {:>8.3} {:>8.3} {:>12.1}",
                    name, op, m.row.rps, m.row.p50_ms, m.row.p99_ms, m.cpu_us_per_op
                );
            }
        }
        if let Some(p) = &p {
            println!(
                "{op}: mutual TLS / plaintext CPU per op {:.2}x, p99 {:.3} vs {:.3} ms",
                k.cpu_us_per_op / p.cpu_us_per_op,
                k.row.p99_ms,
                p.row.p99_ms
            );
        }
        results.push((op, r, k, e));
    }
    println!();
    for (op, r, k, e) in &results {
        print!(
            "{op}: ringkv/redis throughput {:.2}x",
            k.row.rps / r.row.rps
        );
        if let Some(e) = e {
            print!(", ringkv/etcd throughput {:.2}x", k.row.rps / e.row.rps);
        }
        println!(", ringkv p99 {:.3} ms", k.row.p99_ms);
    }
    drop(etcd);
    drop(plain);
    drop(nodes);
    drop(redis);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
