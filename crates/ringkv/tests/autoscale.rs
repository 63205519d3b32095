//! The autoscaler with the local provisioner and short windows, on real
//! processes: load between the watermarks changes nothing; sustained
//! overload adds a node that serves; idleness removes it again.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{json, normal, start_joined, wait_until};

const CONFIG: &str = common::MOVING_CLUSTER_CONFIG;

/// GETs through `addr` at about `rate` per second (0: as fast as one
/// connection goes) until `stop`.
fn load(addr: SocketAddr, rate: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://{addr}/"))
            .expect("client")
            .get_connection()
            .expect("connection");
        let start = Instant::now();
        let mut done = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let _: Option<String> = redis::cmd("GET")
                .arg(format!("k{done}"))
                .query(&mut c)
                .unwrap_or(None);
            done += 1;
            if rate > 0 {
                let due = Duration::from_secs_f64(done as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        done
    })
}

fn metrics(addr: &str) -> String {
    let (_, _, body) = common::http(addr.parse().expect("addr"), "GET", "/metrics", &[], b"");
    String::from_utf8_lossy(&body).into_owned()
}

#[test]
fn the_autoscaler_adds_under_load_removes_when_idle_and_holds_in_between() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_joined(root.path(), CONFIG, 3, |_| Vec::new());
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").to_string()
    };
    let cfg = root.path().join("ringkv.toml");
    let mut scaler = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["autoscale", "--http", &nodes[0].http.to_string()])
        .args(["--high-ops", "400", "--low-ops", "100"])
        .args([
            "--window-s",
            "2",
            "--cooldown-s",
            "3",
            "--interval-ms",
            "250",
        ])
        .args(["--min-nodes", "3", "--max-nodes", "4", "--listen", &listen])
        .arg("--dir")
        .arg(root.path().join("auto"))
        .arg("--ca-dir")
        .arg(root.path().join("ca"))
        .arg("--node-config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ringkv autoscale");
    let scaler_guard = scopeguard(&mut scaler);

    // Between the watermarks (about 250 ops/s per node): nothing happens.
    let stop = Arc::new(AtomicBool::new(false));
    let calm: Vec<_> = nodes
        .iter()
        .map(|n| load(n.resp, 250, Arc::clone(&stop)))
        .collect();
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let calm_ops: u64 = calm.into_iter().map(|h| h.join().expect("load")).sum();
    assert!(calm_ops > 2_000, "the calm load ran: {calm_ops} ops");
    assert_eq!(normal(&nodes[0]), 3, "no node added between the watermarks");
    assert!(metrics(&listen).contains("ringkv_autoscaler_decisions_total{action=\"add\"} 0"));

    // Overload: a node is added and serves.
    let stop = Arc::new(AtomicBool::new(false));
    let hot: Vec<_> = nodes
        .iter()
        .flat_map(|n| [n.resp, n.resp])
        .map(|a| load(a, 0, Arc::clone(&stop)))
        .collect();
    let t0 = Instant::now();
    wait_until("a fourth node NORMAL", 90, || normal(&nodes[0]) == 4);
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in hot {
        h.join().expect("load");
    }
    eprintln!("overload to a serving fourth node: {took:?}");
    let view = json(&nodes[0], "/v1/cluster");
    let known: Vec<String> = nodes
        .iter()
        .map(|n| {
            json(n, "/v1/cluster")["self"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let added = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| !known.contains(&n["id"].as_str().unwrap_or("").to_string()))
        .expect("the added node")
        .clone();
    let resp: SocketAddr = added["resp_addr"]
        .as_str()
        .expect("resp")
        .parse()
        .expect("addr");
    let mut c = redis::Client::open(format!("redis://{resp}/"))
        .expect("client")
        .get_connection()
        .expect("the added node accepts clients");
    let () = redis::cmd("SET")
        .arg("scaled")
        .arg("yes")
        .query(&mut c)
        .expect("SET");
    let v: String = redis::cmd("GET").arg("scaled").query(&mut c).expect("GET");
    assert_eq!(v, "yes");

    // Idle: the added node is decommissioned.
    let added_id = added["id"].as_str().expect("id").to_string();
    wait_until("the added node to leave", 90, || {
        json(&nodes[0], "/v1/cluster")["nodes"]
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .any(|n| n["id"] == added_id.as_str() && n["status"] == "LEFT")
            })
    });
    wait_until("three NORMAL nodes", 30, || normal(&nodes[0]) == 3);
    let m = metrics(&listen);
    assert!(
        m.contains("ringkv_autoscaler_decisions_total{action=\"add\"} 1"),
        "{m}"
    );
    wait_until("the removal counted", 10, || {
        metrics(&listen).contains("ringkv_autoscaler_decisions_total{action=\"remove\"} 1")
    });
    // The decisions and their reasons are shown by `ringkv status`.
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["status", "--http", &nodes[1].http.to_string()])
        .output()
        .expect("ringkv status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("autoscaler:"), "{text}");
    assert!(
        text.contains(" add ") && text.contains(" remove "),
        "{text}"
    );
    assert!(
        text.contains("high watermark") && text.contains("low watermark"),
        "{text}"
    );
    let v: String = redis::cmd("GET")
        .arg("scaled")
        .query(&mut nodes[2].redis())
        .expect("GET");
    assert_eq!(v, "yes", "data written through the removed node stays");
    drop(scaler_guard);
}

/// Stops the autoscaler (SIGTERM, then waits) when dropped, so its nodes go
/// with it even when an assertion fails.
struct Guard<'a>(&'a mut std::process::Child);

fn scopeguard(child: &mut std::process::Child) -> Guard<'_> {
    Guard(child)
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
