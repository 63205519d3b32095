//! `ringkv autoscale`: a control loop that adds a node when the cluster
//! stays loaded and removes one when it stays idle.
//!
//! Every `interval_ms` it reads the cluster from any node it knows
//! (`GET /v1/cluster`: per node status, ops/s, p99 and disk use, gossiped)
//! and decides:
//! - **over** when the mean ops/s per NORMAL node is above `high_ops`, or the
//!   worst p99 above `high_p99_us`, or the fullest disk above
//!   `high_disk_bytes` (each 0 = not watched);
//! - **under** when the mean ops/s is below `low_ops`, the worst p99 below
//!   half of `high_p99_us`, and the load spread over one node fewer would
//!   stay below `high_ops` x `HEADROOM` (hysteresis: removing a node must
//!   not make the cluster over at once).
//!
//! A node is added when over has held for `window_s`, removed when under
//! has held for `window_s`; never while a node is JOINING or LEAVING (one
//! data movement at a time), never within `cooldown_s` of the last action,
//! never above `max_nodes` or below `min_nodes` (itself at least the
//! replication factor). Only nodes the autoscaler added are removed, the
//! last added first.
//!
//! Provisioners: `local` starts `ringkv server` processes on this machine
//! (own data directory and ports, stopped with the autoscaler) and
//! `command` runs configured shell commands (the hook for kubectl or a
//! cloud CLI; see `deploy/`). A removal is a decommission: the node
//! streams its ranges away and leaves; the provisioner then destroys it.
//!
//! Every decision is logged with its reason, kept (with the nodes added)
//! under the key `ringkv.autoscaler` in the cluster itself, which `ringkv
//! status` shows, and exported as metrics on `--listen`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::http_client::{get_json, request};
use crate::ports::free_port;

/// The key under which the autoscaler keeps its state in the cluster.
pub const STATE_KEY: &str = "ringkv.autoscaler";
/// Decisions kept in the state.
const DECISIONS_KEPT: usize = 20;
/// A removal must leave the remaining nodes below `high_ops` times this.
const HEADROOM: f64 = 0.7;
/// How long an added node may take to become NORMAL, and a removed one to
/// leave.
const ACTION_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProvisionerKind {
    Local,
    Command,
}

#[derive(Debug, Args, Clone)]
pub struct AutoscaleArgs {
    /// HTTP address of a node to watch (more are learnt from the cluster).
    #[arg(long, default_value = "127.0.0.1:7380")]
    pub http: String,
    /// Mean ops/s per node above which the cluster is over (0: not watched).
    #[arg(long, default_value_t = 20_000)]
    pub high_ops: u64,
    /// Mean ops/s per node below which the cluster is under.
    #[arg(long, default_value_t = 2_000)]
    pub low_ops: u64,
    /// Worst node p99 (microseconds) above which the cluster is over (0: not
    /// watched).
    #[arg(long, default_value_t = 0)]
    pub high_p99_us: u64,
    /// Fullest node's disk bytes above which the cluster is over (0: not
    /// watched).
    #[arg(long, default_value_t = 0)]
    pub high_disk_bytes: u64,
    /// How long a condition must hold before acting, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub window_s: f64,
    /// Quiet time after an action, seconds.
    #[arg(long, default_value_t = 300.0)]
    pub cooldown_s: f64,
    /// How often the cluster is read, ms.
    #[arg(long, default_value_t = 1_000)]
    pub interval_ms: u64,
    /// Fewest nodes (never below the replication factor).
    #[arg(long, default_value_t = 3)]
    pub min_nodes: usize,
    /// Most nodes.
    #[arg(long, default_value_t = 16)]
    pub max_nodes: usize,
    /// How nodes are created and destroyed.
    #[arg(long, value_enum, default_value_t = ProvisionerKind::Local)]
    pub provisioner: ProvisionerKind,
    /// local: folder for the new nodes' data directories.
    #[arg(long, default_value = "ringkv-data/autoscaled")]
    pub dir: PathBuf,
    /// local: the cluster's CA folder (`ca.pem`, `ca.key`), from which each
    /// new node gets a certificate of its own; the default is where
    /// `local-cluster` keeps its CA.
    #[arg(long, default_value = "ringkv-data/ca")]
    pub ca_dir: PathBuf,
    /// local: configuration file for the new nodes.
    #[arg(long)]
    pub node_config: Option<PathBuf>,
    /// command: shell command creating a node; it gets RINGKV_SEEDS and
    /// RINGKV_NODES (nodes now) in its environment and prints the new
    /// node's HTTP address as its last line of output. It must give the
    /// node a certificate of the cluster's CA of its own (`ringkv cert
    /// node`, or your PKI) in `<data_dir>/certs`: without one the node
    /// refuses to start.
    #[arg(long)]
    pub create: Option<String>,
    /// command: shell command destroying a node after it has left; it gets
    /// RINGKV_NODE_ID, RINGKV_NODE_HTTP and RINGKV_NODES.
    #[arg(long)]
    pub destroy: Option<String>,
    /// Serve the autoscaler's metrics (Prometheus text) on this address.
    #[arg(long)]
    pub listen: Option<String>,
}

