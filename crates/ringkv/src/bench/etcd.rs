//! A small etcd load generator over etcd's HTTP/JSON gateway (`/v3/kv/put`,
//! `/v3/kv/range`), with keep-alive connections: the peer's "client at the
//! same value size and concurrency" for `ringkv bench cluster`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Row;

/// Largest etcd answer read, in bytes.
const RESPONSE_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
}

/// Runs `requests` operations from `clients` connections spread over
/// `addrs`; returns throughput and latency.
pub fn run_load(
    addrs: &[String],
    op: Op,
    requests: u64,
    clients: usize,
    keyspace: u64,
    data_size: usize,
) -> anyhow::Result<Row> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let per_client = requests / clients as u64;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let addr = addrs[c % addrs.len()].clone();
            tasks.push(tokio::spawn(client(
                addr, op, per_client, keyspace, data_size, c as u64,
            )));
        }
        let mut lat = Vec::with_capacity(requests as usize);
        for t in tasks {
            lat.extend(t.await.context("etcd client task")??);
        }
        let elapsed = start.elapsed();
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        Ok(Row {
            rps: lat.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
        })
    })
}

async fn client(
    addr: String,
    op: Op,
    count: u64,
    keyspace: u64,
    data_size: usize,
    seed: u64,
) -> anyhow::Result<Vec<u64>> {
    let stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connecting to etcd at {addr}"))?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let value = STANDARD.encode(vec![b'x'; data_size]);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut lat = Vec::with_capacity(count as usize);
    let mut line = String::new();
    let mut body = Vec::new();
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let key = STANDARD.encode(format!("key:{:012}", state % keyspace));
        let (path, json) = match op {
            Op::Put => (
                "/v3/kv/put",
                format!("{{\"key\":\"{key}\",\"value\":\"{value}\"}}"),
            ),
            Op::Get => ("/v3/kv/range", format!("{{\"key\":\"{key}\"}}")),
        };
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        let t = Instant::now();
        w.write_all(req.as_bytes()).await?;
        // Status line and headers.
        let mut content_length = None;
        let mut chunked = false;
        let mut status_ok = false;
        let mut first = true;
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                bail!("etcd closed the connection");
            }
            let l = line.trim_end();
            if first {
                status_ok = l.split_whitespace().nth(1) == Some("200");
                first = false;
                continue;
            }
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = v.trim().parse::<usize>().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        body.clear();
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim(), 16).context("chunk size")?;
                if size > RESPONSE_BYTES_MAX {
                    bail!("etcd answer too large");
                }
                let mut chunk = vec![0u8; size + 2];
                r.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let n = content_length.context("etcd answer without length")?;
            if n > RESPONSE_BYTES_MAX {
                bail!("etcd answer too large");
            }
            body.resize(n, 0);
            r.read_exact(&mut body).await?;
        }
        if !status_ok {
            bail!("etcd answered an error: {}", String::from_utf8_lossy(&body));
        }
        lat.push(t.elapsed().as_micros() as u64);
    }
    Ok(lat)
}

/// Waits until an etcd member answers on its client port.
pub fn wait_ready(addr: &str, within: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(row) = run_load(&[addr.to_string()], Op::Put, 1, 1, 1, 1)
            && row.rps > 0.0
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("etcd at {addr} not ready after {within:?}")
}
