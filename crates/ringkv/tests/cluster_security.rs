//! The cluster port of real node processes admits only nodes holding a
//! certificate of the cluster's CA, each only as the node its certificate
//! names; a plaintext cluster moves to mutual TLS by rolling restart
//! under writes, losing nothing.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{NodeProc, all_normal, normal, provision_certs_for, self_id, start_joined};
use ringkv_cluster::net::certs;
use ringkv_cluster::net::message::{Request, Response};
use ringkv_cluster::net::tls::NodeTls;
use ringkv_cluster::net::{Peer, Security, TcpTransport, Transport, TransportConfig};

const FAST: &str =
    "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 2000\njoin_timeout_ms = 3000\n";

/// One request to the cluster port of `addr`, as node `id` with
/// `security`: the answer, or why there was none.
fn call_as(
    addr: std::net::SocketAddr,
    id: u64,
    security: Security,
    req: Request,
) -> Result<Response, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let config = TransportConfig {
            security,
            ..TransportConfig::default()
        };
        let t = Arc::new(TcpTransport::new(id, config));
        let peer = Peer {
            id: 0,
            addr: addr.to_string(),
        };
        t.call(&peer, req, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())
    })
}

/// A read of `key` over the cluster port of `addr`, as node `id` with
/// `security`.
fn read_over_cluster_port(
    addr: std::net::SocketAddr,
    id: u64,
    security: Security,
    key: &str,
) -> Result<Response, String> {
    let key = Bytes::from(key.to_string());
    call_as(addr, id, security, Request::Read { key })
}

/// A certificate folder for node `id` issued by the CA in `ca_dir`.
fn identity(ca_dir: &Path, out: &Path, id: u64) -> Arc<NodeTls> {
    let ca = certs::load_or_create_ca(ca_dir).expect("CA");
    let pem = certs::issue_node(&ca, id, 7, &[]).expect("issue");
    let paths = certs::write_node_folder(out, &ca.cert, &pem).expect("write");
    Arc::new(NodeTls::load(paths).expect("load"))
}

fn id_of(node: &NodeProc) -> u64 {
    u64::from_str_radix(&self_id(node), 16).expect("hex id")
}

#[test]
fn the_cluster_port_admits_only_nodes_with_a_certificate_of_the_cluster_ca() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_joined(root.path(), FAST, 2, |_| Vec::new());
    let mut con = nodes[0].redis();
    redis::cmd("SET")
        .arg("secret")
        .arg("top-secret-value")
        .query::<()>(&mut con)
        .expect("set");
    let target = nodes[0].cluster;

    // Plaintext, as an attacker that knows the cluster name would.
    let err = read_over_cluster_port(target, 0xdead_beef, Security::Plaintext, "secret")
        .expect_err("a plaintext caller read a record");
    eprintln!("plaintext: {err}");
    // A certificate of another CA.
    let foreign = identity(&root.path().join("other-ca"), &root.path().join("f"), 0xf0);
    let err = read_over_cluster_port(target, 0xf0, Security::Mutual(foreign), "secret")
        .expect_err("a node of another CA read a record");
    eprintln!("foreign CA: {err}");
    // A certificate of this CA, used to speak as another node (node 1).
    let member = identity(&root.path().join("ca"), &root.path().join("m"), 0x77);
    let err = read_over_cluster_port(
        target,
        id_of(&nodes[1]),
        Security::Mutual(Arc::clone(&member)),
        "secret",
    )
    .expect_err("a node spoke as another");
    eprintln!("impersonation: {err}");
    // The same certificate as itself is admitted: the refusals above are
    // about identity, not a broken port.
    let answer = read_over_cluster_port(target, 0x77, Security::Mutual(member), "secret")
        .expect("a holder of a valid certificate is served");
    assert!(matches!(answer, Response::Record(Some(_))), "{answer:?}");

    // A node without a certificate, or with another CA's, cannot join.
    let cfg = root.path().join("ringkv.toml");
    for (dir, flags) in [("plain", vec!["--insecure"]), ("stray", vec![])] {
        let data = root.path().join(dir);
        if dir == "stray" {
            identity(
                &root.path().join("stray-ca"),
                &data.join(certs::CERTS_DIR),
                0x5,
            );
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .arg("server")
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .args(["--resp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--cluster-addr", "127.0.0.1:0"])
            .args(["--seeds", &target.to_string()])
            .args(flags)
            .output()
            .expect("run a node");
        assert!(!out.status.success(), "{dir}: joined");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no seed answered"), "{dir}: {stderr}");
    }
    for node in &nodes {
        assert_eq!(normal(node), 2, "the ring gained a member");
    }
}

