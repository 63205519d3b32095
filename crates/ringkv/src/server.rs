//! Runs one node: opens storage, builds the coordinator, starts the front
//! ends, and shuts everything down in order.
//!
//! Shutdown order: stop accepting (both front ends) -> let in-flight requests
//! finish -> sync the commit log -> close the engine. A restart then finds
//! every acknowledged write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ringkv_cluster::membership::MembershipConfig;
use ringkv_cluster::movement::MoveConfig;
use ringkv_cluster::net::client_tls::ClientTls;
use ringkv_cluster::net::tls::NodeTls;
use ringkv_cluster::net::{Security, TcpTransport, TransportConfig, serve_tcp};
use ringkv_cluster::node::{NodeBuilder, NodePlace, NodeStorage};
use ringkv_cluster::node_files::NodeFiles;
use ringkv_cluster::repair::anti_entropy::AntiEntropyConfig;
use ringkv_cluster::repair::hints::HintConfig;
use ringkv_cluster::ring::Replication;
use ringkv_cluster::{Consistency, NodeConfig};
use ringkv_storage::RealFs;
use tokio::sync::watch;

use crate::config::{Compression, Config, SyncMode};

/// Sets up `tracing` once per process: `RUST_LOG` wins over `default`.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    // Colour only on a terminal: log files and pipes get plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}

/// A node running inside this process.
pub struct RunningNode {
    pub node_id: u64,
    pub resp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    /// RESP and HTTP speak TLS.
    pub clients_tls: bool,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningNode {
    /// Resolves when the node begins to stop on its own (it left the ring).
    pub async fn stopping(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Stops the node gracefully and waits until its data is synced.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("node task panicked")?
    }
}

fn storage_options(config: &Config) -> ringkv_storage::Options {
    let s = &config.storage;
    ringkv_storage::Options {
        sync: match s.sync {
            SyncMode::Always => ringkv_storage::SyncMode::Always,
            SyncMode::Periodic => ringkv_storage::SyncMode::Periodic {
                interval_ms: s.sync_interval_ms,
            },
        },
        memtable_bytes_max: s.memtable_bytes_max,
        compression: match s.compression {
            Compression::None => ringkv_storage::Compression::None,
            Compression::Lz4 => ringkv_storage::Compression::Lz4,
            Compression::Zstd => ringkv_storage::Compression::Zstd,
        },
        bloom_bits_per_key: s.bloom_bits_per_key as u32,
        block_cache_bytes: s.block_cache_bytes as u64,
        ..ringkv_storage::Options::default()
    }
}

fn node_config(config: &Config) -> NodeConfig {
    let c = &config.cluster;
    NodeConfig {
        key_bytes_max: config.limits.key_bytes_max,
        value_bytes_max: config.limits.value_bytes_max,
        replication_factor: c.replication_factor,
        default_read: Consistency::parse(&c.read).unwrap_or(Consistency::Quorum),
        default_write: Consistency::parse(&c.write).unwrap_or(Consistency::Quorum),
        siblings_max: c.siblings_max,
        tombstone_grace_ms: c.tombstone_grace_ms,
        request_timeout_ms: c.request_timeout_ms,
        strict_quorum: c.strict_quorum,
        hint_replay_interval_ms: config.hints.replay_interval_ms,
        join_timeout_ms: c.join_timeout_ms,
        membership: membership_config(config),
        hints: HintConfig {
            target_bytes_max: config.hints.target_bytes_max,
            age_ms_max: config.hints.age_ms_max,
            replay_per_sec_max: config.hints.replay_per_sec_max,
            ..HintConfig::default()
        },
        anti_entropy: AntiEntropyConfig {
            ranges_per_sec_max: config.anti_entropy.ranges_per_sec_max,
            repair_ranges_per_sec_max: config.anti_entropy.repair_ranges_per_sec_max,
            pass_pause_ms: config.anti_entropy.pass_pause_ms,
            ..AntiEntropyConfig::default()
        },
        movement: MoveConfig {
            bytes_per_sec_max: config.movement.bytes_per_sec_max,
            batch_bytes_max: config.movement.batch_bytes_max,
            settle_ms: config.movement.settle_ms,
            cleanup_delay_ms: config.movement.cleanup_delay_ms,
        },
        backup_dir: config.backup.dir.clone(),
        record_cache_bytes: config.storage.record_cache_bytes,
        plant_stale_record_cache: false,
        type_limits: ringkv_cluster::replica::TypeLimits {
            set_members_max: config.limits.set_members_max,
            hash_fields_max: config.limits.hash_fields_max,
            counter_entries_max: config.limits.counter_entries_max,
            record_bytes_max: config.limits.value_bytes_max,
        },
        slowlog: ringkv_cluster::slowlog::SlowLogConfig {
            slower_than_us: config.diagnostics.slowlog_slower_than_us,
            max_len: config.diagnostics.slowlog_max_len,
            latency_threshold_ms: config.diagnostics.latency_threshold_ms,
        },
    }
}

/// The most slow log entries a node keeps, whatever the configuration
/// says (each holds up to 32 arguments of 128 bytes).
pub(crate) const SLOWLOG_LEN_MAX: usize = 10_000;

/// Descriptors kept for everything but connections: tables, logs, node
/// files, the listeners.
const FILE_DESCRIPTORS_RESERVED: u64 = 512;

/// Raises the process's open-files limit to its hard limit, then lowers
/// `limits.connections_max` (RESP) if all the connection caps together
/// could still run out of descriptors (as Redis lowers `maxclients`):
/// client connections can then never take the descriptors the cluster
/// port, HTTP and the storage need.
fn fit_descriptors(config: &mut Config) {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        /// What the soft limit is raised to at most (the kernel's usual
        /// `nr_open`).
        const RAISED_MAX: u64 = 1 << 20;
        let limit = getrlimit(Resource::Nofile);
        let mut soft = limit.current.unwrap_or(RAISED_MAX);
        let hard = limit.maximum.unwrap_or(RAISED_MAX).min(RAISED_MAX);
        if soft < hard
            && setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(hard),
                    maximum: limit.maximum,
                },
            )
            .is_ok()
        {
            soft = hard;
        }
        let l = &mut config.limits;
        if let Some(fitted) = fitted_connections(soft, l) {
            tracing::warn!(
                open_files_max = soft,
                asked = l.connections_max,
                fitted,
                "limits.connections_max lowered to fit the open-files limit (raise `ulimit -n` \
                 for more clients)"
            );
            l.connections_max = fitted;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = config;
}

