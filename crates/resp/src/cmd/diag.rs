//! `SLOWLOG` and `LATENCY`: the node's slow log and latency monitor (see
//! `ringkv_cluster::slowlog`), with Redis's replies and errors.
//!
//! - `SLOWLOG GET [count]` (10 by default, -1 for all): newest first, each
//!   entry `[id, unix time, microseconds, [args...], "ip:port", name]`.
//!   How long the request waited for each replica is in `GET /v1/slowlog`.
//! - `SLOWLOG LEN`, `SLOWLOG RESET`, `SLOWLOG HELP`.
//! - `LATENCY LATEST`: `[event, unix time, latest ms, max ms]` per event
//!   (`command`: a whole command; `replica-wait`: the longest wait for one
//!   replica in a command). `LATENCY HISTORY event`: `[unix time, ms]`
//!   pairs. `LATENCY RESET [event ...]`: how many events were reset.
//!   `LATENCY HELP`. The threshold is `latency_threshold_ms`.

use std::time::Duration;

use bytes::Bytes;
use ringkv_cluster::Kv;

use crate::cmd::{Cmd, Ctx};
use crate::error::{CommandError, lossy};
use crate::frame::Frame;
use crate::parse::is;

/// Entries `SLOWLOG GET` answers without a count.
const SLOWLOG_GET_DEFAULT: usize = 10;

fn help(lines: &[&'static str]) -> Frame {
    Frame::Array(
        lines
            .iter()
            .map(|l| Frame::Simple(Bytes::from_static(l.as_bytes())))
            .collect(),
    )
}

pub(crate) fn slowlog<K: Kv>(ctx: &mut Ctx<'_, K>, args: &[Bytes]) -> Result<Frame, CommandError> {
    let sub = args.get(1).ok_or(CommandError::Syntax)?;
    let rest = args.len() - 2;
    let log = ctx.shared.slow_log.as_ref();
    let arity = |name: &str| CommandError::WrongArity(format!("slowlog|{name}"));
    if is(sub, "GET") && rest <= 1 {
        let count = match args.get(2) {
            None => Some(SLOWLOG_GET_DEFAULT),
            Some(n) => match lossy(n).parse::<i64>() {
                Ok(-1) => None,
                Ok(n) if n >= 0 => Some(n as usize),
                _ => {
                    return Err(CommandError::Invalid(
                        "count should be greater than or equal to -1".into(),
                    ));
                }
            },
        };
        let entries = log.map(|l| l.get(count)).unwrap_or_default();
        Ok(Frame::Array(
            entries
                .into_iter()
                .map(|e| {
                    Frame::Array(vec![
                        Frame::Integer(e.id as i64),
                        Frame::Integer(e.started_unix_s as i64),
                        Frame::Integer(e.duration_us.min(i64::MAX as u64) as i64),
                        Frame::Array(e.args.into_iter().map(Frame::Bulk).collect()),
                        Frame::Bulk(Bytes::from(e.client_addr)),
                        Frame::Bulk(Bytes::from(e.client_name)),
                    ])
                })
                .collect(),
        ))
    } else if is(sub, "GET") {
        Err(CommandError::Invalid(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
            lossy(sub)
        )))
    } else if is(sub, "LEN") {
        if rest != 0 {
            return Err(arity("len"));
        }
        Ok(Frame::Integer(log.map_or(0, |l| l.len()) as i64))
    } else if is(sub, "RESET") {
        if rest != 0 {
            return Err(arity("reset"));
        }
        if let Some(l) = log {
            l.reset();
        }
        Ok(Frame::ok())
    } else if is(sub, "HELP") {
        Ok(help(&[
            "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of:",
            "    id, timestamp, time in microseconds, arguments array, client IP and port,",
            "    client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
            "HELP",
            "    Prints this help.",
        ]))
    } else {
        Err(CommandError::UnknownSubcommand {
            command: "SLOWLOG",
            sub: lossy(sub),
        })
    }
}

