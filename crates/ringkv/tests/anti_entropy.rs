//! Real processes: a replica whose disk is wiped is restored by anti-entropy
//! on its own, with no read and no command; `ringkv repair` runs a pass on
//! demand and reports what moved.

mod common;

use std::time::{Duration, Instant};

use common::{NodeProc, alive, json, normal, wait_until};

const FAST: &str = "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 1000\n\
                    [anti_entropy]\nranges_per_sec_max = 200\nrepair_ranges_per_sec_max = 200\npass_pause_ms = 300\n";

/// Three nodes joined through the first, all seen alive.
fn start_three(root: &std::path::Path, cfg: &str) -> (NodeProc, NodeProc, NodeProc) {
    let a = NodeProc::start(&root.join("a"), &["--config", cfg]);
    let seed = a.cluster.to_string();
    let b = NodeProc::start(&root.join("b"), &["--config", cfg, "--seeds", &seed]);
    let c = NodeProc::start(&root.join("c"), &["--config", cfg, "--seeds", &seed]);
    wait_until("three nodes up and joined", 30, || {
        [&a, &b, &c].iter().all(|n| normal(n) == 3)
    });
    (a, b, c)
}

fn own_copy_has(node: &NodeProc, me: &str, key: &str) -> bool {
    let v = json(node, &format!("/v1/explain/{key}"));
    v["replicas"].as_array().is_some_and(|rs| {
        rs.iter()
            .any(|r| r["node"] == me && r["siblings"].as_array().is_some_and(|s| s.len() == 1))
    })
}

#[test]
fn a_wiped_replica_is_restored_without_any_command() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg_path = root.path().join("ringkv.toml");
    std::fs::write(&cfg_path, FAST).expect("config");
    let cfg = cfg_path.to_string_lossy().into_owned();
    let (a, b, c) = start_three(root.path(), &cfg);
    let seed = a.cluster.to_string();
    let mut con = a.redis();
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("ALL")
        .query(&mut con)
        .expect("level");
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("ae:{i}"))
            .arg(format!("value-{i}"))
            .query(&mut con)
            .expect("SET at ALL");
    }
    let me = json(&c, "/v1/cluster")["self"]
        .as_str()
        .expect("id")
        .to_string();
    let dir = c.data_dir.clone();
    let status = c.terminate();
    assert!(status.success());
    // The disk is replaced: data and hints gone, identity kept.
    std::fs::remove_dir_all(dir.join("store")).expect("wipe store");
    let _ = std::fs::remove_dir_all(dir.join("hints"));
    let c = NodeProc::start(&dir, &["--config", &cfg, "--seeds", &seed]);
    assert!(
        !own_copy_has(&c, &me, "ae:1"),
        "the wiped replica starts empty"
    );
    let started = Instant::now();
    wait_until("anti-entropy to restore every key", 120, || {
        (0..300).all(|i| own_copy_has(&c, &me, &format!("ae:{i}")))
    });
    let took = started.elapsed();
    let r = json(&c, "/v1/repair");
    let received = r["bytes_received"].as_u64().unwrap_or(0);
    let repaired = r["keys_repaired"].as_u64().unwrap_or(0);
    eprintln!(
        "restored 300 keys in {took:?}: {repaired} keys repaired here, {received} B received, {} B sent",
        r["bytes_sent"].as_u64().unwrap_or(0)
    );
    assert!(received > 0, "bytes transferred are reported: {r}");

    // On demand: `ringkv repair` runs a full pass and reports progress.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["repair", "--http", &b.http.to_string()])
        .output()
        .expect("ringkv repair");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ringkv repair failed: {text}");
    assert!(text.contains("repair finished"), "{text}");
    // After the pass every range of b has synced with all its replicas.
    let r = json(&b, "/v1/repair/ranges");
    let ranges = r["ranges"].as_array().cloned().unwrap_or_default();
    assert!(!ranges.is_empty(), "{r}");
    assert!(
        ranges.iter().all(|x| x["synced_at_ms"].is_u64()),
        "every range synced: {r}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["status", "--ranges", "--http", &b.http.to_string()])
        .output()
        .expect("ringkv status --ranges");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().count(), ranges.len() + 1, "{text}");
    assert!(!text.contains("never"), "{text}");
}

#[test]
fn a_delete_missed_past_the_grace_period_stays_deleted() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg_path = root.path().join("ringkv.toml");
    // A one-second grace period, and hints too short-lived to deliver the
    // delete: only anti-entropy and the purge rule stand between the key and
    // its resurrection.
    std::fs::write(
        &cfg_path,
        "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 1000\n\
         tombstone_grace_ms = 1000\n\
         [anti_entropy]\nranges_per_sec_max = 200\nrepair_ranges_per_sec_max = 200\npass_pause_ms = 300\n\
         [hints]\nage_ms_max = 1\n",
    )
    .expect("config");
    let cfg = cfg_path.to_string_lossy().into_owned();
    let (a, b, c) = start_three(root.path(), &cfg);
    let seed = a.cluster.to_string();
    let mut con = a.redis();
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("ALL")
        .query(&mut con)
        .expect("level");
    let _: () = redis::cmd("SET")
        .arg("gone")
        .arg("old")
        .query(&mut con)
        .expect("SET");
    let dir = c.data_dir.clone();
    let status = c.terminate();
    assert!(status.success());
    wait_until("c seen down", 30, || alive(&a) == 2);
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("QUORUM")
        .query(&mut con)
        .expect("level");
    let n: i64 = redis::cmd("DEL").arg("gone").query(&mut con).expect("DEL");
    assert_eq!(n, 1);
    // Well past the grace period, with compactions on the survivors.
    std::thread::sleep(Duration::from_millis(2_500));
    let c = NodeProc::start(&dir, &["--config", &cfg, "--seeds", &seed]);
    wait_until("three nodes up again", 30, || alive(&b) == 3);
    // Anti-entropy brings the tombstone to c; the key never comes back.
    let me = json(&c, "/v1/cluster")["self"]
        .as_str()
        .expect("id")
        .to_string();
    wait_until("c to hold the tombstone", 60, || {
        let v = json(&c, "/v1/explain/gone");
        v["replicas"].as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                r["node"] == me.as_str()
                    && r["siblings"].as_array().is_some_and(|s| s.is_empty())
                    && r["tombstones"].as_u64() == Some(1)
            })
        })
    });
    for node in [&a, &b, &c] {
        let mut con = node.redis();
        let _: () = redis::cmd("RINGKV.CONSISTENCY")
            .arg("ALL")
            .query(&mut con)
            .expect("level");
        let got: Option<String> = redis::cmd("GET").arg("gone").query(&mut con).expect("GET");
        assert_eq!(got, None, "the deleted key came back");
    }
}
