//! Real processes, seen as an operator sees them: a node stopped cleanly is
//! seen down by its peers at once, and their logs say so; a write that
//! missed its level says where it was applied; hints held for the stopped
//! node show in the metrics and fall back to 0 once replayed; the metrics
//! pass `promtool check metrics`; INFO's figures agree with DBSIZE.

mod common;

use std::process::Command;
use std::time::Instant;

use common::{NodeProc, http, json, self_id, start_joined, wait_until};

const FAST: &str = "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 1000\n\
                    [hints]\nreplay_interval_ms = 200\n\
                    [diagnostics]\nslowlog_slower_than_us = 0\n";

fn info(node: &NodeProc, section: &str) -> String {
    let mut con = node.redis();
    redis::cmd("INFO")
        .arg(section)
        .query(&mut con)
        .expect("INFO")
}

fn metrics(node: &NodeProc) -> String {
    let (status, _, body) = http(node.http, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    String::from_utf8(body).expect("metrics are text")
}

/// The value of the sample `line_start` (a metric with its labels), if
/// present.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn logged(node: &NodeProc, words: &[&str]) -> bool {
    let log = node.log.lock().unwrap_or_else(|e| e.into_inner());
    log.iter().any(|l| words.iter().all(|w| l.contains(w)))
}

/// `promtool check metrics` on the node's `/metrics`: no finding.
fn promtool_clean(node: &NodeProc) {
    if !common::have("promtool") {
        assert!(
            !common::tools_required(),
            "promtool is missing (Debian's prometheus package)"
        );
        eprintln!("promtool missing: the metrics lint is skipped");
        return;
    }
    let text = metrics(node);
    let path = node.data_dir.join("metrics.txt");
    std::fs::write(&path, &text).expect("write metrics");
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).expect("open metrics"))
        .output()
        .expect("run promtool");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {findings}"
    );
}