#[test]
fn a_plaintext_cluster_moves_to_mutual_tls_by_rolling_restart_without_losing_writes() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_joined(root.path(), FAST, 3, |_| vec!["--insecure".into()]);
    let optional = root.path().join("optional.toml");
    std::fs::write(
        &optional,
        format!("{FAST}[tls]\ncluster_mode = \"optional\"\n"),
    )
    .expect("write config");
    let mutual = root.path().join("ringkv.toml");

    // Writes go on through every step, to whichever nodes are up.
    let targets = Arc::new(Mutex::new(nodes.iter().map(|n| n.resp).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (targets, stop) = (Arc::clone(&targets), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let addr = {
                    let t = targets.lock().expect("targets");
                    t[usize::try_from(i).unwrap_or(0) % t.len()]
                };
                let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
                let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(500))
                else {
                    continue;
                };
                let key = format!("k{i}");
                if redis::cmd("SET")
                    .arg(&key)
                    .arg(format!("v{i}"))
                    .query::<()>(&mut con)
                    .is_ok()
                {
                    acked.push(i);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            acked
        })
    };

    let mut nodes = nodes;
    for (step, config) in [("optional", &optional), ("mutual", &mutual)] {
        for i in 0..nodes.len() {
            let id = id_of(&nodes[i]);
            let data_dir = nodes[i].data_dir.clone();
            let seed = nodes[(i + 1) % nodes.len()].cluster.to_string();
            let old = nodes.remove(i);
            assert!(
                old.terminate().success(),
                "{step}: node {i} stopped cleanly"
            );
            provision_certs_for(&data_dir, Some(id));
            let restarted = NodeProc::start(
                &data_dir,
                &["--config", &config.to_string_lossy(), "--seeds", &seed],
            );
            assert_eq!(id_of(&restarted), id, "{step}: the node keeps its id");
            nodes.insert(i, restarted);
            targets.lock().expect("targets")[i] = nodes[i].resp;
            let refs: Vec<&NodeProc> = nodes.iter().collect();
            all_normal(&refs, 3);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );

    // Every acknowledged write reads back, through every node.
    for node in &nodes {
        let mut con = node.redis();
        for i in &acked {
            let got: Option<String> = redis::cmd("GET")
                .arg(format!("k{i}"))
                .query(&mut con)
                .expect("get");
            assert_eq!(got, Some(format!("v{i}")), "k{i} through {}", node.resp);
        }
    }
    // The cluster port no longer speaks plaintext.
    for node in &nodes {
        let err = read_over_cluster_port(node.cluster, 0x42, Security::Plaintext, "k1");
        assert!(err.is_err(), "{} still answers plaintext", node.cluster);
    }
}

/// One gossip exchange with `addr` as a member holding `tls` (node `id`):
/// the states the node answers with.
fn gossip_as(
    addr: std::net::SocketAddr,
    id: u64,
    tls: &Arc<NodeTls>,
    states: Vec<ringkv_cluster::net::message::NodeState>,
) -> Vec<ringkv_cluster::net::message::NodeState> {
    let security = Security::Mutual(Arc::clone(tls));
    match call_as(addr, id, security, Request::Gossip { states }).expect("gossip call") {
        Response::Gossip { states } => states,
        other => panic!("{other:?}"),
    }
}

