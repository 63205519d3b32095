//! Server commands: DBSIZE, INFO, CONFIG GET, TIME.
//!
//! - `DBSIZE`: the live keys of the whole cluster: the sum of every
//!   node's last key census (the others' as they last gossiped it; a pass
//!   runs every few seconds) divided by the replicas each key has, the same
//!   figure as INFO's keyspace line and `ringkv status`. Exact on a
//!   single node; on a cluster an estimate, exact once every replica holds
//!   what it should and each census is newer than the last write (they run
//!   every few seconds). A Redis Cluster client that sends it to every
//!   primary reaches one node (see `cmd::cluster`), so it is not multiplied.
//! - `INFO [section ...]`: `key:value` lines under `# Section` headings, as
//!   Redis prints them. Sections: `server`, `clients`, `memory` (the
//!   process's resident memory as `used_memory`, with the memtables', block
//!   cache's and table indexes' shares), `persistence` (the commit log as an
//!   append-only file; `aof_last_write_status:err` once a failed write to
//!   disk made the node refuse writes), `stats`, `replication` (every node is
//!   a primary), `cpu`, `commandstats` (calls, time, failed and rejected
//!   calls per command), `errorstats` (error replies by code), `cluster`,
//!   `keyspace` (the cluster's live keys as DBSIZE counts them, as of the
//!   last censuses; the share that expires and their mean TTL as this
//!   node's census saw them) and `ringkv` (node id, this node's own keys,
//!   replication factor, default consistency levels, storage figures). No
//!   argument and `default` print all but `commandstats`, as Redis does;
//!   `all` and `everything` print them all; unknown sections print nothing.
//! - `CONFIG GET pattern [pattern ...]`: the few settings that exist in
//!   Redis' vocabulary (`maxclients`, `timeout`, `proto-max-bulk-len`,
//!   `client-query-buffer-limit`, `databases`, `save`, `appendonly`),
//!   matched by glob; a map in RESP3, a flat array in RESP2. Tools such as
//!   redis-benchmark read `save` and `appendonly`. `CONFIG SET` and the rest
//!   are refused: ringkv is configured by its file and flags.
//! - `TIME`: the node's wall clock as `[seconds, microseconds]`.

use std::fmt::Write as _;

use bytes::Bytes;
use ringkv_cluster::Kv;

use crate::cmd::Ctx;
use crate::cmd::connection::REDIS_VERSION;
use crate::error::{CommandError, lossy};
use crate::frame::Frame;
use crate::parse::{Args, is};

pub(crate) async fn dbsize<K: Kv>(ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
    let n = ctx.kv.cluster_keys().await?.keys;
    Ok(Frame::Integer(n.min(i64::MAX as u64) as i64))
}

/// `FLUSHALL [ASYNC|SYNC]` and `FLUSHDB [ASYNC|SYNC]`: a truncation of the
/// whole cluster (see `ringkv_cluster::truncate`). Both modes answer once
/// every node has recorded the truncation point (nothing older is read
/// again from then on); the space is reclaimed in the background. A Redis
/// Cluster client sends it to every primary, and this node names itself
/// the only one: one truncation.
pub(crate) async fn flushall<K: Kv>(
    ctx: &mut Ctx<'_, K>,
    args: &[Bytes],
) -> Result<Frame, CommandError> {
    match args.get(1..).unwrap_or_default() {
        [] => {}
        [mode] if is(mode, "ASYNC") || is(mode, "SYNC") => {}
        _ => return Err(CommandError::Syntax),
    }
    ctx.kv.truncate().await?;
    Ok(Frame::ok())
}

pub(crate) fn time<K: Kv>(ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
    let now_ms = ctx.kv.now_ms();
    Ok(Frame::Array(vec![
        Frame::bulk_string((now_ms / 1000).to_string()),
        Frame::bulk_string(((now_ms % 1000) * 1000).to_string()),
    ]))
}

const SECTIONS: [&str; 12] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "commandstats",
    "errorstats",
    "cluster",
    "keyspace",
    "ringkv",
];

/// Sections left out of a plain `INFO` (and `INFO default`), as in Redis.
const NOT_DEFAULT: [&str; 1] = ["commandstats"];

