//! Node configuration: defaults, then the TOML file, then command-line flags.
//!
//! Every limit has a name and a default here; `ringkv server --print-config`
//! shows the merged result. Unknown keys in the file are an error, so a typo
//! never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ringkv_cluster::NodeConfig;
use ringkv_cluster::net::TransportConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub limits: LimitsSection,
    pub storage: StorageSection,
    pub cluster: ClusterSection,
    pub hints: HintsSection,
    pub anti_entropy: AntiEntropySection,
    pub movement: MovementSection,
    pub tls: TlsSection,
    pub auth: AuthSection,
    pub diagnostics: DiagnosticsSection,
    pub backup: BackupSection,
    pub debug: DebugSection,
}

/// Snapshots' copies (`ringkv snapshot --copy`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSection {
    /// Where snapshots are copied, under `<node id>/<tag>/`: another disk
    /// or mount than the data directory, so a copy outlives its disk.
    /// Unset: copies are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

/// The slow log and the latency monitor (`SLOWLOG`, `LATENCY`, `GET
/// /v1/slowlog`), in Redis's terms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiagnosticsSection {
    /// Requests slower than this (microseconds) go to the slow log; -1
    /// logs none, 0 every one (`slowlog-log-slower-than`).
    pub slowlog_slower_than_us: i64,
    /// Slow log entries kept (`slowlog-max-len`).
    pub slowlog_max_len: usize,
    /// Commands slower than this (ms) are sampled by the latency monitor;
    /// 0 turns it off (`latency-monitor-threshold`).
    pub latency_threshold_ms: u64,
}

impl Default for DiagnosticsSection {
    fn default() -> Self {
        let d = ringkv_cluster::slowlog::SlowLogConfig::default();
        Self {
            slowlog_slower_than_us: d.slower_than_us,
            slowlog_max_len: d.max_len,
            latency_threshold_ms: d.latency_threshold_ms,
        }
    }
}

/// Client users (RESP): see SECURITY.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// The users file (TOML: name, argon2 `password_hash`, roles, key
    /// patterns); `RINGKV_USERS_FILE` overrides it. Without one, RESP
    /// clients need no password.
    pub users_file: Option<PathBuf>,
    /// Time a RESP connection has to authenticate; 0: no limit.
    pub auth_timeout_ms: u64,
    /// With users, `/metrics` is served without credentials (otherwise it
    /// needs a user with the read role).
    pub metrics_public: bool,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            users_file: None,
            auth_timeout_ms: ringkv_resp::RespConfig::default().auth_timeout_ms,
            metrics_public: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Where the node keeps its data, commit log and identity.
    pub data_dir: PathBuf,
    /// Redis protocol listener.
    pub resp_addr: SocketAddr,
    /// HTTP listener (REST, status, metrics).
    pub http_addr: SocketAddr,
    /// Node-to-node listener.
    pub cluster_addr: SocketAddr,
    /// The cluster address peers dial (`host:port`), when it is not the
    /// one bound: required when `cluster_addr` is a wildcard (0.0.0.0).
    pub advertise_addr: Option<String>,
    /// Cluster addresses of nodes to contact on start.
    pub seeds: Vec<String>,
    /// Data center and rack of this node (replica placement).
    pub dc: String,
    pub rack: String,
    /// Relative capacity: a node of weight 2 owns twice the share of the
    /// ring of a node of weight 1.
    pub weight: u32,
    /// Default log filter (`RUST_LOG` overrides it).
    pub log: String,
    /// Threads serving requests; 0 is one fewer than the cores (at least 1).
    pub worker_threads: usize,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("ringkv-data"),
            resp_addr: SocketAddr::from(([127, 0, 0, 1], 7379)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7380)),
            cluster_addr: SocketAddr::from(([127, 0, 0, 1], 7381)),
            advertise_addr: None,
            seeds: Vec::new(),
            dc: "dc1".into(),
            rack: "rack1".into(),
            weight: 1,
            log: "info".into(),
            worker_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    /// Largest RESP bulk string (covers values plus protocol slack).
    pub bulk_bytes_max: usize,
    /// Most arguments in one RESP command.
    pub args_max: usize,
    /// Longest inline (telnet-style) command line.
    pub inline_bytes_max: usize,
    /// Most client connections at once (RESP); the rest are refused.
    pub connections_max: usize,
    /// Most bytes buffered per connection before it is closed.
    pub input_buffer_bytes_max: usize,
    /// A connection idle this long is closed (slowloris guard); 0 disables.
    pub idle_timeout_ms: u64,
    /// Most HTTP connections at once; the rest are closed at accept.
    pub http_connections_max: usize,
    /// Time an HTTP connection has to send a request's headers (also the
    /// idle time of a keep-alive connection).
    pub http_header_timeout_ms: u64,
    /// Time an HTTP request may take, its body included.
    pub http_request_timeout_ms: u64,
    /// Cluster port: connections in their handshake (TLS and hello) at once.
    pub cluster_handshakes_max: usize,
    /// Cluster port: more handshake slots for hosts peers have completed a
    /// handshake from before.
    pub cluster_reserved_handshakes_max: usize,
    /// Cluster port: time for the TLS handshake and the hello together.
    pub cluster_handshake_timeout_ms: u64,
    /// Most members of one set a client write may make.
    pub set_members_max: usize,
    /// Most fields of one hash a client write may make.
    pub hash_fields_max: usize,
    /// Most entries of one counter (nodes times epochs, and stand-ins'
    /// increments) a client write may make.
    pub counter_entries_max: usize,
}

