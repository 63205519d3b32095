//! `ringkv cert`: a cluster CA and node certificates for operators without
//! a PKI (see SECURITY.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ringkv_cluster::NodeId;
use ringkv_cluster::net::certs::{self, Pem};
use ringkv_cluster::net::tls;

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a cluster CA: `<dir>/ca.pem` and `<dir>/ca.key` (keep the key
    /// off the nodes).
    Ca(CaArgs),
    /// Issue a node certificate signed by the CA: `<out>/ca.pem`,
    /// `<out>/node.pem`, `<out>/node.key`, the folder a node reads from
    /// `<data_dir>/certs` by default.
    Node(NodeArgs),
    /// Issue an admin certificate signed by the CA: `<out>/admin.pem` and
    /// `<out>/admin.key`, which `ringkv remove` signs a dead node's removal
    /// with (keep it with the operators, off the nodes).
    Admin(AdminCertArgs),
    /// Show the node id, names and expiry of a certificate.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct AdminCertArgs {
    /// Folder of the CA (`ca.pem`, `ca.key`).
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// Folder to write `admin.pem` and `admin.key` to.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = certs::ADMIN_DAYS_DEFAULT)]
    pub days: u32,
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// Folder to create the CA in.
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value_t = certs::CA_DAYS_DEFAULT)]
    pub days: u32,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Folder of the CA (`ca.pem`, `ca.key`).
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// Folder to write the node's files to, e.g. `<data_dir>/certs`.
    #[arg(long)]
    pub out: PathBuf,
    /// Node id (16 hex digits) the certificate names: a node's id is in
    /// `ringkv status`. Default: a new random id, for a new node.
    #[arg(long, value_parser = parse_id)]
    pub id: Option<NodeId>,
    /// More subjectAltNames (host names or IP addresses clients use),
    /// repeatable; `localhost` and `127.0.0.1` are always there.
    #[arg(long = "name")]
    pub names: Vec<String>,
    #[arg(long, default_value_t = certs::NODE_DAYS_DEFAULT)]
    pub days: u32,
    /// Replace the certificate in `--out`, keeping its node id (renewal).
    #[arg(long)]
    pub renew: bool,
    /// More CA certificates to trust besides the issuing one (PEM), for a
    /// CA rotation: the node trusts both until every node has moved.
    #[arg(long)]
    pub also_trust: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A PEM certificate file.
    pub file: PathBuf,
}

fn parse_id(s: &str) -> Result<NodeId, String> {
    let s = s.trim_start_matches("0x");
    match u64::from_str_radix(s, 16) {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a node id (16 hex digits, not 0)")),
        Ok(id) => Ok(id),
    }
}

pub fn run(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Ca(args) => {
            if args.dir.join(certs::CA_CERT_FILE).exists() {
                bail!("{} already holds a CA", args.dir.display());
            }
            let ca = certs::new_ca(args.days)?;
            certs::write_file(&args.dir.join(certs::CA_KEY_FILE), &ca.key, true)?;
            certs::write_file(&args.dir.join(certs::CA_CERT_FILE), &ca.cert, false)?;
            println!(
                "CA created in {} (ca.pem to give every node, ca.key to keep safe)",
                args.dir.display()
            );
            Ok(())
        }
        CertCommand::Node(args) => node(args),
        CertCommand::Admin(args) => {
            let ca: Pem = certs::load_ca(&args.ca_dir)?;
            let admin = certs::issue_admin(&ca, args.days)?;
            let cert = args.out.join(certs::ADMIN_CERT_FILE);
            if cert.exists() {
                bail!("{} already holds an admin certificate", args.out.display());
            }
            certs::write_file(&args.out.join(certs::ADMIN_KEY_FILE), &admin.key, true)?;
            certs::write_file(&cert, &admin.cert, false)?;
            println!(
                "admin certificate in {} (valid {} days): ringkv remove <node> --admin-cert {} \
                 --admin-key {}",
                args.out.display(),
                args.days,
                cert.display(),
                args.out.join(certs::ADMIN_KEY_FILE).display()
            );
            Ok(())
        }
        CertCommand::Show(args) => show(&args.file),
    }
}