fn refused_states(node: &NodeProc) -> u64 {
    let (_, _, body) = common::http(node.http, "GET", "/metrics", &[], b"");
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("ringkv_gossip_states_refused_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn a_member_cannot_relay_a_forged_state_or_left_for_another_node() {
    use ringkv_cluster::net::message::NodeStatus;
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_joined(root.path(), FAST, 2, |_| Vec::new());
    let member = identity(&root.path().join("ca"), &root.path().join("m"), 0x77);
    let (target, victim) = (&nodes[0], id_of(&nodes[1]));
    let view = gossip_as(target.cluster, 0x77, &member, Vec::new());
    let genuine = view
        .iter()
        .find(|s| s.id == victim)
        .expect("the victim's state")
        .clone();
    assert!(genuine.signature.is_some(), "states travel signed");
    let entry_of = |node: &NodeProc| {
        common::json(node, "/v1/cluster")["nodes"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|n| n["id"] == format!("{victim:016x}").as_str())
                    .cloned()
            })
            .expect("the victim listed")
    };
    let ownership_before = entry_of(target)["ownership"].clone();
    assert!(ownership_before.as_f64().is_some_and(|o| o > 0.0));

    let sign = |f: &dyn Fn(&mut ringkv_cluster::net::message::NodeState)| {
        let mut s = genuine.clone();
        f(&mut s);
        s.signature = None;
        s.signature = Some(
            member
                .sign(&s.signed_bytes().expect("bytes"))
                .expect("sign"),
        );
        s
    };
    let before = refused_states(target);
    let forgeries = vec![
        // Its tokens taken over (the ring captured).
        sign(&|s| {
            s.heartbeat += 1_000;
            s.tokens = s.tokens.iter().map(|t| t ^ 1).collect();
        }),
        // A LEFT for a live node (evicted for good).
        sign(&|s| {
            s.heartbeat += 1_000;
            s.status = NodeStatus::Left;
        }),
        // A heartbeat so far ahead that its own would never count again.
        sign(&|s| s.heartbeat = u64::MAX),
    ];
    let mut unsigned = genuine.clone();
    unsigned.heartbeat += 1_000;
    unsigned.signature = None;
    gossip_as(target.cluster, 0x77, &member, forgeries);
    gossip_as(target.cluster, 0x77, &member, vec![unsigned]);
    assert!(refused_states(target) >= before + 4, "refusals not counted");

    // Nothing changed, on the node or on disk (a restart reads PEERS).
    let check = |node: &NodeProc| {
        let entry = entry_of(node);
        assert_eq!(entry["status"], "NORMAL", "{entry}");
        assert_eq!(entry["ownership"], ownership_before, "the ring changed");
    };
    check(target);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(normal(target), 2, "the victim looks down or gone");
    let [first, second] = <[NodeProc; 2]>::try_from(nodes).unwrap_or_else(|_| panic!("two"));
    let data = first.data_dir.clone();
    assert!(first.terminate().success());
    let restarted = NodeProc::start(
        &data,
        &[
            "--config",
            &root.path().join("ringkv.toml").to_string_lossy(),
            "--seeds",
            &second.cluster.to_string(),
        ],
    );
    check(&restarted);
    all_normal(&[&restarted, &second], 2);
}

#[test]
fn idle_and_slow_http_clients_are_capped_and_timed_out() {
    use std::io::{Read, Write};
    let root = tempfile::tempdir().expect("tempdir");
    let config =
        format!("{FAST}[limits]\nhttp_connections_max = 20\nhttp_header_timeout_ms = 1000\n");
    let nodes = start_joined(root.path(), &config, 1, |_| Vec::new());
    let node = &nodes[0];
    // Fifty silent connections and one that sends half a request's headers.
    let mut idle: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(node.http).expect("connect"))
        .collect();
    let mut slow = std::net::TcpStream::connect(node.http).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("write");
    // RESP is served meanwhile.
    let mut con = node.redis();
    let pong: String = redis::cmd("PING").query(&mut con).expect("ping");
    assert_eq!(pong, "PONG");
    // Every one of them is closed within a few seconds.
    let started = std::time::Instant::now();
    for s in idle.iter_mut().chain(std::iter::once(&mut slow)) {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        // EOF (or a 408 then EOF), never a hang.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "idle HTTP connections held for {:?}",
        started.elapsed()
    );
    // And the node serves HTTP again.
    let (status, _, _) = common::http(node.http, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
    let (_, _, body) = common::http(node.http, "GET", "/metrics", &[], b"");
    let metrics = String::from_utf8_lossy(&body);
    assert!(
        metrics.contains("ringkv_http_connections_refused_total"),
        "connections over the cap were not counted"
    );
}

