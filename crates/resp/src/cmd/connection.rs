//! Connection commands: PING, ECHO, SELECT, QUIT, RESET, AUTH and HELLO.
//!
//! - `PING [message]`: `+PONG`, or the message as a bulk string.
//! - `ECHO message`: the message.
//! - `SELECT index`: ringkv has one keyspace; `SELECT 0` is `+OK`, any other
//!   index `-ERR DB index is out of range`.
//! - `QUIT`: `+OK`, then the connection closes.
//! - `RESET`: back to RESP2, no name, the node's consistency levels, out of
//!   a refused MULTI, unauthenticated when users are set; `+RESET`.
//! - `AUTH [username] password`: logs in as a configured user (`default`
//!   without a name), `-WRONGPASS` otherwise.
//! - `HELLO [protover [AUTH username password] [SETNAME name]]`: switches
//!   the connection to RESP2 or RESP3 (`-NOPROTO` for anything else) and
//!   answers the server map (`server`, `version`, `proto`, `id`, `mode`,
//!   `role`, `modules`, plus `ringkv_version` and `node_id`). The `version`
//!   field is the Redis version whose protocol ringkv speaks, since clients
//!   use it to decide which commands to send.

use bytes::Bytes;
use ringkv_cluster::Kv;

use crate::cmd::{Ctx, client};
use crate::error::CommandError;
use crate::frame::{Frame, Protocol};
use crate::parse::{Args, is, to_int};

/// The Redis version whose commands and replies ringkv follows.
pub const REDIS_VERSION: &str = "7.2.0";

pub(crate) fn ping(mut args: Args<'_>) -> Result<Frame, CommandError> {
    match args.next() {
        None => Ok(Frame::simple_static("PONG")),
        Some(message) => {
            args.finish()
                .map_err(|_| CommandError::WrongArity("ping".into()))?;
            Ok(Frame::Bulk(message.clone()))
        }
    }
}

pub(crate) fn echo(mut args: Args<'_>) -> Result<Frame, CommandError> {
    Ok(Frame::Bulk(args.bytes()?))
}

pub(crate) fn select(mut args: Args<'_>) -> Result<Frame, CommandError> {
    match args.int()? {
        0 => Ok(Frame::ok()),
        _ => Err(CommandError::Invalid("DB index is out of range".into())),
    }
}

pub(crate) fn quit<K>(ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
    ctx.session.closing = true;
    Ok(Frame::ok())
}

pub(crate) fn reset<K>(ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
    let s = &mut *ctx.session;
    s.protocol = Protocol::Resp2;
    s.name = None;
    s.read_level = None;
    s.write_level = None;
    s.in_refused_transaction = false;
    if ctx.shared.config.users.is_some() {
        s.authenticated = false;
        s.user = ringkv_auth::User::unrestricted();
    }
    Ok(Frame::simple_static("RESET"))
}

pub(crate) async fn auth<K>(
    ctx: &mut Ctx<'_, K>,
    mut args: Args<'_>,
) -> Result<Frame, CommandError> {
    let (user, password) = match args.remaining() {
        1 => (None, args.bytes()?),
        2 => (Some(args.bytes()?), args.bytes()?),
        _ => return Err(CommandError::Syntax),
    };
    if ctx.shared.config.users.is_none() {
        return Err(CommandError::Invalid(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?"
                .into(),
        ));
    }
    log_in(ctx, user.as_deref(), &password).await?;
    Ok(Frame::ok())
}