/// One decision, as logged and kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub at_ms: u64,
    /// "add", "remove", "add failed", "remove failed".
    pub action: String,
    pub reason: String,
    pub nodes_before: usize,
    pub node: String,
}

/// A node the autoscaler added.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Added {
    pub id: String,
    pub http: String,
}

/// What the autoscaler keeps in the cluster under [`STATE_KEY`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub decisions: VecDeque<Decision>,
    pub added: Vec<Added>,
}

/// One reading of the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// NORMAL, alive nodes: (id, http, ops/s, p99 us, disk bytes).
    pub normal: Vec<(String, String, u64, u64, u64)>,
    /// A node is JOINING or LEAVING.
    pub moving: bool,
    pub replication: usize,
}

impl Reading {
    fn parse(v: &serde_json::Value) -> Reading {
        let replication = match &v["replication"] {
            serde_json::Value::Object(per_dc) => per_dc
                .values()
                .filter_map(serde_json::Value::as_u64)
                .sum::<u64>() as usize,
            other => other.as_u64().unwrap_or(3) as usize,
        };
        let mut r = Reading {
            replication,
            ..Reading::default()
        };
        for n in v["nodes"].as_array().into_iter().flatten() {
            let status = n["status"].as_str().unwrap_or("");
            if matches!(status, "JOINING" | "LEAVING") && n["alive"] == true {
                r.moving = true;
            }
            if status == "NORMAL" && n["alive"] == true {
                r.normal.push((
                    n["id"].as_str().unwrap_or("").to_string(),
                    n["http_addr"].as_str().unwrap_or("").to_string(),
                    n["load"]["ops_per_sec"].as_u64().unwrap_or(0),
                    n["load"]["p99_us"].as_u64().unwrap_or(0),
                    n["load"]["disk_bytes"].as_u64().unwrap_or(0),
                ));
            }
        }
        r
    }
}

/// What the policy says of one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Over,
    Under,
    Steady,
}

/// The thresholds of the policy.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub high_ops: u64,
    pub low_ops: u64,
    pub high_p99_us: u64,
    pub high_disk_bytes: u64,
}