/// The RESP connection cap that fits `open_files_max` descriptors beside
/// every other cap, when `limits.connections_max` does not; at least a
/// quarter of the descriptors (with a warning, a machine whose hard limit
/// is that low cannot guarantee both).
fn fitted_connections(open_files_max: u64, l: &crate::config::LimitsSection) -> Option<usize> {
    let others = (l.http_connections_max
        + TransportConfig::default().connections_max
        + l.cluster_handshakes_max
        + l.cluster_reserved_handshakes_max) as u64
        + FILE_DESCRIPTORS_RESERVED;
    let room = usize::try_from(open_files_max.saturating_sub(others)).unwrap_or(usize::MAX);
    let floor = usize::try_from(open_files_max / 4)
        .unwrap_or(usize::MAX)
        .max(1);
    (l.connections_max > room).then(|| room.max(floor).min(l.connections_max))
}

/// The users file named by `RINGKV_USERS_FILE` or `[auth] users_file`.
fn load_users(config: &Config) -> anyhow::Result<Option<Arc<ringkv_auth::Users>>> {
    let path = std::env::var_os("RINGKV_USERS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| config.auth.users_file.clone());
    let Some(path) = path else {
        return Ok(None);
    };
    let users = ringkv_auth::Users::load(&path).context("loading the users file")?;
    tracing::info!(users = users.len(), file = %path.display(), "RESP clients must authenticate");
    Ok(Some(Arc::new(users)))
}

fn resp_config(config: &Config, users: Option<Arc<ringkv_auth::Users>>) -> ringkv_resp::RespConfig {
    let l = &config.limits;
    ringkv_resp::RespConfig {
        users,
        auth_timeout_ms: config.auth.auth_timeout_ms,
        connections_max: l.connections_max,
        input_buffer_bytes_max: l.input_buffer_bytes_max,
        bulk_bytes_max: l.bulk_bytes_max,
        args_max: l.args_max,
        inline_bytes_max: l.inline_bytes_max,
        idle_timeout_ms: l.idle_timeout_ms,
        ..ringkv_resp::RespConfig::default()
    }
}

fn membership_config(config: &Config) -> MembershipConfig {
    MembershipConfig {
        gossip_interval_ms: config.cluster.gossip_interval_ms,
        phi_convict: config.cluster.phi_convict,
        tokens_per_weight: config.cluster.tokens_per_weight,
        ..MembershipConfig::default()
    }
}

fn replication(config: &Config) -> Replication {
    if config.cluster.dc_replication.is_empty() {
        Replication::simple(&config.node.dc, config.cluster.replication_factor)
    } else {
        Replication {
            per_dc: config.cluster.dc_replication.clone(),
        }
    }
}

/// Opens storage, joins the cluster and starts the front ends; returns once
/// every listener is up and the node owns its tokens.
pub async fn start(mut config: Config) -> anyhow::Result<RunningNode> {
    // Before anything is created or bound.
    let users = load_users(&config)?;
    config.check_protected_mode(users.is_some())?;
    fit_descriptors(&mut config);
    // The recorder goes first: components register their metric handles
    // when they are built.
    let metrics = crate::metrics::handle();
    let data_dir = config.node.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let clock = ringkv_env::SystemClock::shared();
    let faults =
        (config.debug.fault_injection).then(|| crate::fault_hooks::FaultHooks::new(clock.clone()));
    let clock = faults.as_ref().map_or(clock, |f| f.clock());
    let node_config = node_config(&config);
    let storage = tokio::task::spawn_blocking({
        let (dir, clock, options) = (data_dir.clone(), clock.clone(), storage_options(&config));
        let (grace_ms, hints) = (node_config.tombstone_grace_ms, node_config.hints.clone());
        let blocking = config.storage.sync == SyncMode::Always;
        move || {
            NodeStorage::open(
                RealFs::shared(),
                &dir,
                options,
                clock,
                grace_ms,
                hints,
                blocking,
            )
        }
    })
    .await
    .context("storage open task")??;
    let closer = storage.closer();

    let bind = |addr: SocketAddr, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {what} address {addr}"))
    };
    let resp_listener = bind(config.node.resp_addr, "RESP").await?;
    let http_listener = bind(config.node.http_addr, "HTTP").await?;
    let cluster_listener = bind(config.node.cluster_addr, "cluster").await?;
    let resp_addr = resp_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let cluster_addr = cluster_listener.local_addr()?;

    let place = NodePlace {
        dc: config.node.dc.clone(),
        rack: config.node.rack.clone(),
        weight: config.node.weight,
        cluster_addr: config
            .node
            .advertise_addr
            .clone()
            .unwrap_or_else(|| cluster_addr.to_string()),
        resp_addr: resp_addr.to_string(),
        http_addr: http_addr.to_string(),
    };
    let (shutdown, watch_rx) = watch::channel(false);
    let files = NodeFiles::new(RealFs::shared(), &data_dir);
    let security = cluster_security(&config, &data_dir, cluster_addr)?;
    // The transport is made for the id the node ends up with: its
    // certificate names it, or (plaintext) the files decide it. The builder
    // refuses a certificate of another node than the data directory's.
    let node_id = match security.tls() {
        Some(tls) => tls.node_id(),
        None => files
            .load_or_create_id()
            .with_context(|| format!("reading the node id in {}", data_dir.display()))?,
    };
    let client_tls = client_tls(&config, &data_dir)?;
    let clients_tls = client_tls.is_some();
    let security_tls = security.tls().cloned();
    let mut reload_tasks = Vec::new();
    if let Some(tls) = security.tls() {
        reload_tasks.push(tokio::spawn(watch_certificates(
            Arc::clone(tls) as Arc<dyn Reloadable>,
            watch_rx.clone(),
        )));
    }
    if let Some(tls) = &client_tls {
        reload_tasks.push(tokio::spawn(watch_certificates(
            Arc::clone(tls) as Arc<dyn Reloadable>,
            watch_rx.clone(),
        )));
    }
    // With TLS, the node signs its gossiped state and takes states of
    // other nodes only signed by them (required under mutual TLS).
    let state_auth = security
        .tls()
        .map(|tls| ringkv_cluster::membership::StateAuth {
            tls: Arc::clone(tls),
            required: matches!(security, Security::Mutual(_)),
        });
    let transport_config = TransportConfig {
        cluster: config.cluster.name.clone(),
        security,
        handshakes_max: config.limits.cluster_handshakes_max,
        reserved_handshakes_max: config.limits.cluster_reserved_handshakes_max,
        hello_timeout_ms: config.limits.cluster_handshake_timeout_ms,
        ..TransportConfig::default()
    };
    let transport = Arc::new(TcpTransport::new(node_id, transport_config.clone()));
    let mut builder = NodeBuilder::new(
        node_config,
        clock,
        storage.store,
        storage.hints,
        files,
        crate::fault_hooks::transport(faults.as_ref(), transport),
    )
    .id(node_id)
    .place(place)
    .replication(replication(&config));
    if let Some(auth) = state_auth {
        builder = builder.state_auth(auth);
    }
    let node = Arc::new(builder.build()?);

    let wait_for = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let cluster_task = tokio::spawn(serve_tcp(
        cluster_listener,
        node_id,
        transport_config,
        crate::fault_hooks::handler(faults.as_ref(), node.handler()),
        wait_for(watch_rx.clone()),
    ));
    // Join (or resume), then the background loops.
    let loops = node.start(&config.node.seeds, watch_rx.clone()).await?;
    // A node that has left the ring (decommissioned, or its join
    // cancelled) stops.
    let mut left = node.movements().left_signal();
    let left_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if left.wait_for(|l| *l).await.is_ok() {
            tracing::info!("this node has left the ring; stopping");
            let _ = left_shutdown.send(true);
        }
    });
    let gauges_task = tokio::spawn(crate::metrics::export_gauges(
        Arc::clone(&node),
        wait_for(watch_rx.clone()),
    ));

    let scraped = Arc::clone(&node);
    let render: ringkv_http::MetricsRender =
        Arc::new(move || crate::metrics::render(&metrics, Some(&scraped)));
    let http_config = ringkv_http::HttpConfig {
        body_bytes_max: config.limits.value_bytes_max + 4096,
        connections_max: config.limits.http_connections_max,
        header_read_timeout_ms: config.limits.http_header_timeout_ms,
        request_timeout_ms: config.limits.http_request_timeout_ms,
        tls: client_tls.clone(),
        certificates: certificates(security_tls.clone(), client_tls.clone()),
    };
    let router = ringkv_http::router(Arc::clone(&node), render, &http_config);
    let router = crate::fault_hooks::routes(faults.as_ref(), router);
    let router = ringkv_http::guarded(
        router,
        ringkv_http::Guard {
            users: users.clone(),
            metrics_public: config.auth.metrics_public,
        },
    );
    let http_task = tokio::spawn(ringkv_http::serve(
        http_listener,
        router,
        http_config,
        wait_for(watch_rx.clone()),
    ));
    let resp_task = tokio::spawn(ringkv_resp::serve(
        resp_listener,
        Arc::clone(&node),
        ringkv_resp::RespConfig {
            tls: client_tls,
            ..resp_config(&config, users)
        },
        wait_for(watch_rx.clone()),
    ));
    tracing::info!(
        node = %ringkv_cluster::id::display(node_id),
        %resp_addr,
        %http_addr,
        %cluster_addr,
        data_dir = %data_dir.display(),
        "node serving"
    );

    let leaving = Arc::clone(&node);
    let task = tokio::spawn(async move {
        // Gossip stops first (its round ends within a gossip timeout); then
        // the peers are told, and see this node down while it still
        // finishes its in-flight requests, as Cassandra announces a
        // shutdown before draining.
        let mut loops = loops.into_iter();
        if let Some(gossip) = loops.next() {
            let _ = gossip.await;
        }
        leaving.gossip().say_goodbye().await;
        let resp = resp_task.await.context("RESP server task")?;
        let http = http_task.await.context("HTTP server task")?;
        for task in loops {
            let _ = task.await;
        }
        let _ = gauges_task.await;
        for task in reload_tasks {
            let _ = task.await;
        }
        let cluster = cluster_task.await.context("cluster server task")?;
        // Front ends have drained: make everything acknowledged durable.
        let closed = tokio::task::spawn_blocking(move || closer.close())
            .await
            .context("storage close task")?;
        resp.context("RESP server")?;
        http.context("HTTP server")?;
        cluster.context("cluster server")?;
        closed.context("closing storage")?;
        tracing::info!("node stopped; storage synced and closed");
        Ok(())
    });

    Ok(RunningNode {
        clients_tls,
        node_id,
        resp_addr,
        http_addr,
        cluster_addr,
        shutdown,
        task,
    })
}

