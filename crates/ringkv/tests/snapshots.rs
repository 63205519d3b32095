//! Snapshots on real processes: taken under a write load and copied to a
//! backup directory; a node that loses its whole data directory is restored
//! from the copy and holds every write acknowledged before the snapshot
//! (siblings and TTLs too); once back among its peers, keys deleted after
//! the snapshot stay deleted, and its new writes never reuse a dot.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{NodeProc, http, json, start_joined, wait_until};

fn config(backup: &Path) -> String {
    format!(
        "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 2000\n\
         [anti_entropy]\nranges_per_sec_max = 200\nrepair_ranges_per_sec_max = 200\n\
         pass_pause_ms = 300\n[hints]\nreplay_interval_ms = 200\n\
         [backup]\ndir = {:?}\n",
        backup.display().to_string()
    )
}

fn ringkv(args: &[&str]) -> (bool, String) {
    common::run_ringkv(args)
}

/// The largest dot counter among a key's replicas' siblings written by
/// `actor` (as `/v1/explain` shows them).
fn dot_of(node: &NodeProc, key: &str, actor: &str) -> u64 {
    let v = json(node, &format!("/v1/explain/{key}"));
    let mut best = 0;
    for r in v["replicas"].as_array().into_iter().flatten() {
        for s in r["siblings"].as_array().into_iter().flatten() {
            if s["dot"][0] == actor {
                best = best.max(s["dot"][1].as_u64().unwrap_or(0));
            }
        }
    }
    best
}

