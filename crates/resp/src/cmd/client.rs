//! `CLIENT` subcommands: the connection's identity, as clients set it on
//! connect.
//!
//! - `CLIENT ID`: the connection's id (an integer, unique per server run).
//! - `CLIENT SETNAME name` / `CLIENT GETNAME`: names without spaces or
//!   control characters; an empty name clears it.
//! - `CLIENT SETINFO LIB-NAME|LIB-VER value`: what redis-py, redis-rs and
//!   others send on connect; shown by `CLIENT INFO`.
//! - `CLIENT INFO`: one line in Redis' `CLIENT LIST` format (a subset of its
//!   fields).
//! - `CLIENT NO-EVICT on|off`, `CLIENT NO-TOUCH on|off`: accepted, no effect
//!   (ringkv evicts nothing and keeps no access times).
//! - `CLIENT HELP`.

use bytes::Bytes;

use crate::cmd::Ctx;
use crate::error::{CommandError, lossy};
use crate::frame::Frame;
use crate::parse::{Args, is};

pub(crate) fn client<K>(ctx: &mut Ctx<'_, K>, args: &[Bytes]) -> Result<Frame, CommandError> {
    let sub = args.get(1).ok_or(CommandError::Syntax)?;
    let mut rest = Args::new(args, 2);
    let arity = |n: usize, name: &str| {
        if rest_len(args) == n {
            Ok(())
        } else {
            Err(CommandError::WrongArity(format!("client|{name}")))
        }
    };
    if is(sub, "ID") {
        arity(0, "id")?;
        Ok(Frame::Integer(ctx.session.id as i64))
    } else if is(sub, "SETNAME") {
        arity(1, "setname")?;
        let name = rest.bytes()?;
        check_name(&name)?;
        ctx.session.name = (!name.is_empty()).then_some(name);
        Ok(Frame::ok())
    } else if is(sub, "GETNAME") {
        arity(0, "getname")?;
        Ok(Frame::bulk_or_null(ctx.session.name.clone()))
    } else if is(sub, "SETINFO") {
        arity(2, "setinfo")?;
        let attr = rest.bytes()?;
        let value = rest.bytes()?;
        check_name(&value)?;
        if is(&attr, "LIB-NAME") {
            ctx.session.lib_name = Some(value);
        } else if is(&attr, "LIB-VER") {
            ctx.session.lib_ver = Some(value);
        } else {
            return Err(CommandError::Invalid(format!(
                "Unrecognized option '{}'",
                lossy(&attr)
            )));
        }
        Ok(Frame::ok())
    } else if is(sub, "INFO") {
        arity(0, "info")?;
        Ok(Frame::Bulk(Bytes::from(info_line(ctx))))
    } else if is(sub, "NO-EVICT") || is(sub, "NO-TOUCH") {
        arity(
            1,
            if is(sub, "NO-EVICT") {
                "no-evict"
            } else {
                "no-touch"
            },
        )?;
        let flag = rest.bytes()?;
        if is(&flag, "ON") || is(&flag, "OFF") {
            Ok(Frame::ok())
        } else {
            Err(CommandError::Syntax)
        }
    } else if is(sub, "HELP") {
        Ok(Frame::Array(
            [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ID -- Return the ID of the current connection.",
                "GETNAME -- Return the name of the current connection.",
                "SETNAME <name> -- Assign the name <name> to the current connection.",
                "SETINFO <LIB-NAME|LIB-VER> <value> -- Set client library name or version.",
                "INFO -- Return information about the current connection.",
                "NO-EVICT|NO-TOUCH <ON|OFF> -- Accepted for compatibility; no effect.",
            ]
            .into_iter()
            .map(|line| Frame::Simple(Bytes::from_static(line.as_bytes())))
            .collect(),
        ))
    } else {
        Err(CommandError::UnknownSubcommand {
            command: "CLIENT",
            sub: lossy(sub),
        })
    }
}

fn rest_len(args: &[Bytes]) -> usize {
    args.len().saturating_sub(2)
}

/// Redis' rule for names and library info: printable ASCII without spaces.
pub(crate) fn check_name(name: &[u8]) -> Result<(), CommandError> {
    if name.iter().all(|&c| (b'!'..=b'~').contains(&c)) {
        Ok(())
    } else {
        Err(CommandError::Invalid(
            "Client names cannot contain spaces, newlines or special characters.".into(),
        ))
    }
}

fn info_line<K>(ctx: &Ctx<'_, K>) -> String {
    let s = &*ctx.session;
    let text = |b: &Option<Bytes>| b.as_deref().map(lossy).unwrap_or_default();
    format!(
        "id={} addr={} laddr={} name={} age={} idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 \
         cmd=client|info user=default lib-name={} lib-ver={} resp={}\n",
        s.id,
        s.peer,
        s.local,
        text(&s.name),
        s.opened.elapsed().as_secs(),
        text(&s.lib_name),
        text(&s.lib_ver),
        s.protocol.version(),
    )
}