/// Builds the runtime.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(0)
}

/// Builds the runtime with `worker_threads` request threads; 0 picks one
/// fewer than the machine's cores (at least one), leaving a core to the
/// storage engine's flush, compaction and fsync threads. On two cores one
/// request thread is measurably faster than two: writers stop handing the
/// commit log to each other through the kernel.
pub fn runtime_with(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = if worker_threads == 0 {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1)
    } else {
        worker_threads
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .thread_name("ringkv")
        .build()
        .context("starting the async runtime")
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Resolves when process `pid` no longer exists (never for `None`).
async fn process_gone(pid: Option<u32>) {
    let Some(pid) = pid else {
        return std::future::pending().await;
    };
    let path = std::path::PathBuf::from(format!("/proc/{pid}"));
    while path.exists() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How the cluster port is secured: mutual TLS with the node's certificate
/// unless `--insecure`.
fn cluster_security(
    config: &Config,
    data_dir: &std::path::Path,
    cluster_addr: SocketAddr,
) -> anyhow::Result<Security> {
    if config.tls.insecure {
        tracing::warn!(
            %cluster_addr,
            "INSECURE: the cluster port is plaintext and unauthenticated: anyone who can reach \
             it can read and write every key, join the cluster and rewrite the ring. \
             Use it only on a network you trust; see SECURITY.md"
        );
        return Ok(Security::Plaintext);
    }
    let paths = config.tls.paths(data_dir);
    if !paths.cert.exists() {
        anyhow::bail!(
            "no node certificate at {}: the cluster port needs one (mutual TLS). Create a CA and \
             a certificate with `ringkv cert ca` and `ringkv cert node` (see SECURITY.md), or \
             start with --insecure for a plaintext cluster port on a trusted network",
            paths.cert.display()
        );
    }
    let tls = Arc::new(NodeTls::load(paths).context("loading the node's certificate")?);
    export_certificate_expiry(&*tls);
    Ok(match config.tls.cluster_mode {
        crate::config::ClusterTlsMode::Mutual => Security::Mutual(tls),
        crate::config::ClusterTlsMode::Optional => {
            tracing::warn!(
                "cluster port in optional TLS mode: plaintext peers are accepted unauthenticated"
            );
            Security::Optional(tls)
        }
    })
}

/// How often certificate files are checked for changes.
const CERT_RELOAD_CHECK: Duration = Duration::from_secs(5);
/// Days before expiry from which the node warns.
pub const CERT_EXPIRY_WARN_DAYS: i64 = 30;

/// Client TLS, when `[tls] clients` is on.
fn client_tls(
    config: &Config,
    data_dir: &std::path::Path,
) -> anyhow::Result<Option<Arc<ClientTls>>> {
    let Some(paths) = config.tls.client_paths(data_dir) else {
        return Ok(None);
    };
    let tls = ClientTls::load(paths).context("loading the certificate for clients (client TLS)")?;
    tracing::info!(cert = %tls.paths().cert.display(), auth = ?tls.paths().auth, "RESP and HTTP speak TLS");
    let tls = Arc::new(tls);
    export_certificate_expiry(&*tls);
    Ok(Some(tls))
}

/// The node's certificates and their expiry, for `/v1/status`.
fn certificates(
    cluster: Option<Arc<NodeTls>>,
    clients: Option<Arc<ClientTls>>,
) -> ringkv_http::Certificates {
    if cluster.is_none() && clients.is_none() {
        return ringkv_http::Certificates::default();
    }
    ringkv_http::Certificates(Some(Arc::new(move || {
        let mut out = Vec::new();
        if let Some(t) = &cluster {
            out.push(("cluster", t.not_after_unix()));
        }
        if let Some(t) = &clients {
            out.push(("clients", t.not_after_unix()));
        }
        out
    })))
}

/// A set of certificate files read again when they change.
trait Reloadable: Send + Sync {
    /// `cluster` or `clients`, the label of the expiry gauge.
    fn purpose(&self) -> &'static str;
    fn files(&self) -> Vec<std::path::PathBuf>;
    fn reload(&self) -> Result<(), ringkv_cluster::net::tls::TlsError>;
    fn not_after_unix(&self) -> i64;
}

impl Reloadable for NodeTls {
    fn purpose(&self) -> &'static str {
        "cluster"
    }
    fn files(&self) -> Vec<std::path::PathBuf> {
        let p = self.paths();
        vec![p.ca.clone(), p.cert.clone(), p.key.clone()]
    }
    fn reload(&self) -> Result<(), ringkv_cluster::net::tls::TlsError> {
        NodeTls::reload(self)
    }
    fn not_after_unix(&self) -> i64 {
        NodeTls::not_after_unix(self)
    }
}

impl Reloadable for ClientTls {
    fn purpose(&self) -> &'static str {
        "clients"
    }
    fn files(&self) -> Vec<std::path::PathBuf> {
        let p = self.paths();
        vec![p.client_ca.clone(), p.cert.clone(), p.key.clone()]
    }
    fn reload(&self) -> Result<(), ringkv_cluster::net::tls::TlsError> {
        ClientTls::reload(self)
    }
    fn not_after_unix(&self) -> i64 {
        ClientTls::not_after_unix(self)
    }
}

