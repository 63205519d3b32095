//! A cluster upgrades by rolling restart: nodes of this version run beside
//! nodes built from the commit before the last change of a wire or on-disk
//! format, serve each other's forwarded writes and errors, gossip across
//! the versions (whole states with old nodes, digests between new ones)
//! without ever showing a node down, refuse the data types cleanly while an
//! old node runs (nothing written), truncate across both versions, say
//! goodbye without harm, and a node restarted on the new binary keeps its
//! identity, tokens and data; once every node runs this version, gossip is
//! digests only and the data types work through every node.
//!
//! The previous binary is `RINGKV_PREVIOUS_BIN` when set; otherwise this
//! test builds [`PREVIOUS_COMMIT`] from the repository's history (a few
//! minutes the first time; the build is kept under `target/previous/`).
//! When a format changes, [`PREVIOUS_COMMIT`] moves to the commit before
//! that change.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{NodeProc, all_normal, json, self_id};
use redis::Commands;

/// The last commit before gossip by digests (`GossipDigest`,
/// `GossipStates`) and the data types (record format 2, typed writes,
/// `RecordFormats`).
const PREVIOUS_COMMIT: &str = "ad258771ab59f8dc8b7b32a1f5a53173d56b102e";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Why the previous binary could not be had.
fn unavailable(why: String) -> Option<PathBuf> {
    assert!(
        !common::tools_required(),
        "the previous ringkv binary is needed: {why}"
    );
    eprintln!("skipping the rolling-upgrade test: {why}");
    None
}

/// The binary of [`PREVIOUS_COMMIT`], built once.
fn previous_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("RINGKV_PREVIOUS_BIN") {
        return Some(PathBuf::from(bin));
    }
    let root = repo_root();
    let base = root.join("target/previous").join(PREVIOUS_COMMIT);
    let src = base.join("src");
    let bin = base.join("target/debug/ringkv");
    if !src.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&src).expect("create the source directory");
        // `git archive | tar -x`: the commit's tree, without a worktree.
        let archive = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "git -C '{}' archive {PREVIOUS_COMMIT} | tar -x -C '{}'",
                root.display(),
                src.display()
            ))
            .status();
        if !archive.is_ok_and(|s| s.success()) || !src.join("Cargo.toml").exists() {
            let _ = std::fs::remove_dir_all(&src);
            return unavailable(format!(
                "commit {PREVIOUS_COMMIT} cannot be read from the repository's history"
            ));
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(&src)
        .args(["build", "-p", "ringkv", "--bin", "ringkv", "--locked"])
        .env("CARGO_TARGET_DIR", base.join("target"))
        .status();
    if !built.is_ok_and(|s| s.success()) || !bin.exists() {
        return unavailable(format!("building commit {PREVIOUS_COMMIT} failed"));
    }
    Some(bin)
}

const CONFIG: &str = r#"
[cluster]
gossip_interval_ms = 100
request_timeout_ms = 2000
replication_factor = 2
strict_quorum = true

[movement]
settle_ms = 500
cleanup_delay_ms = 1000
"#;

