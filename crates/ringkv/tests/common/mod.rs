//! Helpers for tests that run the real `ringkv` binary as a child process on
//! loopback ports.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
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

/// Gives `data_dir` a node certificate (unless it has one) from the CA in
/// its parent folder's `ca`, created on first use.
pub fn provision_certs(data_dir: &Path) -> u64 {
    provision_certs_for(data_dir, None)
}

/// [`provision_certs`] for node `id` (a node that already has an id).
pub fn provision_certs_for(data_dir: &Path, id: Option<u64>) -> u64 {
    use ringkv_cluster::net::certs;
    static CA: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CA.lock().unwrap_or_else(|e| e.into_inner());
    let root = data_dir.parent().expect("data dir has a parent");
    let ca = certs::load_or_create_ca(&root.join("ca")).expect("test CA");
    certs::ensure_node_folder(&ca, &data_dir.join(certs::CERTS_DIR), id).expect("node certificate")
}

/// A node process; killed (SIGKILL) and reaped when dropped.
pub struct NodeProc {
    pub child: Child,
    pub resp: SocketAddr,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    pub data_dir: PathBuf,
    /// The node's log lines after its ready line (the last
    /// [`LOG_LINES_KEPT`]).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Log lines a [`NodeProc`] keeps.
pub const LOG_LINES_KEPT: usize = 20_000;

impl NodeProc {
    /// Starts `ringkv server` on ephemeral loopback ports with `extra` flags
    /// and waits until it is ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> NodeProc {
        Self::start_with(Path::new(env!("CARGO_BIN_EXE_ringkv")), data_dir, extra)
    }

    /// [`NodeProc::start`] of another `ringkv` binary (another version).
    /// This version's nodes get a certificate from a CA in the data
    /// directory's parent folder (mutual TLS, the default) unless `extra`
    /// says `--insecure`.
    pub fn start_with(exe: &Path, data_dir: &Path, extra: &[&str]) -> NodeProc {
        if exe == Path::new(env!("CARGO_BIN_EXE_ringkv")) && !extra.contains(&"--insecure") {
            provision_certs(data_dir);
        }
        let mut child = Command::new(exe)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--resp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--cluster-addr", "127.0.0.1:0"])
            // RINGKV_TEST_LOG=info shows what the nodes do.
            .args(if extra.contains(&"--log") {
                Vec::new()
            } else {
                vec![
                    "--log".to_string(),
                    std::env::var("RINGKV_TEST_LOG").unwrap_or_else(|_| "warn".into()),
                ]
            })
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
        // "ringkv node ID ready: redis-cli -p PORT [--tls ...]  |  curl http[s]://ADDR/v1/status"
        let port: u16 = line
            .split("redis-cli -p ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .expect("RESP port in ready line");
        let http: SocketAddr = line
            .split("://")
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
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if echo {
                    eprintln!("[{port}] {line}");
                }
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() >= LOG_LINES_KEPT {
                    // Drop the older half at once: amortised O(1) per line.
                    kept.drain(..LOG_LINES_KEPT / 2);
                }
                kept.push(line);
            }
        });
        NodeProc {
            child,
            resp: SocketAddr::from(([127, 0, 0, 1], port)),
            http,
            cluster,
            data_dir: data_dir.to_path_buf(),
            log,
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

/// One HTTP exchange: (status, lower-cased headers, body), whatever the
/// status. Redirects are not followed and no connection is kept: nodes are
/// killed and restarted on the same ports.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    let agent = AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(30)))
            .timeout_per_write(Some(Duration::from_secs(30)))
            .build()
            .new_agent()
    });
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body).expect("a valid request");
    let mut answer = agent
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    let status = answer.status().as_u16();
    let headers = answer
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = answer
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: reading the body: {e}"));
    (status, headers, body)
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

/// The node's id (16 hex digits), as it reports it.
pub fn self_id(node: &NodeProc) -> String {
    json(node, "/v1/cluster")["self"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until every node sees `n` nodes alive and NORMAL, each at the
/// address it listens on now (a restarted node has new ports; until its
/// peers hear of them they call the old ones).
pub fn all_normal(nodes: &[&NodeProc], n: usize) {
    for node in nodes {
        wait_until("every node NORMAL", 60, || normal(node) == n);
        for other in nodes {
            let id = self_id(other);
            let addr = other.cluster.to_string();
            wait_until("every node at its current address", 30, || {
                json(node, "/v1/cluster")["nodes"]
                    .as_array()
                    .is_some_and(|l| {
                        l.iter()
                            .any(|x| x["id"] == id.as_str() && x["cluster_addr"] == addr.as_str())
                    })
            });
        }
    }
}

/// An argon2id hash of `password`, as `ringkv user hash` prints it.
pub fn password_hash(password: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["user", "hash"])
        .env("RINGKV_PASSWORD", password)
        .output()
        .expect("ringkv user hash");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs this `ringkv` binary with `args`: whether it succeeded, and its
/// standard output then error.
pub fn run_ringkv(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(args)
        .output()
        .expect("run ringkv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Makes `key` hold the siblings `values`: a first value, then one write of
/// each value from the same causal context, each through its own node of
/// `through` (so their coordinators differ).
pub fn make_siblings(key: &str, through: &[&NodeProc], values: &[String]) {
    let mut con = through[0].redis();
    let () = redis::cmd("SET")
        .arg(key)
        .arg("base")
        .query(&mut con)
        .expect("SET");
    let (ctx, _): (Vec<u8>, Vec<Vec<u8>>) = redis::cmd("RINGKV.GETALL")
        .arg(key)
        .query(&mut con)
        .expect("GETALL");
    for (node, value) in through.iter().zip(values) {
        let () = redis::cmd("RINGKV.PUT")
            .arg(key)
            .arg(value)
            .arg("CONTEXT")
            .arg(&ctx)
            .query(&mut node.redis())
            .expect("RINGKV.PUT");
    }
}