fn export_certificate_expiry(tls: &dyn Reloadable) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let left = tls.not_after_unix().saturating_sub(now);
    metrics::gauge!("ringkv_tls_certificate_expiry_seconds", "purpose" => tls.purpose())
        .set(left as f64);
    if left < CERT_EXPIRY_WARN_DAYS * 86_400 {
        tracing::warn!(
            days = left / 86_400,
            purpose = tls.purpose(),
            "a certificate expires soon; issue a new one (it is reloaded without a restart)"
        );
    }
}

fn modified(tls: &dyn Reloadable) -> Vec<Option<std::time::SystemTime>> {
    tls.files()
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// Reloads certificates, keys and CAs when their files change: new
/// connections use them, open ones keep their session.
async fn watch_certificates(tls: Arc<dyn Reloadable>, mut stop: watch::Receiver<bool>) {
    let mut seen = modified(&*tls);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(CERT_RELOAD_CHECK) => {}
        }
        ticks += 1;
        let now = modified(&*tls);
        if now != seen {
            seen = now;
            match tls.reload() {
                Ok(()) => tracing::info!(purpose = tls.purpose(), "certificates reloaded"),
                Err(e) => {
                    tracing::error!(purpose = tls.purpose(), error = %e, "certificates changed but cannot be used; keeping the previous ones")
                }
            }
            export_certificate_expiry(&*tls);
        } else if ticks.is_multiple_of(720) {
            // Hourly: the expiry gauge and warning move with time.
            export_certificate_expiry(&*tls);
        }
    }
}

