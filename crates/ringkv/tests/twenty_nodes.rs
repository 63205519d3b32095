//! Twenty real node processes on loopback, gossiping by digests: five start
//! the cluster, three waves of five join at once while a client writes,
//! then every node restarts in turn (a rolling restart, new ports each
//! time) while the client goes on. Nothing acknowledged is lost, and every
//! node ends with the same view of the ring. Small memtables and caches keep
//! twenty processes within this machine's memory; the test is bounded in
//! time by its waits.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{NodeProc, json, normal, start_joined, wait_until};
use redis::Commands;

const CONFIG: &str = r#"
[cluster]
gossip_interval_ms = 200
request_timeout_ms = 3000

[movement]
settle_ms = 500
cleanup_delay_ms = 1000

[storage]
memtable_bytes_max = 1048576
block_cache_bytes = 1048576
record_cache_bytes = 1048576
"#;

const NODES: usize = 20;
const FIRST: usize = 5;
const WAVE: usize = 5;

/// Each node's view of the ring: per node id, its status and ownership;
/// and every token of the ring with its owner.
type RingView = (BTreeMap<String, (String, String)>, String);

fn view(node: &NodeProc) -> RingView {
    let cluster = json(node, "/v1/cluster");
    let nodes = cluster["nodes"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|n| {
                    (
                        n["id"].as_str().unwrap_or_default().to_string(),
                        (n["status"].to_string(), format!("{:.6}", n["ownership"])),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (nodes, cluster["tokens"].to_string())
}

/// A client writing `w{i}` through the nodes in turn until stopped; the
/// keys whose writes were acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(ports: Arc<Mutex<Vec<u16>>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (Arc::clone(&stop), Arc::clone(&acked));
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let port = {
                    let ports = ports.lock().unwrap_or_else(|e| e.into_inner());
                    ports[(i as usize) % ports.len()]
                };
                let key = format!("w{i}");
                let wrote = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                    .and_then(|mut con| con.set::<_, _, ()>(&key, format!("v{i}")));
                if wrote.is_ok() {
                    a.lock().unwrap_or_else(|e| e.into_inner()).push(key);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer");
        }
        std::mem::take(&mut *self.acked.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn client_ports(nodes: &[NodeProc]) -> Vec<u16> {
    nodes.iter().map(|n| n.resp.port()).collect()
}

#[test]
fn twenty_nodes_join_in_waves_and_restart_in_turn_losing_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let mut nodes = start_joined(root, CONFIG, FIRST, |_| Vec::new());
    let cfg = root.join("ringkv.toml").to_string_lossy().into_owned();
    let seed = nodes[0].cluster.to_string();
    let ports = Arc::new(Mutex::new(client_ports(&nodes)));
    let writer = Writer::start(Arc::clone(&ports));

    // Three waves of five nodes joining at once.
    for wave in 0..(NODES - FIRST) / WAVE {
        let started: Vec<NodeProc> = std::thread::scope(|s| {
            let joins: Vec<_> = (0..WAVE)
                .map(|j| {
                    let dir = root.join(format!("n{}", FIRST + wave * WAVE + j));
                    let (cfg, seed) = (cfg.clone(), seed.clone());
                    s.spawn(move || NodeProc::start(&dir, &["--config", &cfg, "--seeds", &seed]))
                })
                .collect();
            joins
                .into_iter()
                .map(|j| j.join().expect("start"))
                .collect()
        });
        nodes.extend(started);
        let n = nodes.len();
        for node in &nodes {
            wait_until(&format!("wave {wave}: {n} nodes NORMAL"), 180, || {
                normal(node) == n
            });
        }
        *ports.lock().unwrap_or_else(|e| e.into_inner()) = client_ports(&nodes);
    }

    // The rolling restart: each node in turn, on its data, on new ports.
    for i in 0..NODES {
        let old = nodes.remove(i);
        let data_dir = old.data_dir.clone();
        assert!(old.terminate().success(), "node {i} stops cleanly");
        let restarted = NodeProc::start(&data_dir, &["--config", &cfg]);
        nodes.insert(i, restarted);
        *ports.lock().unwrap_or_else(|e| e.into_inner()) = client_ports(&nodes);
        // It is back when it and a few others see every node up again.
        for probe in [i, (i + 1) % NODES, (i + 7) % NODES] {
            wait_until(&format!("restart of node {i}"), 120, || {
                normal(&nodes[probe]) == NODES
            });
        }
    }
    let acked = writer.finish();
    assert!(
        acked.len() > 100,
        "the client wrote throughout: {}",
        acked.len()
    );

    // Every node holds the same ring, every node up and NORMAL.
    for node in &nodes {
        wait_until("every node NORMAL everywhere", 120, || {
            normal(node) == NODES
        });
    }
    let first = view(&nodes[0]);
    assert_eq!(first.0.len(), NODES, "{first:?}");
    assert!(first.1.len() > 2, "the ring's tokens: {}", first.1);
    for node in &nodes[1..] {
        wait_until("the same ring everywhere", 60, || view(node) == first);
    }

    // Every acknowledged write reads back, through any node.
    for (i, key) in acked.iter().enumerate() {
        let mut con = nodes[i % NODES].redis();
        let got: Option<String> = con.get(key).expect("get");
        let want = format!("v{}", &key[1..]);
        assert_eq!(got.as_deref(), Some(want.as_str()), "{key} lost");
    }
}
