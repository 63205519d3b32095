//! `ringkv local-cluster`: the README's main job. Starts N node processes on
//! this machine, each with its own data directory under one folder and its
//! own ports, joined into one cluster, and prints how to connect. Ctrl-C
//! stops them all gracefully.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::LocalClusterArgs;

/// Most nodes one local cluster may start.
const LOCAL_NODES_MAX: usize = 64;
/// The local cluster's CA, under its folder.
pub const LOCAL_CA_DIR: &str = "ca";
/// How long one node may take to become ready.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(120);

struct Started {
    child: Child,
    resp: String,
    http: String,
    cluster: String,
}

fn terminate(children: &mut [Started]) {
    for s in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status();
    }
    for s in children.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match s.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

pub fn run(args: LocalClusterArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > LOCAL_NODES_MAX {
        bail!("--nodes must be between 1 and {LOCAL_NODES_MAX}");
    }
    let exe = std::env::current_exe().context("locating the ringkv binary")?;
    let base = args.base_port;
    let port = |i: usize, offset: usize| -> anyhow::Result<u16> {
        u16::try_from(base as usize + 10 * i + offset)
            .map_err(|_| anyhow::anyhow!("--base-port {base} is too high for {} nodes", args.nodes))
    };
    let host = "127.0.0.1";
    let first_cluster = format!("{host}:{}", port(0, 2)?);
    let mut started: Vec<Started> = Vec::new();
    for i in 0..args.nodes {
        let dir = args.dir.join(format!("node{}", i + 1));
        let mut cmd = Command::new(&exe);
        cmd.arg("server");
        if args.node.insecure {
            cmd.arg("--insecure");
        } else {
            // The cluster's own CA, kept beside the nodes' folders.
            crate::cert::provision(&args.dir.join(LOCAL_CA_DIR), &dir)
                .with_context(|| format!("certificates of node {}", i + 1))?;
        }
        cmd.arg("--data-dir")
            .arg(&dir)
            .args(["--resp-addr", &format!("{host}:{}", port(i, 0)?)])
            .args(["--http-addr", &format!("{host}:{}", port(i, 1)?)])
            .args(["--cluster-addr", &format!("{host}:{}", port(i, 2)?)]);
        if i > 0 {
            cmd.args(["--seeds", &first_cluster]);
        }
        if let Some(c) = &args.node.config {
            cmd.arg("--config").arg(c);
        }
        if let Some(sync) = args.node.sync {
            cmd.args([
                "--sync",
                if sync == crate::config::SyncMode::Always {
                    "always"
                } else {
                    "periodic"
                },
            ]);
        }
        cmd.args(["--log", args.node.log.as_deref().unwrap_or("warn")]);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting node {}", i + 1))?;
        let stdout = child.stdout.take().context("node stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        let ready = loop {
            if Instant::now() > deadline {
                break None;
            }
            match lines.next() {
                Some(Ok(line)) if line.contains(" ready: ") => break Some(line),
                Some(Ok(line)) => println!("node{}: {line}", i + 1),
                _ => break None,
            }
        };
        let Some(line) = ready else {
            let _ = child.kill();
            let _ = child.wait();
            terminate(&mut started);
            bail!("node {} did not start (see its log above)", i + 1);
        };
        // Keep forwarding the node's output.
        let n = i + 1;
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                println!("node{n}: {line}");
            }
        });
        let field = |after: &str| {
            line.split(after)
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or("?")
                .trim_end_matches("/v1/status")
                .to_string()
        };
        started.push(Started {
            child,
            resp: format!("{host}:{}", field("redis-cli -p ")),
            http: field("http://"),
            cluster: field("cluster "),
        });
    }

    println!(
        "ringkv local cluster: {} node(s), data in {}",
        started.len(),
        args.dir.display()
    );
    for (i, s) in started.iter().enumerate() {
        println!(
            "  node{}  resp {}  http {}  cluster {}  pid {}",
            i + 1,
            s.resp,
            s.http,
            s.cluster,
            s.child.id()
        );
    }
    let resp_port = port(0, 0)?;
    let http = &started[0].http;
    println!();
    println!("Connect (any node serves any key):");
    println!("  redis-cli -p {resp_port} SET greeting hello");
    println!("  redis-cli -p {resp_port} GET greeting");
    println!("  curl http://{http}/v1/kv/greeting");
    println!("  curl http://{http}/v1/cluster");
    println!("  ringkv status --http {http}");
    println!(
        "Ctrl-C stops the cluster; data stays in {}.",
        args.dir.display()
    );

    let rt = crate::server::runtime()?;
    rt.block_on(crate::server::shutdown_signal());
    terminate(&mut started);
    Ok(())
}