/// `ringkv server`: runs one node until SIGINT/SIGTERM.
pub fn run_until_signal(config: Config, exit_with: Option<u32>) -> anyhow::Result<()> {
    let rt = runtime_with(config.node.worker_threads)?;
    rt.block_on(async {
        let node = start(config).await?;
        let (tls, scheme) = match node.clients_tls {
            true => (" --tls --cacert <ca.pem>", "https"),
            false => ("", "http"),
        };
        println!(
            "ringkv node {} ready: redis-cli -p {}{tls}  |  curl {scheme}://{}/v1/status  |  cluster {}",
            ringkv_cluster::id::display(node.node_id),
            node.resp_addr.port(),
            node.http_addr,
            node.cluster_addr
        );
        tokio::select! {
            () = shutdown_signal() => {}
            () = node.stopping() => {}
            () = process_gone(exit_with) => tracing::info!("parent process gone: shutting down"),
        }
        node.stop().await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_connections_are_fitted_to_the_open_files_limit() {
        let l = crate::config::LimitsSection::default();
        // 10,000 RESP + 1,024 HTTP + 1,024 peers + 80 handshakes + 512.
        assert_eq!(fitted_connections(20_000, &l), None, "room enough");
        assert_eq!(fitted_connections(12_000, &l), Some(12_000 - 2_640));
        assert_eq!(fitted_connections(4_096, &l), Some(4_096 - 2_640));
        // A low hard limit: a quarter of it still goes to clients.
        assert_eq!(fitted_connections(1_024, &l), Some(256));
    }
}
