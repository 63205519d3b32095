//! `ringkv local-cluster`: the README's main job. Starts N node processes on
//! this machine, each with its own data directory under one folder and its
//! own ports, joined into one cluster, and prints how to connect. Each
//! node's log lines come prefixed with its name (`node2: ...`).
//!
//! It supervises what it started: a node that exits is reported at once,
//! and commands typed on standard input stop, start or restart one node
//! (`stop 3`, `start 3`, `restart 3`, `nodes`, `help`). Ctrl-C stops them
//! all gracefully, one line per node.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::LocalClusterArgs;

/// Most nodes one local cluster may start.
const LOCAL_NODES_MAX: usize = 64;
/// The local cluster's CA, under its folder.
pub const LOCAL_CA_DIR: &str = "ca";
/// How long one node may take to become ready.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node may take to stop after SIGTERM before it is killed.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the supervisor looks for nodes that exited.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// One node of the local cluster: how to start it, and its process while
/// it runs.
struct Slot {
    name: String,
    command: Vec<std::ffi::OsString>,
    child: Option<Child>,
    resp: String,
    http: String,
    cluster: String,
}

type Slots = Arc<Mutex<Vec<Slot>>>;

/// Starts the node of `slot`, forwards its output with its name in front,
/// and waits until it is ready.
fn start(exe: &PathBuf, slot: &mut Slot) -> anyhow::Result<()> {
    let mut child = Command::new(exe)
        .args(&slot.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", slot.name))?;
    let stdout = child.stdout.take().context("node stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + NODE_READY_TIMEOUT;
    let name = slot.name.clone();
    let ready = loop {
        if Instant::now() > deadline {
            break None;
        }
        match lines.next() {
            Some(Ok(line)) if line.contains(" ready: ") => break Some(line),
            Some(Ok(line)) => say!("{name}: {line}"),
            _ => break None,
        }
    };
    let Some(line) = ready else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{name} did not start (see its log above)");
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            say!("{name}: {line}");
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
    slot.resp = format!("127.0.0.1:{}", field("redis-cli -p "));
    slot.http = field("://");
    slot.cluster = field("cluster ");
    slot.child = Some(child);
    Ok(())
}

/// Stops the node of `slot` (SIGTERM, then SIGKILL after
/// [`NODE_STOP_TIMEOUT`]); true when it was running.
fn stop(slot: &mut Slot) -> bool {
    let Some(mut child) = slot.child.take() else {
        return false;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + NODE_STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    true
}

fn stop_all(slots: &Slots) {
    let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
    for slot in slots.iter_mut() {
        if slot.child.is_some() {
            say!("stopping {}", slot.name);
            stop(slot);
            say!("{} stopped", slot.name);
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
    let slots: Slots = Arc::new(Mutex::new(Vec::new()));
    for i in 0..args.nodes {
        let dir = args.dir.join(format!("node{}", i + 1));
        let mut command: Vec<std::ffi::OsString> = vec!["server".into()];
        if args.node.insecure {
            command.push("--insecure".into());
        } else {
            // The cluster's own CA, kept beside the nodes' folders.
            crate::cert::provision(&args.dir.join(LOCAL_CA_DIR), &dir)
                .with_context(|| format!("certificates of node {}", i + 1))?;
        }
        command.extend(["--data-dir".into(), dir.into_os_string()]);
        for (flag, offset) in [
            ("--resp-addr", 0),
            ("--http-addr", 1),
            ("--cluster-addr", 2),
        ] {
            command.extend([flag.into(), format!("{host}:{}", port(i, offset)?).into()]);
        }
        if i > 0 {
            command.extend(["--seeds".into(), first_cluster.clone().into()]);
        }
        if let Some(c) = &args.node.config {
            command.extend(["--config".into(), c.clone().into_os_string()]);
        }
        if let Some(sync) = args.node.sync {
            let mode = if sync == crate::config::SyncMode::Always {
                "always"
            } else {
                "periodic"
            };
            command.extend(["--sync".into(), mode.into()]);
        }
        let log = args.node.log.as_deref().unwrap_or("info");
        command.extend(["--log".into(), log.into()]);
        // A supervisor that dies without stopping its nodes (SIGKILL) does
        // not leave them running.
        command.extend(["--exit-with".into(), std::process::id().to_string().into()]);
        let mut slot = Slot {
            name: format!("node{}", i + 1),
            command,
            child: None,
            resp: String::new(),
            http: String::new(),
            cluster: String::new(),
        };
        if let Err(e) = start(&exe, &mut slot) {
            stop_all(&slots);
            return Err(e);
        }
        slots.lock().unwrap_or_else(|e| e.into_inner()).push(slot);
    }

    print_banner(&slots, &args, port(0, 0)?);
    watch(Arc::clone(&slots));
    read_commands(exe, Arc::clone(&slots));
    let rt = crate::server::runtime()?;
    rt.block_on(crate::server::shutdown_signal());
    stop_all(&slots);
    Ok(())
}

fn print_banner(slots: &Slots, args: &LocalClusterArgs, resp_port: u16) {
    let slots = slots.lock().unwrap_or_else(|e| e.into_inner());
    say!(
        "ringkv local cluster: {} node(s), data in {}",
        slots.len(),
        args.dir.display()
    );
    print_nodes(&slots);
    let http = slots.first().map_or("?", |s| s.http.as_str());
    say!("");
    say!("Connect (any node serves any key):");
    say!("  redis-cli -p {resp_port} SET greeting hello");
    say!("  redis-cli -p {resp_port} GET greeting");
    say!("  curl http://{http}/v1/kv/greeting");
    say!("  curl http://{http}/v1/cluster");
    say!("  ringkv status --http {http}");
    say!("Type `stop N`, `start N` or `restart N` to stop or start node N; `nodes` lists them.");
    say!(
        "Ctrl-C stops the cluster; data stays in {}.",
        args.dir.display()
    );
}

fn print_nodes(slots: &[Slot]) {
    for s in slots {
        match &s.child {
            Some(child) => say!(
                "  {}  resp {}  http {}  cluster {}  pid {}",
                s.name,
                s.resp,
                s.http,
                s.cluster,
                child.id()
            ),
            None => say!("  {}  stopped", s.name),
        }
    }
}

/// Reports each node that exits on its own.
fn watch(slots: Slots) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(WATCH_INTERVAL);
            let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
            for slot in slots.iter_mut() {
                let exited = slot
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    slot.child = None;
                    say!(
                        "{} exited ({status}); `start {}` starts it again",
                        slot.name,
                        slot.name.trim_start_matches("node")
                    );
                }
            }
        }
    });
}