#[test]
fn protected_mode_refuses_client_ports_beyond_loopback() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("n");
    let users = root.path().join("users.toml");
    std::fs::write(
        &users,
        format!(
            "[[user]]\nname = \"app\"\npassword_hash = \"{}\"\nroles = [\"read\"]\n",
            common::password_hash("pw")
        ),
    )
    .expect("users file");
    // Plaintext, TLS without users, users without TLS: all refused.
    for (tls, with_users, missing) in [
        (false, false, "without client TLS and users"),
        (true, false, "without users"),
        (false, true, "without client TLS:"),
    ] {
        for flag in ["--resp-addr", "--http-addr"] {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"));
            cmd.arg("server")
                .arg("--data-dir")
                .arg(&data)
                .args([flag, "0.0.0.0:0"]);
            if tls {
                cmd.arg("--tls-clients");
            }
            if with_users {
                cmd.env("RINGKV_USERS_FILE", &users);
            }
            let out = cmd.output().expect("run a node");
            assert!(!out.status.success(), "{flag}: started");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("protected mode"), "{stderr}");
            assert!(stderr.contains(missing), "{missing}: {stderr}");
            assert!(!data.exists(), "protected mode created the data directory");
        }
    }
}

#[test]
fn gossip_frames_of_twenty_and_a_hundred_thousand_tokens_neither_stall_nor_hang_a_node() {
    use ringkv_cluster::net::message::{Load, NodeState, NodeStatus};
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_joined(root.path(), FAST, 1, |_| Vec::new());
    let node = &nodes[0];
    // A node of the cluster's own CA, signing its own (oversized) state.
    let big = identity(&root.path().join("ca"), &root.path().join("b"), 0x99);
    let before = refused_states(node);
    for tokens in [20_000u64, 100_000] {
        let mut state = NodeState {
            id: 0x99,
            generation: 1,
            heartbeat: tokens,
            cluster_addr: "127.0.0.1:9".into(),
            resp_addr: "127.0.0.1:9".into(),
            http_addr: "127.0.0.1:9".into(),
            dc: "dc1".into(),
            rack: "r1".into(),
            weight: 64,
            tokens: (0..tokens)
                .map(|t| t.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect(),
            status: NodeStatus::Normal,
            load: Load::default(),
            signature: None,
        };
        state.signature = Some(
            big.sign(&state.signed_bytes().expect("bytes"))
                .expect("sign"),
        );
        let started = std::time::Instant::now();
        gossip_as(node.cluster, 0x99, &big, vec![state]);
        let mut con = node.redis();
        let pong: String = redis::cmd("PING").query(&mut con).expect("ping");
        assert_eq!(pong, "PONG");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{tokens} tokens took {:?}",
            started.elapsed()
        );
    }
    assert!(
        refused_states(node) >= before + 2,
        "oversized states not refused"
    );
    assert_eq!(normal(node), 1, "an oversized state joined the ring");
}

