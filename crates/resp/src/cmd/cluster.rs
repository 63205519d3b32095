//! `CLUSTER`, `READONLY`, `READWRITE`, `ASKING`: enough of Redis Cluster
//! for cluster clients (redis-py's `RedisCluster`, go-redis's
//! `ClusterClient`, Lettuce, Jedis) to connect and stay connected.
//!
//! Any ringkv node serves any key, so no client ever needs a redirect. The
//! view a node gives is: **itself the primary of all 16384 slots, every
//! other live node its replica.** Consequences:
//! - a cluster client sends its commands to the node it bootstrapped from,
//!   as a plain client would; clients bootstrapped from different nodes
//!   spread over the cluster, and clients that read from replicas
//!   (`READONLY`) spread their reads over every node;
//! - commands a cluster client sends to every primary (`DBSIZE`, `KEYS`,
//!   `SCAN`, `FLUSHALL`) reach one node, once: their answers are those of
//!   one plain connection, never multiplied by the number of nodes;
//! - when that node goes down, the client asks another node for the
//!   topology, which names itself primary: the client moves there.
//!
//! The view follows the cluster as this node sees it: replicas are the
//! nodes it believes alive and serving (NORMAL), at their RESP addresses
//! (a node bound to all interfaces is named by the host of its advertised
//! cluster address; this node by the address the client reached).
//!
//! Subcommands: `SLOTS`, `SHARDS`, `NODES`, `INFO`, `MYID`, `KEYSLOT`,
//! `HELP`. Those that would change the topology (`ADDSLOTS`, `MEET`,
//! `FAILOVER`, ...) are refused: ringkv places keys on its own ring
//! (`ringkv decommission`, `remove`, new nodes join by `--seeds`). Node
//! ids are ringkv's 16 hex digits, zero-padded to Redis's 40.

use std::net::SocketAddr;

use bytes::Bytes;
use ringkv_cluster::Kv;
use ringkv_cluster::api::{NodeStatus, NodeView};

use crate::cmd::Ctx;
use crate::error::{CommandError, lossy};
use crate::frame::Frame;
use crate::parse::is;

/// Redis Cluster's hash slots.
pub const SLOTS: u16 = 16384;

/// A node as the view shows it.
struct Shown {
    id: String,
    ip: String,
    port: u16,
    alive: bool,
    myself: bool,
}

/// Redis's 40-character node id for a ringkv id.
fn node_id(id: u64) -> String {
    format!("{id:040x}")
}

/// `ip`, `port` of a peer's RESP address; a wildcard host is replaced by
/// the host of its cluster address.
fn peer_endpoint(n: &NodeView) -> Option<(String, u16)> {
    let resp: SocketAddr = n.resp_addr.parse().ok()?;
    let ip = if resp.ip().is_unspecified() {
        n.cluster_addr
            .rsplit_once(':')
            .map(|(host, _)| host.trim_matches(['[', ']']).to_string())?
    } else {
        resp.ip().to_string()
    };
    Some((ip, resp.port()))
}

/// This node first, then the other serving nodes by id (the down ones
/// too when `with_down`).
fn view<K: Kv>(ctx: &Ctx<'_, K>, with_down: bool) -> Vec<Shown> {
    let cluster = ctx.kv.cluster();
    let local = ctx.session.local;
    let mut shown = vec![Shown {
        id: node_id(cluster.self_id),
        ip: local.ip().to_string(),
        port: local.port(),
        alive: true,
        myself: true,
    }];
    let mut peers: Vec<&NodeView> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != cluster.self_id && n.status == NodeStatus::Normal)
        .filter(|n| with_down || n.alive)
        .collect();
    peers.sort_by_key(|n| n.id);
    for n in peers {
        if let Some((ip, port)) = peer_endpoint(n) {
            shown.push(Shown {
                id: node_id(n.id),
                ip,
                port,
                alive: n.alive,
                myself: false,
            });
        }
    }
    shown
}