#[test]
fn a_node_restored_from_its_snapshot_copy_has_every_earlier_write_and_rejoins() {
    let root = tempfile::tempdir().expect("tempdir");
    let backup = root.path().join("backup");
    let mut nodes = start_joined(root.path(), &config(&backup), 3, |_| Vec::new());
    let mut con = nodes[0].redis();
    for i in 0..300 {
        let mut set = redis::cmd("SET");
        set.arg(format!("pre:{i}")).arg(format!("v{i}"));
        if i % 3 == 0 {
            set.arg("EX").arg(3600);
        }
        let () = set.query(&mut con).expect("SET");
    }
    // Two writes from the same causal context through two coordinators:
    // siblings.
    let values: Vec<String> = nodes[..2]
        .iter()
        .map(|n| format!("from-{}", n.resp.port()))
        .collect();
    common::make_siblings("sib", &[&nodes[0], &nodes[1]], &values);
    std::thread::sleep(Duration::from_millis(200));

    // Node 2 coordinates a write too: its dot before the snapshot.
    let () = redis::cmd("SET")
        .arg("pre:100")
        .arg("v100")
        .query(&mut nodes[2].redis())
        .expect("SET through node 2");
    std::thread::sleep(Duration::from_millis(200));

    // A write load while the snapshot is taken; what was acknowledged
    // before the snapshot began must be in it.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
        let addr = nodes[1].resp;
        std::thread::spawn(move || {
            let mut c = redis::Client::open(format!("redis://{addr}/"))
                .expect("client")
                .get_connection()
                .expect("connection");
            // Acknowledged by every replica, node 2's copy included.
            let () = redis::cmd("RINGKV.CONSISTENCY")
                .arg("ALL")
                .query(&mut c)
                .expect("level");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("load:{i}");
                if redis::cmd("SET")
                    .arg(&key)
                    .arg(i)
                    .query::<()>(&mut c)
                    .is_ok()
                {
                    acked.lock().expect("acked").push(key);
                }
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<String> = acked.lock().expect("acked").clone();
    let target = &nodes[2];
    let admin = target.http.to_string();
    let (ok, out) = ringkv(&["snapshot", "--tag", "nightly", "--copy", "--http", &admin]);
    assert!(ok, "{out}");
    assert!(
        out.contains("snapshot nightly of node") && out.contains("copied to"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(before.len() > 10, "the load ran: {}", before.len());

    // Listed; a second snapshot with the same tag is refused.
    let (ok, out) = ringkv(&["snapshot", "list", "--http", &admin]);
    assert!(ok && out.contains("nightly"), "{out}");
    let (ok, out) = ringkv(&["snapshot", "--tag", "nightly", "--http", &admin]);
    assert!(!ok && out.contains("exists"), "{out}");

    // After the snapshot: deletes the restored node will have missed.
    for i in 0..20 {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("pre:{i}"))
            .query(&mut con)
            .expect("DEL");
    }
    let target_id = common::self_id(target);
    let dot_before = dot_of(&nodes[0], "pre:100", &target_id);
    assert!(dot_before > 0, "node 2's dot on pre:100");

    // The copy restored into a fresh directory, started cut off from the
    // cluster (a certificate of another CA: its peers refuse it), serves
    // what the snapshot holds.
    let copy = backup.join(&target_id).join("nightly");
    let id_num = u64::from_str_radix(&target_id, 16).expect("hex id");
    let fresh = root.path().join("elsewhere").join("n2");
    std::fs::create_dir_all(&fresh).expect("fresh dir");
    common::provision_certs_for(&fresh, Some(id_num));
    restore(&fresh, &copy);
    let cfg = root
        .path()
        .join("ringkv.toml")
        .to_string_lossy()
        .into_owned();
    let alone = NodeProc::start(&fresh, &["--config", &cfg]);
    assert_eq!(common::self_id(&alone), target_id, "the same node");
    let mut c = alone.redis();
    let () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("ONE")
        .query(&mut c)
        .expect("level");
    for i in 0..300 {
        let got: Option<String> = redis::cmd("GET")
            .arg(format!("pre:{i}"))
            .query(&mut c)
            .expect("GET");
        assert_eq!(got, Some(format!("v{i}")), "pre:{i}");
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("pre:{i}"))
            .query(&mut c)
            .expect("TTL");
        assert_eq!(ttl > 0, i % 3 == 0, "TTL of pre:{i}: {ttl}");
    }
    for key in &before {
        let got: Option<String> = redis::cmd("GET").arg(key).query(&mut c).expect("GET");
        assert!(
            got.is_some(),
            "{key} acknowledged before the snapshot, missing"
        );
    }
    let all: redis::Value = redis::cmd("RINGKV.GETALL")
        .arg("sib")
        .query(&mut c)
        .expect("GETALL");
    assert_eq!(
        format!("{all:?}").matches("from-").count(),
        2,
        "siblings: {all:?}"
    );
    assert!(alone.terminate().success());

    // Node 2 loses its whole data directory but its certificate (kept with
    // the operator's secrets), and is restored from the copy.
    let target = nodes.pop().expect("node 2");
    let data_dir = target.data_dir.clone();
    assert!(target.terminate().success());
    for entry in std::fs::read_dir(&data_dir).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "certs") {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove");
        } else {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    restore(&data_dir, &copy);
    let back = NodeProc::start(&data_dir, &["--config", &cfg]);
    assert_eq!(common::self_id(&back), target_id);
    nodes.push(back);
    wait_until("the three to see each other", 60, || {
        nodes.iter().all(|n| common::alive(n) == 3)
    });
    // Anti-entropy brings it the deletes made after the snapshot: its own
    // copy (ONE through it) no longer has those keys.
    let mut c = nodes[2].redis();
    let () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("ONE")
        .query(&mut c)
        .expect("level");
    wait_until(
        "the deletes made after the snapshot to reach it",
        90,
        || {
            (0..20).all(|i| {
                redis::cmd("GET")
                    .arg(format!("pre:{i}"))
                    .query::<Option<String>>(&mut c)
                    .is_ok_and(|v| v.is_none())
            })
        },
    );
    // Its new writes take dots above any it issued before the restore.
    let () = redis::cmd("SET")
        .arg("pre:100")
        .arg("new")
        .query(&mut c)
        .expect("SET");
    std::thread::sleep(Duration::from_millis(200));
    let dot_after = dot_of(&nodes[0], "pre:100", &target_id);
    assert!(
        dot_after > dot_before && dot_after >> 40 >= (1 << 16),
        "a new dot after the restore: {dot_before:#x} then {dot_after:#x}"
    );
    // The restored directory has no local snapshot (it came from the copy);
    // the others still have theirs to clear.
    let admin = nodes[2].http.to_string();
    let (ok, out) = ringkv(&["snapshot", "clear", "--tag", "nightly", "--http", &admin]);
    assert!(!ok && out.contains("no snapshot tagged nightly"), "{out}");
    let (status, _, body) = http(
        nodes[0].http,
        "POST",
        "/v1/snapshots",
        &[],
        br#"{"tag":"x/y"}"#,
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = http(
        nodes[0].http,
        "POST",
        "/v1/snapshots",
        &[],
        br#"{"copy":true}"#,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (ok, out) = ringkv(&["snapshot", "clear", "--http", &nodes[0].http.to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = ringkv(&["snapshot", "list", "--http", &nodes[0].http.to_string()]);
    assert!(ok && out.contains("no snapshots"), "{out}");
}

/// `ringkv snapshot restore` of `from` into `data_dir`.
fn restore(data_dir: &Path, from: &Path) {
    let (ok, out) = ringkv(&[
        "snapshot",
        "restore",
        "--data-dir",
        &data_dir.to_string_lossy(),
        "--from",
        &from.to_string_lossy(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("restored snapshot nightly"), "{out}");
}