/// The ids (16 hex digits) of the replicas of `key`, as `node` sees them.
fn replicas(node: &NodeProc, key: &str) -> Vec<String> {
    json(node, &format!("/v1/explain/{key}"))["preference_list"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Node `i` on `exe` with the settings of `{limits}.toml`.
fn start(exe: &Path, root: &Path, i: usize, limits: &str, seed: Option<&NodeProc>) -> NodeProc {
    let cfg = root
        .join(format!("{limits}.toml"))
        .to_string_lossy()
        .into_owned();
    let mut args = vec!["--config".to_string(), cfg, "--insecure".to_string()];
    if let Some(seed) = seed {
        args.extend(["--seeds".to_string(), seed.cluster.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProc::start_with(exe, &root.join(format!("n{i}")), &args)
}

/// Every node sees every node alive at every look over `secs` seconds
/// (many gossip rounds): old nodes, which see heartbeats only in whole
/// states, must see new nodes' every round, and new nodes the old ones'.
fn stay_alive(nodes: &[&NodeProc], secs: u64) {
    let ids: Vec<String> = nodes.iter().map(|n| self_id(n)).collect();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        for node in nodes {
            let view = json(node, "/v1/cluster")["nodes"].clone();
            for id in &ids {
                let alive = view.as_array().is_some_and(|l| {
                    l.iter()
                        .any(|x| x["id"] == id.as_str() && x["alive"] == true)
                });
                assert!(alive, "{} sees {id} down: {view}", node.resp);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Writes `k{i}` = `v{i}` for every `i` below `keys`, through each node in
/// turn.
fn write_keys(nodes: &[&NodeProc], keys: usize) {
    for i in 0..keys {
        let node = nodes[i % nodes.len()];
        let mut con = node.redis();
        let _: () = con
            .set(format!("k{i}"), format!("v{i}"))
            .unwrap_or_else(|e| panic!("write of k{i} through {}: {e}", node.resp));
    }
}

/// Every key reads its value through every node.
fn check_reads(nodes: &[&NodeProc], keys: usize) {
    for node in nodes {
        let mut con = node.redis();
        for i in 0..keys {
            let got: Option<String> = con.get(format!("k{i}")).expect("get");
            assert_eq!(got, Some(format!("v{i}")), "k{i} through {}", node.resp);
        }
    }
}

/// A write of a value of `len` bytes to `key` through `node`: its reply,
/// or the error's text.
fn write_len(node: &NodeProc, key: &str, len: usize) -> Result<(), String> {
    let mut con = node.redis();
    con.set::<_, _, ()>(key, "x".repeat(len))
        .map_err(|e| e.to_string())
}

/// The value limit of the nodes started with `small.toml`.
const SMALL_VALUE_MAX: usize = 1000;

/// The node's gossip exchanges answered so far, by way (`digest`, or
/// `whole` with a node of the version before digests), from its metrics.
fn exchanges(node: &NodeProc, way: &str) -> u64 {
    let (_, _, body) = common::http(node.http, "GET", "/metrics", &[], b"");
    let line = format!("ringkv_gossip_exchanges_total{{way=\"{way}\"}} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The exchanges of each way every node of `nodes` answered over `secs`
/// seconds: `(digest, whole)` per node.
fn exchanges_over(nodes: &[&NodeProc], secs: u64) -> Vec<(u64, u64)> {
    let before: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| (exchanges(n, "digest"), exchanges(n, "whole")))
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(secs));
    nodes
        .iter()
        .zip(before)
        .map(|(n, (d, w))| (exchanges(n, "digest") - d, exchanges(n, "whole") - w))
        .collect()
}

/// Counter, set and hash writes through `node`, or the first error's text.
fn write_types(node: &NodeProc, tag: &str) -> Result<(), String> {
    let mut con = node.redis();
    let err = |e: redis::RedisError| e.to_string();
    let _: i64 = con.incr(format!("count-{tag}"), 5).map_err(err)?;
    let _: i64 = con.sadd(format!("set-{tag}"), "m").map_err(err)?;
    let _: i64 = con.hset(format!("hash-{tag}"), "f", tag).map_err(err)?;
    Ok(())
}

#[test]
fn a_cluster_upgrades_by_rolling_restart() {
    let Some(previous) = previous_binary() else {
        return;
    };
    let current = PathBuf::from(env!("CARGO_BIN_EXE_ringkv"));
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::write(root.join("big.toml"), CONFIG).expect("config");
    let small = format!("{CONFIG}\n[limits]\nvalue_bytes_max = {SMALL_VALUE_MAX}\n");
    std::fs::write(root.join("small.toml"), small).expect("config");

    // Two nodes of each version; one of each takes small values only.
    let a = start(&previous, root, 0, "big", None);
    let b = start(&current, root, 1, "small", Some(&a));
    let c = start(&previous, root, 2, "small", Some(&a));
    let d = start(&current, root, 3, "big", Some(&a));
    all_normal(&[&a, &b, &c, &d], 4);
    // Gossip across versions: whole states with the old nodes, digests
    // between the new ones; no node is ever taken for down.
    stay_alive(&[&a, &b, &c, &d], 5);
    for (node, (digest, whole)) in [&b, &d].iter().zip(exchanges_over(&[&b, &d], 3)) {
        assert!(
            digest > 0 && whole > 0,
            "{}: {digest} digest and {whole} whole-state exchanges in a mixed cluster",
            node.resp
        );
    }
    let keys = 300;
    write_keys(&[&a, &b, &c, &d], keys);
    check_reads(&[&a, &b, &c, &d], keys);

    // Errors of forwarded writes cross in both directions. A value too
    // large for a small node, written through a big node that is no
    // replica of its key, is forwarded to the key's first replica, which
    // refuses it: D (new) hears C's refusal, A (old) hears B's.
    let ids: Vec<String> = [&a, &b, &c, &d].iter().map(|n| self_id(n)).collect();
    let key_led_by = |leader: &str, not: &str| {
        (0..10_000)
            .map(|i| format!("e{i}"))
            .find(|k| {
                let r = replicas(&a, k);
                r.first().is_some_and(|f| f == leader) && !r.iter().any(|x| x == not)
            })
            .expect("a key led by one node and not on another")
    };
    let too_large = SMALL_VALUE_MAX * 2;
    let limit = format!("value is {too_large} bytes, the limit is {SMALL_VALUE_MAX}");
    for (through, leader, who) in [
        (&d, 2, "old refusal read by new"),
        (&a, 1, "new refusal read by old"),
    ] {
        let key = key_led_by(&ids[leader], &self_id(through));
        let err = write_len(through, &key, too_large).expect_err("a value over the limit");
        assert!(err.contains(&limit), "{who}: {err}");
        let got: Option<String> = through.redis().get(&key).expect("get");
        assert_eq!(got, None, "{who}: the refused write was not applied");
        write_len(through, &key, SMALL_VALUE_MAX).unwrap_or_else(|e| panic!("{who}: {e}"));
    }

    // The data types wait for every node to read them: refused through a
    // new node while old ones run (naming how many), nothing written; an
    // old node refuses them as it always did.
    for node in [&b, &d] {
        let err = write_types(node, "mixed").expect_err("data types with old nodes");
        assert!(
            err.contains("2 node(s) of an older version"),
            "{}: {err}",
            node.resp
        );
    }
    write_types(&a, "mixed").expect_err("an old node has no data types");
    for node in [&a, &b, &c, &d] {
        let got: Option<String> = node.redis().get("count-mixed").expect("get");
        assert_eq!(got, None, "nothing written through {}", node.resp);
    }

    // A truncation spans both versions (its messages are the same): every
    // key goes from every node, and the keys written again read back.
    let ok: String = redis::cmd("FLUSHALL")
        .query(&mut b.redis())
        .expect("FLUSHALL in a mixed cluster");
    assert_eq!(ok, "OK");
    for node in [&a, &b, &c, &d] {
        let size: i64 = redis::cmd("DBSIZE")
            .query(&mut node.redis())
            .expect("DBSIZE");
        assert_eq!(size, 0, "keys left after FLUSHALL through {}", node.resp);
        let got: Option<String> = node.redis().get("k0").expect("get");
        assert_eq!(got, None, "k0 through {}", node.resp);
    }
    write_keys(&[&a, &b, &c, &d], keys);
    check_reads(&[&a, &b, &c, &d], keys);

    // A node of this version stops: it says goodbye to every peer, which
    // see it down at once. It comes back on the same data.
    let d_dir = d.data_dir.clone();
    let d_id = self_id(&d);
    assert!(d.terminate().success());
    for peer in [&a, &b, &c] {
        common::wait_until("a peer sees the stopped node down at once", 2, || {
            json(peer, "/v1/cluster")["nodes"]
                .as_array()
                .is_some_and(|l| {
                    l.iter()
                        .any(|n| n["id"] == d_id.as_str() && n["alive"] == false)
                })
        });
    }
    let d = NodeProc::start_with(
        &current,
        &d_dir,
        &[
            "--config",
            &root.join("big.toml").to_string_lossy(),
            "--insecure",
        ],
    );
    all_normal(&[&a, &b, &c, &d], 4);
    check_reads(&[&a, &b, &c, &d], keys);

    // The rolling restart: A, then C, on this version, each keeping its id,
    // its tokens and its data (files with their headers).
    let mut nodes = vec![a, b, c, d];
    for (i, limits) in [(0usize, "big"), (2, "small")] {
        let before = self_id(&nodes[i]);
        let tokens_before = json(&nodes[i], "/v1/cluster")["tokens"].clone();
        let data_dir = nodes[i].data_dir.clone();
        let old = nodes.remove(i);
        assert!(old.terminate().success());
        let config = root.join(format!("{limits}.toml"));
        let restarted = NodeProc::start_with(
            &current,
            &data_dir,
            &["--config", &config.to_string_lossy(), "--insecure"],
        );
        nodes.insert(i, restarted);
        let refs: Vec<&NodeProc> = nodes.iter().collect();
        all_normal(&refs, 4);
        assert_eq!(self_id(&nodes[i]), before, "the node keeps its id");
        assert_eq!(
            json(&nodes[i], "/v1/cluster")["tokens"],
            tokens_before,
            "the ring is unchanged"
        );
        let node_id = std::fs::read(data_dir.join("NODE_ID")).expect("NODE_ID");
        assert_eq!(&node_id[..4], b"RKID", "NODE_ID keeps its header");
        let tokens = std::fs::read(data_dir.join("TOKENS")).expect("TOKENS");
        assert_eq!(&tokens[..4], b"RKTK", "TOKENS keeps its header");
        check_reads(&refs, keys);
    }
    // All on this version: no node down, digests only between every pair
    // (a restarted node's first digest tells each peer it was upgraded).
    let refs: Vec<&NodeProc> = nodes.iter().collect();
    stay_alive(&refs, 3);
    let mut last = Vec::new();
    common::wait_until("gossip by digests only", 20, || {
        last = exchanges_over(&refs, 2);
        last.iter().all(|&(digest, whole)| digest > 0 && whole == 0)
    });
    // The data types open once every node answers that it reads them.
    common::wait_until("the data types open", 20, || {
        write_types(refs[0], "new").is_ok()
    });
    for (i, node) in refs.iter().enumerate() {
        write_types(node, &format!("n{i}")).unwrap_or_else(|e| panic!("{}: {e}", node.resp));
    }
    for node in &refs {
        let mut con = node.redis();
        for i in 0..refs.len() {
            let count: i64 = con.get(format!("count-n{i}")).expect("get a counter");
            assert_eq!(count, 5, "count-n{i} through {}", node.resp);
            let member: bool = con.sismember(format!("set-n{i}"), "m").expect("sismember");
            assert!(member, "set-n{i} through {}", node.resp);
            let field: String = con.hget(format!("hash-n{i}"), "f").expect("hget");
            assert_eq!(field, format!("n{i}"), "hash-n{i} through {}", node.resp);
        }
    }
    check_reads(&refs, keys);
}
