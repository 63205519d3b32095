//! Elasticity on real processes: a node joins under load and streams what
//! it now owns, a node is decommissioned under load, a joining node killed
//! mid-stream resumes, a dead node is removed and its ranges re-replicated.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{NodeProc, http, json, start_joined, wait_until};

const CONFIG: &str = common::MOVING_CLUSTER_CONFIG;

fn redis_at(addr: SocketAddr) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/"))
        .expect("client")
        .get_connection()
        .expect("connection")
}

/// Writes `n` keys `{prefix}{i}` = `i` (padded to `size` bytes) through
/// `node`, pipelined.
fn preload(node: &NodeProc, prefix: &str, n: usize, size: usize) {
    let mut c = node.redis();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("{prefix}{i}"))
                .arg(value(*i, size))
                .ignore();
        }
        let () = pipe.query(&mut c).expect("preload");
    }
}

fn value(i: usize, size: usize) -> String {
    format!("{i:0>size$}")
}

/// Clients writing fresh keys through several nodes until stopped; each
/// returns (acknowledged keys, failed requests with their errors).
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<(Vec<String>, Vec<String>)>>,
}

impl Load {
    fn start(targets: &[SocketAddr], tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = targets
            .iter()
            .enumerate()
            .map(|(w, &addr)| {
                let stop = Arc::clone(&stop);
                let tag = tag.to_string();
                std::thread::spawn(move || {
                    let mut c = redis_at(addr);
                    let (mut acked, mut failed) = (Vec::new(), Vec::new());
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{tag}:{w}:{i}");
                        let r: redis::RedisResult<()> =
                            redis::cmd("SET").arg(&key).arg(&key).query(&mut c);
                        match r {
                            Ok(()) => acked.push(key),
                            Err(e) => failed.push(format!("{key}: {e}")),
                        }
                        i += 1;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    (acked, failed)
                })
            })
            .collect();
        Load { stop, workers }
    }

    fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        let mut failed = Vec::new();
        for w in self.workers {
            let (a, f) = w.join().expect("load worker");
            acked.extend(a);
            failed.extend(f);
        }
        (acked, failed)
    }
}

/// Every key in `keys` reads back with `expect(key)` at QUORUM through
/// `node` (one pipelined MGET per chunk).
fn assert_readable(node: &NodeProc, keys: &[String], expect: impl Fn(&str) -> String) {
    let mut c = node.redis();
    for chunk in keys.chunks(500) {
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(&mut c).expect("MGET");
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(
                v.as_deref(),
                Some(expect(k).as_str()),
                "key {k} lost or wrong"
            );
        }
    }
}

/// The number of live keys each node holds locally (its key census, which
/// counts again every few seconds; DBSIZE is the cluster's).
fn local_keys(nodes: &[&NodeProc]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| json(n, "/v1/status")["keys"]["live"].as_u64().unwrap_or(0))
        .collect()
}

fn node_id(node: &NodeProc) -> String {
    json(node, "/v1/cluster")["self"]
        .as_str()
        .expect("self id")
        .to_string()
}

