//! `ringkv snapshot`: take, list and clear snapshots over the nodes' HTTP
//! ports (admin), and restore a stopped node's data directory from one.
//!
//! - `ringkv snapshot [--tag T] [--copy] [--all]`: a snapshot of the node at
//!   `--http`, or of every live node with `--all` (the same tag on each);
//!   `--copy` copies each to its node's `[backup] dir`.
//! - `ringkv snapshot list [--all]`, `ringkv snapshot clear [--tag T] [--all]`.
//! - `ringkv snapshot restore --data-dir D --from S [--force]`: with the node
//!   stopped (see `ringkv_cluster::snapshot::restore` and README).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::cli::AdminArgs;
use crate::http_client::{get_json, request, request_slow};

/// How long a snapshot may take to answer (flushing, and copying to the
/// backup directory, happen before it does).
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub action: Option<SnapshotAction>,
    #[command(flatten)]
    pub take: TakeArgs,
}

#[derive(Debug, Args)]
pub struct TakeArgs {
    /// The snapshot's name (letters, digits, '.', '_', '-'); the time when
    /// not given.
    #[arg(long)]
    pub tag: Option<String>,
    /// Also copy it to the node's `[backup] dir`.
    #[arg(long)]
    pub copy: bool,
    /// Every live node of the cluster, not only the one asked.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// List the snapshots of a node (or of every live node).
    List {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove the snapshot tagged `--tag`, or every snapshot.
    Clear {
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Restore a stopped node's data directory from a snapshot (its folder
    /// under `snapshots/`, or its copy).
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The node's data directory (the node must be stopped).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The snapshot's folder (holding `SNAPSHOT` and `store/`).
    #[arg(long)]
    pub from: PathBuf,
    /// The node's config file, for its tombstone grace period.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Restore a snapshot older than the tombstone grace period: keys
    /// deleted since it was taken may come back.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    match args.action {
        None => take(&args.take),
        Some(SnapshotAction::List { all, admin }) => list(&admin, all),
        Some(SnapshotAction::Clear { tag, all, admin }) => clear(&admin, tag.as_deref(), all),
        Some(SnapshotAction::Restore(r)) => restore(&r),
    }
}

/// The HTTP addresses to ask: the node's, or every live member's.
fn targets(admin: &AdminArgs, all: bool) -> anyhow::Result<Vec<String>> {
    if !all {
        return Ok(vec![admin.http.clone()]);
    }
    let v = get_json(&admin.http, "/v1/cluster")?;
    let mut out = Vec::new();
    for n in v["nodes"].as_array().into_iter().flatten() {
        let status = n["status"].as_str().unwrap_or("");
        if status == "LEFT" || status == "REMOVED" {
            continue;
        }
        if n["alive"] != true {
            bail!(
                "node {} is down: a cluster snapshot needs every node up (or take the others \
                 one by one with --http)",
                n["id"].as_str().unwrap_or("?")
            );
        }
        out.push(n["http_addr"].as_str().unwrap_or("?").to_string());
    }
    Ok(out)
}

fn take(args: &TakeArgs) -> anyhow::Result<()> {
    // One tag for every node of a cluster snapshot.
    let tag = match (&args.tag, args.all) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => Some(format!("t{}", ringkv_env::SystemClock::shared().now_ms())),
        (None, false) => None,
    };
    let body = serde_json::json!({ "tag": tag, "copy": args.copy });
    // Every node is asked even when one fails; the failures are listed.
    let mut failed = Vec::new();
    for addr in targets(&args.admin, args.all)? {
        match take_one(&addr, &body, args.admin.json) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("{addr}: {e:#}");
                failed.push(addr);
            }
        }
    }
    if !failed.is_empty() {
        bail!("no snapshot on {}", failed.join(", "));
    }
    Ok(())
}