#[test]
fn an_operator_sees_what_happened() {
    let root = tempfile::tempdir().expect("tempdir");
    let info_log = |_: usize| vec!["--log".to_string(), "info".to_string()];
    let mut nodes = start_joined(root.path(), FAST, 3, info_log);
    let c = nodes.pop().expect("c");
    let b = nodes.pop().expect("b");
    let a = nodes.pop().expect("a");
    let c_id = self_id(&c);

    // Keys, a quarter of them with an expiry: INFO, status and DBSIZE agree
    // once the census has counted them.
    let mut con = a.redis();
    for i in 0..40 {
        let mut set = redis::cmd("SET");
        set.arg(format!("key:{i}")).arg("v");
        if i % 4 == 0 {
            set.arg("EX").arg(600);
        }
        let () = set.query(&mut con).expect("SET");
    }
    wait_until("INFO keyspace counts every key", 30, || {
        info(&a, "keyspace").contains("db0:keys=40,expires=10,avg_ttl=")
    });
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(dbsize, 40);
    assert_eq!(json(&a, "/v1/status")["keys"]["live"], 40);

    // A write over a size limit is refused, and the refusal logged.
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("k".repeat(1025))
        .arg("v")
        .query(&mut con);
    assert!(refused.is_err(), "a key over key_bytes_max (1024)");
    wait_until("a logs the refused write", 5, || {
        logged(&a, &["write refused: over a size limit", "1025"])
    });

    // A clean stop: the peers see it down within 2 s, and log it.
    let c_dir = c.data_dir.clone();
    let c_log = std::sync::Arc::clone(&c.log);
    let stopped = c.terminate();
    assert!(stopped.success(), "a clean exit: {stopped}");
    let after_stop = Instant::now();
    wait_until("peers see the stopped node down", 2, || {
        common::alive(&a) == 2 && common::alive(&b) == 2
    });
    eprintln!("seen down {:?} after the exit", after_stop.elapsed());
    // Seen down by its goodbye (phi infinite at once), not by a detector
    // that ran out of patience.
    wait_until("a logs the peer down", 5, || {
        logged(&a, &["peer down", &c_id, "phi=inf"])
    });
    assert!(
        c_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l.contains("told peers this node stops peers=2")),
        "the stopped node told both peers"
    );

    // ALL with a replica down: sent, applied on two, the answer says so.
    let (status, _, body) = http(a.http, "PUT", "/v1/kv/partial?w=ALL", &[], b"maybe");
    assert_eq!(status, 503);
    let err: serde_json::Value = serde_json::from_slice(&body).expect("JSON error");
    assert_eq!(err["code"], "incomplete", "{err}");
    assert_eq!(err["missing"], serde_json::json!([c_id]), "{err}");
    assert_eq!(err["acked"].as_array().map(Vec::len), Some(2), "{err}");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("outcome unknown: "), "{message}");
    let (status, _, body) = http(a.http, "GET", "/v1/kv/partial", &[], b"");
    assert_eq!((status, body.as_slice()), (200, b"maybe".as_slice()));
    let () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("ALL")
        .query(&mut con)
        .expect("level");
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("partial")
        .arg("again")
        .query(&mut con);
    let text = format!("{:?}", refused.expect_err("ALL misses c"));
    assert!(
        text.contains("INCOMPLETE") && text.contains("outcome unknown"),
        "{text}"
    );
    let () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("QUORUM")
        .query(&mut con)
        .expect("level");

    // Writes while c is down: hints for it, in the metrics.
    for i in 0..20 {
        let () = redis::cmd("SET")
            .arg(format!("while-down:{i}"))
            .arg("v")
            .query(&mut con)
            .expect("QUORUM SET with one down");
    }
    let pending = format!("ringkv_hints_pending{{target=\"{c_id}\"}}");
    wait_until("hints for c in the metrics", 15, || {
        [&a, &b]
            .iter()
            .any(|n| sample(&metrics(n), &pending).is_some_and(|v| v > 0.0))
    });

    // c comes back: the hints are replayed, the gauges fall to 0, the logs
    // tell it.
    let args = [
        "--config",
        &root.path().join("ringkv.toml").to_string_lossy(),
        "--seeds",
        &a.cluster.to_string(),
        "--log",
        "info",
    ]
    .map(str::to_string);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = NodeProc::start(&c_dir, &args);
    wait_until("hints delivered", 60, || {
        [&a, &b].iter().all(|n| {
            json(n, "/v1/cluster")["hints"]["pending"]
                .as_array()
                .is_some_and(Vec::is_empty)
        })
    });
    wait_until("the hint gauges fall to 0", 15, || {
        [&a, &b].iter().all(|n| {
            let text = metrics(n);
            sample(&text, &pending).is_none_or(|v| v == 0.0)
        })
    });
    assert!(
        [&a, &b]
            .iter()
            .any(|n| sample(&metrics(n), &pending).is_some()),
        "the gauge of a drained target stays, at 0"
    );
    wait_until("a logs the peer up", 10, || logged(&a, &["peer up", &c_id]));
    assert!(
        [&a, &b]
            .iter()
            .any(|n| logged(n, &["replayed hints", &c_id])),
        "the replay is logged"
    );
    assert!(
        [&a, &b]
            .iter()
            .any(|n| logged(n, &["holding hints", &c_id])),
        "the first hint is logged"
    );
    for n in [&a, &b, &c] {
        let log = n.log.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            log.iter().all(|l| !l.contains('\u{1b}')),
            "no colour codes in a piped log"
        );
    }

    // The metrics lint clean on every node; INFO has the sections tools
    // read, with real values.
    for n in [&a, &b, &c] {
        promtool_clean(n);
    }
    let memory = info(&a, "memory");
    let used: u64 = memory
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    assert!(used > 1 << 20, "{memory}");
    assert!(info(&a, "persistence").contains("aof_last_write_status:ok"));
    let commands = info(&a, "commandstats");
    assert!(commands.contains("cmdstat_set:calls="), "{commands}");
    let errors = info(&a, "errorstats");
    assert!(errors.contains("errorstat_INCOMPLETE:count=1"), "{errors}");
    let text = metrics(&a);
    for family in [
        "ringkv_build_info",
        "process_resident_memory_bytes",
        "ringkv_storage_flushes_total",
        "ringkv_keys",
        "ringkv_http_requests_total",
    ] {
        assert!(text.contains(family), "{family} missing");
    }
    // Every request is "slow" here: the slow log shows how long the write
    // waited for each replica.
    let slow = json(&a, "/v1/slowlog");
    let entries = slow["entries"].as_array().expect("entries");
    let write = entries
        .iter()
        .find(|e| {
            e["args"][0] == "SET"
                && e["args"][1]
                    .as_str()
                    .is_some_and(|k| k.starts_with("while-down:"))
        })
        .expect("a SET in the slow log");
    let replicas = write["replicas"].as_array().expect("replicas");
    assert!(
        replicas.len() >= 2,
        "this node and the other live replica: {write}"
    );
    assert!(
        replicas
            .iter()
            .all(|r| r["wait_us"].as_u64().is_some() && r["node"].is_string())
    );
    let mut con = a.redis();
    let len: i64 = redis::cmd("SLOWLOG")
        .arg("LEN")
        .query(&mut con)
        .expect("SLOWLOG LEN");
    assert!(len > 0);
    assert_eq!(
        sample(&text, "ringkv_incomplete_writes_total "),
        Some(2.0),
        "the HTTP and the RESP write that missed ALL"
    );
}