// Every default comes from the library that uses the setting: one source
// of truth.
impl Default for LimitsSection {
    fn default() -> Self {
        let node = NodeConfig::default();
        let resp = ringkv_resp::RespConfig::default();
        let http = ringkv_http::HttpConfig::default();
        let transport = TransportConfig::default();
        Self {
            key_bytes_max: node.key_bytes_max,
            value_bytes_max: node.value_bytes_max,
            bulk_bytes_max: resp.bulk_bytes_max,
            args_max: resp.args_max,
            inline_bytes_max: resp.inline_bytes_max,
            connections_max: resp.connections_max,
            input_buffer_bytes_max: resp.input_buffer_bytes_max,
            idle_timeout_ms: resp.idle_timeout_ms,
            http_connections_max: http.connections_max,
            http_header_timeout_ms: http.header_read_timeout_ms,
            http_request_timeout_ms: http.request_timeout_ms,
            cluster_handshakes_max: transport.handshakes_max,
            cluster_reserved_handshakes_max: transport.reserved_handshakes_max,
            cluster_handshake_timeout_ms: transport.hello_timeout_ms,
            set_members_max: node.type_limits.set_members_max,
            hash_fields_max: node.type_limits.hash_fields_max,
            counter_entries_max: node.type_limits.counter_entries_max,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Acknowledge after fsync (survives power loss).
    Always,
    /// Hand each write to the OS before acknowledging (survives kill -9) and
    /// fsync every `sync_interval_ms`.
    Periodic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    pub sync: SyncMode,
    pub sync_interval_ms: u64,
    pub memtable_bytes_max: usize,
    pub block_cache_bytes: usize,
    /// Memory for the newest record of each key (the read before every
    /// write and hot reads skip the tables); 0 turns it off.
    pub record_cache_bytes: usize,
    pub compression: Compression,
    pub bloom_bits_per_key: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        let o = ringkv_storage::Options::default();
        let (sync, sync_interval_ms) = match o.sync {
            ringkv_storage::SyncMode::Always => (SyncMode::Always, 100),
            ringkv_storage::SyncMode::Periodic { interval_ms } => (SyncMode::Periodic, interval_ms),
        };
        Self {
            sync,
            sync_interval_ms,
            memtable_bytes_max: o.memtable_bytes_max,
            block_cache_bytes: o.block_cache_bytes as usize,
            record_cache_bytes: ringkv_cluster::node::RECORD_CACHE_BYTES_DEFAULT,
            compression: match o.compression {
                ringkv_storage::Compression::None => Compression::None,
                ringkv_storage::Compression::Lz4 => Compression::Lz4,
                ringkv_storage::Compression::Zstd => Compression::Zstd,
            },
            bloom_bits_per_key: o.bloom_bits_per_key as usize,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Nodes only talk to peers of the same cluster name.
    pub name: String,
    /// Replication factor N (in this node's data center, unless
    /// `dc_replication` names every data center's own).
    pub replication_factor: usize,
    /// Replication factor per data center, e.g. `{ dc1 = 3, dc2 = 3 }`.
    pub dc_replication: std::collections::BTreeMap<String, usize>,
    /// Default read consistency (level name or count).
    pub read: String,
    /// Default write consistency (level name or count).
    pub write: String,
    pub siblings_max: usize,
    pub tombstone_grace_ms: u64,
    /// How long a coordinator waits for replicas.
    pub request_timeout_ms: u64,
    pub gossip_interval_ms: u64,
    /// Suspicion level at which a silent peer is marked down.
    pub phi_convict: f64,
    /// Virtual nodes per unit of weight.
    pub tokens_per_weight: usize,
    /// How long a new node waits for a seed to answer.
    pub join_timeout_ms: u64,
    /// When true, hints held by stand-ins do not count towards W.
    pub strict_quorum: bool,
}

/// Continuous anti-entropy (Merkle-tree sync of replicated ranges).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AntiEntropySection {
    /// Range syncs (one range with one peer) started per second, at most.
    pub ranges_per_sec_max: u32,
    /// The same for an on-demand pass (`ringkv repair`); 0: unthrottled.
    pub repair_ranges_per_sec_max: u32,
    /// Pause between two background passes over every range.
    pub pass_pause_ms: u64,
}

impl Default for AntiEntropySection {
    fn default() -> Self {
        let d = NodeConfig::default().anti_entropy;
        Self {
            ranges_per_sec_max: d.ranges_per_sec_max,
            repair_ranges_per_sec_max: d.repair_ranges_per_sec_max,
            pass_pause_ms: d.pass_pause_ms,
        }
    }
}

/// Joins, decommissions and removals (data streaming).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MovementSection {
    /// Streaming rate limit of one movement, bytes per second (0: none).
    /// The stream starts at a quarter of it and slows down while the peers
    /// it streams with answer slowly (it yields to client traffic).
    pub bytes_per_sec_max: u64,
    /// Bytes per stream batch.
    pub batch_bytes_max: u32,
    /// Wait between announcing a join or leave and streaming, for writes
    /// coordinated under the old ring to finish (at least the request
    /// timeout).
    pub settle_ms: u64,
    /// How long the ring must be still before a node drops the data of
    /// ranges it no longer replicates (0: never).
    pub cleanup_delay_ms: u64,
}

impl Default for MovementSection {
    fn default() -> Self {
        let d = NodeConfig::default().movement;
        Self {
            bytes_per_sec_max: d.bytes_per_sec_max,
            batch_bytes_max: d.batch_bytes_max,
            settle_ms: d.settle_ms,
            cleanup_delay_ms: d.cleanup_delay_ms,
        }
    }
}

/// Hinted handoff limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HintsSection {
    /// Most bytes of hints held for one down node.
    pub target_bytes_max: u64,
    /// Hints older than this are dropped (counted) instead of replayed.
    pub age_ms_max: u64,
    /// Most hints replayed per second.
    pub replay_per_sec_max: u64,
    /// How often held hints are offered to returned owners.
    pub replay_interval_ms: u64,
}

