//! Real processes: a partition splits five nodes 2/3 under a write load.
//! Writes through either side keep succeeding at sloppy quorum (at least
//! 95% of them on this shared machine; on the minority side, keys whose
//! replicas are all beyond the cut are coordinated by a stand-in); after
//! the partition heals, the cluster converges (no hint left, every
//! acknowledged write on all of its replicas) within a bounded time, which
//! the test reports.

mod common;

use std::time::{Duration, Instant};

use common::{NodeProc, alive, http, json, start_joined, wait_until};

const CONFIG: &str = "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 1000\n\
                      [hints]\nreplay_interval_ms = 200\n\
                      [anti_entropy]\nranges_per_sec_max = 200\npass_pause_ms = 500\n\
                      [debug]\nfault_injection = true\n";

fn block(node: &NodeProc, ids: &[String]) {
    let body = serde_json::json!({ "nodes": ids }).to_string();
    let (s, _, _) = http(
        node.http,
        "POST",
        "/v1/debug/partition",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(s, 200, "partition request");
}

/// `count` SETs of `<prefix>:<i>` spread over `nodes`; the acknowledged
/// keys go to `acked`. Returns how many failed (the first few are printed).
fn write_load(nodes: &[NodeProc], prefix: &str, count: usize, acked: &mut Vec<String>) -> usize {
    let mut failed = 0;
    let mut cons: Vec<_> = nodes.iter().map(|n| n.redis()).collect();
    for i in 0..count {
        let con = &mut cons[i % nodes.len()];
        let key = format!("{prefix}:{i}");
        let r: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(format!("v{i}")).query(con);
        match r {
            Ok(()) => acked.push(key),
            Err(e) => {
                if failed < 3 {
                    eprintln!("write {key} failed: {e}");
                }
                failed += 1;
            }
        }
    }
    failed
}

#[test]
fn a_two_three_partition_keeps_both_sides_writable_and_heals() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_joined(root.path(), CONFIG, 5, |_| Vec::new());
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| {
            json(n, "/v1/cluster")["self"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    let (minority, majority) = (&ids[..2], &ids[2..]);

    // Cut: each side blocks the other, both ways.
    for (i, n) in nodes.iter().enumerate() {
        block(n, if i < 2 { majority } else { minority });
    }
    wait_until("the majority to see the minority down", 30, || {
        alive(&nodes[2]) == 3
    });

    // A write load through the majority side at QUORUM (sloppy).
    let mut acked = Vec::new();
    let started = Instant::now();
    let failed = write_load(&nodes[2..], "split", 300, &mut acked);
    eprintln!(
        "during the partition: {} of 300 writes acknowledged through the majority in {:?}, {failed} failed",
        acked.len(),
        started.elapsed()
    );
    // On this shared two-core machine a few forwarded writes can still time
    // out (five nodes and the test on two cores); the majority side must
    // stay writable, not perfect: at most 5% may fail, each with an
    // explicit UNAVAILABLE (an unknown outcome, never a silent loss).
    assert!(
        failed * 20 <= 300,
        "sloppy quorum keeps the majority side writable: {failed} of 300 failed"
    );

    // The minority side stays writable too: for a key none of whose
    // replicas it reaches, a node coordinates as a stand-in and the two
    // minority nodes hold hints that count towards W = 2.
    wait_until("the minority to see the majority down", 30, || {
        alive(&nodes[0]) == 2 && alive(&nodes[1]) == 2
    });
    let minority_failed = write_load(&nodes[..2], "minority", 100, &mut acked);
    eprintln!("through the minority: {minority_failed} of 100 writes failed");
    assert!(
        minority_failed * 20 <= 100,
        "sloppy quorum keeps the minority side writable: {minority_failed} of 100 failed"
    );

    // Heal and time the convergence.
    let healed = Instant::now();
    for n in &nodes {
        let (s, _, _) = http(n.http, "POST", "/v1/debug/heal", &[], b"");
        assert_eq!(s, 200);
    }
    wait_until("no hint left and all alive", 60, || {
        nodes.iter().all(|n| {
            let v = json(n, "/v1/cluster");
            alive(n) == 5
                && v["hints"]["pending"]
                    .as_array()
                    .is_some_and(|h| h.is_empty())
        })
    });
    wait_until(
        "every acknowledged write on all of its replicas",
        60,
        || {
            acked.iter().all(|key| {
                let v = json(&nodes[0], &format!("/v1/explain/{key}"));
                v["replicas"].as_array().is_some_and(|rs| {
                    rs.len() == 3
                        && rs
                            .iter()
                            .all(|r| r["siblings"].as_array().is_some_and(|s| s.len() == 1))
                })
            })
        },
    );
    let took = healed.elapsed();
    eprintln!("converged {took:?} after the heal");
    assert!(took < Duration::from_secs(60));
}
