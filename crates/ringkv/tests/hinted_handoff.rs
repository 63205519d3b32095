//! Real processes: a replica killed with SIGKILL during a write load misses
//! writes; the others keep hints for it; when it restarts, the hints are
//! replayed and it holds every acknowledged write, with no hint left.

mod common;

use std::path::Path;

use common::{NodeProc, http, json, wait_until};

const FAST: &str = "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 1000\n\
                    [hints]\nreplay_interval_ms = 200\n";

fn start(dir: &Path, cfg: &str, seed: Option<&str>) -> NodeProc {
    // At info: the test reads the survivors' lines about the victim.
    let mut args = vec!["--config", cfg, "--log", "info"];
    if let Some(s) = seed {
        args.extend(["--seeds", s]);
    }
    NodeProc::start(dir, &args)
}

/// The victim's own copy of `key` holds exactly `value`.
fn holds(node: &NodeProc, victim_id: &str, key: &str, value: &str) -> bool {
    let (_, _, body) = http(node.http, "GET", &format!("/v1/explain/{key}"), &[], b"");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    v["replicas"].as_array().is_some_and(|rs| {
        rs.iter().any(|r| {
            r["node"] == victim_id
                && r["siblings"].as_array().is_some_and(|s| {
                    s.len() == 1 && s[0]["value_bytes"].as_u64() == Some(value.len() as u64)
                })
        })
    })
}

#[test]
fn killed_replica_gets_its_hints_after_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg_path = root.path().join("ringkv.toml");
    std::fs::write(&cfg_path, FAST).expect("config");
    let cfg = cfg_path.to_string_lossy().into_owned();
    let a = start(&root.path().join("a"), &cfg, None);
    let seed = a.cluster.to_string();
    let b = start(&root.path().join("b"), &cfg, Some(&seed));
    let c = start(&root.path().join("c"), &cfg, Some(&seed));
    wait_until("three nodes up and joined", 30, || {
        [&a, &b, &c].iter().all(|n| common::normal(n) == 3)
    });
    let victim_id = json(&c, "/v1/cluster")["self"]
        .as_str()
        .expect("id")
        .to_string();
    let victim_dir = c.data_dir.clone();

    // A write load at QUORUM; the victim dies in the middle of it.
    let mut con = a.redis();
    let mut acked = Vec::new();
    for i in 0..400 {
        if i == 100 {
            sigkill(c.child.id());
        }
        let key = format!("load:{i}");
        let value = format!("value-{i}");
        let r: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(&value).query(&mut con);
        if r.is_ok() {
            acked.push((key, value));
        }
    }
    drop(c);
    assert!(
        acked.len() >= 390,
        "QUORUM writes kept succeeding: {}",
        acked.len()
    );

    // The survivors hold hints for the victim.
    wait_until("hints held for the victim", 30, || {
        [&a, &b].iter().any(|n| {
            json(n, "/v1/cluster")["hints"]["pending"]
                .as_array()
                .is_some_and(|h| h.iter().any(|x| x["target"] == victim_id.as_str()))
        })
    });

    // Both survivors see it down (by phi) and log it, with its phi.
    let logged = |node: &NodeProc, words: &[&str]| {
        let log = node.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().any(|l| words.iter().all(|w| l.contains(w)))
    };
    for n in [&a, &b] {
        wait_until("the down line", 30, || {
            logged(n, &["peer down", &victim_id, "phi="])
        });
    }

    // Restart: the hints are replayed and deleted.
    let back = start(&victim_dir, &cfg, Some(&seed));
    wait_until("hints replayed", 60, || {
        [&a, &b].iter().all(|n| {
            json(n, "/v1/cluster")["hints"]["pending"]
                .as_array()
                .is_some_and(|h| h.is_empty())
        })
    });
    // Every acknowledged write is on the returned replica's own copy.
    let missing: Vec<&String> = acked
        .iter()
        .filter(|(k, v)| !holds(&back, &victim_id, k, v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        missing.is_empty(),
        "not on the returned replica: {missing:?}"
    );
    // The survivors' logs go on with the story: the victim came back up
    // and got its hints.
    for n in [&a, &b] {
        wait_until("the up line", 10, || logged(n, &["peer up", &victim_id]));
    }
    assert!(
        [&a, &b]
            .iter()
            .any(|n| logged(n, &["replayed hints", &victim_id]))
    );
}

/// SIGKILL by pid (the node value stays alive until its drop reaps it).
fn sigkill(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill -9");
    assert!(ok.success());
}