fn take_one(addr: &str, body: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    let (status, answer) = request_slow(
        addr,
        "POST",
        "/v1/snapshots",
        body.to_string().as_bytes(),
        SNAPSHOT_WAIT,
    )?;
    if status != 201 {
        bail!(
            "snapshot on {addr} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&answer).context("not JSON")?;
    if json {
        println!("{v}");
    } else {
        println!(
            "{addr}: snapshot {} of node {}: {} tables, {} bytes, in {}{}",
            v["tag"].as_str().unwrap_or("?"),
            v["node_id"].as_str().unwrap_or("?"),
            v["tables"],
            v["bytes"],
            v["path"].as_str().unwrap_or("?"),
            v["copied_to"]
                .as_str()
                .map(|c| format!(", copied to {c}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn list(admin: &AdminArgs, all: bool) -> anyhow::Result<()> {
    for addr in targets(admin, all)? {
        let v = get_json(&addr, "/v1/snapshots")?;
        if admin.json {
            println!("{v}");
            continue;
        }
        let snaps = v["snapshots"].as_array().cloned().unwrap_or_default();
        if snaps.is_empty() {
            println!("{addr}: no snapshots");
        }
        for s in snaps {
            println!(
                "{addr}: {}  taken {}  {} tables  {} bytes  {}",
                s["tag"].as_str().unwrap_or("?"),
                crate::status::utc(s["taken_at_ms"].as_u64().unwrap_or(0)),
                s["tables"],
                s["bytes"],
                s["path"].as_str().unwrap_or("?"),
            );
        }
    }
    Ok(())
}

fn clear(admin: &AdminArgs, tag: Option<&str>, all: bool) -> anyhow::Result<()> {
    let path = match tag {
        Some(t) => format!("/v1/snapshots/{t}"),
        None => "/v1/snapshots".to_string(),
    };
    for addr in targets(admin, all)? {
        let (status, answer) = request(&addr, "DELETE", &path, b"")?;
        if status != 200 {
            bail!(
                "clearing snapshots on {addr} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&answer).context("not JSON")?;
        if admin.json {
            println!("{v}");
        } else {
            println!("{addr}: cleared {}", v["cleared"]);
        }
    }
    Ok(())
}

fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let grace_ms = match &args.config {
        Some(path) => {
            crate::config::Config::from_file(path)?
                .cluster
                .tombstone_grace_ms
        }
        None => ringkv_cluster::NodeConfig::default().tombstone_grace_ms,
    };
    let now_ms = ringkv_env::SystemClock::shared().now_ms();
    let done = ringkv_cluster::snapshot::restore(
        &args.data_dir,
        &args.from,
        now_ms,
        grace_ms,
        args.force,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&done)?);
    } else {
        println!(
            "restored snapshot {} of node {} (taken {}) into {}; epoch now {}{}",
            done.meta.tag,
            done.meta.node_id,
            crate::status::utc(done.meta.taken_at_ms),
            args.data_dir.display(),
            done.epoch,
            done.previous
                .as_deref()
                .map(|p| format!("; the data it replaced is in {p}"))
                .unwrap_or_default()
        );
        println!(
            "start the node: it rejoins with its tokens, and hints and anti-entropy bring it \
             the writes since (`ringkv repair` to run a pass at once)"
        );
    }
    Ok(())
}

/// `ringkv truncate`: empties the whole cluster.
#[derive(Debug, Args)]
pub struct TruncateArgs {
    /// Confirms that every key of the cluster is to go (no undo but a
    /// snapshot or an export taken before).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub admin: crate::cli::AdminArgs,
}

/// How long a truncation may take to answer (two steps, each up to 10 s).
const TRUNCATE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub fn truncate(args: &TruncateArgs) -> anyhow::Result<()> {
    if !args.yes {
        bail!(
            "this empties the whole cluster; run it again with --yes (take a snapshot or an \
             export first to keep a copy)"
        );
    }
    let addr = &args.admin.http;
    let (status, answer) = request_slow(addr, "POST", "/v1/truncate", b"", TRUNCATE_WAIT)?;
    if status != 200 {
        bail!(
            "truncate through {addr} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&answer).context("not JSON")?;
    if args.admin.json {
        println!("{v}");
    } else {
        println!(
            "cluster truncated: {} nodes recorded the point {} (ms {}); nothing written \
             before it is read again; space is reclaimed in the background",
            v["nodes"].as_array().map_or(0, Vec::len),
            v["truncated_at"],
            v["truncated_at_ms"]
        );
    }
    Ok(())
}