impl Default for HintsSection {
    fn default() -> Self {
        let node = NodeConfig::default();
        Self {
            target_bytes_max: node.hints.target_bytes_max,
            age_ms_max: node.hints.age_ms_max,
            replay_per_sec_max: node.hints.replay_per_sec_max,
            replay_interval_ms: node.hint_replay_interval_ms,
        }
    }
}

/// How the cluster port is secured (see SECURITY.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// Plaintext cluster port: anyone who reaches it can read and write
    /// every key and rewrite the ring. Set by `--insecure` (which also sets
    /// `insecure_clients`).
    pub insecure: bool,
    /// RESP and HTTP may listen beyond loopback without client TLS and
    /// users (protected mode refuses to start otherwise).
    pub insecure_clients: bool,
    /// RESP and HTTP speak TLS to clients (`redis-cli --tls --cacert`,
    /// `https://`), with the node's certificate unless `client_cert` and
    /// `client_key` name another. Set by `--tls-clients`.
    pub clients: bool,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Client certificates: `none` (not asked), `optional` (verified when
    /// shown), `required` (refused in the handshake without one).
    pub client_auth: ClientAuthMode,
    /// The CAs client certificates must chain to; default the cluster CA
    /// file.
    pub client_ca: Option<PathBuf>,
    /// Folder holding `ca.pem`, `node.pem` and `node.key`; default
    /// `<data_dir>/certs`.
    pub dir: Option<PathBuf>,
    /// Override one file of `dir`: the trusted CAs (PEM, several during a
    /// rotation), the node's certificate, its key.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `mutual`: TLS only; `optional`: also accepts plaintext peers and
    /// falls back to plaintext when dialing one (the middle step of a
    /// rolling restart from `--insecure` to mutual TLS).
    pub cluster_mode: ClusterTlsMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterTlsMode {
    #[default]
    Mutual,
    Optional,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    #[default]
    None,
    Optional,
    Required,
}

impl TlsSection {
    /// The files of client TLS, when it is on.
    pub fn client_paths(
        &self,
        data_dir: &Path,
    ) -> Option<ringkv_cluster::net::client_tls::ClientTlsPaths> {
        use ringkv_cluster::net::client_tls::{ClientAuth, ClientTlsPaths};
        if !self.clients {
            return None;
        }
        let node = self.paths(data_dir);
        Some(ClientTlsPaths {
            cert: self.client_cert.clone().unwrap_or(node.cert),
            key: self.client_key.clone().unwrap_or(node.key),
            client_ca: self.client_ca.clone().unwrap_or(node.ca),
            auth: match self.client_auth {
                ClientAuthMode::None => ClientAuth::None,
                ClientAuthMode::Optional => ClientAuth::Optional,
                ClientAuthMode::Required => ClientAuth::Required,
            },
        })
    }

    /// The files to load for a node whose data is in `data_dir`.
    pub fn paths(&self, data_dir: &Path) -> ringkv_cluster::net::tls::TlsPaths {
        use ringkv_cluster::net::certs;
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| data_dir.join(certs::CERTS_DIR));
        ringkv_cluster::net::tls::TlsPaths {
            ca: self
                .ca
                .clone()
                .unwrap_or_else(|| dir.join(certs::CA_CERT_FILE)),
            cert: self
                .cert
                .clone()
                .unwrap_or_else(|| dir.join(certs::NODE_CERT_FILE)),
            key: self
                .key
                .clone()
                .unwrap_or_else(|| dir.join(certs::NODE_KEY_FILE)),
        }
    }
}

