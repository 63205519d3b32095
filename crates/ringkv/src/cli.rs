//! Command-line surface: subcommands and the flags that override the config
//! file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, SyncMode};

#[derive(Debug, Parser)]
#[command(
    name = "ringkv",
    version,
    about = "A leaderless, replicated key-value store"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node.
    Server(ServerArgs),
    /// Run a local cluster on this machine with data in a local folder.
    LocalCluster(LocalClusterArgs),
    /// Show a node's status (over its HTTP port).
    Status(StatusArgs),
    /// Show token ownership of the ring (over a node's HTTP port).
    Ring(AdminArgs),
    /// Show a key's token, preference list and each replica's version.
    Explain(ExplainArgs),
    /// Run an anti-entropy pass over every range a node replicates now, and
    /// follow its progress.
    Repair(RepairArgs),
    /// Stream a node's ranges to their new owners, then stop it (it leaves
    /// the ring); follows the progress.
    Decommission(MoveArgs),
    /// Re-replicate a dead node's ranges from the survivors and drop it
    /// from the ring (asks any live node); follows the progress.
    Remove(RemoveArgs),
    /// Cancel the join, decommission or removal a node drives.
    Cancel(AdminArgs),
    /// Write the cluster's keys, with their whole records, to a file.
    Export(crate::transfer_cli::ExportArgs),
    /// Load an export into a cluster (of any size), merging with what it
    /// holds.
    Import(crate::transfer_cli::ImportArgs),
    /// Snapshots of nodes' data: take (the default), list, clear, restore.
    Snapshot(crate::snapshot_cli::SnapshotArgs),
    /// Empty the whole cluster (FLUSHALL): every node must be up.
    Truncate(crate::snapshot_cli::TruncateArgs),
    /// Add and remove nodes as the load changes (a control loop).
    Autoscale(crate::autoscale::AutoscaleArgs),
    /// Certificates: a cluster CA and node certificates (mutual TLS).
    #[command(subcommand)]
    Cert(crate::cert::CertCommand),
    /// Client users: password hashes for the users file.
    #[command(subcommand)]
    User(crate::user::UserCommand),
    /// Print a shell completion script: `source <(ringkv completions bash)`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Benchmarks against peers.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Proofs on real processes: Jepsen-style fault runs and crash loops.
    #[command(subcommand)]
    Prove(crate::proof::ProveCommand),
}

#[derive(Debug, Args, Clone, Default)]
pub struct NodeFlags {
    /// TOML configuration file; flags override it.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Redis protocol listen address.
    #[arg(long)]
    pub resp_addr: Option<SocketAddr>,
    /// HTTP listen address.
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Node-to-node listen address.
    #[arg(long)]
    pub cluster_addr: Option<SocketAddr>,
    /// The cluster address peers dial, when not the one bound (needed when
    /// --cluster-addr is 0.0.0.0), e.g. `db1.example.com:7381`.
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Comma-separated cluster addresses of seed nodes.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Data center of this node (replica placement).
    #[arg(long)]
    pub dc: Option<String>,
    /// Rack of this node (replica placement).
    #[arg(long)]
    pub rack: Option<String>,
    /// Relative capacity (share of the ring), 1 to 64.
    #[arg(long)]
    pub weight: Option<u32>,
    /// Commit-log sync mode: `always` or `periodic`.
    #[arg(long, value_parser = parse_sync)]
    pub sync: Option<SyncMode>,
    /// Log filter, e.g. `info` or `ringkv_cluster=debug` (RUST_LOG overrides).
    #[arg(long)]
    pub log: Option<String>,
    /// Threads serving requests; 0 is one fewer than the cores (at least 1).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Plaintext, unauthenticated cluster port (no certificates). Only on a
    /// network where everyone who can reach it is trusted.
    #[arg(long)]
    pub insecure: bool,
    /// RESP and HTTP speak TLS to clients (`redis-cli --tls --cacert
    /// ca.pem`, `https://`), with the node's certificate by default.
    #[arg(long)]
    pub tls_clients: bool,
}

