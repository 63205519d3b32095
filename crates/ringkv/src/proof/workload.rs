//! Generators: the clients of a run. Each client is a thread with one RESP
//! connection (redis-rs, blocking, with timeouts) that invokes operations
//! drawn from a seeded generator and records each one in its own history.
//!
//! - Set: client `c` adds elements `c << 32 | n` for n = 0, 1, 2, ...; each
//!   element is its own key (`set:<element>`) holding [`set_value`]. Keys are
//!   independent in ringkv, so one key per element is the set.
//! - Register: client `c` is the only writer of its `keys_per_client` keys
//!   and writes each with a counter one above the last it sent
//!   (`c<counter>:<client>`), so "older" is decidable; every client reads any
//!   key with `RINGKV.GETALL` (every sibling).
//!
//! After any error the connection is dropped (a late answer must never be
//! paired with the next request) and the next attempt goes to the next node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringkv_env::{Rng, SeededRng};

use super::checker::set_value;
use super::history::{
    Op, OpKind, Outcome, RunClock, Seen, parse_register, register_key, register_value, set_key,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Set,
    Register,
}

/// One client's settings.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub id: u32,
    pub workload: Workload,
    pub nodes: Vec<SocketAddr>,
    pub seed: u64,
    pub clock: RunClock,
    pub until: Instant,
    pub keys_per_client: u32,
    pub clients: u32,
    /// Pause between two operations of this client.
    pub pace: Duration,
    /// Timeout of one request (and of connecting).
    pub op_timeout: Duration,
    /// Most operations this client records (bounds the history's memory).
    pub ops_max: usize,
    pub stop: Arc<AtomicBool>,
}

/// What one client did.
#[derive(Debug, Default)]
pub struct ClientResult {
    pub ops: Vec<Op>,
    /// Connection attempts that failed (no operation was sent).
    pub connect_failures: u64,
}

/// The values of a `RINGKV.GETALL` answer: RESP2 `[context, [values]]` or
/// RESP3 `{context, values}`.
pub fn getall_values(v: &redis::Value) -> Result<Vec<Vec<u8>>, String> {
    let values = match v {
        redis::Value::Array(parts) if parts.len() == 2 => &parts[1],
        redis::Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| {
                matches!(k, redis::Value::BulkString(b) if b == b"values")
                    || matches!(k, redis::Value::SimpleString(s) if s == "values")
            })
            .map(|(_, v)| v)
            .ok_or_else(|| "GETALL map without values".to_string())?,
        other => return Err(format!("unexpected GETALL answer {other:?}")),
    };
    match values {
        redis::Value::Array(items) | redis::Value::Set(items) => items
            .iter()
            .map(|item| match item {
                redis::Value::BulkString(b) => Ok(b.clone()),
                other => Err(format!("unexpected GETALL value {other:?}")),
            })
            .collect(),
        other => Err(format!("unexpected GETALL values {other:?}")),
    }
}

/// Reads every sibling of a register key.
pub fn read_register(con: &mut redis::Connection, key: u32) -> Result<Vec<Seen>, String> {
    let v: redis::Value = redis::cmd("RINGKV.GETALL")
        .arg(register_key(key))
        .query(con)
        .map_err(|e| e.to_string())?;
    Ok(getall_values(&v)?
        .iter()
        .map(|b| parse_register(b))
        .collect())
}

/// Runs one client until `until` or `stop`; returns its history.
pub fn run_client(spec: ClientSpec) -> ClientResult {
    let mut rng = SeededRng::new(spec.seed ^ (u64::from(spec.id) << 40) ^ 0x00C1_1E17);
    let mut out = ClientResult::default();
    let mut con: Option<redis::Connection> = None;
    let mut node = spec.id as usize;
    let mut next_element: u64 = 0;
    // Register: the last counter sent per owned key.
    let mut counters = vec![0u64; spec.keys_per_client as usize];
    while Instant::now() < spec.until
        && !spec.stop.load(Ordering::Relaxed)
        && out.ops.len() < spec.ops_max
    {
        let c = match con.as_mut() {
            Some(c) => c,
            None => {
                let addr = spec.nodes[node % spec.nodes.len()];
                match super::procs::connect_redis(addr, spec.op_timeout) {
                    Ok(c) => con.insert(c),
                    Err(_) => {
                        out.connect_failures += 1;
                        node += 1;
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
            }
        };
        let invoke_us = spec.clock.now_us();
        let (kind, result) = match spec.workload {
            Workload::Set => {
                let element = (u64::from(spec.id) << 32) | next_element;
                next_element += 1;
                let r: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(set_key(element))
                    .arg(set_value(element))
                    .query(c);
                (OpKind::Add { element }, r.map(|()| Vec::new()))
            }
            Workload::Register => {
                if rng.below(2) == 0 {
                    let j = rng.below(u64::from(spec.keys_per_client)) as usize;
                    counters[j] += 1;
                    let key = spec.id * spec.keys_per_client + j as u32;
                    let r: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(register_key(key))
                        .arg(register_value(counters[j], spec.id))
                        .query(c);
                    (
                        OpKind::Write {
                            key,
                            counter: counters[j],
                        },
                        r.map(|()| Vec::new()),
                    )
                } else {
                    let key = rng.below(u64::from(spec.keys_per_client * spec.clients)) as u32;
                    let r: redis::RedisResult<redis::Value> =
                        redis::cmd("RINGKV.GETALL").arg(register_key(key)).query(c);
                    let r = r.and_then(|v| {
                        getall_values(&v)
                            .map(|vals| vals.iter().map(|b| parse_register(b)).collect())
                            .map_err(|e| {
                                redis::RedisError::from((redis::ErrorKind::Client, "bad answer", e))
                            })
                    });
                    (OpKind::Read { key }, r)
                }
            }
        };
        let complete_us = spec.clock.now_us();
        let (outcome, seen, error) = match result {
            Ok(seen) => (Outcome::Ok, seen, None),
            Err(e) => {
                // A read has no effect; a write that may have been sent may
                // have landed.
                let outcome = match kind {
                    OpKind::Read { .. } => Outcome::Fail,
                    _ if e.is_connection_refusal() => Outcome::Fail,
                    _ => Outcome::Unknown,
                };
                con = None;
                node += 1;
                (outcome, Vec::new(), Some(e.to_string()))
            }
        };
        out.ops.push(Op {
            client: spec.id,
            kind,
            outcome,
            invoke_us,
            complete_us,
            seen,
            error,
        });
        std::thread::sleep(spec.pace);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getall_answers_parse_in_both_protocols() {
        use redis::Value;
        let resp2 = Value::Array(vec![
            Value::BulkString(b"ctx".to_vec()),
            Value::Array(vec![Value::BulkString(b"c1:0".to_vec())]),
        ]);
        assert_eq!(getall_values(&resp2), Ok(vec![b"c1:0".to_vec()]));
        let resp3 = Value::Map(vec![
            (
                Value::BulkString(b"context".to_vec()),
                Value::BulkString(b"x".to_vec()),
            ),
            (Value::BulkString(b"values".to_vec()), Value::Array(vec![])),
        ]);
        assert_eq!(getall_values(&resp3), Ok(vec![]));
        assert!(getall_values(&Value::Nil).is_err());
    }
}