fn status_of(seen_by: &NodeProc, id: &str) -> String {
    json(seen_by, "/v1/cluster")["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == id).cloned())
        .and_then(|n| n["status"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Waits (30 s at most) for a node process to exit on its own.
fn wait_exit(node: &mut NodeProc) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("the node to exit", 30, || {
        status = node.child.try_wait().expect("wait");
        status.is_some()
    });
    status.expect("exited")
}

fn start_node(root: &Path, name: &str, seed: &NodeProc, extra: &[&str]) -> NodeProc {
    let cfg = root.join("ringkv.toml").to_string_lossy().into_owned();
    let seed = seed.cluster.to_string();
    let mut args = vec!["--config", cfg.as_str(), "--seeds", seed.as_str()];
    args.extend_from_slice(extra);
    NodeProc::start(&root.join(name), &args)
}

/// Waits until every node in `nodes` sees `id` with `status`.
fn wait_status(nodes: &[&NodeProc], id: &str, status: &str, secs: u64) {
    wait_until(&format!("{id} to be {status} everywhere"), secs, || {
        nodes.iter().all(|n| status_of(n, id) == status)
    });
}

#[test]
fn join_then_decommission_under_load_lose_nothing_and_fail_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_joined(root.path(), CONFIG, 3, |_| Vec::new());
    let keys = 3_000;
    preload(&nodes[0], "pre:", keys, 100);

    // Join a fourth node under load.
    let load = Load::start(&[nodes[0].resp, nodes[1].resp, nodes[2].resp], "join");
    std::thread::sleep(Duration::from_millis(300));
    let fourth = start_node(root.path(), "n3", &nodes[0], &[]);
    let id4 = node_id(&fourth);
    let all: Vec<&NodeProc> = nodes.iter().chain([&fourth]).collect();
    wait_status(&all, &id4, "NORMAL", 60);
    let movement = json(&fourth, "/v1/movement");
    assert_eq!(movement["kind"], "join");
    assert_eq!(movement["phase"], "done");
    assert!(
        movement["keys"].as_u64().unwrap_or(0) > 0,
        "the join streamed records: {movement}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (acked, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "requests failed during the join: {failed:?}"
    );
    assert!(acked.len() > 100, "the load ran: {} writes", acked.len());

    // Ownership evens out: each node within 10% of a quarter.
    let cluster = json(&nodes[0], "/v1/cluster");
    for n in cluster["nodes"].as_array().expect("nodes") {
        let share = n["ownership"].as_f64().expect("ownership");
        assert!(
            (0.225..=0.275).contains(&share),
            "ownership {share} of {}",
            n["id"]
        );
    }
    let pre: Vec<String> = (0..keys).map(|i| format!("pre:{i}")).collect();
    for n in &all {
        assert_readable(n, &pre, |k| value(k[4..].parse().expect("index"), 100));
        assert_readable(n, &acked, str::to_string);
    }
    // Old owners drop what they no longer replicate: every key on exactly
    // three nodes.
    let total = (keys + acked.len()) as u64;
    wait_until("cleanup to leave each key on three nodes", 60, || {
        local_keys(&all).iter().sum::<u64>() == 3 * total
    });
    // What each node stores, not just its primary share, is even: three
    // quarters of the keys each, within 10%.
    let counts = local_keys(&all);
    let fair = 3.0 * total as f64 / 4.0;
    assert!(
        counts
            .iter()
            .all(|&c| (c as f64 - fair).abs() <= 0.1 * fair),
        "keys per node {counts:?}, fair {fair}"
    );

    // Decommission an original node under load.
    let id_leaving = node_id(&nodes[1]);
    let load = Load::start(&[nodes[0].resp, nodes[2].resp, fourth.resp], "leave");
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, body) = http(nodes[1].http, "POST", "/v1/decommission", &[], b"");
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    {
        let rest: Vec<&NodeProc> = vec![&nodes[0], &nodes[2], &fourth];
        wait_status(&rest, &id_leaving, "LEFT", 90);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (acked2, failed2) = load.finish();
    assert!(
        failed2.is_empty(),
        "requests failed during the decommission: {failed2:?}"
    );
    let status = wait_exit(&mut nodes[1]);
    assert!(
        status.success(),
        "decommissioned node exits cleanly: {status}"
    );
    let child = nodes.remove(1);
    let rest: Vec<&NodeProc> = vec![&nodes[0], &nodes[1], &fourth];
    for n in &rest {
        assert_readable(n, &pre, |k| value(k[4..].parse().expect("index"), 100));
        assert_readable(n, &acked, str::to_string);
        assert_readable(n, &acked2, str::to_string);
    }
    let total = total + acked2.len() as u64;
    wait_until("every key on all three remaining nodes", 60, || {
        local_keys(&rest) == vec![total; 3]
    });
    // A node that has left may not come back under its old identity.
    let cfg = root
        .path()
        .join("ringkv.toml")
        .to_string_lossy()
        .into_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["server", "--config", &cfg, "--data-dir"])
        .arg(&child.data_dir)
        .args(["--resp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--cluster-addr", "127.0.0.1:0"])
        .output()
        .expect("restart the decommissioned node");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has left the cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_joining_node_killed_mid_stream_resumes_where_it_stopped() {
    let root = tempfile::tempdir().expect("tempdir");
    // Slow streaming (256 KiB/s) so the kill lands mid-stream.
    let config = format!("{CONFIG}bytes_per_sec_max = 262144\nbatch_bytes_max = 16384\n");
    let nodes = start_joined(root.path(), &config, 3, |_| Vec::new());
    let keys = 4_000;
    preload(&nodes[0], "k", keys, 400);
    let joining = start_node(root.path(), "n3", &nodes[0], &[]);
    let id4 = node_id(&joining);
    wait_until("some ranges streamed", 60, || {
        json(&joining, "/v1/movement")["ranges_done"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    let before = json(&joining, "/v1/movement");
    assert_eq!(before["phase"], "streaming", "{before}");
    let done_before = before["ranges_done"].as_u64().unwrap_or(0);
    let dir = joining.data_dir.clone();
    joining.kill9();
    let cfg = root
        .path()
        .join("ringkv.toml")
        .to_string_lossy()
        .into_owned();
    let seed = nodes[0].cluster.to_string();
    let restarted = NodeProc::start(&dir, &["--config", &cfg, "--seeds", &seed]);
    let resumed = json(&restarted, "/v1/movement");
    assert_eq!(resumed["kind"], "join", "{resumed}");
    assert!(
        resumed["ranges_done"].as_u64().unwrap_or(0) >= done_before,
        "the join resumed with its finished ranges ({done_before} before the kill): {resumed}"
    );
    let all: Vec<&NodeProc> = nodes.iter().chain([&restarted]).collect();
    wait_status(&all, &id4, "NORMAL", 120);
    let keys_all: Vec<String> = (0..keys).map(|i| format!("k{i}")).collect();
    for n in &all {
        assert_readable(n, &keys_all, |k| value(k[1..].parse().expect("index"), 400));
    }
    // Old owners drop what they no longer replicate: every key on exactly
    // three nodes.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let counts = local_keys(&all);
        if counts.iter().sum::<u64>() == 3 * keys as u64 {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let views: Vec<String> = all
                .iter()
                .map(|n| {
                    let c = json(n, "/v1/cluster");
                    let shares: Vec<String> = c["nodes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| {
                            format!(
                                "{}:{}:{}:{}",
                                x["id"], x["status"], x["tokens"], x["ownership"]
                            )
                        })
                        .collect();
                    format!("{} sees {}", c["self"], shares.join(" "))
                })
                .collect();
            panic!(
                "cleanup left {counts:?} keys per node, want {} in all; views:\n{}",
                3 * keys,
                views.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn removing_a_dead_node_restores_the_replication_factor() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_joined(root.path(), CONFIG, 4, |_| Vec::new());
    let keys = 3_000;
    preload(&nodes[0], "r", keys, 50);
    let dead = nodes.pop().expect("fourth");
    let dead_id = node_id(&dead);
    dead.kill9();
    wait_until("the others to see the dead node down", 30, || {
        nodes.iter().all(|n| {
            json(n, "/v1/cluster")["nodes"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["id"] == dead_id.as_str() && x["alive"] == false)
            })
        })
    });
    // Removing a live node is refused.
    let live_id = node_id(&nodes[1]);
    let (code, _, _) = http(
        nodes[0].http,
        "POST",
        &format!("/v1/remove/{live_id}"),
        &[],
        b"",
    );
    assert_eq!(code, 400, "a live node cannot be removed");
    // Under mutual TLS a removal needs an admin's grant.
    let (code, _, body) = http(
        nodes[0].http,
        "POST",
        &format!("/v1/remove/{dead_id}"),
        &[],
        b"",
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("admin credential"), "{body}");
    let admin = root.path().join("admin");
    let ringkv = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(args)
            .output()
            .expect("ringkv");
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    let ca_dir = root.path().join("ca").to_string_lossy().into_owned();
    let admin_dir = admin.to_string_lossy().into_owned();
    ringkv(&["cert", "admin", "--ca-dir", &ca_dir, "--out", &admin_dir]);
    let (cert, key) = (
        admin.join("admin.pem").to_string_lossy().into_owned(),
        admin.join("admin.key").to_string_lossy().into_owned(),
    );
    let http_addr = nodes[0].http.to_string();
    ringkv(&[
        "remove",
        &dead_id,
        "--http",
        &http_addr,
        "--admin-cert",
        &cert,
        "--admin-key",
        &key,
        "--no-wait",
    ]);
    let live: Vec<&NodeProc> = nodes.iter().collect();
    wait_status(&live, &dead_id, "LEFT", 90);
    // The remover marks the movement done once its peers were told of the
    // LEFT (they may see it before that ends).
    wait_until("the removal done", 60, || {
        json(&nodes[0], "/v1/movement")["phase"] == "done"
    });
    // N = 3 on three live nodes: every node holds every key.
    wait_until("every key on the three live nodes", 60, || {
        local_keys(&live) == vec![keys as u64; 3]
    });
    let all_keys: Vec<String> = (0..keys).map(|i| format!("r{i}")).collect();
    assert_readable(&nodes[2], &all_keys, |k| {
        value(k[1..].parse().expect("index"), 50)
    });
}

#[test]
fn a_cancelled_join_leaves_the_ring_as_it_was() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = format!("{CONFIG}bytes_per_sec_max = 131072\nbatch_bytes_max = 16384\n");
    let nodes = start_joined(root.path(), &config, 3, |_| Vec::new());
    let keys = 2_000;
    preload(&nodes[0], "c", keys, 400);
    let mut joining = start_node(root.path(), "n3", &nodes[0], &[]);
    let id4 = node_id(&joining);
    wait_until("streaming to begin", 60, || {
        json(&joining, "/v1/movement")["ranges_done"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["cancel", "--http", &joining.http.to_string()])
        .output()
        .expect("ringkv cancel");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = wait_exit(&mut joining);
    assert!(
        status.success(),
        "the cancelled node exits cleanly: {status}"
    );
    let rest: Vec<&NodeProc> = nodes.iter().collect();
    wait_status(&rest, &id4, "LEFT", 30);
    let all_keys: Vec<String> = (0..keys).map(|i| format!("c{i}")).collect();
    for n in &rest {
        assert_readable(n, &all_keys, |k| value(k[1..].parse().expect("index"), 400));
    }
    wait_until("each node to count every key", 30, || {
        local_keys(&rest) == vec![keys as u64; 3]
    });
    // Asking again finds nothing to cancel.
    let (code, _, _) = http(nodes[0].http, "POST", "/v1/movement/cancel", &[], b"");
    assert_eq!(code, 400);
}

#[test]
fn nodes_joining_at_once_each_take_a_fair_share() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = root.path().join("ringkv.toml");
    std::fs::write(&cfg, CONFIG).expect("config");
    let cfg = cfg.to_string_lossy().into_owned();
    let seed = NodeProc::start(&root.path().join("a"), &["--config", &cfg]);
    let s = seed.cluster.to_string();
    // Both learn the ring before either has announced its tokens.
    let (b, c) = std::thread::scope(|scope| {
        let start = |name: &str| {
            let dir = root.path().join(name);
            let (cfg, s) = (cfg.clone(), s.clone());
            scope.spawn(move || NodeProc::start(&dir, &["--config", &cfg, "--seeds", &s]))
        };
        let (b, c) = (start("b"), start("c"));
        (b.join().expect("b"), c.join().expect("c"))
    });
    let all = [&seed, &b, &c];
    wait_until("three NORMAL nodes", 60, || {
        all.iter().all(|n| common::normal(n) == 3)
    });
    let view = json(&seed, "/v1/cluster");
    for n in view["nodes"].as_array().expect("nodes") {
        let share = n["ownership"].as_f64().expect("ownership");
        assert!(
            (0.25..=0.42).contains(&share),
            "ownership {share} of {}",
            n["id"]
        );
    }
}