pub(crate) fn info<K: Kv>(ctx: &mut Ctx<'_, K>, mut args: Args<'_>) -> Result<Frame, CommandError> {
    let mut wanted = [false; SECTIONS.len()];
    let default = SECTIONS.map(|name| !NOT_DEFAULT.contains(&name));
    if args.is_empty() {
        wanted = default;
    }
    while let Some(word) = args.next() {
        if is(word, "all") || is(word, "everything") {
            wanted = [true; SECTIONS.len()];
        }
        if is(word, "default") {
            for (w, d) in wanted.iter_mut().zip(default) {
                *w |= d;
            }
        }
        for (i, name) in SECTIONS.iter().enumerate() {
            if is(word, name) {
                wanted[i] = true;
            }
        }
    }
    let mut out = String::with_capacity(1024);
    for (i, name) in SECTIONS.iter().enumerate() {
        if !wanted[i] {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        section(ctx, name, &mut out);
    }
    Ok(Frame::Bulk(Bytes::from(out)))
}

/// Appends one `key:value` line.
fn line(out: &mut String, key: &str, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{key}:{value}\r\n");
}

fn section<K: Kv>(ctx: &Ctx<'_, K>, name: &str, out: &mut String) {
    let shared = ctx.shared;
    let stats = shared.stats.snapshot();
    match name {
        "server" => {
            let uptime_s = shared.started.elapsed().as_secs();
            out.push_str("# Server\r\n");
            line(out, "redis_version", REDIS_VERSION);
            line(out, "ringkv_version", ctx.kv.info().version);
            // Cluster commands answer (see `cmd::cluster`): as Redis in cluster mode.
            line(out, "redis_mode", "cluster");
            line(out, "os", std::env::consts::OS);
            line(out, "arch_bits", usize::BITS);
            line(out, "process_id", std::process::id());
            line(out, "tcp_port", shared.port);
            line(out, "uptime_in_seconds", uptime_s);
            line(out, "uptime_in_days", uptime_s / 86_400);
        }
        "clients" => {
            out.push_str("# Clients\r\n");
            line(out, "connected_clients", stats.connected_clients);
            line(out, "maxclients", shared.config.connections_max);
            line(out, "blocked_clients", 0);
        }
        "stats" => {
            out.push_str("# Stats\r\n");
            line(
                out,
                "total_connections_received",
                stats.total_connections_received,
            );
            line(
                out,
                "total_commands_processed",
                stats.total_commands_processed,
            );
            line(
                out,
                "instantaneous_ops_per_sec",
                stats.instantaneous_ops_per_sec,
            );
            line(out, "total_net_input_bytes", stats.total_net_input_bytes);
            line(out, "total_net_output_bytes", stats.total_net_output_bytes);
            line(out, "rejected_connections", stats.rejected_connections);
            line(out, "total_error_replies", stats.total_error_replies);
        }
        "memory" => {
            let process = ringkv_env::process::figures();
            let node = ctx.kv.info();
            let figure = |name: &str| node.storage_figure(name) as u64;
            let rss = process.resident_bytes.unwrap_or(0);
            let peak = process.resident_peak_bytes.unwrap_or(rss);
            out.push_str("# Memory\r\n");
            line(out, "used_memory", rss);
            line(out, "used_memory_human", human_bytes(rss));
            line(out, "used_memory_rss", rss);
            line(out, "used_memory_rss_human", human_bytes(rss));
            line(out, "used_memory_peak", peak);
            line(out, "used_memory_peak_human", human_bytes(peak));
            line(out, "maxmemory", 0);
            line(out, "maxmemory_human", "0B");
            line(out, "maxmemory_policy", "noeviction");
            line(out, "memtable_bytes", figure("memtable_bytes"));
            line(out, "block_cache_bytes", figure("block_cache_bytes"));
            line(out, "table_memory_bytes", figure("table_memory_bytes"));
        }
        "persistence" => {
            let node = ctx.kv.info();
            let figure = |name: &str| node.storage_figure(name) as u64;
            let failed = figure("read_only") != 0;
            out.push_str("# Persistence\r\n");
            line(out, "loading", 0);
            line(out, "async_loading", 0);
            line(out, "rdb_bgsave_in_progress", 0);
            line(out, "aof_enabled", 1);
            line(out, "aof_rewrite_in_progress", 0);
            line(
                out,
                "aof_last_write_status",
                if failed { "err" } else { "ok" },
            );
            line(out, "aof_current_size", figure("log_bytes"));
            line(out, "disk_bytes", figure("disk_bytes"));
        }
        "replication" => {
            out.push_str("# Replication\r\n");
            line(out, "role", "master");
            line(out, "connected_slaves", 0);
        }
        "cpu" => {
            let process = ringkv_env::process::figures();
            out.push_str("# CPU\r\n");
            line(
                out,
                "used_cpu_sys",
                format_args!("{:.6}", process.cpu_system_seconds.unwrap_or(0.0)),
            );
            line(
                out,
                "used_cpu_user",
                format_args!("{:.6}", process.cpu_user_seconds.unwrap_or(0.0)),
            );
        }
        "commandstats" => {
            out.push_str("# Commandstats\r\n");
            for c in shared.metrics.command_stats() {
                let per_call = if c.calls == 0 {
                    0.0
                } else {
                    c.usec as f64 / c.calls as f64
                };
                let _ = write!(
                    out,
                    "cmdstat_{}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}\r\n",
                    c.name, c.calls, c.usec, c.rejected_calls, c.failed_calls
                );
            }
        }
        "errorstats" => {
            out.push_str("# Errorstats\r\n");
            for (code, count) in shared.errors.snapshot() {
                let _ = write!(out, "errorstat_{code}:count={count}\r\n");
            }
        }
        "cluster" => {
            out.push_str("# Cluster\r\n");
            // CLUSTER SLOTS answers (see `cmd::cluster`).
            line(out, "cluster_enabled", 1);
        }
        "keyspace" => {
            out.push_str("# Keyspace\r\n");
            let node = ctx.kv.info();
            if let (Some(own), Some(cluster)) = (node.keys, node.cluster_keys)
                && cluster.keys > 0
            {
                // The cluster's keys (as DBSIZE); the share of them that
                // expire, and their mean TTL, as this node's census saw.
                let expires = if own.live == 0 {
                    0
                } else {
                    (u128::from(own.expiring) * u128::from(cluster.keys) / u128::from(own.live))
                        as u64
                };
                let _ = write!(
                    out,
                    "db0:keys={},expires={},avg_ttl={}\r\n",
                    cluster.keys,
                    expires.min(cluster.keys),
                    own.avg_ttl_ms
                );
            }
        }
        "ringkv" => {
            let node = ctx.kv.info();
            out.push_str("# Ringkv\r\n");
            line(out, "node_id", format_args!("{:016x}", node.node_id));
            line(out, "node_uptime_in_seconds", node.uptime_ms / 1000);
            line(out, "replication_factor", node.replication_factor);
            line(out, "default_read_consistency", &node.default_read);
            line(out, "default_write_consistency", &node.default_write);
            if let Some(keys) = node.keys {
                let age_s = ctx.kv.now_ms().saturating_sub(keys.counted_at_ms) / 1000;
                line(out, "keys", keys.live);
                line(out, "keys_counted_seconds_ago", age_s);
            }
            if let Some(c) = node.cluster_keys {
                line(out, "cluster_keys", c.keys);
                line(out, "cluster_keys_exact", u8::from(c.exact));
            }
            for f in &node.storage {
                line(out, &format!("storage_{}", f.name), f.display());
            }
        }
        _ => {}
    }
}

/// Bytes as Redis's `*_human` fields print them: `512B`, `1.50K`, `2.00M`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

/// Settings answered by `CONFIG GET`, in Redis' names.
fn config_values<K>(ctx: &Ctx<'_, K>) -> Vec<(&'static str, String)> {
    let c = &ctx.shared.config;
    let slow = ctx.shared.slow_log.as_ref().map(|l| l.config());
    vec![
        ("maxclients", c.connections_max.to_string()),
        ("timeout", (c.idle_timeout_ms / 1000).to_string()),
        ("proto-max-bulk-len", c.bulk_bytes_max.to_string()),
        (
            "client-query-buffer-limit",
            c.input_buffer_bytes_max.to_string(),
        ),
        ("databases", "1".into()),
        // No snapshots: every write goes to the commit log.
        ("save", String::new()),
        ("appendonly", "yes".into()),
        (
            "slowlog-log-slower-than",
            slow.map_or(-1, |c| c.slower_than_us).to_string(),
        ),
        ("slowlog-max-len", slow.map_or(0, |c| c.max_len).to_string()),
        (
            "latency-monitor-threshold",
            slow.map_or(0, |c| c.latency_threshold_ms).to_string(),
        ),
    ]
}

pub(crate) fn config<K>(ctx: &mut Ctx<'_, K>, args: &[Bytes]) -> Result<Frame, CommandError> {
    let sub = args.get(1).ok_or(CommandError::Syntax)?;
    if is(sub, "GET") {
        if args.len() < 3 {
            return Err(CommandError::WrongArity("config|get".into()));
        }
        let values = config_values(ctx);
        let mut pairs = Vec::new();
        for (name, value) in &values {
            if args[2..]
                .iter()
                .any(|pattern| crate::glob::matches(pattern, name.as_bytes(), true))
            {
                pairs.push((
                    Frame::bulk_static(name),
                    Frame::Bulk(Bytes::from(value.clone())),
                ));
            }
        }
        Ok(Frame::Map(pairs))
    } else if is(sub, "SET") || is(sub, "RESETSTAT") || is(sub, "REWRITE") {
        Err(CommandError::Unsupported {
            command: format!("CONFIG {}", lossy(sub).to_ascii_uppercase()),
            why: "ringkv is configured by its TOML file and command-line flags",
        })
    } else {
        Err(CommandError::UnknownSubcommand {
            command: "CONFIG",
            sub: lossy(sub),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_as_redis_prints_them() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.00M");
        assert_eq!(human_bytes(3 << 30), "3.00G");
    }
}