fn parse_sync(s: &str) -> Result<SyncMode, String> {
    match s {
        "always" => Ok(SyncMode::Always),
        "periodic" => Ok(SyncMode::Periodic),
        other => Err(format!("unknown sync mode {other:?} (always | periodic)")),
    }
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Print the merged configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Stop (gracefully) when the process with this pid exits: nodes
    /// started by the autoscaler's local provisioner never outlive it.
    #[arg(long)]
    pub exit_with: Option<u32>,
}

#[derive(Debug, Args)]
pub struct LocalClusterArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Folder holding every node's data directory.
    #[arg(long, default_value = "ringkv-data")]
    pub dir: PathBuf,
    /// RESP port of the first node; node i listens on base + 10*i (HTTP on
    /// base + 10*i + 1, cluster on base + 10*i + 2).
    #[arg(long, default_value_t = 7379)]
    pub base_port: u16,
    #[command(flatten)]
    pub node: NodeFlags,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// List every replicated range and when it last synced with all its
    /// replicas.
    #[arg(long)]
    pub ranges: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Start the pass and return without following it.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    /// Start and return without following the progress.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The dead node's id (16 hex digits, as `ringkv status` shows it).
    pub node: String,
    /// An admin certificate (`ringkv cert admin`) to grant the removal
    /// with, needed under mutual TLS; or RINGKV_ADMIN_CERT.
    #[arg(long, env = "RINGKV_ADMIN_CERT")]
    pub admin_cert: Option<std::path::PathBuf>,
    /// Its key; or RINGKV_ADMIN_KEY.
    #[arg(long, env = "RINGKV_ADMIN_KEY")]
    pub admin_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub movement: MoveArgs,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The key (UTF-8 text).
    pub key: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// A node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:7380")]
    pub http: String,
    /// Print the node's answers as JSON (one object per line while
    /// following progress) instead of text.
    #[arg(long)]
    pub json: bool,
}

impl NodeFlags {
    /// Loads the config file (if any), applies the flags and validates.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.data_dir {
            config.node.data_dir = v.clone();
        }
        if let Some(v) = self.resp_addr {
            config.node.resp_addr = v;
        }
        if let Some(v) = self.http_addr {
            config.node.http_addr = v;
        }
        if let Some(v) = self.cluster_addr {
            config.node.cluster_addr = v;
        }
        if let Some(v) = &self.advertise_addr {
            config.node.advertise_addr = Some(v.clone());
        }
        if let Some(v) = &self.seeds {
            config.node.seeds = v.clone();
        }
        if let Some(v) = &self.dc {
            config.node.dc = v.clone();
        }
        if let Some(v) = &self.rack {
            config.node.rack = v.clone();
        }
        if let Some(v) = self.weight {
            config.node.weight = v;
        }
        if let Some(v) = self.sync {
            config.storage.sync = v;
        }
        if let Some(v) = &self.log {
            config.node.log = v.clone();
        }
        if let Some(v) = self.worker_threads {
            config.node.worker_threads = v;
        }
        if self.insecure {
            config.tls.insecure = true;
        }
        if self.tls_clients {
            config.tls.clients = true;
        }
        config.validate()?;
        Ok(config)
    }
}

