//! Listing keys across a cluster of real processes: `redis-cli --scan` and
//! `--bigkeys`, KEYS, RANDOMKEY, DBSIZE, the HTTP listing, and a scan that
//! goes on while one node joins and another decommissions.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{NodeProc, http, json, start_joined, tools_required, wait_until};

/// `redis-cli` against `node` with `args`, its output; `None` when the
/// tool is missing (allowed off CI).
fn redis_cli(node: &NodeProc, args: &[&str]) -> Option<String> {
    if !common::have("redis-cli") {
        assert!(!tools_required(), "redis-cli is required but missing");
        eprintln!("skipping redis-cli checks: not installed");
        return None;
    }
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &node.resp.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A whole scan through `con` with `COUNT count`: each key and how many
/// times it came.
fn scan_all(con: &mut redis::Connection, count: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("COUNT")
            .arg(count)
            .query(con)
            .expect("SCAN");
        for k in keys {
            *seen.entry(k).or_default() += 1;
        }
        if next == "0" {
            return seen;
        }
        cursor = next;
    }
}

#[test]
fn keys_are_listed_once_across_three_nodes_by_redis_cli_and_http() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_joined(root.path(), common::MOVING_CLUSTER_CONFIG, 3, |_| {
        Vec::new()
    });
    let mut con = nodes[0].redis();
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("SET").arg(format!("user:{i}")).arg("v").ignore();
        pipe.cmd("SET").arg(format!("item:{i}")).arg("v").ignore();
    }
    pipe.cmd("SET").arg("big").arg("x".repeat(5000)).ignore();
    let () = pipe.query(&mut con).expect("load");
    let _: i64 = redis::cmd("DEL")
        .arg("user:0")
        .query(&mut con)
        .expect("DEL");

    // Through another node, at its default level: every key once.
    let mut other = nodes[2].redis();
    let seen = scan_all(&mut other, 25);
    assert_eq!(seen.len(), 400, "{} keys", seen.len());
    assert!(seen.values().all(|&n| n == 1), "a key came twice");
    assert!(!seen.contains_key("user:0"), "a deleted key");

    let mut users: Vec<String> = redis::cmd("KEYS")
        .arg("user:*")
        .query(&mut other)
        .expect("KEYS");
    users.sort();
    let mut want: Vec<String> = (1..200).map(|i| format!("user:{i}")).collect();
    want.sort();
    assert_eq!(users, want);
    let random: String = redis::cmd("RANDOMKEY")
        .query(&mut other)
        .expect("RANDOMKEY");
    assert!(seen.contains_key(&random), "{random}");

    // DBSIZE counts the cluster's keys once, not once per replica; INFO's
    // keyspace line and the status agree once each census has counted.
    wait_until("DBSIZE to count the cluster's keys", 30, || {
        redis::cmd("DBSIZE").query::<u64>(&mut other).ok() == Some(400)
    });
    wait_until("INFO keyspace to agree", 30, || {
        redis::cmd("INFO")
            .arg("keyspace")
            .query::<String>(&mut other)
            .is_ok_and(|s| s.contains("db0:keys=400,"))
    });
    assert_eq!(json(&nodes[2], "/v1/status")["cluster_keys"]["keys"], 400);

    // HTTP: pages with a prefix until the cursor is done.
    let mut listed = Vec::new();
    let mut cursor = "0".to_string();
    for _ in 0..1000 {
        let v = json(
            &nodes[1],
            &format!("/v1/keys?prefix=item%3A&limit=30&cursor={cursor}"),
        );
        for k in v["keys"].as_array().expect("keys") {
            listed.push(k["key"].as_str().expect("utf-8 key").to_string());
            assert_eq!(k["value_bytes"], 1);
        }
        cursor = v["cursor"].as_str().expect("cursor").to_string();
        if v["done"] == true {
            break;
        }
    }
    listed.sort();
    let mut items: Vec<String> = (0..200).map(|i| format!("item:{i}")).collect();
    items.sort();
    assert_eq!(listed, items);
    let (status, _, body) = http(nodes[1].http, "GET", "/v1/keys?limit=0", &[], b"");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // redis-cli's own scanners.
    if let Some(out) = redis_cli(&nodes[1], &["--scan", "--pattern", "item:1*"]) {
        let mut got: Vec<&str> = out.lines().collect();
        got.sort();
        let mut want: Vec<String> = (0..200)
            .map(|i| format!("item:{i}"))
            .filter(|k| k.starts_with("item:1"))
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
    if let Some(out) = redis_cli(&nodes[1], &["--bigkeys"]) {
        assert!(out.contains("\"big\"' has 5000 bytes"), "{out}");
        assert!(out.contains("Sampled 400 keys"), "{out}");
    }
}

fn start_node(root: &Path, name: &str, seed: &NodeProc) -> NodeProc {
    let cfg = root.join("ringkv.toml").to_string_lossy().into_owned();
    let seed = seed.cluster.to_string();
    NodeProc::start(&root.join(name), &["--config", &cfg, "--seeds", &seed])
}

/// Scans over and over while a node joins and another decommissions:
/// each whole scan returns every key, none twice.
#[test]
fn a_scan_returns_every_key_while_one_node_joins_and_another_leaves() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_joined(root.path(), common::MOVING_CLUSTER_CONFIG, 4, |_| {
        Vec::new()
    });
    let keys = 2_000;
    let mut con = nodes[0].redis();
    let mut pipe = redis::pipe();
    for i in 0..keys {
        pipe.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
    }
    let () = pipe.query(&mut con).expect("load");
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("QUORUM")
        .query(&mut con)
        .expect("level");

    let joiner = start_node(root.path(), "n4", &nodes[0]);
    let (code, _, body) = http(nodes[3].http, "POST", "/v1/decommission", &[], b"");
    assert_eq!(code, 202, "{}", String::from_utf8_lossy(&body));
    let joiner_id = common::self_id(&joiner);
    let leaver_id = common::self_id(&nodes[3]);
    let moving = || {
        let v = json(&nodes[0], "/v1/cluster");
        let status = |id: &str| {
            v["nodes"]
                .as_array()
                .and_then(|a| a.iter().find(|n| n["id"] == id).cloned())
                .map(|n| n["status"].as_str().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        status(&joiner_id) != "NORMAL" || status(&leaver_id) != "LEFT"
    };
    let (mut scans, mut while_moving) = (0, 0);
    let started = std::time::Instant::now();
    loop {
        let still = moving();
        if !(still || scans < 3) || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        while_moving += usize::from(still);
        let seen = scan_all(&mut con, 97);
        let missing: Vec<String> = (0..keys)
            .map(|i| format!("k{i}"))
            .filter(|k| !seen.contains_key(k))
            .collect();
        assert!(missing.is_empty(), "scan {scans} missed {missing:?}");
        assert_eq!(seen.len(), keys, "no other keys");
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "scan {scans} returned twice: {twice:?}");
        scans += 1;
    }
    assert!(!moving(), "the join and the decommission finished");
    assert!(while_moving >= 1, "{scans} scans, none while nodes moved");
    eprintln!("{scans} scans, {while_moving} while nodes moved");
    let _ = nodes.pop().map(NodeProc::terminate);
}
