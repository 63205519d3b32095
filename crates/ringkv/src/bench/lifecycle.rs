//! `ringkv bench lifecycle`: export, SCAN, truncate and import on a
//! three-node cluster (N=3) holding about 1 GB, with a paced client load
//! running throughout whose latency is compared with the same load before.
//!
//! The load is open-loop: each client has a schedule (`--load-rate` spread
//! over `--load-clients` connections) and a request's latency runs from its
//! scheduled time, so a stall counts against every request it delays. Half
//! the requests are GETs of loaded keys, half SETs of a separate `load:`
//! range, so the load never disturbs what is exported or imported.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::cluster::start_ringkv_cluster_with;
use super::{cpu_of, which};

#[derive(Debug, Args)]
pub struct LifecycleBenchArgs {
    /// Keys loaded before the measurements.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Value size in bytes (1,000 B x 1M keys is about 1 GB of values).
    #[arg(long, default_value_t = 1_000)]
    pub value_size: usize,
    /// Paced client load, requests per second over all its connections.
    #[arg(long, default_value_t = 1_000)]
    pub load_rate: u64,
    /// Connections of the paced load.
    #[arg(long, default_value_t = 4)]
    pub load_clients: usize,
    /// How long the load runs alone before the measurements, in seconds.
    #[arg(long, default_value_t = 20)]
    pub baseline_secs: u64,
    /// `ringkv import --rate-mb`.
    #[arg(long, default_value_t = 20.0)]
    pub import_rate_mb: f64,
    /// A plaintext (`--insecure`) cluster instead of mutual TLS.
    #[arg(long)]
    pub insecure: bool,
}

/// What the cluster is doing while a latency sample is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Idle = 0,
    Baseline = 1,
    Export = 2,
    Scan = 3,
    Import = 4,
}

const PHASES: [Phase; 4] = [Phase::Baseline, Phase::Export, Phase::Scan, Phase::Import];

/// One request of the paced load: its phase, latency (us), and success.
type Sample = (u8, u32, bool);

fn key(i: u64) -> String {
    format!("key:{i:012}")
}

/// A value of `len` bytes that compresses no better than real data would:
/// an xorshift stream seeded by the key's number.
fn value(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'!' + (x % 90) as u8
        })
        .collect()
}

fn connect(port: u16) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    Ok(client.get_connection()?)
}

