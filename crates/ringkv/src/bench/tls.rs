//! `ringkv bench tls`: what TLS for clients costs, against what it costs
//! Redis. One ringkv node speaks plaintext RESP, another TLS
//! (`--tls-clients`, its own certificate); one `redis-server` listens on a
//! plaintext port and a TLS port with that same certificate. Each row is
//! run through all four by `redis-benchmark` (with `--tls --cacert` for the
//! TLS ports), taking the median of `--runs` runs of throughput and of the
//! server's CPU per operation.

use std::path::Path;
use std::time::Duration;

use ringkv_cluster::net::certs;

use super::{
    Guard, Measured, RedisBenchArgs, measure, run_benchmark_tls, start_redis_with,
    start_ringkv_with, wait_for_port, which,
};
use crate::ports::free_port;

/// `redis-server` on `port` (plaintext) and `tls_port` (TLS with the
/// certificate folder `certs`, no client certificates asked).
fn start_redis_tls(dir: &Path, port: u16, tls_port: u16, certs: &Path) -> anyhow::Result<Guard> {
    let file = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let extra = [
        "--tls-port".to_string(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        file(certs::NODE_CERT_FILE),
        "--tls-key-file".into(),
        file(certs::NODE_KEY_FILE),
        "--tls-ca-cert-file".into(),
        file(certs::CA_CERT_FILE),
        "--tls-auth-clients".into(),
        "no".into(),
    ];
    let guard = start_redis_with(dir, port, &extra)?;
    wait_for_port(tls_port, Duration::from_secs(10))?;
    Ok(guard)
}

pub fn run(args: RedisBenchArgs) -> anyhow::Result<()> {
    which("redis-server")?;
    which("redis-benchmark")?;
    if args.runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }
    let tmp = std::env::temp_dir().join(format!("ringkv-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let (plain_port, tls_port) = (free_port()?, free_port()?);
    let plain = start_ringkv_with(
        &tmp.join("plain"),
        plain_port,
        &args.sync,
        args.node_threads,
        &[],
    )?;
    let tls = start_ringkv_with(
        &tmp.join("tls"),
        tls_port,
        &args.sync,
        args.node_threads,
        &["--tls-clients"],
    )?;
    let node_certs = tmp.join("tls").join(certs::CERTS_DIR);
    let ca = node_certs.join(certs::CA_CERT_FILE);
    let (redis_port, redis_tls_port) = (free_port()?, free_port()?);
    let redis = start_redis_tls(&tmp, redis_port, redis_tls_port, &node_certs)?;

    println!(
        "redis-benchmark -n {} -r {} -d {} -c {} ; median of {} runs ; ringkv sync={} ; \
         TLS: redis-benchmark --tls --cacert, the same certificate for both servers",
        args.requests, args.keyspace, args.data_size, args.clients, args.runs, args.sync
    );
    println!(
        "{:<4} {:>3} | {:>10} {:>10} {:>7} | {:>10} {:>10} {:>7} | {:>6} {:>6} {:>6} | {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6}",
        "test",
        "P",
        "redis/s",
        "redis tls",
        "x",
        "ringkv/s",
        "rk tls",
        "x",
        "ratio",
        "tls",
        "change",
        "rk us",
        "tls us",
        "x",
        "rd us",
        "tls us",
        "x"
    );
    let rows = [
        ("SET", "set", 1),
        ("GET", "get", 1),
        ("SET", "set", args.pipeline),
        ("GET", "get", args.pipeline),
    ];
    let redis_pid = [redis.0.id()];
    let (plain_pid, tls_pid) = ([plain.0.id()], [tls.0.id()]);
    for (name, test, pipeline) in rows {
        let run = |pids: &[u32], port: u16, ca: Option<&Path>| -> anyhow::Result<Measured> {
            measure(pids, args.requests, args.runs, || {
                run_benchmark_tls(port, test, &args, pipeline, ca)
            })
        };
        let rd = run(&redis_pid, redis_port, None)?;
        let rd_tls = run(&redis_pid, redis_tls_port, Some(&ca))?;
        let rk = run(&plain_pid, plain_port, None)?;
        let rk_tls = run(&tls_pid, tls_port, Some(&ca))?;
        let ratio = rk.row.rps / rd.row.rps;
        let ratio_tls = rk_tls.row.rps / rd_tls.row.rps;
        println!(
            "{:<4} {:>3} | {:>10.0} {:>10.0} {:>7.2} | {:>10.0} {:>10.0} {:>7.2} | {:>6.2} {:>6.2} {:>5.0}% | {:>7.2} {:>7.2} {:>6.2} | {:>7.2} {:>7.2} {:>6.2}",
            name,
            pipeline,
            rd.row.rps,
            rd_tls.row.rps,
            rd_tls.row.rps / rd.row.rps,
            rk.row.rps,
            rk_tls.row.rps,
            rk_tls.row.rps / rk.row.rps,
            ratio,
            ratio_tls,
            (ratio_tls / ratio - 1.0) * 100.0,
            rk.cpu_us_per_op,
            rk_tls.cpu_us_per_op,
            rk_tls.cpu_us_per_op / rk.cpu_us_per_op.max(f64::EPSILON),
            rd.cpu_us_per_op,
            rd_tls.cpu_us_per_op,
            rd_tls.cpu_us_per_op / rd.cpu_us_per_op.max(f64::EPSILON),
        );
    }
    drop((plain, tls, redis));
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
