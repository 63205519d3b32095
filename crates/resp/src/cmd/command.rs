//! `COMMAND` and its subcommands, answered from the command table
//! ([`SPECS`]), so what the server says it runs is what it runs.
//!
//! - `COMMAND`: one entry per command in Redis 7's shape: name, arity,
//!   flags, first key, last key, step, ACL categories, tips, key specs,
//!   subcommands (the last three empty).
//! - `COMMAND COUNT`, `COMMAND LIST`, `COMMAND INFO [name ...]` (null for an
//!   unknown name).
//! - `COMMAND DOCS [name ...]`: a map of name to `summary`, `since`, `group`
//!   and an empty `arguments` list: enough for redis-cli, which asks on
//!   start, to carry on.

use bytes::Bytes;

use crate::cmd::{Cmd, Ctx, SPECS, Spec};
use crate::error::{CommandError, lossy};
use crate::frame::Frame;
use crate::parse::is;

pub(crate) fn command<K>(_ctx: &mut Ctx<'_, K>, args: &[Bytes]) -> Result<Frame, CommandError> {
    let Some(sub) = args.get(1) else {
        return Ok(Frame::Array(SPECS.iter().map(entry).collect()));
    };
    let names = &args[2..];
    if is(sub, "COUNT") {
        Ok(Frame::Integer(SPECS.len() as i64))
    } else if is(sub, "LIST") {
        Ok(Frame::Array(
            SPECS
                .iter()
                .map(|s| Frame::bulk_string(s.name.to_ascii_lowercase()))
                .collect(),
        ))
    } else if is(sub, "INFO") {
        let specs: Vec<Option<&Spec>> = if names.is_empty() {
            SPECS.iter().map(Some).collect()
        } else {
            names.iter().map(|n| Cmd::find(n).map(Cmd::spec)).collect()
        };
        Ok(Frame::Array(
            specs
                .into_iter()
                .map(|s| s.map_or(Frame::Null, entry))
                .collect(),
        ))
    } else if is(sub, "DOCS") {
        let specs: Vec<&Spec> = if names.is_empty() {
            SPECS.iter().collect()
        } else {
            names
                .iter()
                .filter_map(|n| Cmd::find(n).map(Cmd::spec))
                .collect()
        };
        Ok(Frame::Map(
            specs
                .into_iter()
                .map(|s| (Frame::bulk_string(s.name.to_ascii_lowercase()), docs(s)))
                .collect(),
        ))
    } else if is(sub, "HELP") {
        Ok(Frame::Array(
            [
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand) -- Return details about all commands.",
                "COUNT -- Return the total number of commands.",
                "LIST -- Return the names of all commands.",
                "INFO [<command-name> ...] -- Return details about the given commands.",
                "DOCS [<command-name> ...] -- Return documentation about the given commands.",
            ]
            .into_iter()
            .map(|line| Frame::Simple(Bytes::from_static(line.as_bytes())))
            .collect(),
        ))
    } else {
        Err(CommandError::UnknownSubcommand {
            command: "COMMAND",
            sub: lossy(sub),
        })
    }
}

fn entry(spec: &Spec) -> Frame {
    let flags = spec
        .flags
        .iter()
        .map(|f| Frame::Simple(Bytes::from_static(f.as_bytes())))
        .collect();
    let mut categories = vec![Frame::simple_static(match spec.group {
        "string" => "@string",
        "generic" => "@keyspace",
        "connection" => "@connection",
        "ringkv" => "@ringkv",
        _ => "@admin",
    })];
    for (flag, category) in [
        ("readonly", "@read"),
        ("write", "@write"),
        ("fast", "@fast"),
    ] {
        if spec.flags.contains(&flag) {
            categories.push(Frame::simple_static(category));
        }
    }
    Frame::Array(vec![
        Frame::bulk_string(spec.name.to_ascii_lowercase()),
        Frame::Integer(spec.arity),
        Frame::Set(flags),
        Frame::Integer(spec.keys.0),
        Frame::Integer(spec.keys.1),
        Frame::Integer(spec.keys.2),
        Frame::Set(categories),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}

fn docs(spec: &Spec) -> Frame {
    Frame::Map(vec![
        (
            Frame::bulk_static("summary"),
            Frame::bulk_static(spec.summary),
        ),
        (Frame::bulk_static("since"), Frame::bulk_static("0.1.0")),
        (Frame::bulk_static("group"), Frame::bulk_static(spec.group)),
        (Frame::bulk_static("arguments"), Frame::Array(Vec::new())),
    ])
}