pub(crate) fn latency<K: Kv>(ctx: &mut Ctx<'_, K>, args: &[Bytes]) -> Result<Frame, CommandError> {
    let sub = args.get(1).ok_or(CommandError::Syntax)?;
    let rest = &args[2..];
    let log = ctx.shared.slow_log.as_ref();
    let arity = |name: &str| CommandError::WrongArity(format!("latency|{name}"));
    if is(sub, "LATEST") {
        if !rest.is_empty() {
            return Err(arity("latest"));
        }
        let events = log.map(|l| l.latency_latest()).unwrap_or_default();
        Ok(Frame::Array(
            events
                .into_iter()
                .map(|e| {
                    Frame::Array(vec![
                        Frame::bulk_static(e.name),
                        Frame::Integer(e.latest_unix_s as i64),
                        Frame::Integer(e.latest_ms as i64),
                        Frame::Integer(e.max_ms as i64),
                    ])
                })
                .collect(),
        ))
    } else if is(sub, "HISTORY") {
        if rest.len() != 1 {
            return Err(arity("history"));
        }
        let event = lossy(&rest[0]);
        let samples = log.map(|l| l.latency_history(&event)).unwrap_or_default();
        Ok(Frame::Array(
            samples
                .into_iter()
                .map(|(at, ms)| {
                    Frame::Array(vec![Frame::Integer(at as i64), Frame::Integer(ms as i64)])
                })
                .collect(),
        ))
    } else if is(sub, "RESET") {
        let names: Vec<String> = rest.iter().map(|e| lossy(e)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(Frame::Integer(
            log.map_or(0, |l| l.latency_reset(&names)) as i64
        ))
    } else if is(sub, "HELP") {
        Ok(help(&[
            "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HELP",
            "    Prints this help.",
        ]))
    } else {
        Err(CommandError::UnknownSubcommand {
            command: "LATENCY",
            sub: lossy(sub),
        })
    }
}

/// After a command ran for `elapsed`: into the slow log when slow, and
/// into the latency monitor when over its threshold.
pub(crate) fn note_command<K: Kv>(ctx: &Ctx<'_, K>, cmd: Cmd, args: &[Bytes], elapsed: Duration) {
    let Some(log) = ctx.shared.slow_log.as_ref() else {
        return;
    };
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let slow = log.is_slow(us);
    let threshold_ms = log.config().latency_threshold_ms;
    let spike = threshold_ms > 0 && us / 1000 >= threshold_ms;
    if !slow && !spike {
        return;
    }
    let now_s = ctx.kv.now_ms() / 1000;
    let waits = ringkv_cluster::slowlog::replica_waits();
    if spike {
        log.latency_sample("command", now_s, us / 1000);
        if let Some(longest) = waits.iter().map(|w| w.wait_us).max() {
            log.latency_sample("replica-wait", now_s, longest / 1000);
        }
    }
    if slow {
        let started_s = ctx.kv.now_ms().saturating_sub(us / 1000) / 1000;
        let name = ctx
            .session
            .name
            .as_ref()
            .map(|n| lossy(n))
            .unwrap_or_default();
        log.record(
            started_s,
            us,
            &redacted(cmd, args),
            ctx.session.peer.to_string(),
            name,
            waits,
        );
    }
}

/// The arguments a slow log may show: secrets are replaced, as Redis does.
fn redacted(cmd: Cmd, args: &[Bytes]) -> Vec<Bytes> {
    const REDACTED: Bytes = Bytes::from_static(b"(redacted)");
    match cmd {
        Cmd::Auth => std::iter::once(args[0].clone())
            .chain(args[1..].iter().map(|_| REDACTED))
            .collect(),
        Cmd::Hello => {
            let mut out = args.to_vec();
            if let Some(at) = out.iter().position(|a| is(a, "AUTH")) {
                for a in out.iter_mut().skip(at + 1).take(2) {
                    *a = REDACTED;
                }
            }
            out
        }
        _ => args.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_slow_log() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(
            redacted(Cmd::Auth, &[b("AUTH"), b("alice"), b("secret")]),
            vec![b("AUTH"), b("(redacted)"), b("(redacted)")]
        );
        assert_eq!(
            redacted(
                Cmd::Hello,
                &[
                    b("HELLO"),
                    b("3"),
                    b("auth"),
                    b("alice"),
                    b("pw"),
                    b("SETNAME"),
                    b("n")
                ]
            ),
            vec![
                b("HELLO"),
                b("3"),
                b("auth"),
                b("(redacted)"),
                b("(redacted)"),
                b("SETNAME"),
                b("n")
            ]
        );
        assert_eq!(
            redacted(Cmd::Get, &[b("GET"), b("k")]),
            vec![b("GET"), b("k")]
        );
    }
}
