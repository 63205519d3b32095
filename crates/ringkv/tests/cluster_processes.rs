//! Real node processes on loopback forming one cluster: quorum reads and
//! writes from any node, a node killed with SIGKILL, levels behaving as
//! defined, and a restarted node rejoining and catching up by read repair.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{NodeProc, http, start_joined};

/// Fast gossip so failure detection takes a second or two, not twenty.
const FAST: &str = "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 1000\n";

fn config(dir: &Path) -> String {
    let path = dir.join("ringkv.toml");
    std::fs::write(&path, FAST).expect("write config");
    path.to_string_lossy().into_owned()
}

fn start_cluster(root: &Path, n: usize) -> Vec<NodeProc> {
    start_joined(root, FAST, n, |_| Vec::new())
}

fn cmd(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

fn get_at(
    con: &mut redis::Connection,
    level: &str,
    key: &str,
) -> redis::RedisResult<Option<String>> {
    let _: () = redis::cmd("RINGKV.CONSISTENCY").arg(level).query(con)?;
    redis::cmd("GET").arg(key).query(con)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_quorum_failures_and_rejoin() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(root.path(), 3);

    // Ownership is spread: every node owns about a third.
    let (_, _, body) = http(nodes[0].http, "GET", "/v1/cluster", &[], b"");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    for n in v["nodes"].as_array().expect("nodes") {
        let own = n["ownership"].as_f64().expect("ownership");
        assert!((0.28..=0.39).contains(&own), "ownership {own}: {v}");
    }

    // A write at W=2 through one node is read at R=2 through every node.
    let mut writers: Vec<_> = nodes.iter().map(|n| n.redis()).collect();
    for i in 0..60 {
        let w = &mut writers[i % 3];
        let _: () = redis::cmd("RINGKV.CONSISTENCY")
            .arg("2")
            .query(w)
            .expect("level");
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .query(w)
            .expect("SET at W=2");
    }
    for (j, con) in writers.iter_mut().enumerate() {
        for i in 0..60 {
            let got = get_at(con, "2", &format!("k{i}")).expect("GET at R=2");
            assert_eq!(
                got.as_deref(),
                Some(format!("v{i}").as_str()),
                "k{i} via node {j}"
            );
        }
    }

    // Kill one node with SIGKILL. QUORUM keeps working; ALL fails saying why.
    let victim = nodes.remove(2);
    let victim_dir = victim.data_dir.clone();
    victim.kill9();
    drop(writers);
    let mut con = nodes[0].redis();
    wait_until("the dead node to be marked down", || {
        let (_, _, body) = http(nodes[0].http, "GET", "/v1/cluster", &[], b"");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        v["nodes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["alive"] == false))
    });
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("QUORUM")
        .query(&mut con)
        .expect("level");
    for i in 0..30 {
        let _: () = redis::cmd("SET")
            .arg(format!("down{i}"))
            .arg("x")
            .query(&mut con)
            .expect("QUORUM write with a node down");
    }
    assert_eq!(
        get_at(&mut con, "QUORUM", "k5").expect("read").as_deref(),
        Some("v5")
    );
    assert_eq!(
        get_at(&mut con, "ONE", "k6").expect("read").as_deref(),
        Some("v6")
    );
    let err = get_at(&mut con, "ALL", "k7").expect_err("ALL must fail with a node down");
    assert!(
        err.to_string().contains("3 required, 2 answered"),
        "error says why: {err}"
    );
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("ALL")
        .query(&mut con)
        .expect("level");
    // Sent and applied on the two live replicas: the error says so.
    let err = cmd(&mut con, &["SET", "all-key", "v"]).expect_err("ALL write must fail");
    let text = err.to_string();
    assert!(
        text.contains("INCOMPLETE")
            && text.contains("outcome unknown: 3 acknowledgements required, 2 received"),
        "{err}"
    );

    // Restart it on the same data: it rejoins with its tokens and catches up
    // on what it missed by read repair.
    let seeds = nodes[0].cluster.to_string();
    let cfg = config(root.path());
    let back = NodeProc::start(&victim_dir, &["--config", &cfg, "--seeds", &seeds]);
    wait_until("the node to come back up", || {
        let (_, _, body) = http(nodes[0].http, "GET", "/v1/cluster", &[], b"");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        v["nodes"]
            .as_array()
            .is_some_and(|a| a.iter().all(|n| n["alive"] == true))
    });
    // ALL reads see every replica and repair the stale one.
    for i in 0..30 {
        let got = get_at(&mut con, "ALL", &format!("down{i}")).expect("ALL read after rejoin");
        assert_eq!(got.as_deref(), Some("x"));
    }
    // The returned node now answers from its own copy (ONE, local).
    let mut own = back.redis();
    wait_until("read repair to reach the returned node", || {
        (0..30).all(|i| {
            let key = format!("down{i}");
            let (_, _, body) = http(back.http, "GET", &format!("/v1/explain/{key}"), &[], b"");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            // Every replica of the key holds the value.
            v["replicas"].as_array().is_some_and(|rs| {
                rs.iter()
                    .all(|r| r["siblings"].as_array().is_some_and(|s| s.len() == 1))
            })
        })
    });
    assert_eq!(
        get_at(&mut own, "ONE", "down3").expect("read").as_deref(),
        Some("x")
    );
}

/// RESP2 `RINGKV.GETALL`: (context, values).
fn getall(con: &mut redis::Connection, key: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (ctx, values): (Vec<u8>, Vec<Vec<u8>>) = redis::cmd("RINGKV.GETALL")
        .arg(key)
        .query(con)
        .expect("RINGKV.GETALL");
    (ctx, values)
}

#[test]
fn five_nodes_siblings_across_coordinators_and_levels() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(root.path(), 5);
    let mut cons: Vec<_> = nodes.iter().map(|n| n.redis()).collect();
    for c in cons.iter_mut() {
        let _: () = redis::cmd("RINGKV.CONSISTENCY")
            .arg("QUORUM")
            .query(c)
            .expect("level");
    }
    // Every key lands on exactly N=3 of the 5 nodes.
    let _: () = redis::cmd("SET")
        .arg("cart")
        .arg("base")
        .query(&mut cons[0])
        .expect("SET");
    let (_, _, body) = http(nodes[3].http, "GET", "/v1/explain/cart", &[], b"");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        v["preference_list"].as_array().map(Vec::len),
        Some(3),
        "{v}"
    );

    // Two clients read the same context, then write through different
    // coordinators: both values survive as siblings.
    let (ctx, values) = getall(&mut cons[1], "cart");
    assert_eq!(values, vec![b"base".to_vec()]);
    let _: () = redis::cmd("RINGKV.PUT")
        .arg("cart")
        .arg("apple")
        .arg("CONTEXT")
        .arg(&ctx)
        .query(&mut cons[2])
        .expect("PUT apple");
    let _: () = redis::cmd("RINGKV.PUT")
        .arg("cart")
        .arg("pear")
        .arg("CONTEXT")
        .arg(&ctx)
        .query(&mut cons[4])
        .expect("PUT pear");
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("ALL")
        .query(&mut cons[3])
        .expect("level");
    let (merged_ctx, mut values) = getall(&mut cons[3], "cart");
    values.sort();
    assert_eq!(values, vec![b"apple".to_vec(), b"pear".to_vec()]);
    // Plain GET resolves by last writer: one of them, never the old base.
    let plain: String = redis::cmd("GET")
        .arg("cart")
        .query(&mut cons[0])
        .expect("GET");
    assert!(plain == "apple" || plain == "pear", "{plain}");
    // A write with the merged context resolves the siblings everywhere.
    let _: () = redis::cmd("RINGKV.PUT")
        .arg("cart")
        .arg("apple+pear")
        .arg("CONTEXT")
        .arg(&merged_ctx)
        .query(&mut cons[0])
        .expect("resolve");
    for c in cons.iter_mut() {
        let _: () = redis::cmd("RINGKV.CONSISTENCY")
            .arg("ALL")
            .query(c)
            .expect("level");
        let (_, values) = getall(c, "cart");
        assert_eq!(values, vec![b"apple+pear".to_vec()]);
    }
    // A bad context is refused and changes nothing.
    let err = redis::cmd("RINGKV.PUT")
        .arg("cart")
        .arg("x")
        .arg("CONTEXT")
        .arg("garbage")
        .query::<()>(&mut cons[0])
        .expect_err("bad context");
    assert!(err.to_string().contains("context"), "{err}");
    let (_, values) = getall(&mut cons[0], "cart");
    assert_eq!(values, vec![b"apple+pear".to_vec()]);
    // Deletes are versioned too.
    let n: i64 = redis::cmd("DEL")
        .arg("cart")
        .query(&mut cons[2])
        .expect("DEL");
    assert_eq!(n, 1);
    for c in cons.iter_mut() {
        let got: Option<String> = redis::cmd("GET").arg("cart").query(c).expect("GET");
        assert_eq!(got, None);
    }
}
