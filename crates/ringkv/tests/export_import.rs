//! Export from three nodes (N = 3) with siblings, deletes and TTLs; import
//! into five nodes with two copies per key: every key, every sibling and
//! every expiry as before. A damaged or cut export is refused with its
//! offset and loads nothing; `--resume` goes on from the recorded position.
//! FLUSHALL empties the five nodes, the export brings every key back, and
//! with one node stopped FLUSHALL and `ringkv truncate` are refused naming
//! it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{NodeProc, start_joined, wait_until};

const CONFIG: &str = "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 2000\n";

fn ringkv(args: &[&str]) -> (bool, String) {
    common::run_ringkv(args)
}

fn import(node: &NodeProc, file: &Path, extra: &[&str]) -> (bool, String) {
    let http = node.http.to_string();
    let file = file.to_string_lossy().into_owned();
    let mut args = vec!["import", "--http", &http, "--in", &file];
    args.extend_from_slice(extra);
    ringkv(&args)
}

fn keys(node: &NodeProc) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut node.redis())
        .expect("KEYS");
    k.sort();
    k
}

#[test]
fn an_export_of_three_nodes_loads_into_five_with_another_replication_factor() {
    let root = tempfile::tempdir().expect("tempdir");
    for c in ["a", "b"] {
        std::fs::create_dir_all(root.path().join(c)).expect("cluster folder");
    }
    let a = start_joined(&root.path().join("a"), CONFIG, 3, |_| Vec::new());
    let mut con = a[0].redis();
    for i in 0..400 {
        let mut set = redis::cmd("SET");
        set.arg(format!("k:{i}")).arg(format!("v{i}"));
        if i % 4 == 0 {
            set.arg("EX").arg(7200);
        }
        let () = set.query(&mut con).expect("SET");
    }
    for i in 0..10 {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("k:{i}"))
            .query(&mut con)
            .expect("DEL");
    }
    common::make_siblings("sib", &[&a[0], &a[1]], &["left".into(), "right".into()]);
    let pttl_before: i64 = redis::cmd("PTTL")
        .arg("k:20")
        .query(&mut con)
        .expect("PTTL");

    let file = root.path().join("dump.rkx");
    let (ok, out) = ringkv(&[
        "export",
        "--http",
        &a[1].http.to_string(),
        "--out",
        &file.to_string_lossy(),
        "--level",
        "ALL",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("exported 391 keys"), "{out}");
    // A prefix export holds only its keys.
    let part = root.path().join("part.rkx");
    let (ok, out) = ringkv(&[
        "export",
        "--http",
        &a[0].http.to_string(),
        "--out",
        &part.to_string_lossy(),
        "--prefix",
        "k:1",
    ]);
    assert!(ok && out.contains("exported 110 keys"), "{out}");
    drop(a);

    let b_config = format!("{CONFIG}replication_factor = 2\n");
    let b = start_joined(&root.path().join("b"), &b_config, 5, |_| Vec::new());

    // Damaged and cut copies are refused whole: nothing loads.
    let bytes = std::fs::read(&file).expect("read");
    let damaged = root.path().join("damaged.rkx");
    let mut d = bytes.clone();
    let at = d.len() / 2;
    d[at] ^= 0x40;
    std::fs::write(&damaged, &d).expect("write");
    let (ok, out) = import(&b[0], &damaged, &[]);
    assert!(
        !ok && out.contains("export at byte ") && out.contains("damaged"),
        "{out}"
    );
    let cut = root.path().join("cut.rkx");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).expect("write");
    let (ok, out) = import(&b[0], &cut, &[]);
    assert!(!ok && out.contains("cut short"), "{out}");
    assert!(keys(&b[2]).is_empty(), "a refused file loaded keys");

    // Resume from a recorded position: only the rest loads.
    std::fs::write(root.path().join("dump.rkx.import-pos"), "300").expect("pos");
    let (ok, out) = import(&b[1], &file, &["--resume"]);
    assert!(ok && out.contains("imported 391 keys"), "{out}");
    assert_eq!(keys(&b[3]).len(), 91, "the 91 after position 300");

    // The whole file, into the same cluster: merges with what it holds.
    let (ok, out) = import(&b[1], &file, &["--rate-mb", "50"]);
    assert!(ok, "{out}");
    let mut want: Vec<String> = (10..400).map(|i| format!("k:{i}")).collect();
    want.push("sib".into());
    want.sort();
    assert_eq!(keys(&b[4]), want);
    let mut c = b[2].redis();
    let () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("QUORUM")
        .query(&mut c)
        .expect("level");
    for i in 10..400 {
        let got: Option<String> = redis::cmd("GET")
            .arg(format!("k:{i}"))
            .query(&mut c)
            .expect("GET");
        assert_eq!(got, Some(format!("v{i}")));
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("k:{i}"))
            .query(&mut c)
            .expect("TTL");
        assert_eq!(ttl > 0, i % 4 == 0, "k:{i} TTL {ttl}");
    }
    // The expiry is the same instant: the TTL only fell by the time gone.
    let pttl_after: i64 = redis::cmd("PTTL").arg("k:20").query(&mut c).expect("PTTL");
    assert!(
        pttl_after <= pttl_before && pttl_before - pttl_after < 120_000,
        "{pttl_before} then {pttl_after}"
    );
    let (_, siblings): (Vec<u8>, Vec<Vec<u8>>) = redis::cmd("RINGKV.GETALL")
        .arg("sib")
        .query(&mut c)
        .expect("GETALL");
    let mut siblings: Vec<String> = siblings
        .into_iter()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect();
    siblings.sort();
    assert_eq!(siblings, vec!["left", "right"]);
    // Each key has two copies in the new cluster.
    wait_until("the census to count two copies of each key", 30, || {
        redis::cmd("DBSIZE").query::<u64>(&mut c).ok() == Some(391)
    });

    // FLUSHALL empties the whole cluster, through any node.
    let ok: String = redis::cmd("FLUSHALL")
        .query(&mut b[0].redis())
        .expect("FLUSHALL");
    assert_eq!(ok, "OK");
    assert!(keys(&b[3]).is_empty(), "no key after FLUSHALL");
    let got: Option<String> = redis::cmd("GET").arg("k:20").query(&mut c).expect("GET");
    assert_eq!(got, None);
    wait_until("DBSIZE to fall to 0", 30, || {
        redis::cmd("DBSIZE").query::<u64>(&mut c).ok() == Some(0)
    });
    // The export taken before brings every key back.
    let (ok, out) = import(&b[1], &file, &[]);
    assert!(ok, "{out}");
    assert_eq!(keys(&b[2]), want, "the import after a truncation");
    let (_, siblings): (Vec<u8>, Vec<Vec<u8>>) = redis::cmd("RINGKV.GETALL")
        .arg("sib")
        .query(&mut c)
        .expect("GETALL");
    assert_eq!(siblings.len(), 2, "both siblings back");

    // A truncation needs every node: one stopped is named, nothing goes.
    let mut b = b;
    let gone = b.pop().expect("a node");
    let gone_id = common::self_id(&gone);
    let _ = gone.terminate();
    wait_until("the stopped node to be seen down", 30, || {
        common::alive(&b[0]) == 4
    });
    let err = redis::cmd("FLUSHALL")
        .query::<String>(&mut b[0].redis())
        .expect_err("a node is down");
    let text = format!("{err}");
    assert!(
        text.contains(&gone_id) && text.contains("nothing was truncated"),
        "{text}"
    );
    let (ok, out) = ringkv(&["truncate", "--http", &b[1].http.to_string()]);
    assert!(!ok && out.contains("--yes"), "asks for confirmation: {out}");
    let (ok, out) = ringkv(&["truncate", "--yes", "--http", &b[1].http.to_string()]);
    assert!(!ok && out.contains(&gone_id), "{out}");
    let mut one = b[2].redis();
    let () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("ONE")
        .query(&mut one)
        .expect("level");
    let mut left: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut one).expect("KEYS");
    left.sort();
    assert_eq!(left, want, "nothing truncated");
    std::thread::sleep(Duration::from_millis(10));
}