/// Testing hooks; all off by default and never for production.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugSection {
    /// Serves `/v1/debug/{partition,heal,skew}` over HTTP: peers can be
    /// blocked (both ways) and the wall clock skewed at run time. For the
    /// `ringkv prove` harness only.
    pub fault_injection: bool,
}

impl Default for ClusterSection {
    fn default() -> Self {
        let node = NodeConfig::default();
        Self {
            name: TransportConfig::default().cluster,
            dc_replication: std::collections::BTreeMap::new(),
            replication_factor: node.replication_factor,
            read: node.default_read.name(),
            write: node.default_write.name(),
            siblings_max: node.siblings_max,
            tombstone_grace_ms: node.tombstone_grace_ms,
            request_timeout_ms: node.request_timeout_ms,
            gossip_interval_ms: node.membership.gossip_interval_ms,
            phi_convict: node.membership.phi_convict,
            tokens_per_weight: node.membership.tokens_per_weight,
            join_timeout_ms: node.join_timeout_ms,
            strict_quorum: node.strict_quorum,
        }
    }
}

impl Config {
    /// Reads a TOML file; missing keys take their defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Protected mode: RESP and HTTP listen beyond loopback only with
    /// client TLS and users (`users`: a users file is set), or when told
    /// their traffic may be plaintext and open (`--insecure` or
    /// `tls.insecure_clients`), as Redis and CockroachDB refuse to.
    pub fn check_protected_mode(&self, users: bool) -> anyhow::Result<()> {
        if self.tls.insecure || self.tls.insecure_clients {
            return Ok(());
        }
        let missing = match (self.tls.clients, users) {
            (true, true) => return Ok(()),
            (false, false) => "client TLS and users",
            (false, true) => "client TLS",
            (true, false) => "users",
        };
        for (what, addr) in [("RESP", self.node.resp_addr), ("HTTP", self.node.http_addr)] {
            if !addr.ip().is_loopback() {
                bail!(
                    "protected mode: {what} would listen on {addr}, beyond loopback, without \
                     {missing}: anyone on the network could read or write every key, or see \
                     passwords and data in plaintext. Listen on 127.0.0.1, or turn on client \
                     TLS ([tls] clients = true or --tls-clients) and users ([auth] users_file \
                     or RINGKV_USERS_FILE), or accept open clients on a trusted network with \
                     [tls] insecure_clients = true (or --insecure); see SECURITY.md"
                );
            }
        }
        Ok(())
    }