/// Loads keys `0..keys` with pipelined SETs from two connections; returns
/// the seconds taken.
fn load(port: u16, keys: u64, value_size: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let loaders: Vec<JoinHandle<anyhow::Result<()>>> = (0..2u64)
        .map(|part| {
            std::thread::spawn(move || {
                let mut con = connect(port)?;
                let mut i = part * 200;
                while i < keys {
                    let mut pipe = redis::pipe();
                    for k in i..(i + 200).min(keys) {
                        pipe.cmd("SET")
                            .arg(key(k))
                            .arg(value(k, value_size))
                            .ignore();
                    }
                    pipe.query::<()>(&mut con)
                        .with_context(|| format!("loading keys from {i}"))?;
                    i += 400;
                }
                Ok(())
            })
        })
        .collect();
    for l in loaders {
        l.join()
            .map_err(|_| anyhow::anyhow!("a loader panicked"))??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The paced load: runs until `stop`, tagging each sample with `phase`.
fn start_load(
    port: u16,
    args: &LifecycleBenchArgs,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<anyhow::Result<Vec<Sample>>>> {
    let per_client = (args.load_rate as f64 / args.load_clients as f64).max(1.0);
    let interval = Duration::from_secs_f64(1.0 / per_client);
    (0..args.load_clients as u64)
        .map(|c| {
            let (phase, stop) = (phase.clone(), stop.clone());
            let (keys, size) = (args.keys, args.value_size);
            std::thread::spawn(move || {
                let mut con = connect(port)?;
                let mut samples = Vec::new();
                let mut next = Instant::now();
                let mut n: u64 = c;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    n = n
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(c | 1);
                    let ok = if (n >> 33) & 1 == 0 {
                        redis::cmd("GET")
                            .arg(key((n >> 8) % keys))
                            .query::<Option<Vec<u8>>>(&mut con)
                            .is_ok()
                    } else {
                        redis::cmd("SET")
                            .arg(format!("load:{}", (n >> 8) % 10_000))
                            .arg(value(n, size))
                            .query::<()>(&mut con)
                            .is_ok()
                    };
                    let micros = next.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    samples.push((phase.load(Ordering::Relaxed), micros, ok));
                    next += interval;
                }
                Ok(samples)
            })
        })
        .collect()
}

/// Percentile `q` (0..=1) of sorted `v`, in milliseconds.
fn pct(v: &[u32], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    f64::from(v[i]) / 1_000.0
}

/// Runs `ringkv <args>`, failing with its error output.
fn ringkv(args: &[&str]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the ringkv binary")?;
    let out = Command::new(exe)
        .args(args)
        .output()
        .context("running ringkv")?;
    if !out.status.success() {
        bail!(
            "ringkv {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// SCAN through one connection with COUNT `count`: (keys seen, seconds).
fn scan_all(port: u16, count: u64) -> anyhow::Result<(u64, f64)> {
    let mut con = connect(port)?;
    let start = Instant::now();
    let mut cursor = "0".to_string();
    let mut seen = 0u64;
    loop {
        let (next, keys): (String, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg("key:*")
            .arg("COUNT")
            .arg(count)
            .query(&mut con)?;
        seen += keys.len() as u64;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    Ok((seen, start.elapsed().as_secs_f64()))
}

/// `redis-cli --scan` (its default page size): (keys printed, seconds).
fn redis_cli_scan(port: u16) -> anyhow::Result<(u64, f64)> {
    let start = Instant::now();
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--scan", "--pattern", "key:*"])
        .output()
        .context("running redis-cli --scan")?;
    if !out.status.success() {
        bail!("redis-cli --scan failed");
    }
    let lines = out.stdout.iter().filter(|&&b| b == b'\n').count() as u64;
    Ok((lines, start.elapsed().as_secs_f64()))
}

/// Keys `key:*` whose value is back as loaded, of `sample` spread evenly.
fn check_sample(port: u16, keys: u64, size: usize, sample: u64) -> anyhow::Result<u64> {
    let mut con = connect(port)?;
    let mut good = 0;
    let step = (keys / sample.max(1)).max(1);
    for i in (0..keys).step_by(step as usize) {
        let got: Option<Vec<u8>> = redis::cmd("GET").arg(key(i)).query(&mut con)?;
        if got.as_deref() == Some(value(i, size).as_slice()) {
            good += 1;
        }
    }
    Ok(good)
}

/// The size of the files under `dir`, in MB (what cannot be read counts 0).
fn dir_mb(dir: &Path) -> f64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) as f64 / 1e6
}

/// The nodes' write stalls so far, summed: (stalls, seconds), from each
/// node's `/metrics` (a node that does not answer counts 0).
fn stalls(https: &[String]) -> (f64, f64) {
    let mut out = (0.0, 0.0);
    for http in https {
        let Ok((200, body)) = crate::http_client::request(http, "GET", "/metrics", b"") else {
            continue;
        };
        for line in String::from_utf8_lossy(&body).lines() {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            match name {
                "ringkv_storage_write_stalls_total" => out.0 += value,
                "ringkv_storage_write_stall_seconds_total" => out.1 += value,
                _ => {}
            }
        }
    }
    out
}

/// What the servers did during one step: CPU seconds and write stalls.
struct Server {
    cpu: f64,
    stalls: (f64, f64),
}

impl Server {
    fn now(pids: &[u32], https: &[String]) -> Self {
        Self {
            cpu: cpu_of(pids),
            stalls: stalls(https),
        }
    }

    fn since(&self, pids: &[u32], https: &[String], secs: f64) -> String {
        let now = Self::now(pids, https);
        format!(
            "servers {:.2} cores, {:.0} write stalls ({:.2} s)",
            (now.cpu - self.cpu) / secs.max(1e-9),
            now.stalls.0 - self.stalls.0,
            now.stalls.1 - self.stalls.1
        )
    }
}

fn file_mb(path: &Path) -> anyhow::Result<f64> {
    Ok(std::fs::metadata(path)?.len() as f64 / 1e6)
}

pub fn run(args: LifecycleBenchArgs) -> anyhow::Result<()> {
    which("redis-cli")?;
    if args.keys == 0 || args.load_clients == 0 || args.load_rate == 0 {
        bail!("--keys, --load-clients and --load-rate must be at least 1");
    }
    let root = std::env::temp_dir().join(format!("ringkv-bench-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let result = measure(&args, &root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn measure(args: &LifecycleBenchArgs, root: &Path) -> anyhow::Result<()> {
    let (nodes, resp, https) = start_ringkv_cluster_with(&root.join("cluster"), args.insecure)?;
    let http = https.first().context("no node")?.clone();
    let pids: Vec<u32> = nodes.iter().map(|g| g.0.id()).collect();
    let data_mb = args.keys as f64 * (args.value_size + 16) as f64 / 1e6;
    println!(
        "3 nodes N=3 ({}), {} keys x {} B ({data_mb:.0} MB of keys and values); paced load {} req/s over {} connections",
        if args.insecure {
            "plaintext"
        } else {
            "mutual TLS"
        },
        args.keys,
        args.value_size,
        args.load_rate,
        args.load_clients
    );
    let secs = load(resp, args.keys, args.value_size)?;
    println!(
        "loaded in {secs:.1} s ({:.1} MB/s, {:.0} keys/s)",
        data_mb / secs,
        args.keys as f64 / secs
    );

    let phase = Arc::new(AtomicU8::new(Phase::Idle as u8));
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(resp, args, phase.clone(), stop.clone());
    let set = |p: Phase| phase.store(p as u8, Ordering::Relaxed);
    let work = (|| -> anyhow::Result<Vec<String>> {
        let mut rows = Vec::new();
        std::thread::sleep(Duration::from_secs(2));
        set(Phase::Baseline);
        let server = Server::now(&pids, &https);
        std::thread::sleep(Duration::from_secs(args.baseline_secs));
        rows.push(format!(
            "baseline: {}",
            server.since(&pids, &https, args.baseline_secs as f64)
        ));

        let file = root.join("all.rkx");
        let file_s = file.to_string_lossy().to_string();
        set(Phase::Export);
        let server = Server::now(&pids, &https);
        let start = Instant::now();
        ringkv(&["export", "--http", &http, "--out", &file_s])?;
        let secs = start.elapsed().as_secs_f64();
        set(Phase::Idle);
        let mb = file_mb(&file)?;
        rows.push(format!(
            "export: {mb:.0} MB in {secs:.1} s = {:.1} MB/s; {}",
            mb / secs,
            server.since(&pids, &https, secs)
        ));

        std::thread::sleep(Duration::from_secs(2));
        set(Phase::Scan);
        let (seen, secs) = scan_all(resp, 1_000)?;
        set(Phase::Idle);
        rows.push(format!(
            "SCAN COUNT 1000: {seen} keys in {secs:.1} s = {:.0} keys/s",
            seen as f64 / secs
        ));
        let (seen, secs) = redis_cli_scan(resp)?;
        rows.push(format!(
            "redis-cli --scan (COUNT 10): {seen} keys in {secs:.1} s = {:.0} keys/s (no load phase)",
            seen as f64 / secs
        ));

        let mut con = connect(resp)?;
        let before_mb = dir_mb(&root.join("cluster"));
        let start = Instant::now();
        redis::cmd("FLUSHALL").query::<()>(&mut con)?;
        let after = check_sample(resp, args.keys, args.value_size, 1_000)?;
        rows.push(format!("FLUSHALL: {after} of 1000 sampled keys left"));
        // The space comes back in the background: wait for it (at most
        // two minutes), so the import is measured on its own.
        let mut now_mb = before_mb;
        while now_mb > before_mb / 4.0 && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(500));
            now_mb = dir_mb(&root.join("cluster"));
        }
        rows.push(format!(
            "FLUSHALL: data directories {before_mb:.0} MB -> {now_mb:.0} MB in {:.1} s",
            start.elapsed().as_secs_f64()
        ));
        std::thread::sleep(Duration::from_secs(2));

        set(Phase::Import);
        let server = Server::now(&pids, &https);
        let start = Instant::now();
        let rate = args.import_rate_mb.to_string();
        ringkv(&[
            "import",
            "--http",
            &http,
            "--in",
            &file_s,
            "--rate-mb",
            &rate,
        ])?;
        let secs = start.elapsed().as_secs_f64();
        set(Phase::Idle);
        rows.push(format!(
            "import (--rate-mb {rate}): {mb:.0} MB in {secs:.1} s = {:.1} MB/s; {}",
            mb / secs,
            server.since(&pids, &https, secs)
        ));
        let back = check_sample(resp, args.keys, args.value_size, 1_000)?;
        rows.push(format!(
            "after import: {back} of 1000 sampled keys back as loaded"
        ));
        let (seen, _) = scan_all(resp, 1_000)?;
        rows.push(format!(
            "after import: SCAN finds {seen} of {} keys",
            args.keys
        ));
        Ok(rows)
    })();
    stop.store(true, Ordering::Relaxed);
    let mut samples: Vec<Sample> = Vec::new();
    for l in load {
        match l.join() {
            Ok(Ok(s)) => samples.extend(s),
            Ok(Err(e)) => eprintln!("a load client failed: {e:#}"),
            Err(_) => eprintln!("a load client panicked"),
        }
    }
    drop(nodes);
    for row in work? {
        println!("{row}");
    }
    println!();
    println!(
        "{:<10} {:>8} {:>7} {:>8} {:>8} {:>8} {:>10}",
        "load in", "requests", "errors", "p50 ms", "p99 ms", "max ms", "p99 x base"
    );
    let mut base_p99 = f64::NAN;
    for p in PHASES {
        let mut lat: Vec<u32> = samples
            .iter()
            .filter(|s| s.0 == p as u8)
            .map(|s| s.1)
            .collect();
        let errors = samples.iter().filter(|s| s.0 == p as u8 && !s.2).count();
        lat.sort_unstable();
        let p99 = pct(&lat, 0.99);
        if p == Phase::Baseline {
            base_p99 = p99;
        }
        println!(
            "{:<10} {:>8} {:>7} {:>8.3} {:>8.3} {:>8.1} {:>10.2}",
            format!("{p:?}").to_lowercase(),
            lat.len(),
            errors,
            pct(&lat, 0.5),
            p99,
            pct(&lat, 1.0),
            p99 / base_p99
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_stable_and_sized() {
        assert_eq!(value(7, 100), value(7, 100));
        assert_ne!(value(7, 100), value(8, 100));
        assert_eq!(value(1, 1_000).len(), 1_000);
    }

    #[test]
    fn percentiles_of_sorted_samples() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1_000).collect();
        assert_eq!(pct(&v, 0.5), 51.0);
        assert_eq!(pct(&v, 0.99), 99.0);
        assert_eq!(pct(&v, 1.0), 100.0);
        assert!(pct(&[], 0.5).is_nan());
    }
}