impl Policy {
    /// Over, under or steady, and why.
    pub fn judge(&self, r: &Reading) -> (Verdict, String) {
        let n = r.normal.len().max(1) as u64;
        let total: u64 = r.normal.iter().map(|x| x.2).sum();
        let mean = total / n;
        let p99 = r.normal.iter().map(|x| x.3).max().unwrap_or(0);
        let disk = r.normal.iter().map(|x| x.4).max().unwrap_or(0);
        if self.high_ops > 0 && mean > self.high_ops {
            return (
                Verdict::Over,
                format!(
                    "mean {mean} ops/s per node > high watermark {}",
                    self.high_ops
                ),
            );
        }
        if self.high_p99_us > 0 && p99 > self.high_p99_us {
            return (
                Verdict::Over,
                format!("worst p99 {p99} us > {} us", self.high_p99_us),
            );
        }
        if self.high_disk_bytes > 0 && disk > self.high_disk_bytes {
            return (
                Verdict::Over,
                format!("fullest disk {disk} B > {} B", self.high_disk_bytes),
            );
        }
        let after = total / (n - 1).max(1);
        let p99_ok = self.high_p99_us == 0 || p99 < self.high_p99_us / 2;
        let headroom_ok = self.high_ops == 0 || (after as f64) < self.high_ops as f64 * HEADROOM;
        if mean < self.low_ops && p99_ok && headroom_ok {
            return (
                Verdict::Under,
                format!(
                    "mean {mean} ops/s per node < low watermark {} ({after} per node with one fewer)",
                    self.low_ops
                ),
            );
        }
        (Verdict::Steady, format!("mean {mean} ops/s per node"))
    }
}

/// Tracks how long a verdict has held, and the cooldown.
#[derive(Debug)]
pub struct Controller {
    policy: Policy,
    window: Duration,
    cooldown: Duration,
    min_nodes: usize,
    max_nodes: usize,
    since: Option<(Verdict, Instant)>,
    last_action: Option<Instant>,
}

/// What the controller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Add(String),
    Remove(String),
    Hold(String),
}

impl Controller {
    pub fn new(
        policy: Policy,
        window: Duration,
        cooldown: Duration,
        min: usize,
        max: usize,
    ) -> Self {
        Self {
            policy,
            window,
            cooldown,
            min_nodes: min,
            max_nodes: max,
            since: None,
            last_action: None,
        }
    }

    /// The action for a reading taken at `now`.
    pub fn step(&mut self, r: &Reading, now: Instant) -> Action {
        let (verdict, why) = self.policy.judge(r);
        match self.since {
            Some((v, _)) if v == verdict => {}
            _ => self.since = Some((verdict, now)),
        }
        let held = self.since.map_or(Duration::ZERO, |(_, t)| now - t);
        if r.moving {
            return Action::Hold(format!("{why}; a node is joining or leaving"));
        }
        if let Some(t) = self.last_action
            && now - t < self.cooldown
        {
            return Action::Hold(format!("{why}; cooling down"));
        }
        let n = r.normal.len();
        let floor = self.min_nodes.max(r.replication);
        match verdict {
            Verdict::Over if held >= self.window && n < self.max_nodes => {
                Action::Add(format!("{why} for {:.0}s", held.as_secs_f64()))
            }
            Verdict::Under if held >= self.window && n > floor => {
                Action::Remove(format!("{why} for {:.0}s", held.as_secs_f64()))
            }
            _ => Action::Hold(why),
        }
    }

    /// Records that an action was taken at `now`.
    pub fn acted(&mut self, now: Instant) {
        self.last_action = Some(now);
        self.since = None;
    }
}

/// Creates and destroys nodes.
trait Provisioner {
    /// Starts a node seeded by `seeds`; returns its HTTP address.
    fn create(&mut self, seeds: &[String], nodes: usize) -> anyhow::Result<String>;
    /// Disposes of a node that has left the ring.
    fn destroy(&mut self, node: &Added, nodes: usize) -> anyhow::Result<()>;
}

/// Nodes as processes on this machine.
struct LocalProvisioner {
    dir: PathBuf,
    ca_dir: PathBuf,
    config: Option<PathBuf>,
    children: Vec<(String, Child, PathBuf)>,
    next: usize,
}