    /// Checks what serde cannot: relations between settings.
    pub fn validate(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        if l.key_bytes_max == 0 || l.value_bytes_max == 0 {
            bail!("limits.key_bytes_max and limits.value_bytes_max must be positive");
        }
        if l.bulk_bytes_max < l.value_bytes_max.max(l.key_bytes_max) {
            bail!(
                "limits.bulk_bytes_max ({}) must be at least limits.value_bytes_max ({})",
                l.bulk_bytes_max,
                l.value_bytes_max
            );
        }
        if l.input_buffer_bytes_max < l.bulk_bytes_max {
            bail!("limits.input_buffer_bytes_max must be at least limits.bulk_bytes_max");
        }
        ringkv_cluster::replica::TypeLimits {
            set_members_max: l.set_members_max,
            hash_fields_max: l.hash_fields_max,
            counter_entries_max: l.counter_entries_max,
            record_bytes_max: l.value_bytes_max,
        }
        .check()
        .map_err(anyhow::Error::msg)?;
        if l.http_connections_max == 0
            || l.http_header_timeout_ms == 0
            || l.http_request_timeout_ms == 0
        {
            bail!("limits.http_connections_max and the HTTP timeouts must be positive");
        }
        if l.cluster_handshakes_max == 0 || l.cluster_handshake_timeout_ms == 0 {
            bail!(
                "limits.cluster_handshakes_max and limits.cluster_handshake_timeout_ms must be positive"
            );
        }
        if l.connections_max == 0 || l.args_max == 0 {
            bail!("limits.connections_max and limits.args_max must be positive");
        }
        let c = &self.cluster;
        if c.replication_factor == 0 {
            bail!("cluster.replication_factor must be at least 1");
        }
        for (name, level) in [("cluster.read", &c.read), ("cluster.write", &c.write)] {
            if ringkv_cluster::Consistency::parse(level).is_none() {
                bail!("{name}: unknown consistency level {level:?}");
            }
        }
        if self.node.cluster_addr.ip().is_unspecified() && self.node.advertise_addr.is_none() {
            bail!(
                "node.cluster_addr {} is a wildcard: peers cannot dial it; set node.advertise_addr \
                 (--advertise-addr) to the address they reach this node at",
                self.node.cluster_addr
            );
        }
        if let Some(a) = &self.node.advertise_addr
            && let Err(why) = ringkv_cluster::membership::check_addr(a)
        {
            bail!("node.advertise_addr {a:?}: {why}");
        }
        if !(1..=64).contains(&self.node.weight) {
            bail!("node.weight must be between 1 and 64");
        }
        if self.diagnostics.slowlog_max_len > crate::server::SLOWLOG_LEN_MAX {
            bail!(
                "diagnostics.slowlog_max_len must be at most {}",
                crate::server::SLOWLOG_LEN_MAX
            );
        }
        if c.gossip_interval_ms == 0 || c.request_timeout_ms == 0 || c.tokens_per_weight == 0 {
            bail!(
                "cluster.gossip_interval_ms, request_timeout_ms and tokens_per_weight must be positive"
            );
        }
        let tokens = self.node.weight as usize * c.tokens_per_weight;
        let max = ringkv_cluster::ring::TOKENS_PER_NODE_MAX;
        if tokens > max {
            bail!(
                "node.weight x cluster.tokens_per_weight is {tokens} tokens; a node holds at most {max}"
            );
        }
        if c.phi_convict <= 0.0 {
            bail!("cluster.phi_convict must be positive");
        }
        // A hint that outlived the grace period could deliver a value whose
        // tombstone is already purged.
        if self.hints.age_ms_max >= c.tombstone_grace_ms {
            bail!("hints.age_ms_max must be below cluster.tombstone_grace_ms");
        }
        if self.storage.sync == SyncMode::Periodic && self.storage.sync_interval_ms == 0 {
            bail!("storage.sync_interval_ms must be positive with periodic sync");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert!(c.node.resp_addr.ip().is_loopback());
        assert!(c.node.http_addr.ip().is_loopback());
        assert!(c.node.cluster_addr.ip().is_loopback());
    }

    #[test]
    fn data_type_limits_are_bounded_by_what_records_decode() {
        for (setting, ok) in [
            ("set_members_max = 0", false),
            ("set_members_max = 1", true),
            ("set_members_max = 524288", true),
            ("set_members_max = 524289", false),
            ("hash_fields_max = 0", false),
            ("counter_entries_max = 32768", true),
            ("counter_entries_max = 32769", false),
        ] {
            let c: Config = toml::from_str(&format!("[limits]\n{setting}\n")).expect("parse");
            assert_eq!(c.validate().is_ok(), ok, "{setting}");
        }
    }

    #[test]
    fn file_overrides_defaults_and_typos_are_errors() {
        let c: Config =
            toml::from_str("[limits]\nvalue_bytes_max = 10\n[storage]\nsync = \"always\"\n")
                .expect("parse");
        assert_eq!(c.limits.value_bytes_max, 10);
        assert_eq!(c.limits.key_bytes_max, 1024);
        assert_eq!(c.storage.sync, SyncMode::Always);
        let err = toml::from_str::<Config>("[limits]\nvalue_bytes_mx = 10\n");
        assert!(err.is_err(), "unknown key must be refused");
    }

    #[test]
    fn bad_relations_are_refused() {
        let mut c = Config::default();
        c.cluster.read = "MOST".into();
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.limits.bulk_bytes_max = 10;
        assert!(c.validate().is_err());
        // More tokens than a node may hold.
        let mut c = Config::default();
        c.node.weight = 64;
        assert!(c.validate().is_ok(), "weight 64 at 64 tokens a weight");
        c.cluster.tokens_per_weight = 65;
        let err = c.validate().expect_err("4160 tokens");
        assert!(err.to_string().contains("at most 4096"), "{err}");
        // Protected mode.
        let mut c = Config::default();
        c.node.resp_addr = "0.0.0.0:7379".parse().expect("addr");
        let err = c
            .check_protected_mode(false)
            .expect_err("a wildcard RESP bind");
        assert!(err.to_string().contains("protected mode"), "{err}");
        assert!(
            err.to_string().contains("without client TLS and users"),
            "{err}"
        );
        let err = c.check_protected_mode(true).expect_err("users without TLS");
        assert!(err.to_string().contains("without client TLS:"), "{err}");
        c.tls.clients = true;
        let err = c
            .check_protected_mode(false)
            .expect_err("TLS without users");
        assert!(err.to_string().contains("without users"), "{err}");
        c.check_protected_mode(true).expect("TLS and users");
        c.tls.clients = false;
        c.tls.insecure_clients = true;
        c.check_protected_mode(false).expect("told to allow it");
        let mut c = Config::default();
        c.node.http_addr = "10.1.2.3:7380".parse().expect("addr");
        assert!(c.check_protected_mode(false).is_err());
        c.tls.insecure = true;
        c.check_protected_mode(false).expect("--insecure");
        Config::default()
            .check_protected_mode(false)
            .expect("loopback");
        // A wildcard cluster address needs an address to advertise.
        let mut c = Config::default();
        c.node.cluster_addr = "0.0.0.0:7381".parse().expect("addr");
        let err = c.validate().expect_err("wildcard without advertise_addr");
        assert!(err.to_string().contains("advertise_addr"), "{err}");
        c.node.advertise_addr = Some("0.0.0.0:7381".into());
        assert!(c.validate().is_err(), "a wildcard advertised");
        c.node.advertise_addr = Some("db1.example.com:7381".into());
        c.validate().expect("a name peers can dial");
    }
}