/// Ports `base + 10*i + {0,1,2}` for `nodes` nodes, all free now, below
/// the ephemeral range (so no outgoing connection takes one meanwhile).
fn free_port_block(nodes: u16) -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    for attempt in 0..200u32 {
        let base = 20_000 + ((seed.wrapping_add(attempt.wrapping_mul(7_919))) % 1_200) as u16 * 10;
        let all_free = (0..nodes)
            .flat_map(|i| (0..3).map(move |o| base + 10 * i + o))
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free block of ports");
}

/// The lines a child prints, read on a thread, and waited for.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn follow(out: impl std::io::Read + Send + 'static) -> Lines {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 120 s) for a line at index `from` or later that
    /// `found` accepts; returns the index after it.
    fn wait(&mut self, from: usize, what: &str, found: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + std::time::Duration::from_secs(120);
        let mut at = from;
        loop {
            while at < self.seen.len() {
                at += 1;
                if found(&self.seen[at - 1]) {
                    return at;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in:\n{}",
                self.seen.join("\n")
            );
            match self.rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("output ended without {what}:\n{}", self.seen.join("\n"))
                }
            }
        }
    }
}

/// Stops a child with SIGINT (its Ctrl-C) when dropped, so a failed test
/// leaves no local cluster running.
struct Interrupt(std::process::Child);

impl Drop for Interrupt {
    fn drop(&mut self) {
        // Only a child still running: a reaped one's pid may be another's.
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// `ringkv local-cluster` as an operator runs it: each node's lines come
/// prefixed with its name (and no colour codes through a pipe), the join is
/// logged, `restart 2` stops and starts node 2 (node 1 logs it down and up),
/// and Ctrl-C stops every node.
#[test]
fn local_cluster_prefixes_each_nodes_lines_and_restarts_a_node() {
    use std::io::Write;
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_port_block(2);
    let mut child = Interrupt(
        Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(["local-cluster", "--nodes", "2", "--log", "info"])
            .arg("--dir")
            .arg(dir.path().join("data"))
            .args(["--base-port", &base.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn local-cluster"),
    );
    let mut lines = Lines::follow(child.0.stdout.take().expect("stdout"));
    let banner = lines.wait(0, "banner", |l| l.contains("Ctrl-C stops the cluster"));
    lines.wait(0, "join logged by node 1", |l| {
        l.starts_with("node1: ") && l.contains("node joined the view")
    });

    // Node 2 has joined, in node 1's view and its own.
    let normal = lines.wait(0, "node 2 normal in node 1's view", |l| {
        l.starts_with("node1: ") && l.contains("to=Normal")
    });
    lines.wait(0, "node 2's join finished", |l| {
        l.starts_with("node2: ") && l.contains("movement finished")
    });
    let stdin = child.0.stdin.as_mut().expect("stdin");
    writeln!(stdin, "restart 2").expect("type restart");
    let stopped = lines.wait(banner, "node 2 stopped", |l| l == "node2 stopped");
    lines.wait(stopped, "node 2 started", |l| l == "node2 started");
    lines.wait(normal, "node 1 seeing node 2 down", |l| {
        l.starts_with("node1: ") && l.contains("peer down")
    });
    lines.wait(stopped, "node 1 seeing node 2 up again", |l| {
        l.starts_with("node1: ") && l.contains("peer up")
    });
    // And node 2, restarted, sees node 1 up (until then its writes find
    // one replica alive).
    lines.wait(stopped, "node 2 seeing node 1 up", |l| {
        l.starts_with("node2: ") && l.contains("peer up")
    });
    let all = lines.seen.join("\n");
    assert!(
        !all.contains('\u{1b}'),
        "colour codes through a pipe:\n{all}"
    );

    // Node 2 serves after its restart.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", base + 10)).expect("client");
    let mut con = client.get_connection().expect("connect to node 2");
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut con)
        .expect("SET through node 2");

    // Ctrl-C stops both nodes and the supervisor.
    assert!(
        Command::new("kill")
            .args(["-INT", &child.0.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let end = lines.wait(stopped, "node 1 stopped", |l| l == "node1 stopped");
    lines.wait(end, "node 2 stopped", |l| l == "node2 stopped");
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "local-cluster did not stop");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}