/// `ringkv status` of `node`, as text.
fn status_text(node: &NodeProc) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["status", "--http", &node.http.to_string()])
        .output()
        .expect("ringkv status");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ringkv cert node` with `args`.
fn cert_node(args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["cert", "node"])
        .args(args)
        .output()
        .expect("ringkv cert node");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn certificates_and_the_ca_rotate_without_a_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let nodes = start_joined(root.path(), FAST, 2, |_| Vec::new());
    let ca1 = root.path().join("ca");
    let ca2 = root.path().join("ca2");
    let ca2_pem = certs::load_or_create_ca(&ca2).expect("a second CA").cert;
    let ca1_pem = std::fs::read_to_string(ca1.join(certs::CA_CERT_FILE)).expect("ca.pem");
    let status = status_text(&nodes[0]);
    assert!(status.contains("certificate (cluster) of"), "{status}");
    assert!(!status.contains("WARNING"), "{status}");

    // Before the rotation, a node of the new CA is a stranger.
    // (Both trust both CAs, so only the nodes' trust is tested.)
    let both = format!("{ca1_pem}{ca2_pem}");
    let trusting_both = |ca_dir: &Path, id: u64| {
        let ca = certs::load_ca(ca_dir).expect("CA");
        let pem = certs::issue_node(&ca, id, 7, &[]).expect("issue");
        let out = root.path().join(format!("x{id:x}"));
        let paths = certs::write_node_folder(&out, &both, &pem).expect("write");
        Arc::new(NodeTls::load(paths).expect("load"))
    };
    let new_ca_node = trusting_both(&ca2, 0x72);
    let old_ca_node = trusting_both(&ca1, 0x71);
    let ask = |node: &NodeProc, id: u64, tls: &Arc<NodeTls>| {
        read_over_cluster_port(node.cluster, id, Security::Mutual(Arc::clone(tls)), "k")
    };
    assert!(ask(&nodes[0], 0x72, &new_ca_node).is_err());
    assert!(ask(&nodes[0], 0x71, &old_ca_node).is_ok());

    // 1. Every node trusts both CAs: read again within seconds.
    for node in &nodes {
        let file = node
            .data_dir
            .join(certs::CERTS_DIR)
            .join(certs::CA_CERT_FILE);
        std::fs::write(&file, format!("{ca1_pem}{ca2_pem}")).expect("both CAs");
    }
    for node in &nodes {
        common::wait_until("the new CA trusted", 30, || {
            ask(node, 0x72, &new_ca_node).is_ok()
        });
    }
    // 2. New certificates from the new CA, same ids (node 0's short-lived:
    //    `status` warns).
    for (i, node) in nodes.iter().enumerate() {
        let out = node.data_dir.join(certs::CERTS_DIR);
        let (ca2_dir, ca1_file, out) = (
            ca2.to_string_lossy().into_owned(),
            ca1.join(certs::CA_CERT_FILE).to_string_lossy().into_owned(),
            out.to_string_lossy().into_owned(),
        );
        let mut args = vec![
            "--ca-dir",
            &ca2_dir,
            "--out",
            &out,
            "--renew",
            "--also-trust",
            &ca1_file,
        ];
        if i == 0 {
            args.extend(["--days", "5"]);
        }
        cert_node(&args);
    }
    common::wait_until("node 0's new certificate in use", 30, || {
        status_text(&nodes[0]).contains("WARNING")
    });
    for node in &nodes {
        assert!(
            ask(node, 0x71, &old_ca_node).is_ok(),
            "both CAs still trusted"
        );
    }
    // 3. The old CA is dropped: its certificates are refused from then on.
    for node in &nodes {
        let file = node
            .data_dir
            .join(certs::CERTS_DIR)
            .join(certs::CA_CERT_FILE);
        std::fs::write(&file, &ca2_pem).expect("new CA only");
    }
    for node in &nodes {
        common::wait_until("the old CA no longer trusted", 30, || {
            ask(node, 0x71, &old_ca_node).is_err()
        });
        assert!(ask(node, 0x72, &new_ca_node).is_ok());
    }
    // The nodes still talk to each other, on new connections too, without
    // a restart: a write at ALL through node 0 is read at ALL through 1.
    let mut con = nodes[0].redis();
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("ALL")
        .query(&mut con)
        .expect("RINGKV.CONSISTENCY ALL");
    let _: () = redis::cmd("SET")
        .arg("rotated")
        .arg("yes")
        .query(&mut con)
        .expect("SET at ALL after the rotation");
    let mut con = nodes[1].redis();
    let _: () = redis::cmd("RINGKV.CONSISTENCY")
        .arg("ALL")
        .query(&mut con)
        .expect("RINGKV.CONSISTENCY ALL");
    let v: Option<String> = redis::cmd("GET")
        .arg("rotated")
        .query(&mut con)
        .expect("GET");
    assert_eq!(v.as_deref(), Some("yes"));
    all_normal(&nodes.iter().collect::<Vec<_>>(), 2);
}

/// Slowloris: `per_port` connections from 127.0.0.2 to each of `ports`,
/// each sending one byte a second of its port's request, which never ends
/// (what is sent past its end is zeros), and
/// reopened at once when the node closes it, until `stop`.
fn slowloris(
    ports: Vec<(std::net::SocketAddr, &'static [u8])>,
    per_port: usize,
    stop: Arc<AtomicBool>,
) {
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for (addr, drip) in ports {
            for _ in 0..per_port {
                let stop = Arc::clone(&stop);
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                            return;
                        };
                        let connected = match socket
                            .bind(std::net::SocketAddr::from(([127, 0, 0, 2], 0)))
                        {
                            Ok(()) => {
                                tokio::time::timeout(Duration::from_secs(1), socket.connect(addr))
                                    .await
                            }
                            Err(_) => return,
                        };
                        if let Ok(Ok(conn)) = connected {
                            // Reopened as soon as the node closes it.
                            let (mut rx, mut tx) = conn.into_split();
                            let mut buf = [0u8; 256];
                            let mut i = 0;
                            while !stop.load(Ordering::SeqCst) {
                                tokio::select! {
                                    read = tokio::io::AsyncReadExt::read(&mut rx, &mut buf) => {
                                        if !matches!(read, Ok(n) if n > 0) {
                                            break;
                                        }
                                    }
                                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                                        let byte = drip.get(i).copied().unwrap_or(0);
                                        if tx.write_all(&[byte]).await.is_err() {
                                            break;
                                        }
                                        i += 1;
                                    }
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn slowloris_on_every_port_leaves_clients_served_and_peers_gossiping() {
    let root = tempfile::tempdir().expect("tempdir");
    // Strangers hold the common handshake slots for the whole test: a
    // peer gets in through the reserved ones only.
    let config = format!(
        "{FAST}[limits]\ncluster_handshakes_max = 32\ncluster_handshake_timeout_ms = 120000\n"
    );
    let mut nodes = start_joined(root.path(), &config, 2, |_| Vec::new());
    let stop = Arc::new(AtomicBool::new(false));
    // RESP: a command that never ends; HTTP: headers that never end; the
    // cluster port: a TLS record of 16 KiB, a byte a second.
    let ports: Vec<(std::net::SocketAddr, &'static [u8])> = vec![
        (nodes[0].resp, b"*3\r\n$3\r\nSET\r\n$100000\r\n"),
        (
            nodes[0].http,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        ),
        (nodes[0].cluster, &[0x16, 0x03, 0x01, 0x40, 0x00]),
    ];
    let attack = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || slowloris(ports, 200, stop))
    };
    std::thread::sleep(Duration::from_secs(3));
    // Clients are served, throughout.
    let mut con = nodes[0].redis();
    for i in 0..5 {
        let _: () = redis::cmd("SET")
            .arg(format!("s{i}"))
            .arg("v")
            .query(&mut con)
            .expect("SET under slowloris");
        let (status, _, _) = common::http(nodes[0].http, "GET", "/healthz", &[], b"");
        assert_eq!(status, 200);
        std::thread::sleep(Duration::from_millis(500));
    }
    // A peer restarted meanwhile reconnects (its host is known: reserved
    // handshake slots) and both see each other up.
    let seed = nodes[0].cluster.to_string();
    let data = nodes[1].data_dir.clone();
    let second = nodes.pop().expect("second node");
    assert!(second.terminate().success());
    let cfg = root.path().join("ringkv.toml");
    nodes.push(NodeProc::start(
        &data,
        &["--config", &cfg.to_string_lossy(), "--seeds", &seed],
    ));
    all_normal(&nodes.iter().collect::<Vec<_>>(), 2);
    let fds = open_fds(nodes[0].child.id());
    stop.store(true, Ordering::SeqCst);
    attack.join().expect("attack thread");
    // The cluster port turned strangers away past its handshake slots.
    let (_, _, body) = common::http(nodes[0].http, "GET", "/metrics", &[], b"");
    let metrics = String::from_utf8_lossy(&body);
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with("ringkv_cluster_connections_refused_total{reason=\"handshakes_max\"")),
        "{metrics}"
    );
    // 200 RESP and 200 HTTP connections, at most 32 in a cluster
    // handshake, and the node's own: bounded, far from the limit.
    assert!(fds < 1000, "{fds} descriptors open under slowloris");
    let v: String = redis::cmd("GET")
        .arg("s4")
        .query(&mut nodes[1].redis())
        .expect("GET through the restarted peer");
    assert_eq!(v, "v");
}