impl Provisioner for LocalProvisioner {
    fn create(&mut self, seeds: &[String], _nodes: usize) -> anyhow::Result<String> {
        let exe = std::env::current_exe().context("locating the ringkv binary")?;
        let dir = loop {
            self.next += 1;
            let d = self.dir.join(format!("node{}", self.next));
            if !d.exists() {
                break d;
            }
        };
        std::fs::create_dir_all(&dir)?;
        // Each node it starts gets a certificate of its own, from the CA
        // kept in the provisioner's folder.
        crate::cert::provision(&self.ca_dir, &dir)?;
        let [resp, http, cluster] =
            [free_port()?, free_port()?, free_port()?].map(|port| format!("127.0.0.1:{port}"));
        let log = std::fs::File::create(dir.with_extension("log"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--resp-addr", &resp, "--http-addr", &http])
            .args(["--cluster-addr", &cluster, "--seeds", &seeds.join(",")])
            .args(["--exit-with", &std::process::id().to_string()]);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting a node")?;
        self.children.push((http.clone(), child, dir));
        Ok(http)
    }

    fn destroy(&mut self, node: &Added, _nodes: usize) -> anyhow::Result<()> {
        if let Some(i) = self.children.iter().position(|(h, _, _)| *h == node.http) {
            let (_, mut child, dir) = self.children.remove(i);
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // Its ranges live on at their new owners; a node that left
            // cannot come back under its id anyway.
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    }
}

impl Drop for LocalProvisioner {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// Nodes through shell commands.
struct CommandProvisioner {
    create: String,
    destroy: String,
}

impl Provisioner for CommandProvisioner {
    fn create(&mut self, seeds: &[String], nodes: usize) -> anyhow::Result<String> {
        let out = Command::new("sh")
            .args(["-c", &self.create])
            .env("RINGKV_SEEDS", seeds.join(","))
            .env("RINGKV_NODES", nodes.to_string())
            .stderr(Stdio::inherit())
            .output()
            .context("running the create command")?;
        if !out.status.success() {
            bail!("the create command failed: {}", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let http = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        if http.is_empty() {
            bail!("the create command printed no HTTP address");
        }
        Ok(http.to_string())
    }

    fn destroy(&mut self, node: &Added, nodes: usize) -> anyhow::Result<()> {
        let status = Command::new("sh")
            .args(["-c", &self.destroy])
            .env("RINGKV_NODE_ID", &node.id)
            .env("RINGKV_NODE_HTTP", &node.http)
            .env("RINGKV_NODES", nodes.to_string())
            .status()
            .context("running the destroy command")?;
        if !status.success() {
            bail!("the destroy command failed: {status}");
        }
        Ok(())
    }
}

// The autoscaler's metrics, served on `--listen`.
const DECISIONS: &str = "ringkv_autoscaler_decisions_total";
const NODES: &str = "ringkv_autoscaler_nodes";
const MEAN_OPS: &str = "ringkv_autoscaler_mean_ops_per_node";
const VERDICT: &str = "ringkv_autoscaler_verdict";

/// Counts one decision: `action` is "add", "remove" or "failed".
fn count_decision(action: &'static str) {
    metrics::counter!(DECISIONS, "action" => action).increment(1);
}

/// Serves the process's metrics (Prometheus text) on `addr`, on every
/// path (`/metrics` for Prometheus), from a task of `rt`.
fn serve_metrics(rt: &tokio::runtime::Runtime, addr: &str) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    listener.set_nonblocking(true)?;
    let handle = crate::metrics::handle();
    metrics::describe_counter!(
        DECISIONS,
        "Nodes added, removed, and actions that failed, by action"
    );
    metrics::describe_gauge!(NODES, "NORMAL, alive nodes at the last reading");
    metrics::describe_gauge!(MEAN_OPS, "Mean ops/s per NORMAL node at the last reading");
    metrics::describe_gauge!(VERDICT, "The policy's verdict: 1 over, -1 under, 0 steady");
    // Every decision is shown from the start, at 0.
    for action in ["add", "remove", "failed"] {
        metrics::counter!(DECISIONS, "action" => action).absolute(0);
    }
    let render = move || {
        let text = crate::metrics::render(&handle, None);
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                text,
            )
        }
    };
    let app = axum::Router::new().fallback(render);
    rt.spawn(async move {
        let served = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => axum::serve(listener, app).await,
            Err(e) => Err(e),
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "serving the autoscaler's metrics failed");
        }
    });
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The autoscaler's state kept in the cluster.
fn load_state(addr: &str) -> State {
    match request(addr, "GET", &format!("/v1/kv/{STATE_KEY}"), b"") {
        Ok((200, body)) => serde_json::from_slice(&body).unwrap_or_default(),
        _ => State::default(),
    }
}

fn save_state(addrs: &[String], state: &State) {
    let Ok(body) = serde_json::to_vec(state) else {
        return;
    };
    for addr in addrs {
        if let Ok((204, _)) = request(addr, "PUT", &format!("/v1/kv/{STATE_KEY}"), &body) {
            return;
        }
    }
    tracing::warn!("could not save the autoscaler state in the cluster");
}

/// Reads the cluster from the first node that answers.
fn read_cluster(addrs: &[String]) -> anyhow::Result<(serde_json::Value, String)> {
    for addr in addrs {
        if let Ok(v) = get_json(addr, "/v1/cluster") {
            return Ok((v, addr.clone()));
        }
    }
    bail!("no node answered ({})", addrs.join(", "))
}

/// Waits until `pred` holds for the cluster as `addrs` see it.
fn wait_cluster(
    addrs: &[String],
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + ACTION_TIMEOUT;
    loop {
        if let Ok((v, _)) = read_cluster(addrs)
            && pred(&v)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn node_status(v: &serde_json::Value, http: &str) -> Option<(String, String)> {
    v["nodes"].as_array()?.iter().find_map(|n| {
        (n["http_addr"] == http).then(|| {
            (
                n["id"].as_str().unwrap_or("").to_string(),
                n["status"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

/// Runs the control loop until SIGINT/SIGTERM.
pub fn run(args: AutoscaleArgs) -> anyhow::Result<()> {
    crate::server::init_logging("info");
    let mut provisioner: Box<dyn Provisioner> = match args.provisioner {
        ProvisionerKind::Local => Box::new(LocalProvisioner {
            dir: args.dir.clone(),
            ca_dir: args.ca_dir.clone(),
            config: args.node_config.clone(),
            children: Vec::new(),
            next: 0,
        }),
        ProvisionerKind::Command => Box::new(CommandProvisioner {
            create: args
                .create
                .clone()
                .context("--provisioner command needs --create")?,
            destroy: args
                .destroy
                .clone()
                .context("--provisioner command needs --destroy")?,
        }),
    };
    // One small runtime beside the synchronous loop: the metrics listener
    // and the signal watch.
    let rt = crate::server::runtime_with(1)?;
    if let Some(addr) = &args.listen {
        serve_metrics(&rt, addr)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    rt.spawn({
        let stop = Arc::clone(&stop);
        async move {
            crate::server::shutdown_signal().await;
            stop.store(true, Ordering::Relaxed);
        }
    });
    let mut controller = Controller::new(
        Policy {
            high_ops: args.high_ops,
            low_ops: args.low_ops,
            high_p99_us: args.high_p99_us,
            high_disk_bytes: args.high_disk_bytes,
        },
        Duration::from_secs_f64(args.window_s),
        Duration::from_secs_f64(args.cooldown_s),
        args.min_nodes,
        args.max_nodes,
    );
    let mut addrs = vec![args.http.clone()];
    let mut state = load_state(&args.http);
    let mut last_hold = String::new();
    println!("ringkv autoscaler watching {}", args.http);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(args.interval_ms));
        let (view, _) = match read_cluster(&addrs) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster");
                continue;
            }
        };
        let reading = Reading::parse(&view);
        // Learn every node's address, for when the first one goes away.
        for (_, http, ..) in &reading.normal {
            if !http.is_empty() && !addrs.contains(http) {
                addrs.push(http.clone());
            }
        }
        let seeds: Vec<String> = view["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["status"] == "NORMAL" && n["alive"] == true)
            .filter_map(|n| n["cluster_addr"].as_str().map(str::to_string))
            .collect();
        let action = controller.step(&reading, Instant::now());
        metrics::gauge!(NODES).set(reading.normal.len() as f64);
        metrics::gauge!(MEAN_OPS).set(
            (reading.normal.iter().map(|x| x.2).sum::<u64>() / reading.normal.len().max(1) as u64)
                as f64,
        );
        metrics::gauge!(VERDICT).set(match controller.policy.judge(&reading).0 {
            Verdict::Over => 1.0,
            Verdict::Under => -1.0,
            Verdict::Steady => 0.0,
        });
        let n = reading.normal.len();
        let decision = match action {
            Action::Hold(why) => {
                if why != last_hold {
                    tracing::debug!(nodes = n, reason = %why, "hold");
                    last_hold = why;
                }
                continue;
            }
            Action::Add(why) => {
                tracing::info!(nodes = n, reason = %why, "adding a node");
                println!("autoscaler: adding a node ({n} now): {why}");
                let result = provisioner.create(&seeds, n).and_then(|http| {
                    wait_cluster(&addrs, "the new node to be NORMAL", |v| {
                        node_status(v, &http).is_some_and(|(_, s)| s == "NORMAL")
                    })?;
                    let (v, _) = read_cluster(&addrs)?;
                    let id = node_status(&v, &http).map(|(id, _)| id).unwrap_or_default();
                    Ok(Added { id, http })
                });
                match result {
                    Ok(added) => {
                        count_decision("add");
                        addrs.push(added.http.clone());
                        state.added.push(added.clone());
                        println!("autoscaler: node {} ({}) serving", added.id, added.http);
                        Decision {
                            at_ms: now_ms(),
                            action: "add".into(),
                            reason: why,
                            nodes_before: n,
                            node: added.id,
                        }
                    }
                    Err(e) => {
                        count_decision("failed");
                        tracing::error!(error = %e, "adding a node failed");
                        Decision {
                            at_ms: now_ms(),
                            action: "add failed".into(),
                            reason: format!("{why}: {e:#}"),
                            nodes_before: n,
                            node: String::new(),
                        }
                    }
                }
            }
            Action::Remove(why) => {
                // The last node added that is still NORMAL.
                let Some(pos) = state
                    .added
                    .iter()
                    .rposition(|a| reading.normal.iter().any(|x| x.0 == a.id))
                else {
                    let hold =
                        format!("{why}; but no node added by the autoscaler is left to remove");
                    if hold != last_hold {
                        tracing::info!(reason = %hold, "hold");
                        last_hold = hold;
                    }
                    continue;
                };
                let victim = state.added[pos].clone();
                tracing::info!(nodes = n, node = %victim.id, reason = %why, "removing a node");
                println!("autoscaler: removing node {} ({n} now): {why}", victim.id);
                let result = (|| -> anyhow::Result<()> {
                    let (code, body) = request(&victim.http, "POST", "/v1/decommission", b"")?;
                    if code != 202 {
                        bail!(
                            "decommission refused ({code}): {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                    let others: Vec<String> = addrs
                        .iter()
                        .filter(|a| **a != victim.http)
                        .cloned()
                        .collect();
                    wait_cluster(&others, "the node to leave", |v| {
                        node_status(v, &victim.http).is_none_or(|(_, s)| s == "LEFT")
                    })?;
                    provisioner.destroy(&victim, n)
                })();
                match result {
                    Ok(()) => {
                        count_decision("remove");
                        state.added.remove(pos);
                        addrs.retain(|a| *a != victim.http);
                        println!("autoscaler: node {} left", victim.id);
                        Decision {
                            at_ms: now_ms(),
                            action: "remove".into(),
                            reason: why,
                            nodes_before: n,
                            node: victim.id,
                        }
                    }
                    Err(e) => {
                        count_decision("failed");
                        tracing::error!(error = %e, "removing a node failed");
                        Decision {
                            at_ms: now_ms(),
                            action: "remove failed".into(),
                            reason: format!("{why}: {e:#}"),
                            nodes_before: n,
                            node: victim.id,
                        }
                    }
                }
            }
        };
        controller.acted(Instant::now());
        state.decisions.push_back(decision);
        while state.decisions.len() > DECISIONS_KEPT {
            state.decisions.pop_front();
        }
        save_state(&addrs, &state);
    }
    println!("autoscaler stopping");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ops: &[u64]) -> Reading {
        Reading {
            normal: ops
                .iter()
                .enumerate()
                .map(|(i, &o)| (format!("n{i}"), format!("h{i}"), o, 1_000, 0))
                .collect(),
            moving: false,
            replication: 3,
        }
    }

    fn controller() -> Controller {
        Controller::new(
            Policy {
                high_ops: 1_000,
                low_ops: 200,
                high_p99_us: 0,
                high_disk_bytes: 0,
            },
            Duration::from_secs(10),
            Duration::from_secs(30),
            3,
            5,
        )
    }

    #[test]
    fn adds_only_after_the_window_and_not_while_moving_or_cooling() {
        let mut c = controller();
        let t0 = Instant::now();
        let hot = reading(&[2_000, 2_000, 2_000]);
        assert!(matches!(c.step(&hot, t0), Action::Hold(_)));
        assert!(matches!(
            c.step(&hot, t0 + Duration::from_secs(9)),
            Action::Hold(_)
        ));
        let mut moving = hot.clone();
        moving.moving = true;
        assert!(matches!(
            c.step(&moving, t0 + Duration::from_secs(11)),
            Action::Hold(_)
        ));
        assert!(matches!(
            c.step(&hot, t0 + Duration::from_secs(11)),
            Action::Add(_)
        ));
        c.acted(t0 + Duration::from_secs(11));
        let hotter = reading(&[2_000, 2_000, 2_000, 2_000]);
        assert!(
            matches!(c.step(&hotter, t0 + Duration::from_secs(30)), Action::Hold(ref w) if w.contains("cooling")),
            "cooldown holds"
        );
        assert!(matches!(
            c.step(&hotter, t0 + Duration::from_secs(45)),
            Action::Add(_)
        ));
    }

    #[test]
    fn a_dip_resets_the_window() {
        let mut c = controller();
        let t0 = Instant::now();
        let hot = reading(&[2_000, 2_000, 2_000]);
        let calm = reading(&[500, 500, 500]);
        c.step(&hot, t0);
        c.step(&calm, t0 + Duration::from_secs(8));
        assert!(matches!(
            c.step(&hot, t0 + Duration::from_secs(12)),
            Action::Hold(_)
        ));
        assert!(matches!(
            c.step(&hot, t0 + Duration::from_secs(23)),
            Action::Add(_)
        ));
    }

    #[test]
    fn removes_when_idle_but_never_below_the_floor_or_into_overload() {
        let mut c = controller();
        let t0 = Instant::now();
        let idle4 = reading(&[10, 10, 10, 10]);
        c.step(&idle4, t0);
        assert!(matches!(
            c.step(&idle4, t0 + Duration::from_secs(11)),
            Action::Remove(_)
        ));
        let idle3 = reading(&[10, 10, 10]);
        let mut c = controller();
        c.step(&idle3, t0);
        assert!(
            matches!(
                c.step(&idle3, t0 + Duration::from_secs(11)),
                Action::Hold(_)
            ),
            "never below min_nodes / replication factor"
        );
        // Below the low watermark per node, but one node fewer would be
        // over 70% of the high one: hold (hysteresis).
        let p = Policy {
            high_ops: 1_000,
            low_ops: 800,
            high_p99_us: 0,
            high_disk_bytes: 0,
        };
        let (v, why) = p.judge(&reading(&[700, 700, 700, 700]));
        assert_eq!(v, Verdict::Steady, "{why}");
    }

    #[test]
    fn load_between_the_watermarks_never_acts() {
        let mut c = controller();
        let t0 = Instant::now();
        let mid = reading(&[600, 600, 600, 600]);
        for s in 0..600 {
            let a = c.step(&mid, t0 + Duration::from_secs(s));
            assert!(matches!(a, Action::Hold(_)), "{a:?} at {s}s");
        }
    }
}