impl Command {
    /// True when an admin verb was asked for JSON (`--json`): its errors
    /// are then JSON too.
    pub fn json(&self) -> bool {
        use crate::snapshot_cli::SnapshotAction;
        match self {
            Command::Status(a) => a.admin.json,
            Command::Ring(a) | Command::Cancel(a) => a.json,
            Command::Explain(a) => a.admin.json,
            Command::Repair(a) => a.admin.json,
            Command::Decommission(a) => a.admin.json,
            Command::Remove(a) => a.movement.admin.json,
            Command::Export(a) => a.admin.json,
            Command::Import(a) => a.admin.json,
            Command::Truncate(a) => a.admin.json,
            Command::Snapshot(a) => match &a.action {
                None => a.take.admin.json,
                Some(SnapshotAction::List { admin, .. } | SnapshotAction::Clear { admin, .. }) => {
                    admin.json
                }
                Some(SnapshotAction::Restore(r)) => r.json,
            },
            // No --json: their errors are text.
            Command::Server(_)
            | Command::LocalCluster(_)
            | Command::Autoscale(_)
            | Command::Cert(_)
            | Command::User(_)
            | Command::Completions { .. }
            | Command::Bench(_)
            | Command::Prove(_) => false,
        }
    }
}

/// How a failed command reports: `ringkv: <cause>` on standard error, or,
/// for an admin verb run with `--json`, `{"error": "<cause>"}` on standard
/// output, so a script reading JSON always reads JSON (the exit status is
/// 1 either way).
pub fn report_error(json: bool, e: &anyhow::Error) {
    if json {
        say!("{}", serde_json::json!({ "error": format!("{e:#}") }));
    } else {
        eprintln!("ringkv: {e:#}");
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => {
            let config = args.node.resolve()?;
            if args.print_config {
                print!("{}", toml::to_string_pretty(&config)?);
                return Ok(());
            }
            crate::server::init_logging(&config.node.log);
            crate::server::run_until_signal(config, args.exit_with)
        }
        Command::LocalCluster(args) => crate::local_cluster::run(args),
        Command::Cert(cmd) => crate::cert::run(cmd),
        Command::User(cmd) => crate::user::run(cmd),
        Command::Status(args) if args.ranges => crate::status::ranges(&args.admin),
        Command::Status(args) => crate::status::status(&args.admin),
        Command::Ring(args) => crate::status::ring(&args),
        Command::Explain(args) => crate::status::explain(&args.admin, &args.key),
        Command::Repair(args) => crate::status::repair(&args.admin, !args.no_wait),
        Command::Decommission(args) => {
            crate::status::movement(&args.admin, "/v1/decommission", !args.no_wait)
        }
        Command::Remove(args) => crate::status::remove(&args),
        Command::Cancel(args) => crate::status::movement(&args, "/v1/movement/cancel", true),
        Command::Snapshot(args) => crate::snapshot_cli::run(args),
        Command::Truncate(args) => crate::snapshot_cli::truncate(&args),
        Command::Export(args) => crate::transfer_cli::export(&args),
        Command::Import(args) => crate::transfer_cli::import(&args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "ringkv", &mut std::io::stdout());
            Ok(())
        }
        Command::Autoscale(args) => crate::autoscale::run(args),
        Command::Bench(cmd) => crate::bench::run(cmd),
        Command::Prove(cmd) => crate::proof::run(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_config(args: &[&str]) -> anyhow::Result<Config> {
        let cli = Cli::try_parse_from(["ringkv", "server"].iter().chain(args))?;
        match cli.command {
            Command::Server(s) => s.node.resolve(),
            other => anyhow::bail!("parsed as {other:?}"),
        }
    }

    #[test]
    fn flags_override_the_defaults() -> anyhow::Result<()> {
        let c = server_config(&[])?;
        assert_eq!(c.node.worker_threads, 0);
        assert_eq!(c.storage.sync, SyncMode::Periodic);
        let c = server_config(&["--worker-threads", "2", "--sync", "always"])?;
        assert_eq!(c.node.worker_threads, 2);
        assert_eq!(c.storage.sync, SyncMode::Always);
        Ok(())
    }

    #[test]
    fn bad_flag_values_are_refused() {
        assert!(server_config(&["--worker-threads", "-1"]).is_err());
        assert!(server_config(&["--worker-threads", "many"]).is_err());
        assert!(server_config(&["--sync", "sometimes"]).is_err());
    }
}