/// Checks credentials against the node's users (`default` when no name is
/// given); on success the session is that user's. The password hash is
/// checked off the executor (argon2 costs milliseconds on purpose).
async fn log_in<K>(
    ctx: &mut Ctx<'_, K>,
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<(), CommandError> {
    let Some(users) = ctx.shared.config.users.clone() else {
        return Ok(());
    };
    let name = String::from_utf8_lossy(user.unwrap_or(b"default")).into_owned();
    let password = password.to_vec();
    let found = tokio::task::spawn_blocking(move || users.authenticate(&name, &password))
        .await
        .ok()
        .flatten();
    match found {
        Some(user) => {
            ctx.session.user = user;
            ctx.session.authenticated = true;
            Ok(())
        }
        None => {
            metrics::counter!("ringkv_resp_auth_failures_total").increment(1);
            tracing::info!(peer = %ctx.session.peer, "RESP authentication failed");
            Err(CommandError::WrongPass)
        }
    }
}

pub(crate) async fn hello<K: Kv>(
    ctx: &mut Ctx<'_, K>,
    mut args: Args<'_>,
) -> Result<Frame, CommandError> {
    let mut protocol = ctx.session.protocol;
    if let Some(version) = args.next() {
        protocol = match to_int(version) {
            Ok(2) => Protocol::Resp2,
            Ok(3) => Protocol::Resp3,
            Ok(_) => return Err(CommandError::NoProto),
            Err(_) => {
                return Err(CommandError::Invalid(
                    "Protocol version is not an integer or out of range".into(),
                ));
            }
        };
    }
    let mut credentials: Option<(Bytes, Bytes)> = None;
    let mut name: Option<Bytes> = None;
    while let Some(option) = args.next() {
        if is(option, "AUTH") && args.remaining() >= 2 {
            credentials = Some((args.bytes()?, args.bytes()?));
        } else if is(option, "SETNAME") && args.remaining() >= 1 {
            let n = args.bytes()?;
            client::check_name(&n)?;
            name = Some(n);
        } else {
            return Err(CommandError::Invalid(format!(
                "Syntax error in HELLO option '{}'",
                crate::error::lossy(option)
            )));
        }
    }
    match &credentials {
        // Without users every credential is accepted, as Redis'
        // passwordless default user does.
        Some((user, password)) => log_in(ctx, Some(user), password).await?,
        // Only HELLO ... AUTH may open a connection that needs a password.
        None if !ctx.session.authenticated => return Err(CommandError::HelloNoAuth),
        None => {}
    }
    if name.is_some() {
        ctx.session.name = name;
    }
    ctx.session.protocol = protocol;
    let info = ctx.kv.info();
    Ok(Frame::Map(vec![
        (Frame::bulk_static("server"), Frame::bulk_static("ringkv")),
        (
            Frame::bulk_static("version"),
            Frame::bulk_static(REDIS_VERSION),
        ),
        (
            Frame::bulk_static("proto"),
            Frame::Integer(protocol.version()),
        ),
        (
            Frame::bulk_static("id"),
            Frame::Integer(ctx.session.id as i64),
        ),
        (Frame::bulk_static("mode"), Frame::bulk_static("cluster")),
        (Frame::bulk_static("role"), Frame::bulk_static("master")),
        (Frame::bulk_static("modules"), Frame::Array(Vec::new())),
        (
            Frame::bulk_static("ringkv_version"),
            Frame::bulk_static(info.version),
        ),
        (
            Frame::bulk_static("node_id"),
            Frame::bulk_string(format!("{:016x}", info.node_id)),
        ),
    ]))
}

/// `ACL WHOAMI` and `ACL LIST`.
pub(crate) fn acl<K>(ctx: &mut Ctx<'_, K>, mut args: Args<'_>) -> Result<Frame, CommandError> {
    let sub = args.bytes()?;
    if is(&sub, "WHOAMI") {
        args.finish()
            .map_err(|_| CommandError::WrongArity("acl|whoami".into()))?;
        return Ok(Frame::bulk_string(ctx.session.user.name().to_string()));
    }
    if is(&sub, "LIST") {
        args.finish()
            .map_err(|_| CommandError::WrongArity("acl|list".into()))?;
        if !ctx.session.user.has(ringkv_auth::Role::Admin) {
            return Err(CommandError::NoPermCommand("acl|list".into()));
        }
        let lines = match &ctx.shared.config.users {
            None => vec!["user default on nopass ~* &* +@all".to_string()],
            Some(users) => users.all().iter().map(|u| u.rule()).collect(),
        };
        return Ok(Frame::Array(
            lines.into_iter().map(Frame::bulk_string).collect(),
        ));
    }
    Err(CommandError::UnknownSubcommand {
        command: "ACL",
        sub: crate::error::lossy(&sub),
    })
}