pub(crate) fn cluster<K: Kv>(ctx: &mut Ctx<'_, K>, args: &[Bytes]) -> Result<Frame, CommandError> {
    let sub = args.get(1).ok_or(CommandError::Syntax)?;
    let rest = args.len() - 2;
    let arity = |name: &str, n: usize| {
        if rest == n {
            Ok(())
        } else {
            Err(CommandError::WrongArity(format!("cluster|{name}")))
        }
    };
    if is(sub, "SLOTS") {
        arity("slots", 0)?;
        let nodes = view(ctx, false);
        let mut range = vec![Frame::Integer(0), Frame::Integer(i64::from(SLOTS - 1))];
        range.extend(nodes.iter().map(|n| {
            Frame::Array(vec![
                Frame::bulk_string(n.ip.clone()),
                Frame::Integer(i64::from(n.port)),
                Frame::bulk_string(n.id.clone()),
            ])
        }));
        Ok(Frame::Array(vec![Frame::Array(range)]))
    } else if is(sub, "SHARDS") {
        arity("shards", 0)?;
        let nodes = view(ctx, true)
            .into_iter()
            .map(|n| {
                Frame::Map(vec![
                    (Frame::bulk_static("id"), Frame::bulk_string(n.id)),
                    (
                        Frame::bulk_static("port"),
                        Frame::Integer(i64::from(n.port)),
                    ),
                    (Frame::bulk_static("ip"), Frame::bulk_string(n.ip.clone())),
                    (Frame::bulk_static("endpoint"), Frame::bulk_string(n.ip)),
                    (
                        Frame::bulk_static("role"),
                        Frame::bulk_static(if n.myself { "master" } else { "replica" }),
                    ),
                    (Frame::bulk_static("replication-offset"), Frame::Integer(0)),
                    (
                        Frame::bulk_static("health"),
                        Frame::bulk_static(if n.alive { "online" } else { "failed" }),
                    ),
                ])
            })
            .collect();
        Ok(Frame::Array(vec![Frame::Map(vec![
            (
                Frame::bulk_static("slots"),
                Frame::Array(vec![
                    Frame::Integer(0),
                    Frame::Integer(i64::from(SLOTS - 1)),
                ]),
            ),
            (Frame::bulk_static("nodes"), Frame::Array(nodes)),
        ])]))
    } else if is(sub, "NODES") {
        arity("nodes", 0)?;
        let nodes = view(ctx, true);
        let me = nodes.first().map(|n| n.id.clone()).unwrap_or_default();
        let mut text = String::new();
        for n in &nodes {
            let flags = match (n.myself, n.alive) {
                (true, _) => "myself,master",
                (false, true) => "slave",
                (false, false) => "slave,fail",
            };
            let primary = if n.myself { "-" } else { me.as_str() };
            let link = if n.alive { "connected" } else { "disconnected" };
            let slots = if n.myself { " 0-16383" } else { "" };
            // `ip:port@cport`: the bus port is not Redis's; shown as 0.
            text.push_str(&format!(
                "{} {}:{}@0 {flags} {primary} 0 0 1 {link}{slots}\n",
                n.id, n.ip, n.port
            ));
        }
        Ok(Frame::Bulk(Bytes::from(text)))
    } else if is(sub, "INFO") {
        arity("info", 0)?;
        let known = view(ctx, true).len();
        let text = format!(
            "cluster_state:ok\r\ncluster_slots_assigned:{SLOTS}\r\ncluster_slots_ok:{SLOTS}\r\n\
             cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{known}\r\n\
             cluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n\
             cluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\n\
             total_cluster_links_buffer_limit_exceeded:0\r\n"
        );
        Ok(Frame::Bulk(Bytes::from(text)))
    } else if is(sub, "MYID") {
        arity("myid", 0)?;
        Ok(Frame::bulk_string(node_id(ctx.kv.cluster().self_id)))
    } else if is(sub, "KEYSLOT") {
        arity("keyslot", 1)?;
        Ok(Frame::Integer(i64::from(key_slot(&args[2]))))
    } else if is(sub, "HELP") {
        Ok(Frame::Array(
            [
                "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "INFO",
                "    Return information about the cluster.",
                "KEYSLOT <key>",
                "    Return the hash slot for <key>.",
                "MYID",
                "    Return the node id.",
                "NODES",
                "    Return cluster configuration seen by node. Output format:",
                "    <id> <ip:port@bus-port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
                "SHARDS",
                "    Return information about slot range mappings and the nodes associated with them.",
                "SLOTS",
                "    Return information about slots range mappings. Each range is made of:",
                "    start, end, master and replicas IP addresses, ports and ids",
                "HELP",
                "    Prints this help.",
            ]
            .iter()
            .map(|l| Frame::Simple(Bytes::from_static(l.as_bytes())))
            .collect(),
        ))
    } else if [
        "ADDSLOTS",
        "ADDSLOTSRANGE",
        "DELSLOTS",
        "DELSLOTSRANGE",
        "FLUSHSLOTS",
        "SETSLOT",
        "MEET",
        "FORGET",
        "REPLICATE",
        "FAILOVER",
        "RESET",
        "SAVECONFIG",
        "BUMPEPOCH",
        "SET-CONFIG-EPOCH",
    ]
    .iter()
    .any(|name| is(sub, name))
    {
        Err(CommandError::Unsupported {
            command: format!("CLUSTER {}", lossy(sub).to_ascii_uppercase()),
            why: "ringkv places keys on its own ring; nodes join with --seeds and leave with \
                  `ringkv decommission` or `ringkv remove`",
        })
    } else if ["COUNTKEYSINSLOT", "GETKEYSINSLOT"]
        .iter()
        .any(|name| is(sub, name))
    {
        Err(CommandError::Unsupported {
            command: format!("CLUSTER {}", lossy(sub).to_ascii_uppercase()),
            why: "keys are not kept by hash slot; every node serves every key",
        })
    } else {
        Err(CommandError::UnknownSubcommand {
            command: "CLUSTER",
            sub: lossy(sub),
        })
    }
}

/// `READONLY`, `READWRITE`, `ASKING`: accepted; every node serves reads
/// and writes of every key.
pub(crate) fn accepted() -> Result<Frame, CommandError> {
    Ok(Frame::ok())
}

/// Redis Cluster's hash slot of `key`: CRC16 (XMODEM) of the key, or of
/// its hash tag (the bytes between the first `{` and the next `}`, when
/// not empty), modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

/// CRC16-CCITT (XMODEM): polynomial 0x1021, initial 0, as Redis Cluster.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis_cluster() {
        // Figures from redis-server 7.0 (CLUSTER KEYSLOT) and the spec.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"foo{}{bar}"),
            "empty tag: whole key"
        );
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn ids_are_forty_hex_digits() {
        assert_eq!(node_id(0xabc).len(), 40);
        assert!(node_id(0xabc).ends_with("0abc"));
    }
}
