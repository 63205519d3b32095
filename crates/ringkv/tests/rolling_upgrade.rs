//! A cluster upgrades by rolling restart: nodes of this version run beside
//! nodes built from the commit before the last change of a wire or on-disk
//! format, serve each other's forwarded writes and errors, and a node
//! restarted on the new binary keeps its identity, tokens and data.
//!
//! The previous binary is `RINGKV_PREVIOUS_BIN` when set; otherwise this
//! test builds [`PREVIOUS_COMMIT`] from the repository's history (a few
//! minutes the first time; the build is kept under `target/previous/`).
//! When a format changes, [`PREVIOUS_COMMIT`] moves to the commit before
//! that change.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{NodeProc, json, normal, wait_until};
use redis::Commands;

/// The last commit before the node files gained their headers and error
/// answers their typed detail.
const PREVIOUS_COMMIT: &str = "477fd2b5bbb75317d467b554cc03d5f9af14325b";

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

fn self_id(node: &NodeProc) -> String {
    json(node, "/v1/cluster")["self"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn start(exe: &Path, root: &Path, i: usize, seed: Option<&NodeProc>) -> NodeProc {
    let cfg = root.join("ringkv.toml").to_string_lossy().into_owned();
    let mut args = vec!["--config".to_string(), cfg];
    if let Some(seed) = seed {
        args.extend(["--seeds".to_string(), seed.cluster.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProc::start_with(exe, &root.join(format!("n{i}")), &args)
}

/// Waits until every node sees `n` nodes alive and NORMAL, each at the
/// address it listens on now (a restarted node has new ports; until its
/// peers hear of them they call the old ones).
fn all_normal(nodes: &[&NodeProc], n: usize) {
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

/// A write at QUORUM of `key` through `node`: its reply, or the error's
/// text.
fn write(node: &NodeProc, key: &str) -> Result<(), String> {
    let mut con = node.redis();
    con.set::<_, _, ()>(key, "x").map_err(|e| e.to_string())
}

#[test]
fn a_cluster_upgrades_by_rolling_restart() {
    let Some(previous) = previous_binary() else {
        return;
    };
    let current = PathBuf::from(env!("CARGO_BIN_EXE_ringkv"));
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::write(root.join("ringkv.toml"), CONFIG).expect("config");

    // Two nodes of the previous version, one of this version.
    let a = start(&previous, root, 0, None);
    let b = start(&current, root, 1, Some(&a));
    let c = start(&previous, root, 2, Some(&a));
    all_normal(&[&a, &b, &c], 3);
    let keys = 300;
    for i in 0..keys {
        let node = [&a, &b, &c][i % 3];
        let mut con = node.redis();
        let _: () = con
            .set(format!("k{i}"), format!("v{i}"))
            .unwrap_or_else(|e| panic!("write of k{i} through {}: {e}", node.resp));
    }
    check_reads(&[&a, &b, &c], keys);

    // Errors of forwarded writes cross in both directions: with C gone and
    // hints not counting, a key on (A, C) written through B is refused by A
    // (an error without a detail), one on (B, C) written through A by B
    // (with the detail, which A does not know).
    let (id_a, id_b, id_c) = (self_id(&a), self_id(&b), self_id(&c));
    let key_on = |x: &str, y: &str| {
        (0..10_000)
            .map(|i| format!("e{i}"))
            .find(|k| {
                let r = replicas(&a, k);
                r.len() == 2 && r.contains(&x.to_string()) && r.contains(&y.to_string())
            })
            .expect("a key on both")
    };
    let (on_a_c, on_b_c) = (key_on(&id_a, &id_c), key_on(&id_b, &id_c));
    let c_dir = c.data_dir.clone();
    assert!(c.terminate().success());
    wait_until("C seen down", 30, || {
        common::alive(&a) == 2 && common::alive(&b) == 2
    });
    for (node, key, who) in [
        (&b, &on_a_c, "new through old"),
        (&a, &on_b_c, "old through new"),
    ] {
        let err = write(node, key).expect_err("a write missing a replica under strict quorum");
        // The coordinator's own refusal, not a lost answer.
        assert!(
            err.contains("UNAVAILABLE") && err.contains("1 answered: replicas down"),
            "{who}: {err}"
        );
    }
    let c = NodeProc::start_with(
        &previous,
        &c_dir,
        &["--config", &root.join("ringkv.toml").to_string_lossy()],
    );
    all_normal(&[&a, &b, &c], 3);

    // The rolling restart: A, then C, on this version, each keeping its id,
    // its tokens and its data; their files come back in the new layout.
    let mut nodes = vec![a, b, c];
    for i in [0usize, 2] {
        let before = self_id(&nodes[i]);
        let tokens_before = json(&nodes[i], "/v1/cluster")["tokens"].clone();
        let data_dir = nodes[i].data_dir.clone();
        let old = nodes.remove(i);
        assert!(old.terminate().success());
        let restarted = NodeProc::start_with(
            &current,
            &data_dir,
            &["--config", &root.join("ringkv.toml").to_string_lossy()],
        );
        nodes.insert(i, restarted);
        let refs: Vec<&NodeProc> = nodes.iter().collect();
        all_normal(&refs, 3);
        assert_eq!(self_id(&nodes[i]), before, "the node keeps its id");
        assert_eq!(
            json(&nodes[i], "/v1/cluster")["tokens"],
            tokens_before,
            "the ring is unchanged"
        );
        let node_id = std::fs::read(data_dir.join("NODE_ID")).expect("NODE_ID");
        assert_eq!(&node_id[..4], b"RKID", "NODE_ID rewritten with a header");
        let tokens = std::fs::read(data_dir.join("TOKENS")).expect("TOKENS");
        assert_eq!(&tokens[..4], b"RKTK", "TOKENS rewritten with a header");
        check_reads(&refs, keys);
    }
}