fn existing_id(out: &Path) -> anyhow::Result<Option<NodeId>> {
    let path = out.join(certs::NODE_CERT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let der = read_cert(&path)?;
    Ok(Some(tls::cert_node_id(&der)?))
}

fn read_cert(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let der = certs::cert_from_pem(&pem)
        .with_context(|| format!("a PEM certificate in {}", path.display()))?;
    Ok(der.to_vec())
}

fn node(args: NodeArgs) -> anyhow::Result<()> {
    let ca: Pem = certs::load_ca(&args.ca_dir)?;
    let id = match (existing_id(&args.out)?, args.renew, args.id) {
        (Some(found), false, _) => bail!(
            "{} already holds the certificate of node {}; pass --renew to replace it",
            args.out.display(),
            ringkv_cluster::id::display(found)
        ),
        (Some(found), true, Some(asked)) if asked != found => bail!(
            "--id {} but {} holds node {}'s certificate",
            ringkv_cluster::id::display(asked),
            args.out.display(),
            ringkv_cluster::id::display(found)
        ),
        (Some(found), true, _) => found,
        (None, true, _) => bail!("--renew: {} holds no certificate", args.out.display()),
        (None, false, Some(asked)) => asked,
        (None, false, None) => loop {
            let id = rand::random::<u64>();
            if id != 0 {
                break id;
            }
        },
    };
    // Local clients (client TLS) verify the node by these names too.
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(
        args.names
            .iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let node = certs::issue_node(&ca, id, args.days, &names)?;
    let mut trusted = ca.cert.clone();
    if let Some(extra) = &args.also_trust {
        let more = std::fs::read_to_string(extra)
            .with_context(|| format!("reading {}", extra.display()))?;
        if !trusted.ends_with('\n') {
            trusted.push('\n');
        }
        trusted.push_str(&more);
    }
    certs::write_node_folder(&args.out, &trusted, &node)?;
    println!(
        "node {}: certificate in {} (valid {} days)",
        ringkv_cluster::id::display(id),
        args.out.display(),
        args.days
    );
    Ok(())
}

fn show(path: &Path) -> anyhow::Result<()> {
    let der = read_cert(path)?;
    match tls::cert_node_id(&der) {
        Ok(id) => println!("node:      {}", ringkv_cluster::id::display(id)),
        Err(e) => println!("node:      none ({e})"),
    }
    let info = certs::describe(&der);
    println!("subject:   {}", info.common_name.as_deref().unwrap_or("?"));
    println!("names:     {}", info.names.join(", "));
    match info.not_after_unix {
        Some(t) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            println!("expires:   in {} days (unix time {t})", (t - now) / 86_400);
        }
        None => println!("expires:   unreadable"),
    }
    Ok(())
}

/// Gives the node whose data is in `data_dir` a certificate from the CA in
/// `ca_dir` (created there when absent), unless `<data_dir>/certs` holds
/// one: for the id its files already name, or a new one. Used by
/// `local-cluster`, the autoscaler's local provisioner, the proof harness
/// and the benchmarks. Returns the node's id.
pub fn provision(ca_dir: &Path, data_dir: &Path) -> anyhow::Result<NodeId> {
    let ca = certs::load_or_create_ca(ca_dir)?;
    let files =
        ringkv_cluster::node_files::NodeFiles::new(ringkv_storage::fs::RealFs::shared(), data_dir);
    let known = if data_dir.exists() {
        files
            .node_id()
            .with_context(|| format!("reading the node id in {}", data_dir.display()))?
    } else {
        None
    };
    Ok(certs::ensure_node_folder(
        &ca,
        &data_dir.join(certs::CERTS_DIR),
        known,
    )?)
}
