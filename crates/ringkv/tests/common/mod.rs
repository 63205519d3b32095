//! Helpers for tests that run the real `ringkv` binary as a child process on
//! loopback ports.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings for clusters whose nodes join and leave in a test: fast
/// gossip, a short settle and a short cleanup delay.
pub const MOVING_CLUSTER_CONFIG: &str = r#"
[cluster]
gossip_interval_ms = 100
request_timeout_ms = 2000

[movement]
settle_ms = 500
cleanup_delay_ms = 1000
"#;

/// A node process; killed (SIGKILL) and reaped when dropped.
pub struct NodeProc {
    pub child: Child,
    pub resp: SocketAddr,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    pub data_dir: PathBuf,
}

impl NodeProc {
    /// Starts `ringkv server` on ephemeral loopback ports with `extra` flags
    /// and waits until it is ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> NodeProc {
        Self::start_with(Path::new(env!("CARGO_BIN_EXE_ringkv")), data_dir, extra)
    }

    /// [`NodeProc::start`] of another `ringkv` binary (another version).
    pub fn start_with(exe: &Path, data_dir: &Path, extra: &[&str]) -> NodeProc {
        let mut child = Command::new(exe)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--resp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--cluster-addr", "127.0.0.1:0"])
            // RINGKV_TEST_LOG=info shows what the nodes do.
            .args([
                "--log",
                &std::env::var("RINGKV_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ringkv server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let line = loop {
            assert!(Instant::now() < deadline, "node did not become ready");
            match lines.next() {
                Some(Ok(line)) if line.contains(" ready: ") => break line,
                Some(Ok(_)) => continue,
                other => panic!("node exited before ready: {other:?}"),
            }
        };
        // "ringkv node ID ready: redis-cli -p PORT  |  curl http://ADDR/v1/status"
        let port: u16 = line
            .split("redis-cli -p ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("RESP port in ready line");
        let http: SocketAddr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .expect("HTTP address in ready line");
        let cluster: SocketAddr = line
            .split("cluster ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("cluster address in ready line");
        // Keep draining stdout so the child never blocks on a full pipe;
        // with RINGKV_TEST_LOG set, pass the node's log on.
        let echo = std::env::var_os("RINGKV_TEST_LOG").is_some();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if echo {
                    eprintln!("[{port}] {line}");
                }
            }
        });
        NodeProc {
            child,
            resp: SocketAddr::from(([127, 0, 0, 1], port)),
            http,
            cluster,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn redis(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://{}/", self.resp)).expect("redis client");
        client.get_connection().expect("redis connection")
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "node did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client: (status, lower-cased headers, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
}

/// True when external tools must be present (CI); false lets a developer
/// without them skip the compatibility tests with a note.
pub fn tools_required() -> bool {
    std::env::var("RINGKV_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Whether `tool --version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A JSON answer of a node's HTTP API (`Null` when it does not parse).
pub fn json(node: &NodeProc, path: &str) -> serde_json::Value {
    let (_, _, body) = http(node.http, "GET", path, &[], b"");
    serde_json::from_slice(&body).unwrap_or_default()
}

/// Polls `f` every 100 ms until it holds; fails the test after `secs`.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many nodes `node` believes alive.
pub fn alive(node: &NodeProc) -> usize {
    json(node, "/v1/cluster")["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|x| x["alive"] == true).count())
}

/// How many nodes `node` believes alive and NORMAL (joined, streaming
/// done).
pub fn normal(node: &NodeProc) -> usize {
    json(node, "/v1/cluster")["nodes"]
        .as_array()
        .map_or(0, |n| {
            n.iter()
                .filter(|x| x["alive"] == true && x["status"] == "NORMAL")
                .count()
        })
}

/// Writes `config` (TOML) to `root/ringkv.toml` and starts `n` nodes on it,
/// each with its data in `root/n{i}` and the flags `extra(i)`, every node
/// after the first seeded by the first. Returns once every node sees all
/// `n` alive and NORMAL.
pub fn start_joined(
    root: &Path,
    config: &str,
    n: usize,
    extra: impl Fn(usize) -> Vec<String>,
) -> Vec<NodeProc> {
    let cfg = root.join("ringkv.toml");
    std::fs::write(&cfg, config).expect("write config");
    let cfg = cfg.to_string_lossy().into_owned();
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 0..n {
        let mut args = vec!["--config".to_string(), cfg.clone()];
        if let Some(first) = nodes.first() {
            args.extend(["--seeds".to_string(), first.cluster.to_string()]);
        }
        args.extend(extra(i));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(NodeProc::start(&root.join(format!("n{i}")), &args));
    }
    wait_until("every node to see the others up", 60, || {
        nodes.iter().all(|node| normal(node) == n)
    });
    nodes
}
