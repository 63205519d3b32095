//! Two data centers of three nodes each, three replicas in each: with one
//! data center cut off (its processes paused with SIGSTOP), the other keeps
//! serving at LOCAL_QUORUM; EACH_QUORUM fails saying why; after the cut
//! heals (SIGCONT), hints bring the paused data center up to date.

mod common;

use common::{NodeProc, alive, http, json, start_joined, wait_until};

const CONFIG: &str = "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 2000\n\
                      dc_replication = { east = 3, west = 3 }\n\
                      [hints]\nreplay_interval_ms = 200\n";

fn signal(node: &NodeProc, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &node.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[test]
fn a_cut_off_data_center_leaves_the_other_serving_and_converges_after() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_joined(root.path(), CONFIG, 6, |i| {
        let dc = if i < 3 { "east" } else { "west" };
        ["--dc", dc, "--rack", &format!("r{}", i % 3)]
            .map(String::from)
            .to_vec()
    });
    // Every key has three replicas in each data center.
    let (_, _, body) = http(nodes[0].http, "GET", "/v1/explain/somekey", &[], b"");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        v["preference_list"].as_array().map(Vec::len),
        Some(6),
        "{v}"
    );

    // Cut the west off.
    for n in &nodes[3..] {
        signal(n, "-STOP");
    }
    wait_until("east to see west down", 30, || alive(&nodes[0]) == 3);
    let mut con = nodes[1].redis();
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("LOCAL_QUORUM")
        .query(&mut con)
        .expect("level");
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("dc:{i}"))
            .arg(format!("v{i}"))
            .query(&mut con)
            .expect("LOCAL_QUORUM write with the other DC cut off");
    }
    let got: Option<String> = redis::cmd("GET").arg("dc:7").query(&mut con).expect("read");
    assert_eq!(got.as_deref(), Some("v7"));
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("EACH_QUORUM")
        .query(&mut con)
        .expect("level");
    let err = redis::cmd("SET")
        .arg("dc:x")
        .arg("v")
        .query::<()>(&mut con)
        .expect_err("EACH_QUORUM needs the cut-off DC");
    assert!(err.to_string().contains("required"), "{err}");

    // Heal: the west catches up through hints.
    for n in &nodes[3..] {
        signal(n, "-CONT");
    }
    wait_until("all six up again", 30, || {
        nodes.iter().all(|n| alive(n) == 6)
    });
    let west_ids: Vec<String> = nodes[3..]
        .iter()
        .map(|n| {
            json(n, "/v1/cluster")["self"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    wait_until("west to hold every write made while cut off", 60, || {
        (0..50).all(|i| {
            let (_, _, body) = http(
                nodes[4].http,
                "GET",
                &format!("/v1/explain/dc:{i}"),
                &[],
                b"",
            );
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            v["replicas"].as_array().is_some_and(|rs| {
                rs.iter()
                    .filter(|r| west_ids.iter().any(|w| r["node"] == w.as_str()))
                    .all(|r| r["siblings"].as_array().is_some_and(|s| s.len() == 1))
            })
        })
    });
    // And EACH_QUORUM works again.
    let _: () = redis::cmd("SET")
        .arg("dc:y")
        .arg("v")
        .query(&mut con)
        .expect("EACH_QUORUM after heal");
}