/// One command typed on standard input.
#[derive(Debug, PartialEq, Eq)]
enum Typed {
    Stop(usize),
    Start(usize),
    Restart(usize),
    Nodes,
    Help,
}

fn parse_command(line: &str, nodes: usize) -> Result<Option<Typed>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let node = |w: Option<&&str>| -> Result<usize, String> {
        let w = w.ok_or("which node? e.g. `restart 2`")?;
        let n: usize = w
            .trim_start_matches("node")
            .parse()
            .map_err(|_| format!("`{w}` is not a node number"))?;
        if n == 0 || n > nodes {
            return Err(format!("no node {n}: nodes are 1 to {nodes}"));
        }
        Ok(n - 1)
    };
    Ok(Some(match words.first().copied() {
        None => return Ok(None),
        Some("stop") => Typed::Stop(node(words.get(1))?),
        Some("start") => Typed::Start(node(words.get(1))?),
        Some("restart") => Typed::Restart(node(words.get(1))?),
        Some("nodes" | "status") => Typed::Nodes,
        Some("help" | "?") => Typed::Help,
        Some(other) => return Err(format!("unknown command `{other}`; type `help`")),
    }))
}

/// Follows the commands typed on standard input until it closes.
fn read_commands(exe: PathBuf, slots: Slots) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines().map_while(Result::ok) {
            let mut slots = slots.lock().unwrap_or_else(|e| e.into_inner());
            let typed = match parse_command(&line, slots.len()) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(why) => {
                    say!("{why}");
                    continue;
                }
            };
            match typed {
                Typed::Nodes => print_nodes(&slots),
                Typed::Help => {
                    say!("stop N | start N | restart N | nodes | help  (Ctrl-C stops the cluster)")
                }
                Typed::Stop(i) | Typed::Start(i) | Typed::Restart(i) => {
                    let slot = &mut slots[i];
                    if matches!(typed, Typed::Stop(_) | Typed::Restart(_)) {
                        if stop(slot) {
                            say!("{} stopped", slot.name);
                        } else if matches!(typed, Typed::Stop(_)) {
                            say!("{} is not running", slot.name);
                        }
                    }
                    if matches!(typed, Typed::Start(_) | Typed::Restart(_)) {
                        if slot.child.is_some() {
                            say!("{} is already running", slot.name);
                        } else {
                            match start(&exe, slot) {
                                Ok(()) => say!("{} started", slot.name),
                                Err(e) => say!("{e:#}"),
                            }
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_commands_name_a_node_in_range() {
        assert_eq!(parse_command("restart 2", 3), Ok(Some(Typed::Restart(1))));
        assert_eq!(parse_command("stop node3", 3), Ok(Some(Typed::Stop(2))));
        assert_eq!(parse_command("  start 1 ", 3), Ok(Some(Typed::Start(0))));
        assert_eq!(parse_command("nodes", 3), Ok(Some(Typed::Nodes)));
        assert_eq!(parse_command("", 3), Ok(None));
        assert!(parse_command("stop 4", 3).is_err_and(|e| e.contains("1 to 3")));
        assert!(parse_command("stop", 3).is_err());
        assert!(parse_command("stop x", 3).is_err());
        assert!(parse_command("reboot 1", 3).is_err_and(|e| e.contains("help")));
    }
}
